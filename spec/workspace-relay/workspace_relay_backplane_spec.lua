-- Multi-relay with RELAY_BACKPLANE_MODE=redis against a real redis-server and three relayhost
-- relays: presence keys, the client redirect to the relay holding the daemon, frames crossing
-- relays over the per-relay queues when redirect is off, signed envelopes (forged, replayed and
-- stale ones refused), and Redis going down and coming back while local routing goes on.
local helpers = require "helpers"
local socket = require "socket"
local cjson = require "cjson"
local W = require "workspace_support"

local HMAC = "bus-hmac-key-for-tests-0123456789"

-- redis-server on a free port (tried again if a parallel test took the port first).
local function redis_start(dir, port)
  for _ = 1, 5 do
    local p = port or W.free_port()
    os.execute(("redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no >%s/redis.log 2>&1 & echo $! >%s/redis.pid")
      :format(p, dir, dir))
    local ok = pcall(helpers.wait_until, function()
      local out = io.popen(("redis-cli -p %d PING 2>/dev/null"):format(p)):read("*a")
      return out:match("PONG")
    end, 3)
    if ok then return p, helpers.read_file(dir .. "/redis.pid"):match("%d+") end
  end
  error("could not start redis-server")
end

local function redis_cli(port, ...)
  local args = {}
  for _, a in ipairs { ... } do args[#args + 1] = "'" .. a:gsub("'", "'\\''") .. "'" end
  local p = io.popen(("redis-cli -p %d %s 2>&1"):format(port, table.concat(args, " ")))
  local out = p:read("*a")
  p:close()
  return (out:gsub("\n$", ""))
end

describe("workspace relay backplane (redis)", function()
  local peers, dir, rport, rpid, A, B, C

  local function relay(id, extra)
    return W.start_named(peers, id, { RELAY_BACKPLANE_MODE = "redis", RELAY_REDIS_URL = "redis://127.0.0.1:" .. rport,
                                      RELAY_BUS_ENABLED = "1", RELAY_BUS_HMAC_KEY = HMAC,
                                      RELAY_PRESENCE_SYNC_INTERVAL_MS = "300", RELAY_REDIS_PRESENCE_TTL_MS = "3000",
                                      RELAY_BUS_POLL_INTERVAL_MS = "50" }, extra)
  end

  setup(function()
    dir = helpers.tmpdir()
    rport, rpid = redis_start(dir)
    peers = require("ws_peers").start()
    W.fixture(peers)
    A = relay("relay-a")
    B = relay("relay-b", { RELAY_CLIENT_REDIRECT_ENABLED = "0" })
    C = relay("relay-c", { RELAY_BUS_ENABLED = "0" })
  end)

  teardown(function()
    for _, h in ipairs { A, B, C } do assert.equal(0, h:stop()) end
    peers:stop()
    os.execute("kill " .. rpid)
  end)

  it("publishes the daemon's presence with a TTL", function()
    assert.equal("open", W.connect(peers, A, "da", W.DAEMON_Q, "daemon-token-1"))
    local rec = cjson.decode(helpers.wait_until(function()
      local v = redis_cli(rport, "GET", "viewport:relay:presence:ws1:rt1")
      return v ~= "" and v
    end, 3, "the presence key"))
    assert.same({ "relay-a", A:ws(""):match("^(.-)%?"), true, "rt1" }, { rec.relayId, rec.relayWsBaseUrl, rec.daemonConnected, rec.runtimeTargetId })
    local ttl = tonumber(redis_cli(rport, "PTTL", "viewport:relay:presence:ws1:rt1"))
    assert.is_true(ttl > 0 and ttl <= 3000)
  end)

  it("tells a client on another relay where its daemon is, and the client can follow", function()
    assert.equal("open", W.connect(peers, C, "cr", W.CLIENT_Q, "client-token-a"))
    local st = peers:message("cr")
    assert.same({ "relay_status", "RELAY_REDIRECT", "Workspace is assigned to a different relay instance" },
                { st.type, st.code, st.message })
    assert.equal(A:ws(""):match("^(.-)%?"), st.relayWsBaseUrl)
    assert.is_true(peers:quiet("cr", "close", 0.2)) -- not closed
    peers:open("cr2", st.relayWsBaseUrl .. "?" .. W.CLIENT_Q, W.bearer("client-token-a"))
    assert.equal("open", peers:outcome("cr2"))
    peers:send("cr2", W.kex_init("followed"))
    assert.equal("followed", peers:message("da").requestId)
    assert.equal(1, W.metric(C, "relay_client_redirect_total"))
  end)

  it("carries frames both ways between relays when redirect is off", function()
    assert.equal("open", W.connect(peers, B, "cb", W.CLIENT_Q, "client-token-b"))
    assert.is_true(peers:quiet("cb", "message", 0.3)) -- no redirect
    peers:send("cb", W.kex_init("cross"))
    assert.equal("cross", peers:message("da", 5).requestId)
    peers:send("da", W.kex_response("cross", "sess-cross"))
    assert.equal("sess-cross", peers:message("cb", 5).sessionId)
    peers:send("cb", W.e2ee("sess-cross", 1, "up"))
    assert.equal("up", peers:message("da", 5).ciphertext)
    peers:send("da", W.e2ee("sess-cross", 1, "down"))
    assert.equal("down", peers:message("cb", 5).ciphertext)
    assert.is_true(peers:quiet("cr2", "message", 0.2)) -- A's own client saw none of it
    -- session events: a subscriber on B gets the channel's events from the daemon on A
    assert.equal("open", W.connect(peers, B, "ev", W.CLIENT_Q, "client-token-events"))
    peers:send("ev", { type = "viewport.session_events.subscribe/v1", channel = "agent-session:s1" })
    assert.equal("viewport.session_events.subscribe/v1", peers:message("da", 5).type)
    peers:send("da", { schema = "viewport.session_event_relay_frame/v1", channel = "agent-session:s1", event = { n = 7 } })
    assert.equal(7, peers:message("ev", 5).event.n)
    assert.is_true(peers:quiet("cb", "message", 0.2))
    assert.is_true(W.metric(B, "relay_bus_published_total") >= 2)
    assert.is_true(W.metric(A, "relay_bus_received_total") >= 2)
  end)

  it("says DAEMON_UNAVAILABLE when no relay holds the daemon", function()
    assert.equal("open", W.connect(peers, B, "nb", "role=client&workspaceId=ws1&runtimeTargetId=rt2", "client-token-rt2"))
    peers:send("nb", W.e2ee("s"))
    assert.equal("DAEMON_UNAVAILABLE", peers:message("nb").code)
  end)

  it("refuses forged, replayed and stale envelopes", function()
    local function envelope(issued, payload) return W.envelope(HMAC, "relay-a", issued, payload) end
    local now = math.floor(socket.gettime() * 1000)
    local good = envelope(now, cjson.encode(W.kex_init("via-bus")))
    local before = W.metric(A, "relay_bus_rejected_total")
    redis_cli(rport, "RPUSH", "viewport:relay:queue:relay-a", cjson.encode(good))
    assert.equal("via-bus", peers:message("da", 5).requestId)
    redis_cli(rport, "RPUSH", "viewport:relay:queue:relay-a", cjson.encode(good)) -- replay
    local forged = envelope(now + 1, cjson.encode(W.kex_init("forged")))
    forged.payload = cjson.encode(W.kex_init("swapped"))
    redis_cli(rport, "RPUSH", "viewport:relay:queue:relay-a", cjson.encode(forged))
    redis_cli(rport, "RPUSH", "viewport:relay:queue:relay-a", cjson.encode(envelope(now - 60000, cjson.encode(W.kex_init("stale")))))
    helpers.wait_until(function() return W.metric(A, "relay_bus_rejected_total") == before + 3 end, 5, "three rejections")
    assert.is_true(peers:quiet("da", "message", 0.3))
    local log = A:log()
    for _, why in ipairs { "replay", "bad signature", "clock skew" } do
      assert.matches('"event":"bus_envelope_rejected"[^\n]*"reason":"' .. why .. '"', log)
    end
  end)

  it("keeps routing locally while Redis is down and publishes presence again when it is back", function()
    os.execute("kill " .. rpid)
    helpers.wait_until(function() return not redis_cli(rport, "PING"):match("PONG") end, 3)
    helpers.wait_until(function() return W.metric(A, "relay_presence_errors_total") >= 1 end, 5, "a counted presence error")
    peers:send("cr2", W.kex_init("while-down"))
    assert.equal("while-down", peers:message("da").requestId)
    peers:send("da", W.kex_response("while-down", "sess-down"))
    assert.equal("sess-down", peers:message("cr2").sessionId)
    assert.matches('"event":"presence_error"', A:log())
    rport, rpid = redis_start(dir, rport)
    local rec = helpers.wait_until(function()
      local v = redis_cli(rport, "GET", "viewport:relay:presence:ws1:rt1")
      return v ~= "" and v
    end, 10, "presence after Redis is back")
    assert.equal("relay-a", cjson.decode(rec).relayId)
  end)
end)
