-- The git tunnel's registry behind Redis Sentinel: two relay-servers given
-- --redis-address=redis-sentinel://host:port,host:port/mastername, the client on one, git through
-- the other; then the primary is killed mid-test (SIGKILL) and, once the sentinels have promoted
-- the replica (and the servers have followed it and re-announced, every --presence-ttl / 3), git
-- clone through the other server works again.
local helpers = require "helpers"
local socket = require "socket"
local env = require "git_tunnel_support"
local rs = require "redis_sentinel_support"

-- CI time: the plain build only. The Sentinel client itself runs under ASan in
-- spec/core/redis_sentinel_spec.lua, failover included.
if helpers.asan() then
  pending("git tunnel on Sentinel: plain build only")
  return
end

describe("git tunnel with two servers on a Sentinel-backed Redis", function()
  local dir, web, sentinel, s1, s2

  local function server() return env.start_shared_server(sentinel.url) end

  setup(function()
    local w = env.git_server()
    dir, web = w.dir, w.web
    sentinel = rs.start()
    s1, s2 = server(), server()
  end)

  teardown(function()
    local ok, err = pcall(env.stop_all_checked)
    if sentinel then sentinel:stop() end
    assert(ok, err)
  end)

  local n = 0
  local function clone()
    n = n + 1
    local to = ("%s/clone%d"):format(helpers.tmpdir(), n)
    local _, code = env.git(("clone %s %s"):format(env.url(s2, "shared", "/repo.git"), to))
    return code == 0 and helpers.read_file(to .. "/.git/HEAD") ~= nil
  end

  it("clones through the registry, and again after a failover", function()
    local c = env.start_ready_client(s1.port, "shared", env.base_url(web))
    helpers.wait_until(clone, 10, "git clone through the other server")
    local t0 = sentinel:kill_primary()
    helpers.wait_until(function() return sentinel:promoted() end, 30, "the sentinels to promote the replica")
    local promoted = socket.gettime() - t0
    helpers.wait_until(clone, 20, "git clone through the other server after the failover")
    print(("\ngit tunnel on Sentinel: the replica was promoted %.2f s after the primary was killed; " ..
      "git clone through the other server worked again %.2f s after the kill"):format(promoted, socket.gettime() - t0))
    c:stop()
  end)
end)
