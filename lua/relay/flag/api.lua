-- The HTTP API of ff-proxy. For the SDKs (spec §1): auth, feature-configs, target-segments,
-- evaluations, stream, metrics, health; answers are byte-compatible: JSON with a trailing
-- newline, bare arrays, {"error": ...} bodies, CORS as Echo's middleware sends it. For a
-- v2-style relayhost chained to this one (PROXY_KEY): ff-proxy v2's POST /proxy/auth and
-- GET /proxy/config (paged), served from this cache, and the account-level /stream.
local relay = require "relay"
local json = require "relay.json"
local jsonapi = require "relay.jsonapi"
local harness = require "relay.harness"
local lru = require "relay.lru"
local PROXY_CHANNEL = require("relay.flag.sync").PROXY_CHANNEL

local sha256_hex = relay.crypto.sha256_hex

local M = {}

local JSON_TYPE = "application/json; charset=utf-8"
local requests = relay.metrics.counter("ff_proxy_http_requests_total", "SDK requests served",
  { "url", "envID", "code" })

-- Targets seen at /client/auth (spec §1.1: later evaluations of that identifier use them), as
-- JSON text in an LRU bounded by TARGET_STORE_MAX_LEN and TARGET_STORE_MAX_BYTES: client SDK
-- keys are public, so anyone may post targets.
local targets_held = relay.metrics.gauge("ff_proxy_target_store_targets", "targets held from /client/auth")
local targets_bytes = relay.metrics.gauge("ff_proxy_target_store_bytes", "bytes of the targets held from /client/auth")
local targets_evicted = relay.metrics.counter("ff_proxy_target_store_evictions_total",
  "targets dropped from the store to stay within TARGET_STORE_MAX_LEN / TARGET_STORE_MAX_BYTES")

local function keep_target(targets, env_id, tid, text)
  local dropped = targets:set(env_id .. "\0" .. tid, text)
  if dropped > 0 then targets_evicted:inc(dropped) end
  targets_held:set(targets.count)
  targets_bytes:set(targets.bytes)
end

-- What an auth body may carry besides the target's attributes (key, identifier, name, JSON).
local AUTH_SLACK = 16 * 1024
-- Evaluation answers cached per environment.
local EVAL_CACHE_LEN, EVAL_CACHE_BYTES = 10000, 8 * 1024 * 1024

-- identifier and name rules of ff-proxy's auth request (a name allows any letter).
local function valid_identifier(s) return s:find("^[%w%.@_%-]*$") ~= nil end
local function valid_name(s) return s:find("^[%w%.@_%- \128-\255]*$") ~= nil end

local function object_of(text) return (json.decode_table(text or "")) end

-- A proxy token is ours, of key_type Proxy, for this proxy key.
local function proxy_claims(req, cfg)
  local token = req:bearer()
  local claims = token and relay.jwt.verify(token, cfg.auth_secret, { leeway = 60 })
  return claims and claims.key_type == "Proxy" and cfg.proxy_key ~= ""
    and claims.key == sha256_hex(cfg.proxy_key)
end

