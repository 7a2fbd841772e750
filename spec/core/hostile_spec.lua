-- Slow and hostile clients: each is held to its timeout and limit, and nobody else waits for it.
local helpers = require "helpers"
local socket = require "socket"


local rss_kb = helpers.rss_kb

-- Seconds one request on a fresh connection takes.
local function timed_get(host, path)
  local t0 = socket.gettime()
  local res = host:get(path)
  return socket.gettime() - t0, res
end

describe("hostile clients", function()
  local dir, script
  setup(function()
    script = require("hostile_support").script_file()
    dir = helpers.tmpdir()
  end)

  it("a client that stops reading a large response is closed after --send-timeout; others go on", function()
    local host = helpers.start(script, { flags = { "--send-timeout", "1" } })
    local before = rss_kb(host.pid)
    local stuck = host:client()
    stuck:send("GET /big/256 HTTP/1.1\r\nHost: x\r\n\r\n") -- 256 MiB, and we read none of it
    helpers.sleep(0.3)
    for _ = 1, 5 do
      local took, res = timed_get(host, "/hello")
      assert.equal(200, res.status)
      assert.is_true(took < 0.5, ("a normal request took %.3f s"):format(took))
    end
    -- backpressure: what waits for the stuck client is bounded, not 256 MiB
    assert.is_true(rss_kb(host.pid) - before < 16 * 1024, ("RSS grew %d kB"):format(rss_kb(host.pid) - before))
    local stopped = helpers.wait_until(function()
      return require("cjson").decode(host:get("/sent").body).stopped_at
    end, 5, "the handler to learn the client is gone")
    assert.is_true(stopped < 256 * 16)
    assert.matches('"event":"http_timeout"[^\n]*"phase":"send"', host:log())
    stuck:close()
    assert.equal(0, host:stop())
  end)

  it("a slow reader that keeps taking bytes is not cut off by --send-timeout", function()
    local host = helpers.start(script, { flags = { "--send-timeout", "1" } })
    local slow = host:client(10)
    slow.sock:setoption("keepalive", false)
    slow:send("GET /big/8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    local got, t0 = 0, socket.gettime()
    while true do -- 8 MiB at 1 MiB per 0.4 s: longer than the timeout, never stalled that long
      local data, err, partial = slow.sock:receive(256 * 1024)
      data = data or partial
      got = got + #data
      if err then break end
      socket.sleep(0.1)
    end
    assert.is_true(socket.gettime() - t0 > 2)
    assert.is_true(got > 8 * 1024 * 1024, "received " .. got)
    assert.equal(1, require("cjson").decode(host:get("/sent").body).finished)
    slow:close()
    assert.equal(0, host:stop())
  end)

  it("an HTTP/1.0 client's Expect: 100-continue is ignored: no 100 Continue, the body is read", function()
    local host = helpers.start(script)
    for _, v in ipairs({ "1.0", "1.1" }) do
      local c = host:client(2)
      c:send(("POST /echo HTTP/%s\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"):format(v))
      c.sock:settimeout(0.5)
      local early = c.sock:receive("*l") -- RFC 9110 10.1.1: never to HTTP/1.0; 1.1 gets it
      if v == "1.0" then assert.is_nil(early) else assert.equal("HTTP/1.1 100 Continue", early); c.sock:receive("*l") end
      c.sock:settimeout(2)
      c:send("abc")
      local res = assert(c:read_response())
      assert.equal(200, res.status)
      assert.equal("abc", res.body)
      c:close()
    end
    assert.equal(0, host:stop())
  end)

  it("a chunk declaring more than the route's body limit gets 413 at its size line, before its data", function()
    local host = helpers.start(script)
    local c = host:client(2)
    -- 1 MiB + 1 against the default 1 MiB limit; none of the data is sent
    c:send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n100001\r\n")
    local res = assert(c:read_response())
    assert.equal(413, res.status)
    c:close()
    assert.equal(0, host:stop())
  end)

  it("10,000 idle connections are held to --head-timeout while normal traffic is served", function()
    local n = 10000
    local probe = assert(socket.bind("127.0.0.1", 0))
    local _, admin = probe:getsockname()
    probe:close()
    local host = helpers.start(script, { nofile = n + 2000,
      flags = { "--head-timeout", "3", "--admin-listen", "127.0.0.1:" .. admin } })
    local function connections()
      local c = assert(helpers.connect(admin))
      local body = c:get("/metrics").body
      c:close()
      return tonumber(body:match("\nrelayhost_http_connections (%d+)"))
    end
    -- a separate process holds the connections (its own fd limit), saying when they are open
    local ready = dir .. "/held"
    helpers.write_file(dir .. "/hold.lua", ([[
local socket = require "socket"
local held = {}
for i = 1, %d do held[i] = assert(socket.connect("127.0.0.1", %d)) end
local f = io.open(%q, "w"); f:write("open\n"); f:close()
socket.sleep(30)
]]):format(n, host.port, ready))
    os.execute(("sh -c 'ulimit -n %d; exec luajit %q' >%q/hold.log 2>&1 &"):format(n + 1000, dir .. "/hold.lua", dir))
    helpers.wait_until(function() return helpers.read_file(ready) end, 30, "10,000 connections to open")
    helpers.wait_until(function() return connections() >= n end, 10, "the host to hold them all")
    local worst = 0
    for _ = 1, 20 do
      local took, res = timed_get(host, "/hello")
      assert.equal(200, res.status)
      worst = math.max(worst, took)
    end
    assert.is_true(worst < 0.5, ("the slowest normal request took %.3f s"):format(worst))
    -- none of them sent a byte: each is closed at --head-timeout
    helpers.wait_until(function() return connections() < 10 end, 10, "the idle connections to be closed")
    os.execute("pkill -f " .. dir .. "/hold.lua")
    assert.equal(200, host:get("/hello").status)
    assert.equal(0, host:stop())
  end)
end)
