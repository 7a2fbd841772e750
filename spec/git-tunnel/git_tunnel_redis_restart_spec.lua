-- The git tunnel's registry when Redis restarts empty (a redis-server without persistence,
-- killed and started again on the same port): the key's entry (relay:git-tunnel:clients:<key>) is
-- gone, so the server the client is not on cannot forward until the client's server writes it
-- again. Servers re-announce every --presence-ttl / 3 (here 5 s); Redis is restarted right after
-- one of those, the worst moment, and the spec measures how long after Redis answers again a
-- request through the other server is forwarded again. It must be well inside the period (2.5 s of 5: the margin is for a loaded machine, where Redis takes longer to start and the client redials later).
local helpers = require "helpers"
local socket = require "socket"
local env = require "git_tunnel_support"
local rc = require "redis_cluster_support" -- its command() speaks to any one node

local TTL = 15
local ZKEY = "relay:git-tunnel:clients:shared"
local AUTH = { authorization = "Basic YWxpY2U6c2VjcmV0" } -- alice:secret, the git server's

describe("git tunnel when Redis restarts empty", function()
  local dir, web, redis, s1, s2, new_pid

  local function server() return env.start_shared_server("redis://127.0.0.1:" .. redis.port, nil, TTL) end

  setup(function()
    local w = env.git_server()
    dir, web = w.dir, w.web
    redis = env.start_redis(dir)
    s1, s2 = server(), server()
  end)

  teardown(function()
    if new_pid then env.kill(new_pid) end
    env.stop_all_checked()
  end)

  local function pttl() return tonumber((rc.command(redis.port, "PTTL " .. ZKEY)):sub(2)) or -2 end
  -- Returns just after the client's server wrote the entry (its TTL jumps back up): its next
  -- write is a whole period away.
  local function after_sync()
    local last = pttl()
    while true do
      socket.sleep(0.02)
      local now = pttl()
      if now > last + 500 then return end
      last = now
    end
  end

  local function forwarded()
    local res = s2:get("/v1/relay/shared/repo.git/info/refs?service=git-upload-pack", AUTH)
    return res and res.status == 200
  end

  it("forwards through the other server again soon after Redis comes back empty", function()
    local c = env.start_ready_client(s1.port, "shared", env.base_url(web))
    helpers.wait_until(forwarded, 10, "a request forwarded through the other server")
    after_sync()
    os.execute("kill -9 " .. redis.pid)
    local t0 = socket.gettime()
    local port
    port, new_pid = helpers.start_redis(helpers.tmpdir(), redis.port)
    assert.equal(redis.port, port)
    local up = socket.gettime()
    assert.equal(-2, pttl()) -- empty
    local present, ok_at, failures = nil, nil, 0
    local stop = up + TTL / 3 + 3
    while socket.gettime() < stop do
      if not present and pttl() > 0 then present = socket.gettime() - up end
      if forwarded() then ok_at = ok_at or socket.gettime() - up else ok_at, failures = nil, failures + 1 end
      socket.sleep(0.05)
    end
    print(("\ngit tunnel, Redis restarted empty: down %.2f s; the registry entry back %s after Redis answered " ..
           "(re-announce period %.1f s); requests through the other server forwarded again %s after it, %d answered 502 before")
      :format(up - t0, present and ("%.2f s"):format(present) or "never", TTL / 3,
              ok_at and ("%.2f s"):format(ok_at) or "never", failures))
    assert.is_true(present ~= nil and present < 2.5, "the registry entry written again within 2.5 s")
    assert.is_true(ok_at ~= nil and ok_at < 2.5, "forwarded again within 2.5 s")
    c:stop()
  end)

  -- A restart so quick that no call failed looks the same from the server: only the entry is
  -- gone. The server looks for one of its entries every second and writes them again.
  it("writes a registry entry that vanished without an error again within the heal period", function()
    local c = env.start_ready_client(s1.port, "shared", env.base_url(web))
    helpers.wait_until(function() return pttl() > 0 end, 10, "the registry entry")
    after_sync()
    rc.command(redis.port, "DEL " .. ZKEY)
    local t0 = socket.gettime()
    helpers.wait_until(function() return pttl() > 0 end, 10, "the registry entry again")
    local back = socket.gettime() - t0
    print(("\ngit tunnel: a deleted registry entry written again after %.2f s (period %.1f s)"):format(back, TTL / 3))
    assert.is_true(back < 2.5, ("back after %.2f s"):format(back))
    assert.matches('"event":"presence_reannounced"', s1:log())
    c:stop()
  end)
end)
