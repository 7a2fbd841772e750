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
    -- the replica with ff-proxy's REDIS_READ_TIMEOUT_SECONDS set, the primary with its default (3)
    replica = helpers.start(F.script, { flags = { "--read-replica" },
      env = { AUTH_SECRET = "s", REDIS_ADDRESS = env.REDIS_ADDRESS, REDIS_READ_TIMEOUT_SECONDS = "1" } })
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
      helpers.wait_until(function()
        local status, why = cache_status(host)
        return status == "unhealthy" and (why or ""):find("has not answered", 1, true)
      end, 5, "cacheStatus unhealthy: Redis has not answered")
    end
    -- past relay.redis's reply timeout (3 s), which fails the command and redials: still said so,
    -- counted from the first answer Redis owed, not "not connected"
    for _, host in ipairs { primary, replica } do
      helpers.wait_until(function()
        local n = tonumber(((select(2, cache_status(host))) or ""):match("has not answered for (%d+) s"))
        assert(n, "cacheError: " .. tostring(select(2, cache_status(host))))
        return n >= 5
      end, 8, "Redis has not answered for 5 s")
    end
    assert.matches("no reply for 1 s", replica:log(), 1, true)
    assert.matches("no reply for 3 s", primary:log(), 1, true)
    os.execute("kill -CONT " .. redis_pid)
    for _, host in ipairs { primary, replica } do
      helpers.wait_until(function() return cache_status(host) == "healthy" end, 10, "cacheStatus healthy again")
    end
  end)
end)

-- One GET over RESP.
local function redis_get(port, key)
  local c = assert(helpers.connect(port))
  c:send(("*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n"):format(#key, key))
  local line = c.sock:receive("*l")
  local n = tonumber(line:match("^%$(%-?%d+)"))
  local v = n and n >= 0 and c.sock:receive(n) or nil
  c:close()
  return v
end

describe("an online primary whose Redis stops answering", function()
  local dir, redis_port, redis_pid, up, primary

  setup(function()
    dir = helpers.tmpdir()
    redis_port, redis_pid = helpers.start_redis(dir)
    F.sh(("cp -r %s/examples/flag-proxy/config %s/config"):format(F.root, dir))
    local up_port = helpers.free_port()
    up = helpers.start(F.script, { listen = "127.0.0.1:" .. up_port,
      flags = { "--offline", "--config-dir", dir .. "/config" }, env = { AUTH_SECRET = "upstream-secret" } })
    local base = "http://127.0.0.1:" .. up_port
    primary = helpers.start(F.script, { env = { API_KEYS = F.KEY, SDK_BASE_URL = base, SDK_EVENTS_URL = base,
      AUTH_SECRET = "s", REDIS_ADDRESS = "127.0.0.1:" .. redis_port } })
    helpers.wait_until(function()
      local h = cjson.decode(primary:get("/health").body)
      return h.cacheStatus == "healthy" and h.streamStatus.state == "CONNECTED"
    end, 10, "the primary synced, streaming and written to Redis")
  end)
  teardown(function()
    if redis_pid then os.execute("kill -CONT " .. redis_pid .. "; kill " .. redis_pid) end
    if primary then primary:stop() end
    if up then up:stop() end
  end)

  -- Changes that arrive while Redis hangs are not queued behind it (a queue that grows for as
  -- long as it hangs): the primary writes everything whole once it answers, with a new seed mark
  -- (replicas reload all of it).
  it("writes everything whole, with a new seed mark, once Redis answers again", function()
    local mark
    helpers.wait_until(function() mark = redis_get(redis_port, "key-relayhost-seeded"); return mark end, 5, "the seed mark")
    os.execute("kill -STOP " .. redis_pid)
    helpers.wait_until(function() return cache_status(primary) == "unhealthy" end, 5, "cacheStatus unhealthy")
    local file = dir .. "/config/env-" .. ENV .. "/feature_config.json"
    local function changes() return select(2, primary:log():gsub("flag_config_changed", "")) end
    local before = changes()
    for i = 1, 3 do
      local flags = cjson.decode(F.read(file))
      for _, f in ipairs(flags) do if f.feature == "max-items" then f.defaultServe.variation = i % 2 == 1 and "hundred" or "ten" end end
      helpers.write_file(file, cjson.encode(flags))
      assert.is_true(up:reload())
      helpers.wait_until(function() return changes() >= before + i end, 5, "the primary took change " .. i)
    end
    os.execute("kill -CONT " .. redis_pid)
    helpers.wait_until(function() return cache_status(primary) == "healthy" end, 10, "cacheStatus healthy again")
    helpers.wait_until(function() return redis_get(redis_port, "key-relayhost-seeded") ~= mark end, 5, "a new seed mark")
    assert.matches("hundred", redis_get(redis_port, "env-" .. ENV .. "-feature-configs"))
  end)
end)
