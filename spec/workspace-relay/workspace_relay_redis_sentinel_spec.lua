-- The workspace relay's Redis backplane behind Redis Sentinel: two relays given
-- RELAY_REDIS_URL=redis-sentinel://host:port,host:port/mymaster (a primary, a replica, three
-- sentinels), the daemon on one, a client on the other with redirect off, so that every frame
-- crosses the bus. Then the primary is killed (SIGKILL) mid-test: once the sentinels have promoted
-- the replica and the relays have followed it, frames cross again both ways. The spec prints how
-- long they could not, and what the client was told meanwhile.
local helpers = require "helpers"
local socket = require "socket"
local W = require "workspace_support"
local X = require "workspace_crossing"
local rs = require "redis_sentinel_support"

-- CI time: the plain build only (the Sentinel client itself runs under ASan in
-- spec/core/redis_sentinel_spec.lua, failover included).
if helpers.asan() then
  pending("workspace relay on Sentinel: plain build only")
  return
end

-- RELAY_REDIS_URL is checked against the schemes its declaration names.
local function takes_sentinel_urls()
  for _, f in ipairs(require("relay.workspace.config").flags) do
    if f.env == "RELAY_REDIS_URL" then
      for _, s in ipairs(f.schemes or {}) do if s == "redis-sentinel" then return true end end
    end
  end
  return false
end
if not takes_sentinel_urls() then
  pending("RELAY_REDIS_URL does not take redis-sentinel:// yet (lua/relay/workspace/config.lua: its schemes)")
  return
end

describe("workspace relay with two relays on a Sentinel-backed Redis", function()
  local pair, peers, sentinel

  setup(function()
    sentinel = rs.start()
    pair = X.start(sentinel.url, { "relay-a", "relay-b" },
                   { RELAY_PRESENCE_SYNC_INTERVAL_MS = "3000", RELAY_REDIS_PRESENCE_TTL_MS = "9000" })
    peers = pair.peers
  end)

  teardown(function()
    local ok, err = true, nil
    if pair then ok, err = pair.stop() end
    if sentinel then sentinel:stop() end
    assert(ok, err)
  end)

  it("carries frames both ways, and again after the sentinels fail the primary over", function()
    assert.equal("open", W.connect(peers, pair.A, "da", W.DAEMON_Q, "daemon-token-1"))
    helpers.wait_until(function()
      return rs.cli(sentinel.primary.port, "GET viewport:relay:presence:ws1:rt1"):find("relay-a", 1, true)
    end, 5, "the daemon's presence on the primary")
    assert.equal("open", W.connect(peers, pair.B, "cb", W.CLIENT_Q, "client-token-b"))
    X.session(peers, "cb", "da", "sess-sentinel")
    local probe = X.new(peers, "cb", "da", "sess-sentinel")
    probe:until_answered(10, 10, "before the failover")

    local t0 = sentinel:kill_primary()
    local stop = t0 + 30
    while not sentinel:promoted() do
      assert(socket.gettime() < stop, "the sentinels promoted the replica within 30 s")
      probe:step()
    end
    local promoted_at = socket.gettime()
    probe:until_answered(1, 30, "after the failover")
    local back = probe.last - promoted_at
    probe:until_answered(20, 30, "after the failover")
    probe:run(1)
    print(("\nworkspace relay on Sentinel: replica promoted %.2f s after the kill, frames crossed again %.2f s " ..
           "after that; %s"):format(promoted_at - t0, back, probe:summary()))
    assert.is_true(back < 5, ("frames crossed again %.2f s after the promotion"):format(back))
    assert.is_true(W.metric(pair.B, "relay_bus_published_total") > 0)
    assert.is_true(W.metric(pair.A, "relay_bus_received_total") > 0)
  end)
end)
