-- scripts/flag-proxy.lua online, daisy-chained: an offline relayhost flag proxy is the upstream
-- (it speaks the Harness client API) of an online one, which authenticates with API_KEYS,
-- mirrors the environment, follows the upstream's /stream, polls as a fallback, forwards SDK
-- metrics, keeps serving while the upstream is down, and writes an offline config directory.
local helpers = require "spec.helpers"
local cjson = require "cjson"
local socket = require "socket"

local F = dofile(helpers.fixture("flag_proxy.lua"))
local ENV, KEY = F.ENV, F.KEY

local free_port = helpers.free_port

local function copy_config(dir)
  F.sh(("rm -rf %s/config && cp -r %s/examples/flag-proxy/config %s/config"):format(dir, F.root, dir))
  return dir .. "/config/env-" .. ENV .. "/feature_config.json"
end

-- Rewrites one flag's default variation in the upstream's config file.
local function set_default(file, flag, variation)
  local flags = cjson.decode(F.read(file))
  for _, f in ipairs(flags) do if f.feature == flag then f.defaultServe.variation = variation end end
  helpers.write_file(file, cjson.encode(flags))
end

-- How often a plain string occurs in the upstream's log.
local function count(host, s)
  local n, i = 0, 1
  local log = host:log()
  while true do
    local a, b = log:find(s, i, true)
    if not a then return n end
    n, i = n + 1, b + 1
  end
end

local function json_get(host, path, token)
  local res = host:get(path, token and { Authorization = "Bearer " .. token } or nil)
  return res.status, res.status < 500 and cjson.decode(res.body) or res.body
end

local function start_upstream(dir, port)
  return helpers.start(F.script, { listen = "127.0.0.1:" .. port,
    flags = { "--offline", "--config-dir", dir .. "/config" }, env = { AUTH_SECRET = "upstream-secret" } })
end

