-- The flag proxy's primary and read replica through Redis Sentinel (REDIS_ADDRESS =
-- redis-sentinel://host:port,host:port/mymaster): a Redis primary, one replica and three
-- sentinels (down-after-milliseconds 1 s). A change reaches an SDK client of the replica; then the
-- Redis primary is killed (SIGKILL) and a change is made at that moment: the spec measures how long
-- until it reaches the client (the sentinels' promotion, then the flag proxy's rewrite), and what
-- the client got meanwhile.
local helpers = require "spec.helpers"
local rs = require "redis_sentinel_support"
local fr = require "flag_redis_support"

describe("flag proxy through Redis Sentinel: primary and read replica", function()
  local sentinel, primary, replica, dir

  setup(function()
    dir = helpers.tmpdir()
    sentinel = rs.start()
    primary, replica = fr.pair(dir, sentinel.url)
  end)
  teardown(function()
    local bad = fr.stop_pair(primary, replica)
    if sentinel then sentinel:stop() end
    assert(not bad, bad)
  end)

  it("a change reaches the replica's SDK client, and again while the sentinels fail the Redis primary over", function()
    fr.through_failover {
      primary = primary, replica = replica, dir = dir, label = "Redis Sentinel, the Redis primary killed",
      kill = function() sentinel:kill_primary() end,
      promoted = function() return sentinel:promoted() end,
      state = function() return { promoted = sentinel:promoted() } end,
    }
  end)
end)