-- ff-proxy v2's upstream endpoints (for a chained relayhost with PROXY_KEY).
local function install_proxy_api(app, cfg, store)
  local answers = jsonapi.new { content_type = JSON_TYPE, newline = true,
                                headers = { ["access-control-allow-origin"] = "*" } }

  app:post("/proxy/auth", function(req, res)
    local body = object_of(req:body())
    if not body or type(body.proxyKey) ~= "string" or body.proxyKey == "" then
      return answers:error(res, 400, "bad request: proxyKey is required")
    end
    if cfg.proxy_key == "" or not relay.crypto.constant_time_equal(body.proxyKey, cfg.proxy_key) then
      return answers:error(res, 401, "unauthorised")
    end
    local now = math.floor(relay.time())
    local token = relay.jwt.sign({ key_type = "Proxy", key = sha256_hex(body.proxyKey), cluster_identifier = "1",
      environments = store:ids(), iat = now, nbf = now }, cfg.auth_secret)
    answers:send(res, 200, { token = token })
  end)

  app:get("/proxy/config", function(req, res)
    if not proxy_claims(req, cfg) then return answers:error(res, 401, "unauthorised") end
    local ids = store:ids()
    if type(req.args.environment) == "string" and req.args.environment ~= "" then
      ids = store.envs[req.args.environment] and { req.args.environment } or {}
    end
    local size = math.max(1, math.min(tonumber(req.args.pageSize) or 10, 100))
    local page = math.max(0, math.floor(tonumber(req.args.pageNumber) or 0))
    local envs = json.array()
    for i = page * size + 1, math.min(#ids, (page + 1) * size) do
      local env = store.envs[ids[i]]
      envs[#envs + 1] = { id = env.id, apiKeys = env.keys, featureConfigs = env.flags, segments = env.segments }
    end
    answers:send(res, 200, { pageCount = math.max(1, math.ceil(#ids / size)), itemCount = #ids, pageSize = size,
                             pageIndex = page, environments = envs })
  end)
end

-- cfg: relay.flag.config's settings; store: relay.flag.store; sync: relay.flag.sync (health);
-- forward: relay.flag.metrics_forward (SDK metrics).
function M.install(app, cfg, store, sync, forward)
  -- The same headers on every SDK answer, each counted by route, environment and status. Only
  -- the environments served become an envID label: an id from a URL (BYPASS_AUTH) or a token
  -- minted with the insecure default secret would otherwise add a label set, and a Prometheus
  -- series, per request.
  local answers = jsonapi.new { content_type = JSON_TYPE, newline = true, counter = requests,
                                headers = { ["access-control-allow-origin"] = "*", vary = "Origin" } }
  local function reply(res, status, body, route, env)
    return answers:send(res, status, body, route, store.envs[env] and env or "")
  end
  local function err(status, msg) return status, { error = msg } end

  local targets = lru.new { max_items = cfg.target_store_max_len, max_bytes = cfg.target_store_max_bytes }
  targets_held:set(0)
  targets_bytes:set(0)
  install_proxy_api(app, cfg, store)

  -- SDK tokens: signed with AUTH_SECRET, or a legacy one; each verified once (they carry no exp).
  local verify = jsonapi.jwt_verifier({ cfg.auth_secret, unpack(cfg.legacy_secrets) }, { leeway = 60 })

  -- Bearer JWT signed with AUTH_SECRET (or a legacy one) whose key still exists.
  local function authorize(req)
    if cfg.bypass_auth then return {} end
    local token = req:bearer()
    if not token then return nil, "missing or malformed jwt" end
    local claims, why = verify(token)
    if not claims then return nil, "invalid or expired jwt: " .. tostring(why) end
    if type(claims.apiKey) == "string" then
      local hash = claims.apiKey:match("^auth%-key%-(%x+)$")
      if not hash or not store.key_env[hash] then return nil, "the token's API key is no longer valid" end
    end
    return claims
  end

  -- One SDK route: with auth, an SDK token (then one of the path's :environment_uuid, if it has
  -- one) is checked here, for every route alike. handler(req, res, env_id, claims) -> status,
  -- body and the environment to label the answer with (default the path's); nothing when it
  -- answered itself (an SSE stream).
  local function route(method, path, auth, handler, opts)
    app[method](app, path, function(req, res)
      local env, claims, why = req.params.environment_uuid, nil, nil
      if auth then
        claims, why = authorize(req)
        if not claims then return reply(res, 401, { error = why }, path) end -- no label from an unchecked URL
        if env and claims.environment and claims.environment ~= env then
          return reply(res, 401, { message = ("Environment ID [%s] mismatch with requested %s")
            :format(tostring(claims.environment), env) }, path, claims.environment)
        end
      end
      local status, body, label = handler(req, res, env, claims)
      if status then reply(res, status, body, path, label or env) end
    end, opts)
  end

  jsonapi.preflight(app, "GET,OPTIONS,POST", "*,Authorization")

  -- Anyone may call /client/auth (client SDK keys ship in browser apps): the attributes are
  -- bounded, an auth body may carry them plus AUTH_SLACK for the rest, and the targets kept
  -- for evaluations live in a bounded store (keep_target).
  local attr_max = cfg.target_attributes_max_bytes
  local body_max = attr_max + AUTH_SLACK
  local function too_large(what, n)
    return err(413, ("request too large: %s %d bytes, over TARGET_ATTRIBUTES_MAX_BYTES (%d)%s")
      :format(what, n, attr_max, what == "body" and (" + %d for the rest of the request"):format(AUTH_SLACK) or ""))
  end

  -- The auth request's target, or nil, status and message.
  local function auth_target(r)
    local target = type(r.target) == "table" and r.target or {}
    local tid = type(target.identifier) == "string" and target.identifier or ""
    if target.name == nil or target.name == "" then target.name = tid end
    if not valid_identifier(tid) then return nil, 400, "bad request: invalid target identifier" end
    if type(target.name) ~= "string" or not valid_name(target.name) then return nil, 400, "bad request: invalid target name" end
    local attrs = target.attributes
    if attrs ~= nil and attrs ~= json.null and type(attrs) ~= "table" then
      return nil, 400, "bad request: target attributes must be a JSON object"
    end
    return target, tid
  end

  route("post", "/client/auth", false, function(req)
    local body = req:body()
    if not body or body == "" then return err(400, "bad request: empty body") end
    if #body > body_max then return too_large("body", #body) end
    local r = object_of(body)
    if not r then return err(400, "bad request: body is not a JSON object") end
    if type(r.apiKey) ~= "string" or r.apiKey == "" then return err(400, "bad request: apiKey is empty") end
    local target, tid, msg = auth_target(r)
    if not target then return err(tid, msg) end
    local attr_bytes = type(target.attributes) == "table" and #json.encode(target.attributes) or 0
    if attr_bytes > attr_max then return too_large("target attributes are", attr_bytes) end
    local hash = sha256_hex(r.apiKey)
    local env_id = store.key_env[hash]
    if not env_id then return err(401, "unauthorised") end
    if tid ~= "" then
      local env = store.envs[env_id]
      keep_target(targets, env_id, tid, json.encode(target))
      if env.evaluations then env.evaluations:delete("t" .. tid) end
    end
    local now = math.floor(relay.time())
    local token = relay.jwt.sign({ apiKey = "auth-key-" .. hash, environment = env_id,
      clusterIdentifier = "1", iat = now, nbf = now }, cfg.auth_secret)
    return 200, { authToken = token }, env_id
  end, { max_body = math.max(1024 * 1024, body_max) }) -- up to 1 MiB the answer names the limit

  -- Flags and target groups: the list, and one by id.
  for _, k in ipairs { { "feature-configs", "flag", "feature config" }, { "target-segments", "segment", "target segment" } } do
    route("get", "/client/env/:environment_uuid/" .. k[1], true, function(req, _, env)
      return 200, store:answer(env, k[2], nil, req.args.rules == "v2")
    end)
    route("get", "/client/env/:environment_uuid/" .. k[1] .. "/:identifier", true, function(req, _, env)
      local body = store:answer(env, k[2], req.params.identifier, req.args.rules == "v2")
      if not body then return err(404, ("not found: %s %s"):format(k[3], req.params.identifier)) end
      return 200, body
    end)
  end

  -- The target to evaluate: the Harness-Target header, else the one seen at auth, else the id.
  local function target_of(req, env)
    local h, id = req.headers["harness-target"], req.params.target
    local t = h and h ~= "" and object_of(relay.base64.decode(h))
    if t then
      t.identifier = t.identifier or id
      return t
    end
    return object_of(targets:get(env.id .. "\0" .. id)) or env.target[id] or { identifier = id, name = id }
  end

  local EV = "/client/env/:environment_uuid/target/:target/evaluations"
  local function evaluation(env, fc, target)
    return (harness.evaluation({ flags = env.flag, segments = env.segment }, fc, target))
  end

  -- Answers per target, kept with the environment (a new config replaces the environment and
  -- so the cache): keyed by the Harness-Target header, or by the identifier (then dropped when
  -- /client/auth brings new attributes for it). An LRU bounded by count and bytes: every SDK
  -- request may bring its own Harness-Target header.
  route("get", EV, true, function(req, _, env_id)
    local env = store.envs[env_id]
    if not env then return 200, "[]\n" end
    local h = req.headers["harness-target"]
    local key = h and h ~= "" and ("h" .. h) or ("t" .. req.params.target)
    env.evaluations = env.evaluations or lru.new { max_items = EVAL_CACHE_LEN, max_bytes = EVAL_CACHE_BYTES }
    local body = env.evaluations:get(key)
    if body then return 200, body end
    local target, out = target_of(req, env), json.array()
    for _, fc in ipairs(env.flags) do out[#out + 1] = evaluation(env, fc, target) end
    body = json.encode(out) .. "\n"
    env.evaluations:set(key, body)
    return 200, body
  end)

  route("get", EV .. "/:feature", true, function(req, _, env_id)
    local env = store.envs[env_id]
    local fc = env and env.flag[req.params.feature]
    local ev = fc and evaluation(env, fc, target_of(req, env))
    if not ev then return err(404, "not found: feature " .. req.params.feature) end
    return 200, ev
  end)

  route("get", "/stream", true, function(req, res)
    local key = req.headers["api-key"]
    if not key or key == "" then return err(400, "bad request: missing API-Key header") end
    if proxy_claims(req, cfg) then -- a chained v2-style proxy: every environment
      relay.sse.hold(res, PROXY_CHANNEL, { first = ":\n\n", heartbeat = cfg.heartbeat })
      return
    end
    local env_id = store:env_of_key(key)
    if not env_id then return err(404, "not found: no environment for this API-Key") end
    if not sync:stream_ok() then
      return 503, { error = "SaaS stream disconnected: streaming endpoint disabled" }, env_id
    end
    requests:inc(1, answers:labels(200, "/stream", env_id))
    relay.sse.hold(res, env_id, {
      headers = { ["access-control-allow-origin"] = "*", vary = "Origin" },
      first = ":\n\n", heartbeat = cfg.heartbeat,
    })
  end)

  route("post", "/metrics/:environment_uuid", true, function(req, _, env)
    local body = req:body()
    if not object_of(body) then return err(400, "bad request: metrics body is not a JSON object") end
    forward:queue(env, body)
    return 200, "null\n"
  end)

  route("get", "/health", false, function() return sync:health() end)

  app:get("/metrics", relay.metrics.handler)
end

return M
