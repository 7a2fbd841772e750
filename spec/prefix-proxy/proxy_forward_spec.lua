-- p:forward from a handler (issue 18, README "Prefix proxy"): after Lua work, a plain route
-- hands its request to the C engine, which streams the body (it never enters Lua) and applies
-- the proxy's options. The origin (spec/fixtures/raw_origin.lua) records what it received; a
-- relayhost sink counts a 64 MiB body.
local helpers = require "helpers"
local start_origin = require("raw_origin").start

local MIB = 1024 * 1024

describe("p:forward from a handler", function()
  local origin, sink, proxy

  setup(function()
    origin = start_origin()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/sink.lua", [[
local relay = require "relay"
local app = relay.new { name = "sink" }
app:post("/sink", function(req, res)
  local body = req:body() -- the sink holds it; the forwarding host must not
  res:send(200, tostring(#body), { ["x-via-seen"] = req.headers["x-via"] or "none" })
end, { max_body = 256 * 1024 * 1024 })
return app
]])
    sink = helpers.start(dir .. "/sink.lua")
    helpers.write_file(dir .. "/fwd.lua", ([[
local relay = require "relay"
local app = relay.new { name = "forward" }
local recorder = relay.proxy { target_base_url = "http://127.0.0.1:%d", drop_request_headers = { "x-secret" } }
local sink = relay.proxy { target_base_url = "http://127.0.0.1:%d", timeout = 60 }
app:get("/rec/:name", function(req, res)
  relay.sleep(0.01) -- Lua work that waits, before the engine takes over
  if req.params.name == "no" then return res:send(403, "no\n") end
  return recorder:forward(req, res, { path = "/elsewhere/" .. req.params.name .. "?q=1",
                                      headers = { ["x-user"] = "alice", ["x-replaced"] = "new" } })
end)
app:post("/upload", function(req, res)
  return sink:forward(req, res, { path = "/sink", headers = { ["x-via"] = "handler" } })
end, { max_body = 256 * 1024 * 1024 })
app:get("/twice", function(req, res)
  recorder:forward(req, res)
  res:send(200, "mine") -- the request has gone: an error, the forward stands
end)
return app
]]):format(origin.port, sink.port))
    proxy = helpers.start(dir .. "/fwd.lua")
  end)

  teardown(function()
    origin:stop()
    for _, h in ipairs { proxy, sink } do
      if h then assert.equal(0, h:stop(), h:log():sub(-3000)) end
    end
  end)
  before_each(function() origin:take(0.05) end)

  it("sends the handler's path and headers up, through the proxy's header policy", function()
    local res = proxy:get("/rec/bob", { ["x-secret"] = "s", ["x-replaced"] = "old", ["x-keep"] = "k" })
    assert.equal(200, res.status, res.body)
    assert.equal("ok", res.body)
    local seen = origin:take(0.2)
    assert.equal(1, #seen)
    local head = seen[1]:match("^(.-\r\n\r\n)")
    assert.matches("^GET /elsewhere/bob%?q=1 HTTP/1%.1\r\n", head)
    assert.matches("\r\n[Xx]%-[Uu]ser: alice\r\n", head)
    assert.matches("\r\n[Xx]%-[Rr]eplaced: new\r\n", head)
    assert.matches("\r\n[Xx]%-[Kk]eep: k\r\n", head)
    assert.is_nil(head:find("old", 1, true))
    assert.is_nil(head:lower():find("x-secret", 1, true))
    assert.matches("\r\n[Xx]%-[Ff]orwarded%-[Ff]or: 127%.0%.0%.1\r\n", head)
  end)

  it("leaves a request the handler answered itself alone", function()
    assert.equal(403, proxy:get("/rec/no").status)
    assert.same({}, origin:take(0.2))
  end)

  it("streams a 64 MiB body to the upstream without it entering Lua", function()
    local size = 64 * MIB
    local c = proxy:client(60)
    assert(c:send("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: " .. size .. "\r\n\r\n"))
    local chunk = ("z"):rep(MIB)
    local peak = 0
    for _ = 1, 64 do
      assert(c:send(chunk))
      peak = math.max(peak, helpers.rss_kb(proxy.pid) or 0)
    end
    local res = c:read_response()
    c:close()
    assert.equal(200, res.status, res.body .. sink:log():sub(-2000))
    assert.equal(tostring(size), res.body)
    assert.equal("handler", res.headers["x-via-seen"])
    if not helpers.asan() then
      assert.is_true(peak < 48 * 1024, "forwarding host RSS peaked at " .. peak .. " KiB")
    end
  end)

  it("takes the request away from the handler: a later answer is an error, the forward stands", function()
    local res = proxy:get("/twice")
    assert.equal(200, res.status)
    assert.equal("ok", res.body)
    assert.matches('"error":"[^"]*fwd%.lua:%d+: this request was handed over', proxy:log())
    origin:take(0.2)
  end)
end)

describe("p:forward of a WebSocket upgrade", function()
  local cjson = require "cjson"
  local js = helpers.root .. "/spec/js/"
  local dir, echo_pid, proxy

  setup(function()
    dir = helpers.tmpdir()
    os.execute(("node %sws-echo-server.js > %s/echo.out 2>&1 & echo $! > %s/echo.pid"):format(js, dir, dir))
    echo_pid = helpers.wait_until(function() return helpers.read_file(dir .. "/echo.pid") end)
    local port = tonumber(helpers.wait_until(function()
      return (helpers.read_file(dir .. "/echo.out") or ""):match('"port":(%d+)')
    end, 20, "the node ws server"))
    helpers.write_file(dir .. "/fwd.lua", ([[
local relay = require "relay"
local app = relay.new { name = "forward-ws" }
local echo = relay.proxy { target_base_url = "http://127.0.0.1:%d" }
app:get("/live/:room", function(req, res)
  relay.sleep(0.01)
  return echo:forward(req, res, { path = "/" .. req.params.room .. "?via=handler" })
end)
return app
]]):format(port))
    proxy = helpers.start(dir .. "/fwd.lua")
  end)

  teardown(function()
    os.execute("kill " .. tostring(echo_pid):gsub("%s", ""))
    if proxy then assert.equal(0, proxy:stop(), proxy:log():sub(-3000)) end
  end)

  it("passes the upgrade through to the upstream, messages both ways", function()
    local script = { send = { { wait = true }, { text = "hello", wait = true }, { close = { 1000, "bye" } } } }
    local p = io.popen(("node %sws-client.js '%s' '%s'"):format(js,
      ("ws://127.0.0.1:%d/live/room1"):format(proxy.port), cjson.encode(script)))
    local r = cjson.decode(p:read("*a"))
    p:close()
    assert.is_true(r.opened, tostring(r.error))
    assert.equal("/room1?via=handler", cjson.decode(r.messages[1].text).hello)
    assert.equal("hello", r.messages[2].text)
    assert.equal(1000, r.close.code)
  end)
end)
