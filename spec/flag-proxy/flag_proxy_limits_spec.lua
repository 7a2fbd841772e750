-- The flag proxy under hostile SDK clients (issue 14.3). Client SDK keys are public (they ship
-- in browser apps), so anyone may POST /client/auth: target attributes are bounded
-- (TARGET_ATTRIBUTES_MAX_BYTES, 413 naming it), the targets kept for evaluations live in an
-- LRU bounded by count and bytes (TARGET_STORE_MAX_LEN, TARGET_STORE_MAX_BYTES, with metrics),
-- and an auth flood with unique targets and large attributes leaves the process flat. The other
-- places SDK input is kept: cached /evaluations answers (a Harness-Target header each) and SDK
-- metrics waiting for the events service (targetData is forwarded there) are bounded too.
local helpers = require "spec.helpers"
local cjson = require "cjson"

local F = dofile(helpers.fixture("flag_proxy.lua"))
local ENV, KEY = F.ENV, F.KEY
local CONFIG = F.root .. "/examples/flag-proxy/config"

local function auth_body(id, attributes)
  return cjson.encode({ apiKey = KEY, target = { identifier = id, name = id, attributes = attributes } })
end

local function post_auth(c, body)
  return c:request { method = "POST", path = "/client/auth", body = body,
                     headers = { ["Content-Type"] = "application/json" } }
end

local function metric(host, name)
  return tonumber(host:get("/metrics").body:match("\n" .. name .. " (%S+)"))
end

