-- app:websocket routes, with node `ws` as the client: recv yields, send, close codes, the
-- subprotocol, refusals, handler errors and reload drains.
local helpers = require "helpers"
local cjson = require "cjson"

local function ws_client(url, script)
  local p = io.popen(("node %s/spec/js/ws-client.js '%s' '%s'"):format(helpers.root, url, cjson.encode(script)))
  local out = p:read("*a")
  p:close()
  return cjson.decode(out)
end

describe("app:websocket", function()
  local dir, path, host

  local function script(version)
    return ([[
local relay = require "relay"
local app = relay.new { name = "ws-routes" }
app:websocket("/echo", function(ws, req)
  ws:send("hello v%d " .. (req.args.name or ""))
  while true do
    local data, kind, code, reason = ws:recv()
    if not data then relay.log.info("ws_closed", { code = code, reason = reason }) return end
    if data == "bye" then ws:close(4000, "as you wish") return end
    if data == "boom" then error("handler failed on purpose") end
    ws:send(data, kind)
  end
end, { protocols = { "json", "chat" } })
app:websocket("/slow", function(ws)
  ws:send("waiting")
  relay.log.info("slow_session_open")
  relay.sleep(30)
end)
return app
]]):format(version)
  end

  setup(function()
    dir = helpers.tmpdir()
    path = dir .. "/ws.lua"
    helpers.write_file(path, script(1))
    host = helpers.start(path, { flags = { "--drain-timeout=0.5" } })
  end)

  teardown(function() assert.equal(0, host:stop()) end)

  local function url(p) return ("ws://127.0.0.1:%d%s"):format(host.port, p) end

  it("echoes text and binary, with the handler's greeting and the subprotocol it speaks", function()
    local r = ws_client(url("/echo?name=ann"), { protocols = { "chat", "json" }, send = {
      { wait = true }, { text = "one", wait = true }, { binary_len = 70000, wait = true },
      { fragments = { "a", "b" }, wait = true }, { close = { 1000, "done" } } } })
    assert.equal("chat", r.protocol)
    assert.equal("hello v1 ann", r.messages[1].text)
    assert.equal("one", r.messages[2].text)
    assert.equal(70000, r.messages[3].binary_len)
    assert.equal("ab", r.messages[4].text)
    assert.equal(1000, r.close.code)
    helpers.wait_until(function() return host:log():find('"event":"ws_closed"[^\n]*"code":1000') end, 3)
  end)

  it("the handler's close code reaches the client", function()
    local r = ws_client(url("/echo"), { send = { { wait = true }, { text = "bye" } } })
    assert.same({ code = 4000, reason = "as you wish" }, r.close)
  end)

  it("a handler error closes 1011 and the host serves on", function()
    local r = ws_client(url("/echo"), { send = { { wait = true }, { text = "boom" } } })
    assert.equal(1011, r.close.code)
    assert.matches('"event":"handler_error"[^\n]*handler failed on purpose', host:log())
    assert.equal("hello v1 ", ws_client(url("/echo"), { send = { { wait = true }, { close = { 1000, "" } } } }).messages[1].text)
  end)

  it("a plain GET on a WebSocket route gets 426", function()
    local res = host:get("/echo")
    assert.equal(426, res.status)
    assert.matches("WebSocket upgrade required", res.body)
  end)

  it("a session still open after a reload's drain timeout is closed 1001", function()
    local p = io.popen(("node %s/spec/js/ws-client.js '%s' '%s'"):format(helpers.root, url("/slow"),
      cjson.encode({ timeout_ms = 5000 })))
    helpers.wait_until(function() return host:count("slow_session_open") > 0 end, 5, "the session to open")
    helpers.write_file(path, script(2))
    assert.is_true(host:reload())
    local r = cjson.decode(p:read("*a"))
    p:close()
    assert.equal("waiting", r.messages[1].text)
    assert.same({ code = 1001, reason = "going away" }, r.close)
    assert.equal("hello v2 ", ws_client(url("/echo"), { send = { { wait = true }, { close = { 1000, "" } } } }).messages[1].text)
  end)
end)

describe("relay.ws.connect", function()
  local dir, host, tls_host

  setup(function()
    dir = helpers.tmpdir()
    os.execute(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/key.pem -out %s/cert.pem -days 2 " ..
      "-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 >/dev/null 2>&1"):format(dir, dir))
    helpers.write_file(dir .. "/client.lua", ([[
local relay = require "relay"
local app = relay.new { name = "ws-client" }
app:websocket("/echo", function(ws)
  while true do
    local data, kind = ws:recv()
    if not data then return end
    ws:send("echo:" .. data, kind)
  end
end, { protocols = "v1" })
app:get("/dial", function(req, res)
  local url = req.args.url or ("ws://" .. req.headers.host .. "/echo")
  local ws, proto = relay.ws.connect(url, { protocols = { "v1" }, ca_file = %q, timeout = 2,
                                            headers = { ["X-Test"] = "1" } })
  if not ws then return res:send(502, proto) end
  local got = {}
  for i = 1, 3 do
    ws:send("m" .. i)
    got[i] = ws:recv()
  end
  ws:send(("b"):rep(100000), "binary")
  local big, kind = ws:recv()
  ws:close(1000, "done")
  res:json(200, { protocol = proto, got = got, big = #big, kind = kind })
end)
return app
]]):format(dir .. "/cert.pem"))
    host = helpers.start(dir .. "/client.lua")
    tls_host = helpers.start(dir .. "/client.lua", { flags = { "--tls-cert", dir .. "/cert.pem", "--tls-key", dir .. "/key.pem" } })
  end)

  teardown(function()
    assert.equal(0, host:stop())
    assert.equal(0, tls_host:stop())
  end)

  it("talks to a WebSocket server (its own route), with subprotocol, text and binary", function()
    local res = host:get("/dial")
    assert.equal(200, res.status)
    local r = cjson.decode(res.body)
    assert.equal("v1", r.protocol)
    assert.same({ "echo:m1", "echo:m2", "echo:m3" }, r.got)
    assert.equal(100005, r.big)
    assert.equal("binary", r.kind)
  end)

  it("speaks wss://, verified against ca_file", function()
    local res = host:get("/dial?url=" .. ("wss://localhost:%d/echo"):format(tls_host.port))
    assert.equal(200, res.status)
    assert.same({ "echo:m1", "echo:m2", "echo:m3" }, cjson.decode(res.body).got)
  end)

  it("says why it could not connect", function()
    local res = host:get("/dial?url=ws://127.0.0.1:1/x")
    assert.equal(502, res.status)
    assert.matches("connect 127.0.0.1:1: connection refused", res.body)
    local res2 = host:get("/dial?url=" .. ("ws://127.0.0.1:%d/nope"):format(host.port))
    assert.equal(502, res2.status)
    assert.matches("answered 404 instead of 101", res2.body)
  end)
end)
