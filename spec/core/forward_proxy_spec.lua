-- Outbound clients through a real forward proxy (Debian's tinyproxy): HTTP_PROXY/HTTPS_PROXY make
-- relay.http and relay.ws.connect ask the proxy to CONNECT, then speak (TLS) inside the tunnel;
-- NO_PROXY and a mount's upstreams go direct; a proxy that refuses is named with its status.
local helpers = require "helpers"
local cjson = require "cjson"
local socket = require "socket"

local free_port = helpers.free_port

-- tinyproxy on a free port, allowing CONNECT to the given ports only (and more config lines, if
-- given). Returns port, pid, log path.
local function start_tinyproxy(dir, connect_ports, extra)
  local log = dir .. "/tinyproxy.log"
  for _ = 1, 5 do
    local port = free_port()
    local conf = { ("Port %d"):format(port), "Listen 127.0.0.1", "Timeout 30", ("LogFile %q"):format(log),
                   "LogLevel Connect", "MaxClients 50", "Allow 127.0.0.1" }
    for _, p in ipairs(connect_ports) do conf[#conf + 1] = ("ConnectPort %d"):format(p) end
    for _, line in ipairs(extra or {}) do conf[#conf + 1] = line end
    helpers.write_file(dir .. "/tinyproxy.conf", table.concat(conf, "\n") .. "\n")
    os.execute(("tinyproxy -d -c %s/tinyproxy.conf > %s/tinyproxy.out 2>&1 & echo $! > %s/tinyproxy.pid"):format(
      dir, dir, dir))
    local pid = helpers.wait_until(function() return helpers.read_file(dir .. "/tinyproxy.pid") end):gsub("%s", "")
    local ok = pcall(helpers.wait_until, function()
      if not helpers.read_file("/proc/" .. pid .. "/status") then error("tinyproxy exited") end
      local c = socket.connect("127.0.0.1", port)
      if c then c:close() end
      return c ~= nil
    end, 5)
    if ok then return port, pid, log end
  end
  error("could not start tinyproxy: " .. tostring(helpers.read_file(dir .. "/tinyproxy.out")))
end

-- How many CONNECTs to host:port the proxy has seen.
local function connects(log, port)
  local n = 0
  for _ in (helpers.read_file(log) or ""):gmatch("CONNECT 127%.0%.0%.1:" .. port .. " HTTP/1%.1") do n = n + 1 end
  return n
end

local SCRIPT = [[
local relay = require "relay"
local app = relay.new { name = "egress" }
local plain, tls, ca, other = "http://127.0.0.1:%d", "https://localhost:%d", %q, "http://127.0.0.1:%d"
app:mount("/mount", relay.proxy { target_base_url = plain })
local function fetch(res, url, ca_file)
  local r, err = relay.http.request { url = url, ca_file = ca_file, timeout = 5 }
  if not r then return res:send(502, err) end
  res:send(r.status, r.body)
end
app:get("/plain", function(_, res) fetch(res, plain .. "/via-plain") end)
app:get("/tls", function(_, res) fetch(res, tls .. "/via-tls", ca) end)
app:get("/other", function(_, res) fetch(res, other .. "/x") end)
app:get("/ws", function(_, res)
  local ws, err = relay.ws.connect(plain:gsub("^http", "ws") .. "/echo", { timeout = 5 })
  if not ws then return res:send(502, err) end
  ws:send("through the tunnel", "text")
  local data = ws:recv()
  ws:close(1000, "done")
  res:send(200, data or "nothing")
end)
return app
]]

local ORIGIN = [[
local relay = require "relay"
local app = relay.new { name = "origin" }
app:get("/*", function(req, res) res:json(200, { target = req.target, host = req.headers.host }) end)
app:websocket("/echo", function(ws)
  local data = ws:recv()
  if data then ws:send(data, "text") end
end)
return app
]]

describe("forward proxy (HTTP_PROXY, HTTPS_PROXY, NO_PROXY)", function()
  local dir, origin, tls_origin, refused, proxy_port, proxy_pid, log, via, direct

  setup(function()
    dir = helpers.tmpdir()
    helpers.self_signed_cert(dir)
    helpers.write_file(dir .. "/origin.lua", ORIGIN)
    origin = helpers.start(dir .. "/origin.lua")
    tls_origin = helpers.start(dir .. "/origin.lua",
      { flags = { "--tls-cert", dir .. "/cert.pem", "--tls-key", dir .. "/key.pem" } })
    refused = helpers.start(dir .. "/origin.lua") -- the proxy is not allowed to CONNECT here
    proxy_port, proxy_pid, log = start_tinyproxy(dir, { origin.port, tls_origin.port })
    helpers.write_file(dir .. "/egress.lua", SCRIPT:format(origin.port, tls_origin.port, dir .. "/cert.pem",
      refused.port))
    local proxy_url = "http://127.0.0.1:" .. proxy_port
    via = helpers.start(dir .. "/egress.lua", { env = { HTTP_PROXY = proxy_url, https_proxy = proxy_url } })
    direct = helpers.start(dir .. "/egress.lua", { env = { HTTP_PROXY = proxy_url, HTTPS_PROXY = proxy_url,
                                                         NO_PROXY = ("example.com, 127.0.0.1:%d,localhost"):format(origin.port) } })
  end)

  teardown(function()
    if proxy_pid then os.execute("kill " .. proxy_pid) end
    for _, h in ipairs { via, direct, refused, tls_origin, origin } do if h then assert.equal(0, h:stop()) end end
  end)

  it("relay.http reaches a plain origin through the proxy's CONNECT (HTTP_PROXY)", function()
    local before = connects(log, origin.port)
    local res = via:get("/plain")
    assert.equal(200, res.status, res.body)
    local got = cjson.decode(res.body)
    assert.equal("/via-plain", got.target)
    assert.equal("127.0.0.1:" .. origin.port, got.host)
    assert.equal(before + 1, connects(log, origin.port))
  end)

  it("relay.http reaches an https origin with TLS inside the tunnel, verified (https_proxy)", function()
    local res = via:get("/tls")
    assert.equal(200, res.status, res.body)
    assert.equal("/via-tls", cjson.decode(res.body).target)
    assert.truthy((helpers.read_file(log) or ""):find("CONNECT localhost:" .. tls_origin.port .. " HTTP/1.1", 1, true),
      "the proxy saw CONNECT localhost:port (the name, resolved by the proxy)")
  end)

  it("relay.ws.connect opens its WebSocket through the proxy", function()
    local before = connects(log, origin.port)
    local res = via:get("/ws")
    assert.equal(200, res.status, res.body)
    assert.equal("through the tunnel", res.body)
    assert.equal(before + 1, connects(log, origin.port))
  end)

  it("names the proxy and its status when it refuses the CONNECT", function()
    local res = via:get("/other")
    assert.equal(502, res.status)
    assert.matches("^proxy 127%.0%.0%.1:" .. proxy_port .. " %(HTTP_PROXY%) refused CONNECT 127%.0%.0%.1:" ..
      refused.port .. ": HTTP/1%.[01] 403", res.body)
  end)

  it("a mount's upstream goes direct, whatever HTTP_PROXY says", function()
    local before = connects(log, origin.port)
    local res = via:get("/mount/m")
    assert.equal(200, res.status, res.body)
    assert.equal("/m", cjson.decode(res.body).target)
    assert.equal(before, connects(log, origin.port))
  end)

  it("NO_PROXY sends the listed peers direct (an address with a port, a name), and only those", function()
    local before_plain = connects(log, origin.port)
    local lines = #(helpers.read_file(log) or "")
    for _, path in ipairs { "/plain", "/tls", "/ws" } do
      local res = direct:get(path)
      assert.equal(200, res.status, res.body)
    end
    assert.equal(before_plain, connects(log, origin.port))
    assert.equal(lines, #(helpers.read_file(log) or ""), "the proxy saw nothing")
    -- 127.0.0.1 on another port is not listed: through the proxy, which refuses it
    local res = direct:get("/other")
    assert.equal(502, res.status)
    assert.matches("^proxy 127%.0%.0%.1:" .. proxy_port .. " %(HTTP_PROXY%) refused CONNECT", res.body)
  end)
end)

describe("forward proxy: the git tunnel's relay-client", function()
  local env = require "git_tunnel_support"
  local w, log, proxy_pid

  setup(function()
    w = env.git_server()
    w.server = env.start_server()
    local proxy_port
    proxy_port, proxy_pid, log = start_tinyproxy(w.dir, { w.server.port, w.web.port })
    w.client = env.start_ready_client(w.server.port, "proxied", env.base_url(w.web), {},
                                      { env = { HTTP_PROXY = "http://127.0.0.1:" .. proxy_port } })
  end)

  teardown(function()
    if proxy_pid then os.execute("kill " .. proxy_pid) end
    env.stop_all_checked()
  end)

  it("registers through the proxy and reaches its base-url through it: a clone works", function()
    assert.equal(1, connects(log, w.server.port)) -- the WebSocket to the relay-server
    local before = connects(log, w.web.port)
    local out, rc = env.git(("clone -q %s %s/clone"):format(env.url(w.server, "proxied", "/repo.git"), w.dir))
    assert.equal(0, rc, out)
    assert.equal("hello\n", helpers.read_file(w.dir .. "/clone/a.txt"))
    assert.is_true(connects(log, w.web.port) > before, "the git server's requests went through the proxy")
  end)
end)

describe("forward proxy: credentials", function()
  local dir, origin, proxy_pid, log, with, without

  setup(function()
    dir = helpers.tmpdir()
    helpers.write_file(dir .. "/origin.lua", ORIGIN)
    origin = helpers.start(dir .. "/origin.lua")
    local port
    port, proxy_pid, log = start_tinyproxy(dir, { origin.port }, { "BasicAuth alice s3cret" })
    helpers.write_file(dir .. "/egress.lua", SCRIPT:format(origin.port, 1, dir .. "/none.pem", 1))
    with = helpers.start(dir .. "/egress.lua", { env = { HTTP_PROXY = ("http://al%%69ce:s3cret@127.0.0.1:%d"):format(port) } })
    without = helpers.start(dir .. "/egress.lua", { env = { HTTP_PROXY = "http://127.0.0.1:" .. port } })
  end)

  teardown(function()
    if proxy_pid then os.execute("kill " .. proxy_pid) end
    for _, h in ipairs { with, without, origin } do if h then assert.equal(0, h:stop()) end end
  end)

  it("sends USER:PASSWORD from HTTP_PROXY as Proxy-Authorization: Basic, percent-decoded", function()
    local before = connects(log, origin.port)
    local res = with:get("/plain")
    assert.equal(200, res.status, res.body)
    assert.equal("/via-plain", cjson.decode(res.body).target)
    assert.equal(before + 1, connects(log, origin.port))
  end)

  it("says so when the proxy wants credentials it did not get (407)", function()
    local res = without:get("/plain")
    assert.equal(502, res.status)
    assert.matches("refused CONNECT 127%.0%.0%.1:" .. origin.port .. ": HTTP/1%.[01] 407", res.body)
  end)
end)
