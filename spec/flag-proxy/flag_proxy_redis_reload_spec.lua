-- scripts/flag-proxy.lua online with Redis, reloaded: the generation a reload replaced stops
-- following its replicas' metrics stream (relay.flag.metrics_forward) instead of retrying a
-- stopped feed, logging redis_metrics_follow_failed every few seconds until the drain timeout.
local helpers = require "spec.helpers"
local socket = require "socket"

local F = dofile(helpers.fixture("flag_proxy.lua"))

local function count(log, s)
  local n, i = 0, 1
  while true do
    local a, b = log:find(s, i, true)
    if not a then return n end
    n, i = n + 1, b + 1
  end
end

describe("flag proxy, online with Redis, reloaded", function()
  local dir, up, host, redis_pid

  setup(function()
    dir = helpers.tmpdir()
    F.sh(("rm -rf %s/config && cp -r %s/examples/flag-proxy/config %s/config"):format(dir, F.root, dir))
    local redis_port
    redis_port, redis_pid = helpers.start_redis(dir)
    local up_port = helpers.free_port()
    up = helpers.start(F.script, { listen = "127.0.0.1:" .. up_port,
      flags = { "--offline", "--config-dir", dir .. "/config" }, env = { AUTH_SECRET = "upstream-secret" } })
    local base = "http://127.0.0.1:" .. up_port
    host = helpers.start(F.script, {
      flags = { "--metric-post-duration", "1" },
      env = { API_KEYS = F.KEY, SDK_BASE_URL = base, SDK_EVENTS_URL = base, AUTH_SECRET = "downstream-secret",
              REDIS_ADDRESS = "127.0.0.1:" .. redis_port },
    })
    helpers.wait_until(function()
      local res = host:get("/health")
      return res.status == 200 and res.body:find('"CONNECTED"', 1, true)
    end, 10, "the upstream stream")
  end)
  teardown(function()
    if host then host:stop() end
    if up then up:stop() end
    if redis_pid then os.execute("kill " .. redis_pid .. " 2>/dev/null") end
  end)

  it("the replaced generation's metrics follower ends with it", function()
    assert.is_true(host:reload())
    socket.sleep(8) -- past the follower's XREAD BLOCK (5 s)
    assert.equal(0, count(host:log(), "redis_metrics_follow_failed"), host:log():sub(-1500))
  end)
end)
