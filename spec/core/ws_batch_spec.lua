-- What core/lua/lua_ws.c writes for its C consumers (the workspace relay's hub fan-out) waits for
-- the end of the loop's turn and goes out in one write per socket, and core/ws answers control
-- frames without wslay. Pinned here with raw clients against the workspace relay:
--   * a daemon's burst of E2EE frames, written to the relay at once, reaches the session's owner
--     byte for byte and in order, interleaved with the client's own pings;
--   * a ping from each of 1,000 held clients, sent together, is answered to every one with its
--     payload, whole or split across writes, and pongs nobody asked for change nothing.
local cjson = require "cjson"
local raw = require "ws_raw"
local socket = require "socket"
local W = require "workspace_support"

local OPEN = { RELAY_DAEMON_RUNTIME_RATE_PER_MINUTE = "100000000", RELAY_RUNTIME_RATE_PER_MINUTE = "100000000",
               RELAY_UPGRADE_RATE_PER_MINUTE = "100000000", RELAY_MAX_CONNECTIONS_PER_IP = "100000",
               RELAY_MAX_CLIENTS_PER_WORKSPACE = "100000", RELAY_MAX_TOTAL_CONNECTIONS = "100000" }

local function text(t) return raw.frame(raw.TEXT, cjson.encode(t)) end

-- The relay, stopped when the test ends, passed or not (a failed assertion must not leave it
-- running); stop() returns its exit status once.
local function start(peers)
  local h = W.start(peers, OPEN)
  local stopped
  local function stop() if not stopped then stopped = true return h:stop() end end
  finally(stop)
  return h, stop
end

local function open(h, query, token)
  return assert(raw.open(h.port, "/ws?" .. query, W.bearer(token)))
end

-- The next text frame whose payload contains `what`.
local function text_with(conn, what)
  return assert(conn:read_until(function(op, p) return op == raw.TEXT and p:find(what, 1, true) end, 5))
end

describe("WebSocket writes batched per loop turn", function()
  local peers

  setup(function()
    peers = require("ws_peers").start()
    W.fixture(peers)
  end)
  teardown(function() peers:stop() end)

  it("delivers a daemon's burst of E2EE frames to their owner whole and in order", function()
    local h, stop = start(peers)
    local d, c = open(h, W.DAEMON_Q, "daemon-token-1"), open(h, W.CLIENT_Q, "client-token-a")
    c:push(text(W.kex_init("rq1")))
    text_with(d, '"rq1"')
    d:push(text(W.kex_response("rq1", "s1")))
    text_with(c, "relay_key_exchange_response")
    local N, want, burst = 3000, {}, {}
    for i = 1, N do -- sizes vary so that frames straddle the relay's reads and writes
      want[i] = cjson.encode(W.e2ee("s1", i, ("c%d-%s"):format(i, ("x"):rep(i % 700))))
      burst[#burst + 1] = raw.frame(raw.TEXT, want[i])
      if i % 500 == 0 then burst[#burst + 1] = raw.frame(raw.PING, "p" .. i) end
    end
    d.pending = table.concat(burst) -- ~1.1 MB, pushed as the relay takes it
    local got, pongs, deadline = 0, 0, socket.gettime() + 30
    while got < N and socket.gettime() < deadline do
      d:push()
      local op, p = c:read_frame(0.05)
      if op == raw.TEXT then
        got = got + 1
        assert(p == want[got], ("frame %d differs: %d bytes, want %d"):format(got, #p, #want[got]))
      end
    end
    assert.equal(N, got)
    repeat d:push() until d.pending == "" or socket.gettime() > deadline
    for i = 500, N, 500 do -- the daemon's pings were answered on its own socket, in order
      assert.same({ raw.PONG, "p" .. i }, { d:read_until(function(op) return op == raw.PONG end, 5) })
      pongs = pongs + 1
    end
    assert.equal(N / 500, pongs)
    d:close()
    c:close()
    assert.equal(0, stop())
  end)

  it("answers a ping from each of 1,000 held clients, whole or split, and ignores their pongs", function()
    local h, stop = start(peers)
    local conns = {}
    for i = 1, 1000 do
      conns[i] = open(h, W.CLIENT_Q, "client-token-a")
    end
    for _, c in ipairs(conns) do c:push(raw.frame(raw.PONG, "unasked")) end
    for i, c in ipairs(conns) do c:push(raw.frame(raw.PING, "ping-" .. i)) end
    for i, c in ipairs(conns) do
      local op, p = c:read_frame(10)
      assert.same({ raw.PONG, "ping-" .. i }, { op, p })
    end
    -- a ping cut after its header, then its payload: the relay waits for the rest
    local split = raw.frame(raw.PING, ("s"):rep(125))
    for _, c in ipairs(conns) do c:push(split:sub(1, 7)) end
    socket.sleep(0.1)
    for _, c in ipairs(conns) do c:push(split:sub(8)) end
    for i, c in ipairs(conns) do
      local op, p = c:read_frame(10)
      assert.same({ raw.PONG, ("s"):rep(125) }, { op, p }, "client " .. i)
    end
    for _, c in ipairs(conns) do c:close() end
    assert.equal(0, stop())
  end)
end)
