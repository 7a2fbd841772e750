-- The workspace relay's limits with real node `ws` peers: upgrade rate, total / per-IP /
-- per-workspace connection caps (with --trusted-proxies), frame rate limits closing 4008 with the
-- original's reasons, a slow client cut off without slowing the others, ping/pong and idle.
local cjson = require "cjson"
local W = require "workspace_support"

local with_admin = W.with_admin

describe("workspace relay limits", function()
  local peers

  setup(function()
    peers = require("ws_peers").start()
    W.fixture(peers)
  end)
  teardown(function() peers:stop() end)

  it("refuses upgrades over RELAY_UPGRADE_RATE_PER_MINUTE per address with 429", function()
    local h = W.start(peers, with_admin { RELAY_UPGRADE_RATE_PER_MINUTE = "3" })
    for i = 1, 3 do assert.equal(400, W.connect(peers, h, "r" .. i, "role=nobody", "client-token-a")) end
    -- the log names the field of the query that did not fit
    assert.truthy(h:log():find('"event":"upgrade_invalid_query"[^\n]*role: expected one of \\"workspace%-daemon\\", \\"client\\", \\"worker\\", got \\"nobody\\"'), h:log())
    assert.equal(429, W.connect(peers, h, "r4", W.CLIENT_Q, "client-token-a"))
    assert.equal(1, W.metric(h, "relay_upgrade_rate_limited_total"))
    assert.equal(0, h:stop())
  end)

  it("answers 503 at RELAY_MAX_TOTAL_CONNECTIONS, then 429 at RELAY_MAX_CONNECTIONS_PER_IP, then 429 per workspace", function()
    local h = W.start(peers, with_admin { RELAY_MAX_TOTAL_CONNECTIONS = "3", RELAY_MAX_CONNECTIONS_PER_IP = "2",
                                          RELAY_MAX_CLIENTS_PER_WORKSPACE = "1" }, { "--trusted-proxies=127.0.0.1/32" })
    local xff = function(ip) return { ["x-forwarded-for"] = ip } end
    assert.equal("open", W.connect(peers, h, "n1", W.CLIENT_Q, "client-token-a", xff("10.0.0.1")))
    -- the workspace already has its one client
    assert.equal(429, W.connect(peers, h, "n2", W.CLIENT_Q, "client-token-b", xff("10.0.0.2")))
    assert.equal(1, W.metric(h, "relay_upgrade_rejected_workspace_clients_total"))
    assert.equal("open", W.connect(peers, h, "n3", W.DAEMON_Q, "daemon-token-1", xff("10.0.0.1")))
    -- 10.0.0.1 holds two: its third is refused, another address is not
    assert.equal(429, W.connect(peers, h, "n4", "role=client&workspaceId=ws1&runtimeTargetId=rt2", "client-token-rt2", xff("10.0.0.1")))
    assert.equal(1, W.metric(h, "relay_upgrade_rejected_ip_connections_total"))
    assert.equal("open", W.connect(peers, h, "n5", "role=client&workspaceId=ws1&runtimeTargetId=rt2", "client-token-rt2", xff("10.0.0.3")))
    assert.equal(503, W.connect(peers, h, "n6", "role=client&workspaceId=ws1&runtimeTargetId=rt2", "client-token-rt2", xff("10.0.0.4")))
    assert.equal(1, W.metric(h, "relay_upgrade_rejected_total_connections_total"))
    -- a closed connection frees its place
    peers:cmd { op = "close", id = "n5", code = 1000 }
    peers:wait("n5", "close")
    require("helpers").wait_until(function()
      return W.connect(peers, h, "n7-" .. tostring(os.clock()), "role=client&workspaceId=ws1&runtimeTargetId=rt2",
                       "client-token-rt2", xff("10.0.0.4")) == "open"
    end, 3, "a freed place")
    assert.equal(0, h:stop())
  end)

  it("closes 4008 with the original's reasons when frame rates are exceeded", function()
    local h = W.start(peers, with_admin { RELAY_KEX_INIT_RATE_PER_MINUTE = "2", RELAY_PAIRING_RATE_PER_MINUTE = "1",
                                          RELAY_RUNTIME_RATE_PER_MINUTE = "3", RELAY_DAEMON_RUNTIME_RATE_PER_MINUTE = "4" })
    assert.equal("open", W.connect(peers, h, "d", W.DAEMON_Q, "daemon-token-1"))
    assert.equal("open", W.connect(peers, h, "k", W.CLIENT_Q, "client-token-a"))
    for i = 1, 3 do peers:send("k", W.kex_init("rq" .. i)) end
    local c = peers:wait("k", "close")
    assert.same({ 4008, "key exchange rate limit exceeded" }, { c.code, c.reason })
    for i = 1, 2 do assert.equal("rq" .. i, peers:message("d").requestId) end
    assert.is_true(peers:quiet("d", "message", 0.2)) -- the third never reached the daemon

    assert.equal("open", W.connect(peers, h, "e", W.CLIENT_Q, "client-token-b"))
    for i = 1, 4 do peers:send("e", W.e2ee("s", i)) end
    c = peers:wait("e", "close")
    assert.same({ 4008, "runtime rate limit exceeded" }, { c.code, c.reason })

    assert.equal("open", W.connect(peers, h, "p", W.CLIENT_Q, "client-token-pairing"))
    for i = 1, 2 do peers:send("p", W.pairing_offer("pr" .. i)) end
    c = peers:wait("p", "close")
    assert.same({ 4008, "pairing rate limit exceeded" }, { c.code, c.reason })

    peers:cmd { op = "flood", id = "d", json = W.e2ee("s"), count = 5 }
    c = peers:wait("d", "close")
    assert.same({ 4008, "daemon rate limit exceeded" }, { c.code, c.reason })
    assert.equal(1, W.metric(h, "relay_frames_daemon_rate_limited_total"))
    assert.equal(0, h:stop())
  end)

  it("holds a worker to the daemon limit: 4008, and the frames over it counted", function()
    local h = W.start(peers, with_admin { RELAY_DAEMON_RUNTIME_RATE_PER_MINUTE = "2" })
    assert.equal("open", W.connect(peers, h, "wk", "role=worker&workspaceId=ws1&runtimeTargetId=rt1", "worker-token-1"))
    peers:cmd { op = "flood", id = "wk", json = W.e2ee("s"), count = 5 }
    local c = peers:wait("wk", "close")
    assert.same({ 4008, "daemon rate limit exceeded" }, { c.code, c.reason })
    assert.equal(1, W.metric(h, "relay_frames_daemon_rate_limited_total"))
    assert.equal(0, h:stop())
  end)

  it("cuts off a client that stops reading (4008 buffer overflow) while the others keep getting their frames", function()
    local h = W.start(peers, with_admin { RELAY_MAX_PENDING_BYTES = "262144", RELAY_DAEMON_RUNTIME_RATE_PER_MINUTE = "1000000" })
    assert.equal("open", W.connect(peers, h, "d4", W.DAEMON_Q, "daemon-token-1"))
    assert.equal("open", W.connect(peers, h, "slow", W.CLIENT_Q, "client-token-a"))
    assert.equal("open", W.connect(peers, h, "fast", W.CLIENT_Q, "client-token-b"))
    for _, p in ipairs { { "slow", "rs", "ss" }, { "fast", "rf", "sf" } } do
      peers:send(p[1], W.kex_init(p[2]))
      assert.equal(p[2], peers:message("d4").requestId)
      peers:send("d4", W.kex_response(p[2], p[3]))
      assert.equal(p[3], peers:message(p[1]).sessionId)
    end
    peers:cmd { op = "pause", id = "slow" }
    peers:cmd { op = "quiet", id = "fast" }
    local blob = ("z"):rep(16 * 1024)
    -- 64 MiB for the slow one, far past what the kernel buffers hold; 1000 frames for the fast one
    peers:cmd { op = "flood", id = "d4", json = W.e2ee("ss", 1, blob), count = 4000 }
    peers:cmd { op = "flood", id = "d4", json = W.e2ee("sf", 1, "small"), count = 1000 }
    -- (its count includes the key exchange answer)
    require("helpers").wait_until(function() return peers:stats("fast") == 1001 end, 20, "the fast client's 1000 frames")
    require("helpers").wait_until(function() return W.metric(h, "relay_ws_slow_client_terminated_total") == 1 end, 5)
    assert.matches('"event":"slow_client_terminated"', h:log())
    peers:cmd { op = "quiet", id = "slow" }
    peers:cmd { op = "resume", id = "slow" }
    local c = peers:wait("slow", "close", 10)
    -- it either read its way to the close frame in time, or was dropped after the 2 s grace
    assert.is_true((c.code == 4008 and c.reason == "buffer overflow") or c.code == 1006, cjson.encode(c))
    assert.is_true(peers:stats("slow") < 4000)
    assert.equal(0, h:stop())
  end)

  it("pings, terminates a peer that stops answering, and one that stays idle", function()
    local h = W.start(peers, with_admin { RELAY_PING_INTERVAL_MS = "400", RELAY_PONG_TIMEOUT_MS = "350",
                                          RELAY_IDLE_TIMEOUT_MS = "1500" })
    assert.equal("open", W.connect(peers, h, "idle", W.CLIENT_Q, "client-token-a"))
    assert.equal("open", W.connect(peers, h, "mute", W.CLIENT_Q, "client-token-b"))
    peers:cmd { op = "pause", id = "mute" } -- reads nothing, so answers no ping
    require("helpers").wait_until(function() return W.metric(h, "relay_ws_stale_terminated_total") == 1 end, 5)
    peers:cmd { op = "resume", id = "mute" }
    assert.equal(1006, peers:wait("mute", "close").code)
    -- "idle" answered every ping (node ws does) but sent no message for 1.5 s
    local c = peers:wait("idle", "close", 5)
    assert.equal(1006, c.code)
    assert.equal(1, W.metric(h, "relay_ws_idle_terminated_total"))
    assert.equal(0, h:stop())
  end)
end)