describe("flag proxy under hostile SDK clients", function()
  it("answers 413 naming TARGET_ATTRIBUTES_MAX_BYTES for large attributes and bodies", function()
    local host = F.cleanup(finally)(helpers.start(F.script, {
      flags = { "--offline", "--config-dir", CONFIG, "--target-attributes-max-bytes", "1000" } }))
    local res = host:request { method = "POST", path = "/client/auth", body = auth_body("ok", { plan = ("p"):rep(900) }) }
    assert.equal(200, res.status)
    res = host:request { method = "POST", path = "/client/auth", body = auth_body("big", { plan = ("p"):rep(2000) }) }
    assert.equal(413, res.status)
    assert.truthy(cjson.decode(res.body).error:find("TARGET_ATTRIBUTES_MAX_BYTES (1000)", 1, true), res.body)
    -- a body far over what attributes and the rest may take is refused before it is decoded
    res = host:request { method = "POST", path = "/client/auth", body = auth_body("huge", { plan = ("p"):rep(900 * 1024) }) }
    assert.equal(413, res.status)
    assert.truthy(cjson.decode(res.body).error:find("TARGET_ATTRIBUTES_MAX_BYTES", 1, true), res.body)
    res = host:request { method = "POST", path = "/client/auth", body = '{"apiKey":"' .. KEY .. '","target":{"identifier":"x","attributes":"str"}}' }
    assert.equal(400, res.status)
    assert.truthy(cjson.decode(res.body).error:find("attributes must be a JSON object", 1, true), res.body)
    assert.equal(0, host:stop())
  end)

  it("keeps the targets seen at auth in an LRU bounded by TARGET_STORE_MAX_LEN and _MAX_BYTES", function()
    local host = F.cleanup(finally)(helpers.start(F.script, {
      flags = { "--offline", "--config-dir", CONFIG }, env = { TARGET_STORE_MAX_LEN = "3", TARGET_STORE_MAX_BYTES = "4000" } }))
    local c = host:client()
    local token
    for i = 1, 4 do -- plan "pro" makes max-items serve twenty-five (sample config)
      local res = post_auth(c, auth_body("t" .. i, { plan = "pro" }))
      assert.equal(200, res.status)
      token = cjson.decode(res.body).authToken
    end
    local function max_items(id)
      local res = c:get(("/client/env/%s/target/%s/evaluations/max-items"):format(ENV, id), { Authorization = "Bearer " .. token })
      assert.equal(200, res.status)
      return cjson.decode(res.body).identifier
    end
    assert.equal("ten", max_items("t1")) -- evicted: evaluated as the identifier alone
    assert.equal("twenty-five", max_items("t2")) -- t2 is now the most recently used
    assert.equal(3, metric(host, "ff_proxy_target_store_targets"))
    assert.equal(1, metric(host, "ff_proxy_target_store_evictions_total"))
    -- bytes: two targets of ~1950 bytes push out all but the newest two
    post_auth(c, auth_body("b1", { plan = ("p"):rep(1900) }))
    post_auth(c, auth_body("b2", { plan = ("p"):rep(1900) }))
    assert.is_true(metric(host, "ff_proxy_target_store_bytes") <= 4000)
    assert.equal(2, metric(host, "ff_proxy_target_store_targets"))
    assert.equal("ten", max_items("t2"))
    c:close()
    assert.equal(0, host:stop())
  end)

  it("stays flat under an auth flood of unique targets with large attributes", function()
    local host = F.cleanup(finally)(helpers.start(F.script, { flags = { "--offline", "--config-dir", CONFIG } }))
    local _, token = F.auth(host)
    local c = host:client()
    local n, kept, refused = 0, 0, 0
    local function body(id, size) -- built by hand: encoding 900 KB per request would slow the flood
      return ('{"apiKey":"%s","target":{"identifier":"%s","attributes":{"blob":"%s"}}}'):format(KEY, id, "U" .. ("x"):rep(size))
    end
    local big, near = body("ID", 900 * 1024), body("ID", 60 * 1024) -- near: under the default 64 KiB, kept
    local function auth(template)
      n = n + 1
      local id = ("flood-%d-%d"):format(n, math.random(1e9)) -- unique attributes too: equal strings would be one
      local res = post_auth(c, (template:gsub('"ID"', '"' .. id .. '"', 1):gsub('"U', '"' .. id, 1)))
      if not res then c:close(); c = host:client(); return end
      if res.status == 200 then kept = kept + 1 elseif res.status == 413 then refused = refused + 1 end
    end
    -- long enough for 200+ auths on a busy machine: timed on a few first (they count too)
    local t0 = require("socket").gettime()
    for _ = 1, 9 do auth(near) end
    local per_near = (require("socket").gettime() - t0) / 9
    local peak = helpers.flood(host, {
      seconds = math.min(30, math.max(8, 24 * 20 * per_near * 1.5)), -- a step is about 20 of them
      bound_kb = 32 * 1024,
      step = function() -- one refused, eight kept: 60 KB x hundreds is well over the 8 MiB store
        auth(big)
        for _ = 1, 8 do auth(near) end
      end,
      probe = function()
        local res = host:get(("/client/env/%s/target/alice/evaluations"):format(ENV), { Authorization = "Bearer " .. token })
        return res ~= nil and res.status == 200
      end,
    })
    c:close()
    local bytes, evictions = metric(host, "ff_proxy_target_store_bytes"), metric(host, "ff_proxy_target_store_evictions_total")
    print(("auth flood: %d requests (%d kept, %d refused 413), RSS peak +%d kB, store %s bytes, %s evictions")
      :format(n, kept, refused, peak, tostring(bytes), tostring(evictions)))
    assert.is_true(n >= 200, "only " .. n .. " auth requests in the flood")
    assert.is_true(refused > 0)
    assert.is_true(bytes <= 8 * 1024 * 1024)
    if not helpers.asan() then assert.is_true(evictions > 0, "the flood never filled the store") end
    assert.equal(0, host:stop())
  end)
  it("stays flat under /evaluations with a new large Harness-Target header every time", function()
    local host = F.cleanup(finally)(helpers.start(F.script, { flags = { "--offline", "--config-dir", CONFIG } }))
    local _, token = F.auth(host)
    local c = host:client()
    local n, answered = 0, 0
    local pad = ("z"):rep(8 * 1024)
    local peak = helpers.flood(host, {
      seconds = 8,
      bound_kb = 32 * 1024,
      step = function() -- ~11 KB of header each: the per-environment answer cache must not keep them all
        n = n + 1
        local t = { identifier = "h" .. n, attributes = { pad = n .. pad } }
        local res = c:get(("/client/env/%s/target/h%d/evaluations"):format(ENV, n), {
          Authorization = "Bearer " .. token, ["Harness-Target"] = (require("mime").b64(cjson.encode(t))) })
        if not res then c:close(); c = host:client(); return end
        if res.status == 200 then answered = answered + 1 end
      end,
    })
    c:close()
    print(("evaluations flood: %d requests (%d answered), RSS peak +%d kB"):format(n, answered, peak))
    assert.is_true(answered >= 200, "only " .. answered .. " evaluations answered in the flood")
    assert.equal(0, host:stop())
  end)
  it("stays flat under a flood of SDK metrics while the events service never answers", function()
    local socket = require "socket"
    local blackhole = assert(socket.bind("127.0.0.1", 0, 1024)) -- accepts nothing: every post waits its 10 s
    local keep = F.cleanup(finally)
    keep(function() blackhole:close() end)
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/flags.json", F.read(CONFIG .. "/env-" .. ENV .. "/feature_config.json"))
    local up = keep(helpers.start(helpers.fixture("flag_proxy_fake_upstream.lua"), {
      flags = { "--flags-file", dir .. "/flags.json", "--env", ENV } }))
    local host = keep(helpers.start(F.script, { env = {
      API_KEYS = KEY, SDK_BASE_URL = up:url(""):gsub("/$", ""), FLAG_STREAM_ENABLED = "false",
      SDK_EVENTS_URL = ("http://127.0.0.1:%d"):format(select(2, blackhole:getsockname())), METRIC_POST_DURATION = "60" } }))
    helpers.wait_until(function() return host:get("/health").status == 200 end, 10, "the first sync")
    local _, token = F.auth(host)
    local c = host:client()
    local n, accepted = 0, 0
    local items = {}
    for i = 1, 1500 do
      items[i] = ('{"timestamp":1,"count":1,"metricsType":"FFMETRICS","attributes":[{"key":"featureIdentifier","value":"f-@-%d"}]}'):format(i)
    end
    local template = '{"metricsData":[' .. table.concat(items, ",") .. '],"targetData":[]}'
    local peak = helpers.flood(host, {
      seconds = 8,
      bound_kb = 32 * 1024,
      step = function() -- ~190 KB of unique metrics per post
        n = n + 1
        local res = c:request { method = "POST", path = "/metrics/" .. ENV, headers = { Authorization = "Bearer " .. token },
          body = (template:gsub("@", tostring(n))) }
        if not res then c:close(); c = host:client(); return end
        if res.status == 200 then accepted = accepted + 1 end
      end,
      probe = function()
        local res = host:get(("/client/env/%s/target/alice/evaluations"):format(ENV), { Authorization = "Bearer " .. token })
        return res ~= nil and res.status == 200
      end,
    })
    c:close()
    local dropped = metric(host, "ff_proxy_metrics_dropped_total")
    print(("metrics flood: %d posts (%d answered 200), RSS peak +%d kB, %s dropped"):format(n, accepted, peak, tostring(dropped)))
    assert.is_true(accepted >= 40, "only " .. accepted .. " metrics posts answered") -- 40 x 190 KB: twice the queue
    if not helpers.asan() then assert.is_true((dropped or 0) > 0, "the flood never filled the metrics queue") end
    assert.equal(0, host:stop())
  end)
  it("labels metrics only with environments it serves, whatever ids requests bring", function()
    local host = F.cleanup(finally)(helpers.start(F.script, { flags = { "--offline", "--config-dir", CONFIG, "--bypass-auth" } }))
    for i = 1, 20 do
      assert.equal(200, host:get(("/client/env/not-served-%d/feature-configs"):format(i)).status)
    end
    assert.equal(200, host:get(("/client/env/%s/feature-configs"):format(ENV)).status)
    local body = host:get("/metrics").body
    assert.is_nil(body:find("not-served", 1, true), "a label per requested id")
    assert.truthy(body:find('ff_proxy_http_requests_total{url="/client/env/:environment_uuid/feature-configs",envID="' .. ENV .. '",code="200"} 1', 1, true))
    assert.truthy(body:find('ff_proxy_http_requests_total{url="/client/env/:environment_uuid/feature-configs",envID="",code="200"} 20', 1, true))
    assert.equal(0, host:stop())
  end)
end)
