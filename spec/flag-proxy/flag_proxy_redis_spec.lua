-- scripts/flag-proxy.lua with Redis (ff-proxy v2's key layout) as primary + read replica, a
-- real redis-server in between; and a v2-style relayhost (PROXY_KEY) chained to the primary's
-- /proxy/auth and /proxy/config.
local helpers = require "spec.helpers"
local cjson = require "cjson"
local socket = require "socket"

local F = dofile(helpers.fixture("flag_proxy.lua"))
local ENV, KEY = F.ENV, F.KEY
local SECRET = "shared-secret-of-the-cluster"
local PROXY_KEY = "relay-proxy-key-1"

-- One Redis command over RESP, for looking at what the primary wrote.
local function redis_get(port, key)
  local c = assert(helpers.connect(port))
  c:send(("*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n"):format(#key, key))
  local line = c.sock:receive("*l")
  local n = tonumber(line:match("^%$(%-?%d+)"))
  local v = n and n >= 0 and c.sock:receive(n) or nil
  c:close()
  return v
end

-- /health; a 500 (not synced yet) reads as a health with no states.
local function health(host)
  local res = host:get("/health")
  local h = cjson.decode(res.body)
  if res.status ~= 200 then h = { configStatus = {}, streamStatus = {} } end
  return res.status, h
end

describe("flag proxy with Redis: primary and read replica", function()
  local dir, redis_port, redis_pid, primary, replica, flags_file

  setup(function()
    dir = helpers.tmpdir()
    redis_port, redis_pid = helpers.start_redis(dir)
    F.sh(("cp -r %s/examples/flag-proxy/config %s/config"):format(F.root, dir))
    flags_file = dir .. "/config/env-" .. ENV .. "/feature_config.json"
    local env = { AUTH_SECRET = SECRET, REDIS_ADDRESS = "127.0.0.1:" .. redis_port, PROXY_KEY = PROXY_KEY }
    primary = helpers.start(F.script, { flags = { "--offline", "--config-dir", dir .. "/config" }, env = env })
    helpers.wait_until(function() return redis_get(redis_port, "ffproxy_saas_stream_health") end, 5, "the primary's writes")
    replica = helpers.start(F.script, { flags = { "--read-replica" },
      env = { AUTH_SECRET = SECRET, REDIS_ADDRESS = "redis://127.0.0.1:" .. redis_port } })
    helpers.wait_until(function()
      local _, h = health(replica)
      return h.configStatus.state == "READ_REPLICA" and h.streamStatus.state == "CONNECTED"
    end, 5, "the replica to load")
  end)
  teardown(function()
    if replica then assert.equal(0, replica:stop()) end
    if primary then assert.equal(0, primary:stop()) end
    if redis_pid then os.execute("kill " .. redis_pid) end
  end)

  it("writes ff-proxy's key layout", function()
    local p = io.popen("printf %s " .. KEY .. " | sha256sum")
    local hash = p:read("*l"):match("^(%x+)")
    p:close()
    assert.equal(cjson.encode(ENV), redis_get(redis_port, "auth-key-" .. hash))
    local fc = redis_get(redis_port, "env-" .. ENV .. "-feature-configs")
    assert.equal(8, #cjson.decode(fc))
    p = io.popen("printf %s " .. F.q(fc) .. " | sha256sum")
    local fc_hash = p:read("*l"):match("^(%x+)")
    p:close()
    assert.equal(cjson.encode(fc_hash), redis_get(redis_port, "env-" .. ENV .. "-feature-configs-latest"))
    assert.equal("dark-mode", cjson.decode(redis_get(redis_port, "env-" .. ENV .. "-feature-config-dark-mode")).feature)
    assert.equal(2, #cjson.decode(redis_get(redis_port, "env-" .. ENV .. "-segments")))
    assert.equal("uk-users", cjson.decode(redis_get(redis_port, "env-" .. ENV .. "-segment-uk-users")).identifier)
    local apis = cjson.decode(redis_get(redis_port, "env-" .. ENV .. "-api-configs"))
    assert.equal(2, #apis)
    assert.equal("CONNECTED", cjson.decode(redis_get(redis_port, "ffproxy_saas_stream_health")).state)
  end)

  it("serves the Node SDK from the replica, with tokens either instance issued", function()
    F.node_evaluates_all(replica.port)
    local _, token = F.auth(primary)
    local res = replica:get("/client/env/" .. ENV .. "/feature-configs/dark-mode", { Authorization = "Bearer " .. token })
    assert.equal(200, res.status)
  end)

  it("streams a primary's change to the replica's SDK streams in under a second", function()
    local _, token = F.auth(replica)
    local c, _, chunk = F.open_stream(replica, token)
    assert.equal(":\n\n", chunk())
    local flags = cjson.decode(F.read(flags_file))
    for _, f in ipairs(flags) do if f.feature == "dark-mode" then f.state = "off" end end
    helpers.write_file(flags_file, cjson.encode(flags))
    local t0 = socket.gettime()
    assert.is_true(primary:reload())
    local data = assert(chunk(2))
    local elapsed = socket.gettime() - t0
    assert.truthy(data:find('"identifier":"dark-mode"', 1, true), data)
    assert.truthy(data:find('"version":2', 1, true), data)
    assert.is_true(elapsed < 1, ("took %.3f s"):format(elapsed))
    c:close()
    local res = replica:get(("/client/env/%s/target/alice/evaluations/dark-mode"):format(ENV), { Authorization = "Bearer " .. token })
    assert.equal("false", cjson.decode(res.body).value)
  end)

  it("keeps serving from memory while Redis is down, reports it, and recovers", function()
    local _, token = F.auth(replica)
    os.execute("kill " .. redis_pid)
    helpers.wait_until(function() return select(2, health(replica)).cacheStatus == "unhealthy" end, 5, "cacheStatus unhealthy")
    local res = replica:get(("/client/env/%s/target/carol/evaluations/max-items"):format(ENV), { Authorization = "Bearer " .. token })
    assert.equal(200, res.status)
    assert.equal("100", cjson.decode(res.body).value)
    assert.equal(200, F.auth(replica).status) -- keys are in memory too
    redis_port, redis_pid = helpers.start_redis(dir, redis_port)
    helpers.wait_until(function() return select(2, health(replica)).cacheStatus == "healthy" end, 10, "cacheStatus healthy")
    helpers.wait_until(function() return select(2, health(primary)).cacheStatus == "healthy" end, 10, "the primary's Redis")
  end)
end)

describe("flag proxy with Redis: an online primary", function()
  it("forwards the SDK metrics its replicas receive (through stream:sdk_metrics)", function()
    local keep = F.cleanup(finally)
    local dir = helpers.tmpdir()
    local port, pid = helpers.start_redis(dir)
    keep(function() os.execute("kill " .. pid) end)
    local up = keep(helpers.start(F.script, { flags = { "--offline", "--config-dir", F.root .. "/examples/flag-proxy/config" } }))
    local base = "http://127.0.0.1:" .. up.port
    local redis = { REDIS_ADDRESS = "127.0.0.1:" .. port, AUTH_SECRET = SECRET }
    local primary = keep(helpers.start(F.script, { flags = { "--metric-post-duration", "1" }, env = {
      API_KEYS = KEY, SDK_BASE_URL = base, SDK_EVENTS_URL = base, REDIS_ADDRESS = redis.REDIS_ADDRESS, AUTH_SECRET = SECRET } }))
    helpers.wait_until(function() return select(2, health(primary)).configStatus.state == "SYNCED" end, 5, "the primary")
    local replica = keep(helpers.start(F.script, { flags = { "--read-replica" }, env = redis }))
    helpers.wait_until(function() return select(2, health(replica)).configStatus.state == "READ_REPLICA" end, 5, "the replica")
    local _, token = F.auth(replica)
    local res = replica:request { method = "POST", path = "/metrics/" .. ENV, headers = { Authorization = "Bearer " .. token },
      body = '{"metricsData":[{"timestamp":1,"count":3,"metricsType":"FFMETRICS","attributes":[]}]}' }
    assert.equal(200, res.status)
    helpers.wait_until(function() return up:log():find('"method":"POST","path":"/metrics/' .. ENV, 1, true) end, 5,
      "the replica's metrics upstream")
    for _, h in ipairs { replica, primary, up } do assert.equal(0, h:stop()) end
  end)
end)

describe("flag proxy v2 chain (PROXY_KEY)", function()
  it("pulls every environment through /proxy/auth and /proxy/config, follows changes, refuses a wrong key", function()
    local keep = F.cleanup(finally)
    local dir = helpers.tmpdir()
    F.sh(("cp -r %s/examples/flag-proxy/config %s/config"):format(F.root, dir))
    local up = keep(helpers.start(F.script, { flags = { "--offline", "--config-dir", dir .. "/config" },
      env = { AUTH_SECRET = SECRET, PROXY_KEY = PROXY_KEY } }))
    local res = up:request { method = "POST", path = "/proxy/auth", body = cjson.encode({ proxyKey = "wrong" }) }
    assert.equal(401, res.status)
    res = up:request { method = "POST", path = "/proxy/auth", body = "{}" }
    assert.equal(400, res.status)
    assert.equal(401, up:get("/proxy/config?pageNumber=0").status)
    res = up:request { method = "POST", path = "/proxy/auth", body = cjson.encode({ proxyKey = PROXY_KEY }) }
    local token = cjson.decode(res.body).token
    res = up:get("/proxy/config?pageNumber=0&pageSize=10", { Authorization = "Bearer " .. token })
    local cfg = cjson.decode(res.body)
    assert.same({ 1, 1, 0 }, { cfg.pageCount, cfg.itemCount, cfg.pageIndex })
    assert.equal(ENV, cfg.environments[1].id)
    assert.equal(8, #cfg.environments[1].featureConfigs)

    local down = keep(helpers.start(F.script, { env = { PROXY_KEY = PROXY_KEY, SDK_BASE_URL = "http://127.0.0.1:" .. up.port, METRIC_POST_DURATION = "0" } }))
    helpers.wait_until(function()
      local status, h = health(down)
      return status == 200 and h.streamStatus.state == "CONNECTED"
    end, 5, "the chained stream")
    F.node_evaluates_all(down.port)
    -- a change upstream reaches the chained proxy through the proxy-key stream (no poll: 1 min)
    local file = dir .. "/config/env-" .. ENV .. "/feature_config.json"
    local flags = cjson.decode(F.read(file))
    for _, f in ipairs(flags) do if f.feature == "legacy-off" then f.state = "on" end end
    helpers.write_file(file, cjson.encode(flags))
    assert.is_true(up:reload())
    local _, token = F.auth(down)
    helpers.wait_until(function()
      local r = down:get(("/client/env/%s/target/erin/evaluations/legacy-off"):format(ENV), { Authorization = "Bearer " .. token })
      return cjson.decode(r.body).value == "on"
    end, 2, "the change through the proxy-key stream")
    local wrong = keep(helpers.start(F.script, { env = { PROXY_KEY = "nope", SDK_BASE_URL = "http://127.0.0.1:" .. up.port } }))
    helpers.wait_until(function() return wrong:log():find("/proxy/auth: status 401", 1, true) end, 5, "the refusal")
    local res2 = wrong:get("/health")
    assert.equal(500, res2.status) -- FAILED_TO_SYNC
    local body = cjson.decode(res2.body) -- what is wrong, and when the next try is
    assert.equal("could not sync from http://127.0.0.1:" .. up.port .. ": /proxy/auth: status 401", body.error)
    assert.equal("FAILED_TO_SYNC", body.configStatus.state)
    assert.is_true(body.retryIn > 0 and body.retryIn <= 60, res2.body)
    for _, h in ipairs { wrong, down, up } do assert.equal(0, h:stop()) end
  end)
end)
