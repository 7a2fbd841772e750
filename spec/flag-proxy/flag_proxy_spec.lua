-- scripts/flag-proxy.lua offline, with real peers: the Harness Node server SDK from npm
-- evaluates every flag of the sample config through the proxy; raw HTTP checks the wire shapes
-- (auth, errors, CORS, SSE); SIGHUP re-reads the config and streams exactly what changed.
local helpers = require "spec.helpers"
local cjson = require "cjson"
local socket = require "socket"

local F = dofile(helpers.fixture("flag_proxy.lua"))
local root, script, js, ENV, KEY = F.root, F.script, F.js, F.ENV, F.KEY
local sh, read, b64url_decode, TARGETS, SAMPLE = F.sh, F.read, F.b64url_decode, F.TARGETS, F.SAMPLE
local checks_json, node, q, auth, open_stream = F.checks_json, F.node, F.q, F.auth, F.open_stream
local SECRET = "spec-secret-0123456789"

describe("flag proxy, offline", function()
  local host, dir, upstream, envdir

  setup(function()
    dir = helpers.tmpdir()
    sh(("cp -r %s/examples/flag-proxy/config %s/config"):format(root, dir))
    envdir = dir .. "/config/env-" .. ENV
    -- A listener standing in for the network: offline mode must never dial it.
    upstream = assert(socket.bind("127.0.0.1", 0))
    upstream:settimeout(0)
    local _, uport = upstream:getsockname()
    host = helpers.start(script, {
      flags = { "--offline", "--config-dir", dir .. "/config", "--sse-heartbeat", "1" },
      env = { AUTH_SECRET = SECRET, SDK_BASE_URL = "http://127.0.0.1:" .. uport, SDK_EVENTS_URL = "http://127.0.0.1:" .. uport },
    })
  end)
  teardown(function()
    if host then assert.equal(0, host:stop()) end
    if upstream then upstream:close() end
  end)

  it("lets the real Node server SDK evaluate every flag as the spec's rules say", function()
    F.node_evaluates_all(host.port) -- the cases of spec/fixtures/ff-test-cases/sample.json
    assert.is_nil(upstream:accept(), "offline mode connected to the network")
  end)

  it("serves /evaluations with the same results, honouring Harness-Target", function()
    local _, token = auth(host, KEY, TARGETS[1])
    local want = {}
    for _, c in ipairs(SAMPLE.tests) do want[c.target .. "\0" .. c.flag] = c.expected end
    for _, t in ipairs(TARGETS) do
      local res = host:get(("/client/env/%s/target/%s/evaluations?cluster=1"):format(ENV, t.identifier), {
        Authorization = "Bearer " .. token,
        ["Harness-Target"] = (require("mime").b64(cjson.encode(t))),
      })
      assert.equal(200, res.status)
      assert.equal("application/json; charset=utf-8", res.headers["content-type"])
      assert.equal("\n", res.body:sub(-1))
      local list = cjson.decode(res.body)
      assert.equal(#SAMPLE.flags, #list)
      for j, ev in ipairs(list) do
        local fc = SAMPLE.flags[j]
        assert.equal(fc.feature, ev.flag)
        assert.equal(fc.kind, ev.kind)
        local variation
        for _, v in ipairs(fc.variations) do if v.identifier == ev.identifier then variation = v end end
        assert.truthy(variation, ev.flag .. ": unknown variation " .. tostring(ev.identifier))
        assert.equal(variation.value, ev.value)
        assert.same(want[t.identifier .. "\0" .. ev.flag], F.typed(ev.kind, ev.value), ev.flag .. " for " .. t.identifier)
      end
    end
    -- one flag; without the header the target seen at auth (alice, with attributes) is used
    local res = host:get(("/client/env/%s/target/alice/evaluations/banner-text"):format(ENV), { Authorization = "Bearer " .. token })
    assert.equal(200, res.status)
    assert.same({ flag = "banner-text", identifier = "hello-uk", kind = "string", value = "Hello from the UK" }, cjson.decode(res.body))
    res = host:get(("/client/env/%s/target/alice/evaluations/nope"):format(ENV), { Authorization = "Bearer " .. token })
    assert.equal(404, res.status)
  end)

  it("issues HS256 tokens with ff-proxy's claims, and refuses bad auth requests", function()
    local res, token = auth(host, KEY, { identifier = "bob", name = "Bob" })
    assert.equal(200, res.status)
    local h, p = token:match("^([^.]+)%.([^.]+)%.")
    assert.same({ alg = "HS256", typ = "JWT" }, cjson.decode(b64url_decode(h)))
    local claims = cjson.decode(b64url_decode(p))
    assert.equal(ENV, claims.environment)
    assert.equal("1", claims.clusterIdentifier)
    assert.truthy(claims.apiKey:match("^auth%-key%-%x+$"))
    assert.is_nil(claims.exp)
    assert.is_number(claims.iat)
    -- unknown key: 401 {"error":"unauthorised"}
    res = auth(host, "not-a-key")
    assert.equal(401, res.status)
    assert.same({ error = "unauthorised" }, cjson.decode(res.body))
    for _, body in ipairs { "", "{not json", '{"apiKey":""}', '{"apiKey":"k","target":{"identifier":"a b"}}',
                            '{"apiKey":"k","target":{"identifier":"a","name":"O\'Brien"}}' } do
      res = host:request { method = "POST", path = "/client/auth", body = body }
      assert.equal(400, res.status, body)
      assert.truthy(cjson.decode(res.body).error:match("^bad request"))
    end
  end)

  it("refuses bad tokens and other environments, and answers missing items with 404", function()
    local _, token = auth(host)
    local path = "/client/env/" .. ENV .. "/feature-configs"
    assert.equal(401, host:get(path).status)
    assert.equal(401, host:get(path, { Authorization = "Bearer x.y.z" }).status)
    local forged = token:gsub("%.[^.]+$", ".AAAA")
    local res = host:get(path, { Authorization = "Bearer " .. forged })
    assert.equal(401, res.status)
    assert.truthy(cjson.decode(res.body).error:match("bad signature"))
    res = host:get("/client/env/other-env/feature-configs", { Authorization = "Bearer " .. token })
    assert.equal(401, res.status)
    assert.truthy(cjson.decode(res.body).message:match("mismatch with requested other%-env"))
    res = host:get(path .. "/nope", { Authorization = "Bearer " .. token })
    assert.equal(404, res.status)
    assert.same({ error = "not found: feature config nope" }, cjson.decode(res.body))
    res = host:get(path .. "?cluster=1;foo=bar", { Authorization = "Bearer " .. token }) -- ';' accepted
    assert.equal(200, res.status)
    local flags = cjson.decode(res.body)
    assert.equal(#SAMPLE.flags, #flags)
    for _, f in ipairs(flags) do -- always arrays (Node iterates them), never null
      assert.is_table(f.rules); assert.is_table(f.prerequisites); assert.is_table(f.variationToTargetMap)
    end
    assert.truthy(res.body:find('"prerequisites":[]', 1, true))
    res = host:get("/client/env/" .. ENV .. "/target-segments/uk-users?rules=v2", { Authorization = "Bearer " .. token })
    assert.equal(200, res.status)
    assert.equal("uk-users", cjson.decode(res.body).identifier)
  end)

  it("answers CORS like Echo, /health in the v2 shape, metrics posts with null", function()
    local res = host:request { method = "OPTIONS", path = "/client/auth", headers = {
      Origin = "http://app.example", ["Access-Control-Request-Method"] = "POST" } }
    assert.equal(204, res.status)
    assert.equal("*", res.headers["access-control-allow-origin"])
    assert.equal("GET,OPTIONS,POST", res.headers["access-control-allow-methods"])
    assert.equal("*,Authorization", res.headers["access-control-allow-headers"])
    res = host:get("/health")
    assert.equal(200, res.status)
    assert.equal("*", res.headers["access-control-allow-origin"])
    local h = cjson.decode(res.body)
    assert.equal("SYNCED", h.configStatus.state)
    assert.equal("CONNECTED", h.streamStatus.state)
    assert.equal("healthy", h.cacheStatus)
    local _, token = auth(host)
    res = host:request { method = "POST", path = "/metrics/" .. ENV .. "?cluster=1", headers = { Authorization = "Bearer " .. token },
      body = '{"metricsData":[],"targetData":[]}' }
    assert.equal(200, res.status)
    assert.equal("null\n", res.body)
    res = host:request { method = "POST", path = "/metrics/" .. ENV, headers = { Authorization = "Bearer " .. token }, body = "{oops" }
    assert.equal(400, res.status)
    assert.truthy(cjson.decode(res.body).error:match("not a JSON object"))
    res = host:get("/metrics")
    assert.equal(200, res.status)
    assert.truthy(res.body:find('ff_proxy_http_requests_total{url="/client/auth"', 1, true))
  end)

  it("gives an unknown SDK key 401, which the Node SDK retries (spec §1.1)", function()
    local before = select(2, host:log():gsub('"path":"/client/auth","status":401', ""))
    local out = node(("auth http://127.0.0.1:%d wrong-key"):format(host.port))
    assert.same({ failed = true, status = 401 }, cjson.decode(out))
    -- axiosRetries = 2 in the peer: 3 attempts. The SDK's default is Infinity: it never stops.
    local after = select(2, host:log():gsub('"path":"/client/auth","status":401', ""))
    assert.equal(3, after - before)
  end)

  it("holds /stream: comment at once, heartbeats while idle, refuses bad requests", function()
    local _, token = auth(host)
    local c, head, chunk = open_stream(host, token)
    assert.truthy(head:match("^HTTP/1.1 200"))
    assert.truthy(head:lower():find("content-type: text/event-stream", 1, true))
    assert.truthy(head:lower():find("access-control-allow-origin: *", 1, true))
    assert.equal(":\n\n", chunk(1))
    local t0 = socket.gettime()
    assert.equal(":\n\n", chunk(3)) -- --sse-heartbeat 1
    assert.is_true(socket.gettime() - t0 > 0.5)
    c:close()
    local res = host:get("/stream", { Authorization = "Bearer " .. token })
    assert.equal(400, res.status)
    assert.truthy(cjson.decode(res.body).error:match("API%-Key"))
    res = host:get("/stream", { Authorization = "Bearer " .. token, ["API-Key"] = "unknown" })
    assert.equal(404, res.status)
    assert.equal(401, host:get("/stream", { ["API-Key"] = KEY }).status)
  end)

  it("streams exactly what changed on SIGHUP; a streaming Node SDK sees it in under a second", function()
    local _, token = auth(host)
    local out = dir .. "/watch.out"
    local pidf = dir .. "/watch.pid"
    sh(("cd /tmp && (node %sff-node-sdk.js watch http://127.0.0.1:%d %s %s > %s 2>&1 </dev/null & echo $! > %s)")
      :format(js, host.port, KEY, q(checks_json(SAMPLE)), out, pidf))
    F.cleanup(finally)(function() sh("kill " .. (read(pidf) or "") .. " 2>/dev/null") end)
    helpers.wait_until(function() return (read(out) or ""):find("ready") end, 20, "the Node SDK to stream")
    helpers.wait_until(function()
      return host:get("/metrics").body:find('ff_proxy_http_requests_total{url="/stream",envID="' .. ENV .. '",code="200"}', 1, true)
    end, 5, "the SDK's stream")
    local c, _, chunk = open_stream(host, token)
    assert.equal(":\n\n", chunk())

    -- banner-text: default changes, version stays 1 in the file; legacy-off: deleted;
    -- uk-users: rule changes. Everything else is untouched.
    local flags = cjson.decode(read(envdir .. "/feature_config.json"))
    local kept = {}
    for _, f in ipairs(flags) do
      if f.feature == "banner-text" then f.defaultServe.variation = "beta" end
      if f.feature ~= "legacy-off" then kept[#kept + 1] = f end
    end
    helpers.write_file(envdir .. "/feature_config.json", cjson.encode(kept))
    local segs = cjson.decode(read(envdir .. "/segments.json"))
    segs[2].rules[1].values = { "de" }
    helpers.write_file(envdir .. "/segments.json", cjson.encode(segs))
    local t0 = socket.gettime()
    assert.is_true(host:reload())
    -- carol is in no segment: she sees the new default once the SDK has re-fetched the flag
    local function sdk_saw_it()
      for line in (read(out) or ""):gmatch('[^\n]*"changed":"banner%-text"[^\n]*') do
        if cjson.decode(line).values["banner-text"].carol == "You are in the beta" then return true end
      end
    end
    helpers.wait_until(sdk_saw_it, 5, "the SDK to see the change")
    local elapsed = socket.gettime() - t0
    sh("kill " .. read(pidf))
    assert.is_true(elapsed < 1, ("the change took %.3f s"):format(elapsed))

    local seen = {}
    for _ = 1, 3 do
      local data = assert(chunk(2))
      local ev = assert(data:match("^event: %*\ndata: (.-)\n\n$"), "one event per write: " .. data)
      ev = cjson.decode(ev)
      seen[ev.domain .. ":" .. ev.identifier] = ev
      assert.equal(ENV, ev.environment)
    end
    assert.equal("patch", seen["flag:banner-text"].event)
    assert.equal(2, seen["flag:banner-text"].version)
    assert.equal("delete", seen["flag:legacy-off"].event)
    assert.equal("patch", seen["target-segment:uk-users"].event)
    assert.equal(2, seen["target-segment:uk-users"].version)
    -- the log names what changed, not only how many events went out
    local line = assert(host:log():match('[^\n]*"event":"flag_config_changed"[^\n]*'), host:log())
    line = cjson.decode(line)
    assert.equal("flag:banner-text,flag:legacy-off,segment:uk-users", line.changed)
    assert.equal(ENV, line.environments)
    local more = chunk(1.2) -- a heartbeat, or nothing
    assert.is_nil(more and more:match("^event"), "no event for what did not change")
    c:close()

    local res = host:get("/client/env/" .. ENV .. "/feature-configs/banner-text", { Authorization = "Bearer " .. token })
    assert.equal(2, cjson.decode(res.body).version)
  end)
end)

describe("flag proxy, cross-SDK evaluation cases", function()
  it("passes every spec/fixtures/ff-test-cases file through the Node SDK", function()
    local keep = F.cleanup(finally)
    local p = io.popen("ls " .. F.CASES_DIR .. "/*.json")
    for path in p:lines() do
      local cases = F.load_cases(path)
      local host = keep(helpers.start(script, { flags = { "--offline", "--config-dir", F.write_config(helpers.tmpdir(), cases) } }))
      F.node_evaluates_all(host.port, cases)
      assert.equal(0, host:stop())
    end
    p:close()
  end)

  it("keeps examples/flag-proxy/config equal to the sample cases' flags and groups", function()
    local dir = root .. "/examples/flag-proxy/config/env-" .. ENV .. "/"
    assert.same(SAMPLE.flags, cjson.decode(read(dir .. "feature_config.json")))
    assert.same(SAMPLE.segments, cjson.decode(read(dir .. "segments.json")))
  end)
end)

describe("flag proxy settings", function()
  local function check(args, env)
    local all = { "check", script }
    for _, a in ipairs(args) do all[#all + 1] = a end
    local rc, out, err = helpers.run(all, env)
    return rc, out .. err
  end

  it("refuses missing or contradictory settings, naming them", function()
    local cases = {
      { {}, {}, "API_KEYS" },
      { { "--offline", "--generate-offline-config" }, {}, "GENERATE_OFFLINE_CONFIG" },
      { { "--read-replica" }, {}, "REDIS_ADDRESS" },
      { { "--offline", "--config-dir", "/nonexistent" }, {}, "CONFIG_DIR" },
      { { "--api-keys", "k", "--tls-enabled" }, {}, "TLS_CERT" },
      { { "--api-keys", "k" }, { SDK_BASE_URL = "ftp://x" }, "SDK_BASE_URL" },
      -- the original's other names of the same settings (relay.flags aliases)
      { { "--apiKey", "k", "--client-service", "ftp://y" }, {}, "SDK_BASE_URL: 'ftp://y'" },
      { { "--apiKey", "k" }, { CLIENT_SERVICE = "ftp://z" }, "SDK_BASE_URL: 'ftp://z'" },
      { { "--api-keys", "k", "--port", "70000" }, {}, "PORT" },
      { { "--api-keys", "k" }, { LOG_LEVEL = "LOUD" }, "LOG_LEVEL" },
      { { "--api-keys", "k" }, { TARGET_STORE_MAX_BYTES = "1.5" }, "TARGET_STORE_MAX_BYTES" },
      { { "--api-keys", "k" }, { TARGET_ATTRIBUTES_MAX_BYTES = "-1" }, "TARGET_ATTRIBUTES_MAX_BYTES" },
    }
    for _, c in ipairs(cases) do
      local rc, text = check(c[1], c[2])
      assert.are_not.equal(0, rc, table.concat(c[1], " "))
      assert.truthy(text:find(c[3], 1, true), c[3] .. " not named in: " .. text)
    end
    -- every problem at once, not one per attempt to start
    local rc, text = check({ "--offline", "--read-replica", "--tls-enabled" }, { LOG_LEVEL = "LOUD" })
    assert.are_not.equal(0, rc)
    for _, want in ipairs { "4 problems", "OFFLINE and READ_REPLICA", "READ_REPLICA needs REDIS_ADDRESS", "TLS_ENABLED needs", "LOG_LEVEL" } do
      assert.truthy(text:find(want, 1, true), want .. " not named in: " .. text)
    end
  end)

  it("names the file when the config directory is broken, at start and on SIGHUP", function()
    local dir = helpers.tmpdir()
    sh(("cp -r %s/examples/flag-proxy/config %s/config"):format(root, dir))
    local file = dir .. "/config/env-" .. ENV .. "/segments.json"
    helpers.write_file(file, "[{oops")
    local rc, text = check({ "--offline", "--config-dir", dir .. "/config" }, {})
    assert.are_not.equal(0, rc)
    assert.truthy(text:find(file .. ": not valid JSON", 1, true), text)
    helpers.write_file(file, '{"identifier":"x"}')
    rc, text = check({ "--offline", "--config-dir", dir .. "/config" }, {})
    assert.truthy(text:find(file .. ": expected a JSON array", 1, true), text)
    -- a running proxy keeps serving its last good config when a reload finds a broken one
    sh(("cp %s/examples/flag-proxy/config/env-%s/segments.json %s"):format(root, ENV, file))
    local host = F.cleanup(finally)(helpers.start(script, { flags = { "--offline", "--config-dir", dir .. "/config" } }))
    helpers.write_file(dir .. "/config/env-" .. ENV .. "/feature_config.json", '[{"kind":"boolean"}]')
    local ok, line = host:reload()
    assert.is_false(ok)
    assert.truthy(line:find('feature_config.json: item 1: feature: expected a non-empty string, got nothing', 1, true), line)
    local _, token = auth(host)
    assert.equal(200, host:get("/client/env/" .. ENV .. "/feature-configs/dark-mode", { Authorization = "Bearer " .. token }).status)
    assert.equal(0, host:stop())
  end)

  it("serves HTTPS with TLS_ENABLED/TLS_CERT/TLS_KEY and accepts tokens of LEGACY_SECRETS", function()
    local dir = helpers.tmpdir()
    assert.is_true(sh(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/key.pem -out %s/cert.pem -days 2 " ..
      "-subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 2>/dev/null"):format(dir, dir)) == 0)
    local cfg = root .. "/examples/flag-proxy/config"
    local keep = F.cleanup(finally)
    local old = keep(helpers.start(script, { flags = { "--offline", "--config-dir", cfg }, env = { AUTH_SECRET = "old-secret" } }))
    local _, token = auth(old)
    assert.equal(0, old:stop())
    local host = keep(helpers.start(script, { flags = { "--offline", "--config-dir", cfg }, env = {
      AUTH_SECRET = "new-secret", LEGACY_SECRETS = "older-secret,old-secret",
      TLS_ENABLED = "true", TLS_CERT = dir .. "/cert.pem", TLS_KEY = dir .. "/key.pem" } }))
    local p = io.popen(("curl -s --cacert %s/cert.pem -H 'Authorization: Bearer %s' https://127.0.0.1:%d/client/env/%s/feature-configs/dark-mode")
      :format(dir, token, host.port, ENV))
    local body = p:read("*a")
    p:close()
    assert.equal("dark-mode", cjson.decode(body).feature)
    assert.equal(0, host:stop())
  end)

  it("warns about the insecure default AUTH_SECRET and exports relayhost_insecure_config", function()
    local host = F.cleanup(finally)(helpers.start(script, { flags = { "--offline", "--config-dir", root .. "/examples/flag-proxy/config" } }))
    assert.truthy(host:log():find('"event":"insecure_config"', 1, true))
    assert.truthy(host:get("/metrics").body:find("relayhost_insecure_config 1", 1, true))
    assert.equal(0, host:stop())
  end)
end)

describe("flag proxy, offline, a large change", function()
  it("logs at most 20 changed names, then how many more", function()
    local dir = helpers.tmpdir()
    sh(("cp -r %s/examples/flag-proxy/config %s/config"):format(root, dir))
    local file = dir .. "/config/env-" .. ENV .. "/feature_config.json"
    local host = helpers.start(script, { flags = { "--offline", "--config-dir", dir .. "/config" },
                                         env = { AUTH_SECRET = SECRET } })
    F.cleanup(finally)(function() host:stop() end)
    local flags = cjson.decode(read(file))
    for i = 1, 25 do
      local f = cjson.decode(cjson.encode(flags[1]))
      f.feature = ("new-%02d"):format(i)
      flags[#flags + 1] = f
    end
    helpers.write_file(file, cjson.encode(flags))
    assert.is_true(host:reload())
    helpers.wait_until(function() return host:count("flag_config_changed") > 0 end, 5, "the change's log line")
    local line = cjson.decode(host:log():match('[^\n]*"event":"flag_config_changed"[^\n]*'))
    assert.equal(25, line.events)
    assert.equal("flag:new-01,flag:new-02,flag:new-03,flag:new-04,flag:new-05,flag:new-06,flag:new-07,flag:new-08,"
      .. "flag:new-09,flag:new-10,flag:new-11,flag:new-12,flag:new-13,flag:new-14,flag:new-15,flag:new-16,flag:new-17,"
      .. "flag:new-18,flag:new-19,flag:new-20 … and 5 more", line.changed)
  end)
end)