describe("flag proxy, online (daisy chain)", function()
  local dir, up, up_port, host, flags_file

  setup(function()
    dir = helpers.tmpdir()
    flags_file = copy_config(dir)
    up_port = free_port()
    up = start_upstream(dir, up_port)
    local base = "http://127.0.0.1:" .. up_port
    host = helpers.start(F.script, {
      flags = { "--metric-post-duration", "1" },
      env = { API_KEYS = KEY, SDK_BASE_URL = base, SDK_EVENTS_URL = base, AUTH_SECRET = "downstream-secret" },
    })
    helpers.wait_until(function()
      local _, h = json_get(host, "/health")
      return type(h) == "table" and h.streamStatus.state == "CONNECTED"
    end, 10, "the upstream stream")
  end)
  teardown(function()
    if host then assert.equal(0, host:stop()) end
    if up then assert.equal(0, up:stop()) end
  end)

  it("serves the upstream's environment to the real Node SDK", function()
    F.node_evaluates_all(host.port)
    local _, h = json_get(host, "/health")
    assert.equal("SYNCED", h.configStatus.state)
  end)

  it("relays an upstream change to its own SDK streams in under a second", function()
    local _, token = F.auth(host)
    local c, _, chunk = F.open_stream(host, token)
    assert.equal(":\n\n", chunk())
    set_default(flags_file, "max-items", "hundred")
    local t0 = socket.gettime()
    assert.is_true(up:reload())
    local data = assert(chunk(2))
    local elapsed = socket.gettime() - t0
    local payload = data:match("^event: %*\ndata: (.-)\n\n$")
    assert.truthy(payload, "one event per write: " .. data)
    local ev = cjson.decode(payload)
    assert.same({ event = "patch", domain = "flag", identifier = "max-items", version = 2, environment = ENV, apiKey = "" }, ev)
    assert.is_true(elapsed < 1, ("took %.3f s"):format(elapsed))
    c:close()
    local _, fc = json_get(host, ("/client/env/%s/feature-configs/max-items"):format(ENV), token)
    assert.equal(2, fc.version)
    assert.equal("hundred", fc.defaultServe.variation)
  end)

  it("closes its upstream feed as soon as a reload replaces it; SDK streams go on", function()
    -- connections to the upstream (the feed; SDK requests here go elsewhere)
    local function to_upstream()
      local p = io.popen(("ss -Htn state established '( dport = :%d )'"):format(up_port))
      local n = select(2, p:read("*a"):gsub("\n", ""))
      p:close()
      return n
    end
    local _, token = F.auth(host)
    local c, _, chunk = F.open_stream(host, token)
    assert.equal(":\n\n", chunk())
    local before = to_upstream()
    assert.is_true(before >= 1)
    assert.is_true(host:reload())
    helpers.wait_until(function() return host:log():match('"generation":2') end, 5)
    -- app:on_retire closed the old generation's feed; without it the feed ran for the 30 s drain
    -- beside the new one
    helpers.sleep(1)
    assert.is_true(to_upstream() <= before, ("%d connections to the upstream, %d before"):format(to_upstream(), before))
    -- and the old generation, its feed reader woken by the close, is gone long before its drain
    helpers.wait_until(function()
      return host:get("/metrics").body:match("\nrelayhost_generations (%d+)") == "1"
    end, 5, "the replaced generation to be freed")
    helpers.wait_until(function()
      local _, h = json_get(host, "/health")
      return type(h) == "table" and h.streamStatus.state == "CONNECTED"
    end, 10, "the new generation's feed")
    -- the SDK stream opened before the reload still gets changes, now through the new feed
    set_default(flags_file, "max-items", "twenty-five")
    assert.is_true(up:reload())
    local function next_event()
      local data = assert(chunk(3))
      while data == ":\n\n" do data = assert(chunk(3)) end
      return data
    end
    assert.matches('"identifier":"max%-items"', next_event())
    set_default(flags_file, "max-items", "hundred") -- as the tests after this one expect
    assert.is_true(up:reload())
    assert.matches('"identifier":"max%-items"', next_event())
    c:close()
  end)

  it("forwards SDK metrics upstream in batches", function()
    local _, token = F.auth(host)
    local line = '"method":"POST","path":"/metrics/' .. ENV
    local before = count(up, line)
    for i = 1, 3 do
      local res = host:request { method = "POST", path = "/metrics/" .. ENV .. "?cluster=1", headers = { Authorization = "Bearer " .. token },
        body = cjson.encode({ metricsData = { { timestamp = i, count = 1, metricsType = "FFMETRICS", attributes = {} } } }) }
      assert.equal(200, res.status)
    end
    helpers.wait_until(function()
      return count(up, line) > before
    end, 5, "the metrics batch upstream")
    F.sh("sleep 1.2")
    assert.equal(before + 1, count(up, line), "one batch for three posts")
  end)

  it("keeps serving from cache while the upstream is down, says so, and catches up when it is back", function()
    local _, token = F.auth(host)
    assert.equal(0, up:stop())
    up = nil
    helpers.wait_until(function()
      local _, h = json_get(host, "/health")
      return h.streamStatus.state == "DISCONNECTED"
    end, 5, "health to say DISCONNECTED")
    local res = host:get("/stream", { Authorization = "Bearer " .. token, ["API-Key"] = KEY })
    assert.equal(503, res.status)
    assert.same({ error = "SaaS stream disconnected: streaming endpoint disabled" }, cjson.decode(res.body))
    local status, ev = json_get(host, ("/client/env/%s/target/carol/evaluations/max-items"):format(ENV), token)
    assert.equal(200, status)
    assert.equal("100", ev.value)
    -- back, with a change made while it was away: picked up by the poll on reconnect
    set_default(flags_file, "max-items", "twenty-five")
    up = start_upstream(dir, up_port)
    helpers.wait_until(function()
      local _, h = json_get(host, "/health")
      return h.streamStatus.state == "CONNECTED"
    end, 10, "the stream to come back")
    helpers.wait_until(function()
      local _, e = json_get(host, ("/client/env/%s/target/erin/evaluations/max-items"):format(ENV), token)
      return e.value == "25"
    end, 5, "the change made while down")
  end)

  it("generates an offline config directory that serves the same answers", function()
    local out = dir .. "/generated"
    -- beside a running proxy: the port it would serve on is taken, and the job binds nothing
    local rc, printed, err = helpers.run({ F.script }, {
      API_KEYS = KEY .. ",sample-client-sdk-key", SDK_BASE_URL = "http://127.0.0.1:" .. up_port,
      GENERATE_OFFLINE_CONFIG = "true", CONFIG_DIR = out, PORT = tostring(host.port) })
    assert.equal(0, rc, err)
    local base = out .. "/env-" .. ENV .. "/"
    -- it says what it wrote: every file, with what it holds
    assert.truthy(printed:find(base .. "auth_config.json (2 keys)", 1, true), printed)
    assert.truthy(printed:find(base .. "feature_config.json (8 flags)", 1, true), printed)
    assert.truthy(printed:find(base .. "segments.json (", 1, true), printed)
    assert.truthy(printed:find(base .. "targets.json (", 1, true), printed)
    assert.truthy(printed:find(base .. "README.md", 1, true), printed)
    assert.is_nil(err:find("SIGTERM", 1, true), err) -- nobody sent one
    assert.is_nil(err:find('"event":"listening"', 1, true), err)
    -- indented as the original's files are (two spaces, one member per line)
    local text = F.read(base .. "feature_config.json")
    assert.equal("[\n  {\n    \"", text:sub(1, 11))
    assert.equal("\n]\n", text:sub(-3))
    local keys = cjson.decode(F.read(base .. "auth_config.json"))
    assert.equal(2, #keys)
    assert.truthy(F.read(out .. "/env-" .. ENV .. "/README.md"):find("Number of Features: 8", 1, true))
    set_default(flags_file, "max-items", "ten") -- back to the sample's values for the comparison
    assert.is_true(up:reload())
    F.sh(("rm -rf %s && mkdir -p %s"):format(out, out))
    rc, _, err = helpers.run({ F.script, "--listen", "127.0.0.1:0" }, {
      API_KEYS = KEY, SDK_BASE_URL = "http://127.0.0.1:" .. up_port, GENERATE_OFFLINE_CONFIG = "true", CONFIG_DIR = out })
    assert.equal(0, rc, err)
    local off = F.cleanup(finally)(helpers.start(F.script, { flags = { "--offline", "--config-dir", out } }))
    F.node_evaluates_all(off.port)
    assert.equal(0, off:stop())
  end)

  it("refuses to generate when the upstream cannot be reached, naming it", function()
    local rc, _, err = helpers.run({ F.script, "--listen", "127.0.0.1:0" }, {
      API_KEYS = KEY, SDK_BASE_URL = "http://127.0.0.1:" .. free_port(), GENERATE_OFFLINE_CONFIG = "true",
      CONFIG_DIR = dir .. "/never" })
    assert.are_not.equal(0, rc)
    assert.truthy(err:find("generate_offline_config_failed", 1, true))
    assert.is_nil(F.read(dir .. "/never/README.md"))
  end)
end)

describe("flag proxy, online with the stream off", function()
  it("polls the upstream every FLAG_POLL_INTERVAL and answers /stream with 503", function()
    local keep = F.cleanup(finally)
    local dir = helpers.tmpdir()
    local flags_file = copy_config(dir)
    local port = free_port()
    local up = keep(start_upstream(dir, port))
    local host = keep(helpers.start(F.script, { flags = { "--flag-stream-enabled=false", "--flag-poll-interval", "0.02" },
      env = { API_KEYS = KEY, SDK_BASE_URL = "http://127.0.0.1:" .. port, METRIC_POST_DURATION = "0" } }))
    local _, token = F.auth(host)
    helpers.wait_until(function() return token or select(2, F.auth(host)) end, 5)
    _, token = F.auth(host)
    assert.equal(503, host:get("/stream", { Authorization = "Bearer " .. token, ["API-Key"] = KEY }).status)
    set_default(flags_file, "banner-text", "beta")
    assert.is_true(up:reload())
    helpers.wait_until(function()
      local _, e = json_get(host, ("/client/env/%s/target/erin/evaluations/banner-text"):format(ENV), token)
      return e.identifier == "beta"
    end, 5, "the poll to pick the change up")
    assert.equal(0, host:stop())
    assert.equal(0, up:stop())
  end)
end)

describe("flag proxy, online without a network", function()
  it("answers /health with ff-proxy's 500, naming the upstream's error and when the next try is", function()
    local base = "http://127.0.0.1:" .. free_port()
    local host = F.cleanup(finally)(helpers.start(F.script, { env = { API_KEYS = KEY, SDK_BASE_URL = base } }))
    helpers.wait_until(function() return host:count("upstream_sync_failed") > 0 end, 10, "the failed sync")
    local res = host:get("/health")
    assert.equal(500, res.status) -- the original's status for FAILED_TO_SYNC
    local h = cjson.decode(res.body)
    assert.equal(1, select(2, h.error:gsub("^could not sync from " .. base:gsub("%p", "%%%0") .. ": .", "")), h.error)
    assert.equal("FAILED_TO_SYNC", h.configStatus.state)
    -- FLAG_POLL_INTERVAL is 1 minute: the next try is within it
    assert.is_true(h.retryIn > 0 and h.retryIn <= 60, res.body)
    local now_ms = socket.gettime() * 1000
    assert.is_true(math.abs(h.nextAttempt - (now_ms + h.retryIn * 1000)) < 2000, res.body)
  end)

  -- An upstream that is not there yet when the proxy starts (both started together): the first
  -- poll that reaches it also opens the upstream stream, so SDK streams are served again.
  it("follows the upstream's stream once a later poll reaches it", function()
    local dir, port, keep = helpers.tmpdir(), free_port(), F.cleanup(finally)
    copy_config(dir)
    local host = keep(helpers.start(F.script, { env = { API_KEYS = KEY,
      SDK_BASE_URL = "http://127.0.0.1:" .. port, FLAG_POLL_INTERVAL = "0.02" } })) -- 1.2 s
    helpers.wait_until(function() return host:count("upstream_sync_failed") > 0 end, 10, "the failed sync")
    local up = keep(start_upstream(dir, port))
    -- CONNECTED: /stream answers SDKs 200 again (503 while it is not)
    helpers.wait_until(function()
      local _, h = json_get(host, "/health")
      return type(h) == "table" and h.configStatus.state == "SYNCED" and h.streamStatus.state == "CONNECTED"
    end, 10, "the upstream's stream")
    assert.equal(0, up:stop())
  end)
end)
