-- WebSocket floods held to a memory bound (issue 14.2): pings whose pongs are never read, data
-- whose answers are never read, and a fragmented message without end, against the prefix
-- proxy's pass-through (node `ws` upstream), the workspace relay and a relay.ws route. The
-- flooding connection must end up paused (relayhost stops reading it while what it owes the
-- peer is over the per-connection bound) or closed 1008/1009, a probe keeps getting answers,
-- and RSS stays within BOUND_KB of where it started (plain build; under ASan only survival and
-- conns are checked, see helpers.flood).
local helpers = require "helpers"
local raw = require "ws_raw"
local socket = require "socket"
local W = require "workspace_support"

local js = helpers.root .. "/spec/js/"
local BOUND_KB = 32 * 1024
local PINGS = (raw.frame(raw.PING, ("p"):rep(125))):rep(1000) -- 131 KB per push

-- Floods `conn` with `chunk` (pushed over and over, never reading) for `seconds`, probing
-- `host` with `probe`; returns the peak RSS rise in kB.
local function flood(host, conn, chunk, probe, seconds)
  local peak = helpers.flood(host, { seconds = seconds or 3, bound_kb = BOUND_KB, probe = probe,
                                     step = function() conn:push(chunk) end })
  if os.getenv("WS_FLOOD_VERBOSE") then
    print(("flood: %d kB sent, RSS peak +%d kB, now %d kB"):format(math.floor(conn.sent / 1024), peak, helpers.rss_kb(host.pid)))
  end
  return peak
end

-- Starts one of the node servers in spec/js (it prints its port first); its pid, port and
-- the file its output goes to.
local function start_node(script, dir)
  local out, pid_file = dir .. "/" .. script .. ".out", dir .. "/" .. script .. ".pid"
  os.execute(("node %s%s > %s 2>&1 & echo $! > %s"):format(js, script, out, pid_file))
  local pid = helpers.wait_until(function() return helpers.read_file(pid_file) end):gsub("%s", "")
  local port = tonumber(helpers.wait_until(function()
    return (helpers.read_file(out) or ""):match('"port":(%d+)')
  end, 10, script))
  return pid, port, out
end

-- Connections, closed after each test (passed or not) so that the host can stop at once.
local conns = {}
local function track(open)
  local c = assert(open())
  conns[#conns + 1] = c
  return c
end

local function close_all()
  for i, c in ipairs(conns) do
    c:close()
    conns[i] = nil
  end
end

-- A probe over its own WebSocket: a frame of opcode `send` must come back as `reply` (by
-- default a ping as its pong) with the same payload.
local function ws_probe(open, send, reply)
  local c, n = nil, 0
  return function()
    c = c or track(open)
    n = n + 1
    local tag = "probe-" .. n
    c:push(raw.frame(send or raw.PING, tag))
    return c:read_until(function(op, p) return op == (reply or raw.PONG) and p == tag end, 2) ~= nil
  end
end

-- The flooder is paused: nothing more of it is read. Then, once it reads what it was sent,
-- relayhost reads it again: a last ping, behind everything the kernel still holds, is answered.
local function assert_paused_then_served(conn, chunk)
  local stalled, moved = conn:stalls(15, 1, chunk)
  assert(stalled, ("relayhost still read %d bytes from the flooder after the flood"):format(moved))
  conn.pending = conn.pending .. raw.frame(raw.PING, "last") -- after the frame cut short
  local deadline = socket.gettime() + 30
  repeat
    conn:push()
    if conn:read_until(function(o, p) return o == raw.PONG and p == "last" end, 0.1) then return end
  until socket.gettime() > deadline
  error("the flooder was not served again after it read its backlog")
end

describe("WebSocket floods through the prefix proxy's pass-through", function()
  local dir, echo_pid, proxy

  setup(function()
    dir = helpers.tmpdir()
    local port
    echo_pid, port = start_node("ws-echo-server.js", dir)
    helpers.write_file(dir .. "/proxy.lua", ([[
local relay = require "relay"
local app = relay.new { name = "ws-flood" }
app:mount("/ws", relay.proxy { target_base_url = "http://127.0.0.1:%d" })
return app
]]):format(port))
    proxy = helpers.start(dir .. "/proxy.lua")
  end)

  after_each(close_all)

  teardown(function()
    os.execute("kill " .. echo_pid)
    assert.equal(0, proxy:stop())
  end)

  -- A probe that goes through to the upstream: a text message comes back as its echo.
  local function echo_probe()
    return ws_probe(function() return raw.open(proxy.port, "/ws/probe") end, raw.TEXT, raw.TEXT)
  end

  it("a ping flood whose pongs are never read stays bounded, and the flooder is paused", function()
    local c = track(function() return raw.open(proxy.port, "/ws/pings") end)
    flood(proxy, c, PINGS, echo_probe())
    assert_paused_then_served(c, PINGS)
  end)

  it("a sender that never reads the echoes stays bounded, and is paused", function()
    local c = track(function() return raw.open(proxy.port, "/ws/echoes") end)
    local chunk = (raw.frame(raw.BINARY, ("d"):rep(4000))):rep(32)
    flood(proxy, c, chunk, echo_probe())
    assert(c:stalls(15, 1, chunk), "relayhost still reads a sender that does not read its echoes")
  end)

  it("a fragmented message without end is closed 1009 at max_message, tiny fragments cost nothing", function()
    local c = track(function() return raw.open(proxy.port, "/ws/fragments") end)
    c:push(raw.frame(raw.TEXT, "start", false))
    local empty, closed = (raw.frame(raw.CONT, "", false)):rep(4000), false
    flood(proxy, c, empty, echo_probe(), 1)
    local big = (raw.frame(raw.CONT, ("f"):rep(60000), false)):rep(4)
    helpers.flood(proxy, { seconds = 3, bound_kb = BOUND_KB, probe = echo_probe(),
                           step = function() if not closed then closed = select(2, c:push(big)) == "closed" end end })
    assert.same({ 1009, "message too big" }, { c:read_close(5) })
  end)
end)

describe("WebSocket floods on the workspace relay", function()
  local peers, relay

  setup(function()
    peers = require("ws_peers").start()
    W.fixture(peers)
    relay = W.start(peers)
  end)

  after_each(close_all)

  teardown(function()
    assert.equal(0, relay:stop())
    peers:stop()
  end)

  local function client(token)
    return raw.open(relay.port, "/ws?" .. W.CLIENT_Q, { authorization = "Bearer " .. token })
  end

  it("a client's ping flood whose pongs are never read stays bounded, and the client is paused", function()
    local c = track(function() return client("client-token-a") end)
    flood(relay, c, PINGS, ws_probe(function() return client("client-token-b") end))
    assert_paused_then_served(c, PINGS)
  end)
end)

describe("WebSocket floods on a relay.ws route", function()
  local host

  setup(function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/echo.lua", [[
local relay = require "relay"
local app = relay.new { name = "ws-echo" }
app:websocket("/echo", function(ws)
  while true do
    local data, kind = ws:recv()
    if not data then return end
    ws:send(data, kind)
  end
end)
return app
]])
    host = helpers.start(dir .. "/echo.lua")
  end)

  after_each(close_all)

  teardown(function() assert.equal(0, host:stop()) end)

  it("a ping flood stays bounded, and the flooder is paused", function()
    local c = track(function() return raw.open(host.port, "/echo") end)
    flood(host, c, PINGS, ws_probe(function() return raw.open(host.port, "/echo") end))
    assert_paused_then_served(c, PINGS)
  end)

  it("a sender that never reads what the script sends back stays bounded, and is paused", function()
    local c = track(function() return raw.open(host.port, "/echo") end)
    local chunk = (raw.frame(raw.BINARY, ("d"):rep(4000))):rep(32)
    flood(host, c, chunk, ws_probe(function() return raw.open(host.port, "/echo") end))
    assert(c:stalls(15, 1, chunk), "relayhost still reads a sender that does not read its echoes")
  end)
