-- Two relay-servers sharing a real redis-server: the client registers with one, git goes to the
-- other, which finds the key's server in Redis and forwards the request there (bodies streamed
-- both ways). Without Redis, local clients keep working and remote keys answer 502 saying why.
local helpers = require "helpers"
local env = require "git_tunnel_support"

describe("git tunnel with two servers and Redis", function()
  local dir, web, redis, s1, s2

  local function server() return env.start_shared_server("redis://127.0.0.1:" .. redis.port) end

  setup(function()
    local w = env.git_server()
    dir, web = w.dir, w.web
    redis = env.start_redis(dir)
    s1, s2 = server(), server()
  end)

  teardown(env.stop_all_checked)

  it("clones and pushes through the server the client is not on", function()
    local c = env.start_ready_client(s1.port, "shared", env.base_url(web))
    local out, rc = env.git(("clone -q %s %s/via2"):format(env.url(s2, "shared", "/repo.git"), dir))
    assert.equal(0, rc, out)
    assert.equal("hello\n", helpers.read_file(dir .. "/via2/a.txt"))
    helpers.write_file(dir .. "/via2/c.txt", "through two servers\n")
    out, rc = env.commit(dir .. "/via2", "c.txt", "c", "origin HEAD:master")
    assert.equal(0, rc, out)
    assert.equal("through two servers\n", env.must(("git --git-dir=%s/repos/repo.git show master:c.txt"):format(dir)))
    assert.matches('relay_server_requests_total{outcome="forwarded"} %d', s2:get("/metrics").body)
    assert.matches('relay_server_requests_total{outcome="ok"} %d', s1:get("/metrics").body)
    -- a key nobody holds, and a key whose only client left
    local res = s2:get("/v1/relay/nobody/x")
    assert.equal(502, res.status)
    assert.matches("no relay client for key 'nobody' on this server, and no other server holds it either", res.body)
    c:stop()
    helpers.wait_until(function() return s2:get("/v1/relay/shared/repo.git/info/refs").status == 502 end, 5)
  end)

  it("keeps local clients working without Redis, and says why remote keys fail", function()
    local c = env.start_ready_client(s1.port, "local", env.base_url(web))
    env.kill(redis.pid)
    helpers.wait_until(function() return not env.sh("redis-cli -p " .. redis.port .. " ping"):match("PONG") end, 5)
    local res = s2:get("/v1/relay/local/repo.git/info/refs")
    assert.equal(502, res.status)
    assert.matches("no relay client for key 'local' on this server, and Redis is unreachable", res.body)
    local out, rc = env.git(("ls-remote %s"):format(env.url(s1, "local", "/repo.git")))
    assert.equal(0, rc, out)
    assert.matches("refs/heads/master", out)
    c:stop()
  end)
end)
