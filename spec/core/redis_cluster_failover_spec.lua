-- relay.redis through a Redis Cluster failover: 3 primaries with a replica each; the primary
-- holding a key is killed (SIGKILL), its replica is promoted (cluster-node-timeout 1 s), and the
-- client, which only ever got the seed list, reads the new slot map and carries on.
local helpers = require "helpers"
local cjson = require "cjson"
local socket = require "socket"
local rc = require "redis_cluster_support"

local escape = helpers.url_escape

describe("relay.redis through a Redis Cluster failover", function()
  local dir, cluster, host

  setup(function()
    dir = helpers.tmpdir()
    cluster = rc.start { replicas = 1 }
    helpers.write_file(dir .. "/r.lua", ([[
local relay = require "relay"
local cjson = require "cjson"
local app = relay.new { name = "redis-cluster-failover" }
local r = relay.redis("SEEDS")
local sub, got = relay.redis("SEEDS"), {} -- subscribes on the first seed's node
sub:subscribe("news", function(msg) got[#got + 1] = msg end)
app:get("/got", function(req, res) res:json(200, { n = #got, ready = sub:ready() }) end) -- holds sub
app:get("/call", function(req, res)
  local v, err = r:call(unpack(cjson.decode(req.args.a)))
  res:json(200, { v = v, err = err })
end)
return app
]]):gsub("SEEDS", cluster.seeds))
    host = helpers.start(dir .. "/r.lua")
  end)

  teardown(function()
    if host then assert.equal(0, host:stop()) end
    if cluster then cluster:stop() end
  end)

  local function call(args)
    return cjson.decode(host:get("/call?a=" .. escape(cjson.encode(args))).body)
  end

  it("reads the new map and carries on once a replica is promoted", function()
    helpers.wait_until(function() return call({ "SET", "foo", "before" }).v == "OK" end, 10, "the cluster answers")
    local primary = cluster:owner(12182)
    assert.equal(1, helpers.redis_set_replicated(primary, "foo", "before")) -- the replica has it
    cluster:kill(primary)
    local t0 = socket.gettime()
    local errors, last = 0, nil
    local function get()
      local r = call({ "GET", "foo" })
      if r.v ~= "before" then errors, last = errors + 1, r.err or ("answered " .. tostring(r.v)) end
      return r.v == "before"
    end
    -- Two clocks: the cluster's own promotion (gossip and an election: seconds, more under load),
    -- then the client's lag behind it, which is what this spec is about. The client is asked all
    -- along, so it fails through the whole failover first.
    -- owner() is nil when no primary lists the slot: not promoted yet.
    local function promoted_owner()
      local o = cluster:owner(12182)
      return o and o ~= primary
    end
    helpers.wait_until(function() return get() or promoted_owner() end, 60, "the cluster promoting the replica")
    local promoted = socket.gettime()
    local ok, why = pcall(helpers.wait_until, get, 10, "GET foo answered by the promoted replica")
    -- Say whether the cluster or the client was late: who owns the slot now, and the last error.
    assert(ok, ("%s (slot 12182 now on %s; %d errors, the last: %s)"):format(
      tostring(why), tostring(cluster:owner(12182)), errors, tostring(last)))
    local done = socket.gettime()
    -- The node asked may learn of the promotion after the client did (gossip): wait for it.
    helpers.wait_until(promoted_owner, 10, "the cluster agreeing on the new primary")
    assert.same({ v = "OK" }, call({ "SET", "foo", "after" }))
    assert.same({ v = "after" }, call({ "GET", "foo" }))
    print(("\nfailover: promoted %.2f s after the kill; GET foo failed %d times, then was answered %.2f s later")
      :format(promoted - t0, errors, done - promoted))
  end)

  it("moves the subscription to another node when the node it was on dies", function()
    local function got() return cjson.decode(host:get("/got").body).n end
    helpers.wait_until(function()
      call({ "PUBLISH", "news", "before" })
      return got() > 0
    end, 10, "the subscription to hear a message")
    cluster:kill(cluster.ports[1]) -- the first seed, where the subscription is
    local n0 = got()
    helpers.wait_until(function()
      call({ "PUBLISH", "news", "after" }) -- classic pub/sub reaches every node of a cluster
      return got() > n0
    end, 15, "the subscription to hear a message after its node died")
  end)
end)