end)

describe("WebSocket floods on a relay.ws.connect session (the client side, as the git tunnel's)", function()
  local dir, flooder_pid, flooder_out, host

  -- What the flooding server has written so far, in bytes.
  local function written()
    local n = 0
    for w in (helpers.read_file(flooder_out) or ""):gmatch('"written":(%d+)') do n = tonumber(w) end
    return n
  end

  setup(function()
    dir = helpers.tmpdir()
    local port
    flooder_pid, port, flooder_out = start_node("ws-ping-flood-server.js", dir)
    helpers.write_file(dir .. "/client.lua", ([[
local relay = require "relay"
local app = relay.new { name = "ws-client-flood" }
local session
app:get("/dial", function(req, res)
  local ws, err = relay.ws.connect("ws://127.0.0.1:%d/")
  if not ws then return res:send(502, err) end
  session = ws
  while ws:recv() do end
  res:send(200, "over")
end)
app:get("/hangup", function(req, res)
  session:terminate()
  res:send(200, "ok")
end)
return app
]]):format(port))
    host = helpers.start(dir .. "/client.lua")
  end)

  teardown(function()
    os.execute("kill " .. flooder_pid)
    assert.equal(0, host:stop())
  end)

  it("a server's ping flood whose pongs are never read stays bounded, and the server is no longer read", function()
    local dialer = host:client()
    dialer:send("GET /dial HTTP/1.1\r\nHost: x\r\n\r\n") -- answered only when the session ends
    conns[#conns + 1] = dialer
    helpers.wait_until(function() return written() > 0 end, 5, "the flood to start")
    helpers.flood(host, { seconds = 3, bound_kb = BOUND_KB, step = function() socket.sleep(0.02) end })
    -- paused: within a while, a whole second goes by in which the server writes nothing more
    local last, still = written(), 0
    helpers.wait_until(function()
      socket.sleep(0.25)
      local now = written()
      still = now == last and still + 1 or 0
      last = now
      return still >= 4
    end, 15, "relayhost to stop reading the flooding server")
    -- the script can still end the paused session (as the tunnel does a stalled one)
    assert.equal(200, host:get("/hangup").status)
    dialer:settimeout(5)
    local res = assert(dialer:read_response())
    assert.equal("over", res.body)
  end)
end)
