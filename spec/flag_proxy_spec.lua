-- scripts/flag-proxy.lua offline, with real peers: the Harness Node server SDK from npm
-- evaluates every flag of the sample config through the proxy; raw HTTP checks the wire shapes
-- (auth, errors, CORS, SSE); SIGHUP re-reads the config and streams exactly what changed.
local helpers = require "spec.helpers"
local cjson = require "cjson"
local socket = require "socket"

local root = io.popen("cd " .. helpers.root .. " && pwd"):read("*l") -- node runs from elsewhere
local script = root .. "/scripts/flag-proxy.lua"
local js = root .. "/spec/js/"
local ENV = "1f6c9b2e-3d4a-4b5c-9e8f-0a1b2c3d4e5f"
local KEY = "sample-server-sdk-key"
local SECRET = "spec-secret-0123456789"

local function sh(cmd) return os.execute(cmd) end
local function read(path) local f = io.open(path); if not f then return nil end local s = f:read("*a"); f:close(); return s end
local function b64url_decode(s)
  s = s:gsub("-", "+"):gsub("_", "/")
  return (require("mime").unb64(s .. ("="):rep((4 - #s % 4) % 4)))
end

-- Targets and the values the spec's rules (§2.4) give for the sample config: worked out by hand
-- from examples/flag-proxy/config (percentage rows: murmur3 buckets, see the unit spec).
local TARGETS = {
  { identifier = "alice", name = "Alice", attributes = { email = "alice@example.com", country = "UK", plan = "pro", age = 34 } },
  { identifier = "bob", name = "Bob", attributes = { email = "bob@corp.example", country = "DE", plan = "free", beta = true } },
  { identifier = "carol", name = "Carol", attributes = { email = "carol@example.com", country = "US", plan = "enterprise" } },
  { identifier = "dave", name = "Dave", attributes = { email = "dave@corp.example", country = "US", plan = "pro" } },
  { identifier = "erin", name = "Erin" },
}
local BLUE, RED = '{"color":"blue","size":12}', '{"color":"red","size":14}'
local FLAGS = {
  -- flag, kind, then alice, bob, carol, dave, erin as variation identifier = value
  { "dark-mode", "boolean", { "true", "true", "false", "false", "false" } },          -- target map; segment (included / rule / excluded)
  { "banner-text", "string", { "hello-uk=Hello from the UK", "beta=You are in the beta", "welcome=Welcome!",
                               "beta=You are in the beta", "welcome=Welcome!" } },     -- segment rule (equal, any case), contains
  { "max-items", "int", { "twenty-five=25", "ten=10", "hundred=100", "twenty-five=25", "ten=10" } }, -- equal_sensitive, starts_with
  { "theme-config", "json", { "red=" .. RED, "red=" .. RED, "blue=" .. BLUE, "blue=" .. BLUE, "blue=" .. BLUE } }, -- 50/50 by identifier (92, 54, 17, 45, 25)
  { "new-checkout", "boolean", { "true", "true", "false", "false", "false" } },       -- prerequisite dark-mode=true
  { "rollout-percent", "boolean", { "false", "true", "false", "false", "true" } },    -- 40/60 by email (89, 34, 61, 54); erin: identifier (25)
  { "legacy-off", "string", { "off-value=off", "off-value=off", "off-value=off", "off-value=off", "off-value=off" } },
  { "gated-banner", "string", { "none=none", "vip-eu=VIP Europe", "none=none", "vip=VIP", "none=none" } }, -- prerequisite + in
}

local function expected(row, i)
  local cell = row[3][i]
  local id, value = cell:match("^(.-)=(.*)$")
  return id or cell, value or cell
end

-- What the Node SDK returns for a value: booleans, numbers, parsed JSON.
local function typed(kind, value)
  if kind == "boolean" then return value == "true" end
  if kind == "int" then return tonumber(value) end
  if kind == "json" then return cjson.decode(value) end
  return value
end

local function checks_json()
  local flags = {}
  for _, row in ipairs(FLAGS) do flags[#flags + 1] = { flag = row[1], kind = row[2] } end
  return cjson.encode({ flags = flags, targets = TARGETS })
end

local function node(args)
  local p = io.popen(("cd /tmp && timeout 60 node %sff-node-sdk.js %s 2>&1"):format(js, args))
  local out = p:read("*a")
  p:close()
  return out
end

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function auth(host, key, target)
  local res = host:request { method = "POST", path = "/client/auth", headers = { ["Content-Type"] = "application/json" },
    body = cjson.encode({ apiKey = key or KEY, target = target or { identifier = "alice" } }) }
  return res, res.status == 200 and cjson.decode(res.body).authToken or nil
end

-- A raw SSE client: returns the connection after the head, and a reader of body chunks.
local function open_stream(host, token, key)
  local c = host:client(5)
  c:send(("GET /stream?cluster=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nAPI-Key: %s\r\nAccept: text/event-stream\r\n\r\n")
    :format(token, key or KEY))
  local head = {}
  while true do
    local line = assert(c.sock:receive("*l"))
    if line == "" then break end
    head[#head + 1] = line
  end
  local function chunk(timeout)
    c:settimeout(timeout or 5)
    local size_line, err = c.sock:receive("*l")
    if not size_line then return nil, err end
    local size = tonumber(size_line, 16)
    if size == 0 then return nil, "end" end
    local data = c.sock:receive(size)
    c.sock:receive("*l")
    return data
  end
  return c, table.concat(head, "\n"), chunk
end

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
    local out = node(("eval http://127.0.0.1:%d %s %s"):format(host.port, KEY, q(checks_json())))
    local ok, got = pcall(cjson.decode, out)
    assert(ok, "node said: " .. out)
    for _, row in ipairs(FLAGS) do
      for i, t in ipairs(TARGETS) do
        local _, value = expected(row, i)
        assert.same(typed(row[2], value), got[row[1]][t.identifier], row[1] .. " for " .. t.identifier)
      end
    end
    assert.is_nil(upstream:accept(), "offline mode connected to the network")
  end)

  it("serves /evaluations with the same results, honouring Harness-Target", function()
    local _, token = auth(host, KEY, TARGETS[1])
    for i, t in ipairs(TARGETS) do
      local res = host:get(("/client/env/%s/target/%s/evaluations?cluster=1"):format(ENV, t.identifier), {
        Authorization = "Bearer " .. token,
        ["Harness-Target"] = (require("mime").b64(cjson.encode(t))),
      })
      assert.equal(200, res.status)
      assert.equal("application/json; charset=utf-8", res.headers["content-type"])
      assert.equal("\n", res.body:sub(-1))
      local list = cjson.decode(res.body)
      assert.equal(#FLAGS, #list)
      for j, row in ipairs(FLAGS) do
        local id, value = expected(row, i)
        assert.same({ flag = row[1], identifier = id, kind = row[2], value = value }, list[j])
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
    assert.equal(#FLAGS, #flags)
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
      :format(js, host.port, KEY, q(checks_json()), out, pidf))
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
    local more = chunk(1.2) -- a heartbeat, or nothing
    assert.is_nil(more and more:match("^event"), "no event for what did not change")
    c:close()

    local res = host:get("/client/env/" .. ENV .. "/feature-configs/banner-text", { Authorization = "Bearer " .. token })
    assert.equal(2, cjson.decode(res.body).version)
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
      { { "--api-keys", "k", "--port", "70000" }, {}, "PORT" },
      { { "--api-keys", "k" }, { LOG_LEVEL = "LOUD" }, "LOG_LEVEL" },
    }
    for _, c in ipairs(cases) do
      local rc, text = check(c[1], c[2])
      assert.are_not.equal(0, rc, table.concat(c[1], " "))
      assert.truthy(text:find(c[3], 1, true), c[3] .. " not named in: " .. text)
    end
  end)

  it("warns about the insecure default AUTH_SECRET and exports relayhost_insecure_config", function()
    local host = helpers.start(script, { flags = { "--offline", "--config-dir", root .. "/examples/flag-proxy/config" } })
    assert.truthy(host:log():find('"event":"insecure_config"', 1, true))
    assert.truthy(host:get("/metrics").body:find("relayhost_insecure_config 1", 1, true))
    assert.equal(0, host:stop())
  end)
end)
