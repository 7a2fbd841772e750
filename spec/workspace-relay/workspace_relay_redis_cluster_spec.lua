-- The workspace relay's Redis backplane on a real Redis Cluster (3 primaries, 3 replicas): two
-- relays given the cluster's seeds in RELAY_REDIS_URL (redis://host:port,host:port), the daemon
-- on one, a client on the other with redirect off, so that every frame crosses the bus. Then the
-- primary holding the presence key and both relays' queues is killed mid-test: once a replica is
-- promoted, frames cross again both ways. The spec prints how long they could not, and what the
-- client was told meanwhile.
--
-- The relay ids are chosen so that the queues (viewport:relay:queue:<relayId>) hash to the same
-- primary as the presence key (viewport:relay:presence:ws1:rt1): one kill takes all three.
local helpers = require "helpers"
local socket = require "socket"
local W = require "workspace_support"
local X = require "workspace_crossing"
local rc = require "redis_cluster_support"

local PRESENCE = "viewport:relay:presence:ws1:rt1"

-- The key's slot, as the first live node says.
local function slot(cluster, key)
  for _, p in ipairs(cluster.ports) do
    local ok, line = pcall(rc.command, p, "CLUSTER KEYSLOT " .. key)
    if ok and line then return tonumber(line:sub(2)) end
  end
end

-- The first relay id <base>-<n> whose queue lives on the primary at port.
local function id_on(cluster, base, port)
  for n = 1, 200 do
    local id = base .. "-" .. n
    if cluster:owner(slot(cluster, "viewport:relay:queue:" .. id)) == port then return id end
  end
  error("no relay id with its queue on " .. port)
end

describe("workspace relay with two relays on a Redis Cluster", function()
  local pair, peers, cluster, A, B, primary, ids

  setup(function()
    cluster = rc.start { replicas = 1 }
    primary = cluster:owner(slot(cluster, PRESENCE))
    ids = { a = id_on(cluster, "relay-a", primary), b = id_on(cluster, "relay-b", primary) }
    pair = X.start("redis://" .. cluster.seeds, { ids.a, ids.b },
                   { RELAY_PRESENCE_SYNC_INTERVAL_MS = "3000", RELAY_REDIS_PRESENCE_TTL_MS = "9000" })
    peers, A, B = pair.peers, pair.A, pair.B
  end)

  teardown(function()
    local ok, err = true, nil
    if pair then ok, err = pair.stop() end
    if cluster then cluster:stop() end
    assert(ok, err)
  end)

  it("carries frames both ways, and again after the keys' primary fails over", function()
    assert.equal("open", W.connect(peers, A, "da", W.DAEMON_Q, "daemon-token-1"))
    helpers.wait_until(function()
      local _, v = rc.command(primary, "GET " .. PRESENCE)
      return v and v:find(ids.a, 1, true)
    end, 5, "the daemon's presence on the cluster")
    assert.equal("open", W.connect(peers, B, "cb", W.CLIENT_Q, "client-token-b"))
    X.session(peers, "cb", "da", "sess-cluster")
    local probe = X.new(peers, "cb", "da", "sess-cluster")
    probe:until_answered(10, 10, "before the failover")

    cluster:kill(primary)
    local t0 = socket.gettime()
    local promoted
    while not promoted do
      probe:step()
      local ok, owner = pcall(cluster.owner, cluster, slot(cluster, PRESENCE))
      promoted = ok and owner and owner ~= primary
      assert(socket.gettime() - t0 < 30, "a replica promoted within 30 s")
    end
    local promoted_at = socket.gettime()
    probe:until_answered(1, 30, "after the failover")
    local back = probe.last - promoted_at
    probe:until_answered(20, 30, "after the failover")
    probe:run(1)
    print(("\nworkspace relay on a Redis Cluster: replica promoted %.2f s after the kill, frames crossed again %.2f s " ..
           "after that; %s"):format(promoted_at - t0, back, probe:summary()))
    if os.getenv("WS_DEBUG") then print(A:log()); print(B:log()) end
    -- Once the map is read again (about 1 s), the next pull finds the queue: the relays do not
    -- sit out a backoff grown while the node was down.
    assert.is_true(back < 3, ("frames crossed again %.2f s after the promotion"):format(back))
    assert.is_true(W.metric(B, "relay_bus_published_total") > 0)
    assert.is_true(W.metric(A, "relay_bus_received_total") > 0)
  end)
end)
