-- scripts/flag-proxy.lua with a Redis that stops answering while its connection stays up (a
-- stopped process, a partition that drops packets): the primary's writes and the replica's reads
-- wait on it, and /health must say so instead of "healthy".
local helpers = require "spec.helpers"
local cjson = require "cjson"

local F = dofile(helpers.fixture("flag_proxy.lua"))
local ENV = F.ENV

local function cache_status(host)
  local res = host:get("/health")
  local h = cjson.decode(res.body)
  return h.cacheStatus, h.cacheError
end

describe("flag proxy with a Redis that stops answering", function()
  local dir, redis_port, redis_pid, primary, replica

  setup(function()
    dir = helpers.tmpdir()
    redis_port, redis_pid = helpers.start_redis(dir)
    F.sh(("cp -r %s/examples/flag-proxy/config %s/config"):format(F.root, dir))
    local env = { AUTH_SECRET = "s", REDIS_ADDRESS = "127.0.0.1:" .. redis_port }
    primary = helpers.start(F.script, { flags = { "--offline", "--config-dir", dir .. "/config" }, env = env })
    replica = helpers.start(F.script, { flags = { "--read-replica" }, env = env })
    helpers.wait_until(function() return cache_status(primary) == "healthy" and cache_status(replica) == "healthy" end,
      10, "both healthy")
  end)
  teardown(function()
    if redis_pid then os.execute("kill -CONT " .. redis_pid .. "; kill " .. redis_pid) end
    if replica then replica:stop() end
    if primary then primary:stop() end
  end)

  it("reports the cache unhealthy on primary and replica while Redis does not answer, healthy once it does", function()
    assert(ENV)
    os.execute("kill -STOP " .. redis_pid)
    for _, host in ipairs { primary, replica } do
      helpers.wait_until(function() return cache_status(host) == "unhealthy" end, 5, "cacheStatus unhealthy")
      assert.matches("not answered", select(2, cache_status(host)))
    end
    os.execute("kill -CONT " .. redis_pid)
    for _, host in ipairs { primary, replica } do
      helpers.wait_until(function() return cache_status(host) == "healthy" end, 10, "cacheStatus healthy again")
    end
  end)
end)
