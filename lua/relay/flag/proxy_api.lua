-- ff-proxy v2's upstream endpoints, served from this proxy's cache so that a v2-style relayhost
-- (PROXY_KEY) can chain to this one: POST /proxy/auth and GET /proxy/config (paged), plus the
-- account-level /stream for the proxy key (every environment's events on one stream).
local relay = require "relay"
local json = require "relay.flag.json"
local sha256_hex = require("relay.flag.store").sha256_hex

local M = {}

M.CHANNEL = "*proxy-key*" -- the SSE channel of proxy-key streams (every environment; ids have no "*")

local JSON_TYPE = "application/json; charset=utf-8"
local function send(res, status, value)
  return res:send(status, json.encode(value) .. "\n", { ["content-type"] = JSON_TYPE, ["access-control-allow-origin"] = "*" })
end

local function sorted_env_ids(store)
  local ids = {}
  for id in pairs(store.envs) do ids[#ids + 1] = id end
  table.sort(ids)
  return ids
end

-- ctx: { store, secret, proxy_key }
function M.install(app, ctx)
  local store = ctx.store

  -- A proxy token is ours, of key_type Proxy, for this proxy key.
  function ctx.proxy_claims(req)
    local token = (req.headers["authorization"] or ""):match("^[Bb]earer%s+(%S+)$")
    local claims = token and relay.jwt.verify(token, ctx.secret, { leeway = 60 })
    if not claims or claims.key_type ~= "Proxy" or ctx.proxy_key == "" or claims.key ~= sha256_hex(ctx.proxy_key) then
      return nil
    end
    return claims
  end

  app:post("/proxy/auth", function(req, res)
    local ok, body = pcall(json.decode, req:body() or "")
    if not ok or type(body) ~= "table" or type(body.proxyKey) ~= "string" or body.proxyKey == "" then
      return send(res, 400, { error = "bad request: proxyKey is required" })
    end
    if ctx.proxy_key == "" or not relay.crypto.constant_time_equal(body.proxyKey, ctx.proxy_key) then
      return send(res, 401, { error = "unauthorised" })
    end
    local now = math.floor(relay.time())
    local token = relay.jwt.sign({ key_type = "Proxy", key = sha256_hex(body.proxyKey), cluster_identifier = "1",
      environments = sorted_env_ids(store), iat = now, nbf = now }, ctx.secret)
    send(res, 200, { token = token })
  end)

  app:get("/proxy/config", function(req, res)
    if not ctx.proxy_claims(req) then return send(res, 401, { error = "unauthorised" }) end
    local ids = sorted_env_ids(store)
    if type(req.args.environment) == "string" and req.args.environment ~= "" then
      ids = store.envs[req.args.environment] and { req.args.environment } or {}
    end
    local size = math.max(1, math.min(tonumber(req.args.pageSize) or 10, 100))
    local page = math.max(0, math.floor(tonumber(req.args.pageNumber) or 0))
    local envs = {}
    for i = page * size + 1, math.min(#ids, (page + 1) * size) do
      local env = store.envs[ids[i]]
      envs[#envs + 1] = { id = env.id, apiKeys = env.keys, featureConfigs = env.flags, segments = env.segments }
    end
    send(res, 200, { pageCount = math.max(1, math.ceil(#ids / size)), itemCount = #ids, pageSize = size,
                     pageIndex = page, environments = envs })
  end)
end

return M
