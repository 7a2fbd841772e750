-- The flag proxy's primary and read replica on a real Redis Cluster (3 primaries, 3 replicas),
-- given the seeds as ff-proxy's own cluster form of REDIS_ADDRESS (host:port,host:port). ff-proxy
-- v2's key layout is kept (no hash tags: every command names one key). A change on the primary
-- reaches an SDK client of the replica; then the node holding proxy:sse_events (the replica's
-- feed) is killed, a change is made at that moment, and the spec measures how long until it
-- reaches the client, and what the client saw meanwhile.
local helpers = require "spec.helpers"
local rc = require "redis_cluster_support"
local fr = require "flag_redis_support"

describe("flag proxy on a Redis Cluster: primary and read replica", function()
  local cluster, primary, replica, dir

  setup(function()
    dir = helpers.tmpdir()
    cluster = rc.start { replicas = 1 }
    primary, replica = fr.pair(dir, cluster.seeds)
  end)
  teardown(function()
    local bad = fr.stop_pair(primary, replica)
    if cluster then cluster:stop() end
    assert(not bad, bad)
  end)

  it("a change reaches the replica's SDK client, and again while the node holding its feed fails over", function()
    local slot = tonumber((rc.command(cluster.ports[1], "CLUSTER KEYSLOT proxy:sse_events")):sub(2))
    local victim = cluster:owner(slot)
    fr.through_failover {
      primary = primary, replica = replica, dir = dir, label = "a Redis Cluster, node of proxy:sse_events killed",
      kill = function() cluster:kill(victim) end,
      promoted = function() return cluster:owner(slot) ~= victim end,
      state = function() return { owner = cluster:owner(slot), victim = victim } end,
    }
  end)
end)
