-- RELAY_BACKPLANE_URL, the seed document's name for the Redis backplane, is RELAY_REDIS_URL's
-- alias: alone it is the backplane's Redis (a real redis-server sees the relay connect), with
-- RELAY_REDIS_URL it must name the same URL, and it must be a redis:// or rediss:// URL.
local helpers = require "helpers"

local SCRIPT = helpers.root .. "/scripts/workspace-relay.lua"

local function check(env) return helpers.run({ "check", SCRIPT }, env) end

describe("workspace relay RELAY_BACKPLANE_URL", function()
  local dir, redis_port, redis_pid

  setup(function()
    dir = helpers.tmpdir()
    redis_port, redis_pid = helpers.start_redis(dir)
  end)

  teardown(function()
    if redis_pid then os.execute("kill " .. redis_pid) end
  end)

  local function redis_clients() return helpers.redis_info(redis_port, "clients", "connected_clients") end

  it("is the backplane's Redis when RELAY_REDIS_URL is not set", function()
    local url = "redis://127.0.0.1:" .. redis_port
    local status, out, err = check { RELAY_BACKPLANE_MODE = "redis", RELAY_INTERNAL_KEY = "k", RELAY_BACKPLANE_URL = url }
    assert.equal(0, status, out .. err)
    local before = redis_clients()
    local relay = helpers.start(SCRIPT, { env = { RELAY_BACKPLANE_MODE = "redis", RELAY_INTERNAL_KEY = "k",
      RELAY_BACKPLANE_URL = url } })
    local ok = pcall(helpers.wait_until, function() return redis_clients() > before end, 5)
    local log = relay:log()
    assert.equal(0, relay:stop())
    assert.is_true(ok, "the relay did not connect to RELAY_BACKPLANE_URL's Redis: " .. log:sub(-2000))
    -- both names, the same URL: fine
    status, out, err = check { RELAY_BACKPLANE_MODE = "redis", RELAY_INTERNAL_KEY = "k", RELAY_BACKPLANE_URL = url,
      RELAY_REDIS_URL = url }
    assert.equal(0, status, out .. err)
  end)

  it("refuses both names set to different URLs, naming both and neither URL", function()
    local status, out, err = check { RELAY_BACKPLANE_MODE = "redis", RELAY_INTERNAL_KEY = "k",
      RELAY_BACKPLANE_URL = "redis://:s3cret@10.0.0.1:6379", RELAY_REDIS_URL = "redis://10.0.0.2:6379" }
    assert.equal(1, status)
    assert.truthy((out .. err):find("RELAY_BACKPLANE_URL and RELAY_REDIS_URL name different Redis URLs: set one", 1, true), out .. err)
    assert.falsy((out .. err):find("s3cret", 1, true))
  end)

  it("refuses a URL that is not Redis's", function()
    local status, out, err = check { RELAY_BACKPLANE_MODE = "redis", RELAY_INTERNAL_KEY = "k",
      RELAY_BACKPLANE_URL = "https://platform.test/bus" }
    assert.equal(1, status)
    assert.truthy((out .. err):find("RELAY_BACKPLANE_URL", 1, true), out .. err)
    assert.truthy((out .. err):find("is not a URL starting with redis:// or rediss://", 1, true), out .. err)
  end)
end)
