-- The git tunnel's registry on a Redis Cluster: two relay-servers given the cluster's seed list
-- as --redis-address (host:port,host:port), the client on one, git through the other; then the
-- primary holding the key's registry entry is killed mid-test and, once its replica is promoted
-- (and the servers have re-announced, every --presence-ttl / 3), git through the other server
-- works again.
local helpers = require "helpers"
local socket = require "socket"
local env = require "git_tunnel_support"
local rc = require "redis_cluster_support"

describe("git tunnel with two servers on a Redis Cluster", function()
  local dir, web, cluster, s1, s2

  local function server() return env.start_shared_server(cluster.seeds) end

  setup(function()
    local w = env.git_server()
    dir, web = w.dir, w.web
    cluster = rc.start { replicas = 1 }
    s1, s2 = server(), server()
  end)

  teardown(function()
    local ok, err = pcall(env.stop_all_checked)
    if cluster then cluster:stop() end
    assert(ok, err)
  end)

  local function ls_remote()
    local out, code = env.git(("ls-remote %s"):format(env.url(s2, "shared", "/repo.git")))
    return code == 0 and out:find("refs/heads/master", 1, true) ~= nil
  end

  it("forwards through the cluster's registry, and again after a failover", function()
    local c = env.start_ready_client(s1.port, "shared", env.base_url(web))
    helpers.wait_until(ls_remote, 10, "git through the other server")
    local slot = tonumber((rc.command(cluster.ports[1], "CLUSTER KEYSLOT relay:git-tunnel:clients:shared")):sub(2))
    local primary = cluster:owner(slot)
    cluster:kill(primary)
    local t0 = socket.gettime()
    helpers.wait_until(function() return cluster:owner(slot) ~= primary end, 20, "a replica promoted")
    helpers.wait_until(ls_remote, 20, "git through the other server after the failover")
    print(("\ngit tunnel: ls-remote through the other server works again %.2f s after the primary was killed")
      :format(socket.gettime() - t0))
    c:stop()
  end)
end)
