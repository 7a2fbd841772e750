-- Online mode: an upstream that speaks the Harness client API (SaaS or another relayhost).
-- Auth per SDK key (or one v2 proxy key), full syncs and polls, and following the upstream's
-- /stream (one per SDK key's environment, or one account-level stream for a proxy key) with
-- reconnects; what it fetches replaces the cache through relay.flag.sync.
local relay = require "relay"
local json = require "relay.json"
local logins = require "relay.logins"
local feeds = require "relay.feeds"
local sha256_hex = relay.crypto.sha256_hex

local M = {}
local Upstream = {}
Upstream.__index = Upstream

-- As the original shows a key in its logs (token.MaskRight): the first 4 characters.
local function masked(key) return key:sub(1, 4) .. ("*"):rep(#key - 4) end

-- envs: env_id -> { token, cluster, key, keys (sha256 hex) }
-- logins: the API keys (relay.logins), each authenticated on its own; its environment is fetched
-- by the next full sync. A key the upstream refuses (401/403) is not tried again: the original's
-- SDK gives up on it ("non-retryable"), and SaaS will not change its mind until API_KEYS does (a
-- reload). Any other failure (no answer, 5xx, a bad token) may pass: tried again with backoff.
function M.new(cfg, sync)
  local self = setmetatable({ cfg = cfg, sync = sync, store = sync.store, envs = {},
    proxy_mode = cfg.proxy_key ~= "" and #cfg.api_keys == 0 }, Upstream)
  self.logins = logins.new { keys = cfg.api_keys,
    login = function(key) return self:login(key) end,
    in_use = function(key) return self.store:env_of_key(key) ~= nil end,
    use = function()
      self.feeds:sync()
      self.feeds:follow()
    end,
    failed = function(k, retry_in)
      relay.log.warn("upstream_auth_failed", { upstream = cfg.base_url, key = masked(k.key), error = k.why,
        retry_in = retry_in })
      self:report()
    end,
    refused = function(k)
      relay.log.error("upstream_key_refused", { upstream = cfg.base_url, key = masked(k.key), error = k.why,
        message = "not tried again: correct API_KEYS and reload" })
      self:report()
    end }
  self.feeds = self:feeds_of(cfg)
  return self
end

-- A request to the upstream (relay.http.json); the decoded body of a 200, or nil, why (a bad
-- answer named by its path) and the response when there was one.
function Upstream:call(path, opts)
  opts.url, opts.timeout = self.cfg.base_url .. path, 10
  local v, err, answered = relay.http.json(opts)
  if answered then return nil, path:match("^[^?]*") .. ": " .. err, answered end
  return v, err
end

-- POST /client/auth for one SDK key (relay.logins' login): true, its environment to be fetched
-- with the next sync (keys of one environment share it); or nil, why and whether the upstream
-- refused the key (401/403).
function Upstream:login(key)
  local body, err, res = self:call("/client/auth", { method = "POST", body = { apiKey = key } })
  if not body then return nil, err, res and (res.status == 401 or res.status == 403) end
  local token = body.authToken
  local payload = type(token) == "string" and token:match("^[^.]+%.([^.]+)%.")
  local claims = payload and json.decode_table(relay.base64.decode(payload) or "")
  if not claims or not claims.environment then return nil, "/client/auth: token without environment" end
  local u = self.envs[claims.environment] or { keys = {} }
  if not u.token then u.token, u.cluster, u.key = token, claims.clusterIdentifier or "1", key end
  u.keys[#u.keys + 1] = sha256_hex(key) -- each once: config.resolve made API_KEYS distinct
  self.envs[claims.environment] = u
  return true
end

-- /health: SYNCED only once every API key is authenticated and the sync that fetched them all
-- held. Else FAILED_TO_SYNC (the original's answer to a sync that failed, its auth included:
-- 500), naming the key and why, and when it is tried next (nothing tries a refused key again).
function Upstream:report()
  local k, n = self.logins:unserved()
  if not k then return self.sync:set_config("SYNCED") end
  local why = ("API key %s: %s"):format(masked(k.key), k.why)
  if n > 1 then why = why .. (" (and %d more API keys not served)"):format(n - 1) end
  self.sync:set_config("FAILED_TO_SYNC")
  local retry_in = k.state == "pending" and k.retry_at and math.max(0, k.retry_at - relay.time()) -- none planned yet
  self.sync:note_failure(self.cfg.base_url, why, retry_in or nil)
end

local function targets_of(self, env_id)
  local old = self.store.envs[env_id]
  return old and old.targets or {}
end

-- Flags and segments of one SDK key's environment.
function Upstream:fetch_env(env_id, u)
  local at = "/client/env/" .. env_id
  local opts = { headers = { authorization = "Bearer " .. u.token, ["harness-sdk-info"] = "Proxy relayhost",
                             ["harness-environmentid"] = env_id } }
  local flags, err = self:call(at .. "/feature-configs?cluster=" .. u.cluster, opts)
  if not flags then return nil, err end
  local segs, err2 = self:call(at .. "/target-segments?cluster=" .. u.cluster .. "&rules=v2", opts)
  if not segs then return nil, err2 end
  at = self.cfg.base_url .. at
  return { flags = flags, segments = segs, targets = targets_of(self, env_id), keys = u.keys,
           sources = { flags = at .. "/feature-configs", segments = at .. "/target-segments" } }
end

-- Every environment of the proxy key, page by page (GET /proxy/config).
function Upstream:proxy_fetch()
  local envs, page = {}, 0
  repeat
    local cfg, err = self:call(("/proxy/config?key=%s&cluster=1&pageNumber=%d&pageSize=10")
      :format(sha256_hex(self.cfg.proxy_key), page), { headers = { authorization = "Bearer " .. self.proxy_token } })
    if not cfg then return nil, err end
    for _, e in ipairs(type(cfg.environments) == "table" and cfg.environments or {}) do
      if type(e) ~= "table" or type(e.id) ~= "string" or e.id == "" then
        return nil, "/proxy/config: an environment without an id"
      end
      local at = ("%s/proxy/config environment %s"):format(self.cfg.base_url, e.id)
      envs[e.id] = { flags = e.featureConfigs or {}, segments = e.segments or {}, keys = e.apiKeys or {},
                     targets = targets_of(self, e.id),
                     sources = { flags = at .. " featureConfigs", segments = at .. " segments", keys = at .. " apiKeys" } }
      self.envs[e.id] = self.envs[e.id] or { cluster = "1", keys = e.apiKeys or {}, token = self.proxy_token,
                                             key = self.cfg.proxy_key }
    end
    page = page + 1
  until page >= (tonumber(cfg.pageCount) or 1)
  return envs
end

-- Flags and segments of every environment (or only one); the envs table, or nil and why.
function Upstream:fetch(only)
  if self.proxy_mode then return self:proxy_fetch() end
  local envs, ids = {}, {}
  for env_id in pairs(self.envs) do -- fetching yields: a key authenticated meanwhile adds one
    if not only or env_id == only then ids[#ids + 1] = env_id end
  end
  for _, env_id in ipairs(ids) do
    local env, err = self:fetch_env(env_id, self.envs[env_id])
    if not env then return nil, err end
    envs[env_id] = env
  end
  return envs
end

-- Authenticates what the next sync needs: the proxy key (at each sync until it holds), or every
-- API key once (the first sync: those that fail are then tried again on their own). true when
-- there is something to fetch, else nil and why.
function Upstream:ready()
  if self.proxy_mode and not self.proxy_token then
    local body, err = self:call("/proxy/auth", { method = "POST", body = { proxyKey = self.cfg.proxy_key } })
    if body and type(body.token) ~= "string" then body, err = nil, "/proxy/auth: no token" end
    if not body then return nil, err end
    self.proxy_token = body.token
  end
  if self.proxy_mode then return true end
  if not self.authenticated then self.authenticated = true; self.logins:start() end
  if next(self.envs) then return true end
  local k = self.logins:unserved()
  return nil, k and k.why or "no API key authenticated"
end

-- One full sync. Changes found this way reach no SSE stream as events, so (like ff-proxy)
-- every SDK stream of a changed environment is closed and the SDKs re-fetch.
function Upstream:sync_all()
  local ok, err = self:ready()
  if not ok then return nil, err end
  local envs
  envs, err = self:fetch()
  if not envs then return nil, err end
  local events, refused = self.sync:replace(envs, self.cfg.base_url, true)
  if not events then return nil, refused end -- the last good config keeps serving
  self:report()
  for _, ev in ipairs(events) do relay.sse.close(ev.environment) end -- the first closes them all
  return true
end

-- ---- following the upstream's /stream ----

-- Full syncs (at start, every FLAG_POLL_INTERVAL while no upstream stream carries the changes,
-- and when the streams are back) and the upstream's /stream per environment (relay.feeds:
-- reconnects with backoff, 1 s doubling to 60 s) once there are environments to follow: after
-- the first sync, or after the first poll that reached the upstream; and the environment of an
-- API key that authenticated later, once it has one.
function Upstream:feeds_of(cfg)
  return feeds.new { every = cfg.poll_interval,
    stream = cfg.flag_stream_enabled and not cfg.generate_offline_config,
    sync = function() return self:sync_all() end,
    -- A full sync that failed: the last good config keeps serving, and /health says why (a key
    -- not served says more than the poll) and when the next try is.
    failed = function(err)
      relay.log.warn("upstream_sync_failed", { upstream = cfg.base_url, error = err })
      self.sync:note_failure(cfg.base_url, err, self.feeds.next_sync - relay.time())
      if self.sync.config_status.state ~= "SYNCED" then self.sync:set_config("FAILED_TO_SYNC") end
      if self.logins:unserved() then self:report() end
    end,
    -- What to follow: a stream per environment; with a proxy key one account-level stream
    -- carries every environment (the first one's, kept).
    keys = function()
      local ids = {}
      for id in pairs(self.envs) do ids[#ids + 1] = id end
      table.sort(ids)
      if not self.proxy_mode or not ids[1] then return ids end
      self.proxy_stream = self.proxy_stream or ids[1]
      return { self.proxy_stream }
    end,
    request = function(env_id)
      local u = self.envs[env_id]
      return { url = cfg.base_url .. "/stream?cluster=" .. u.cluster, timeout = 60,
        headers = { authorization = "Bearer " .. u.token, ["api-key"] = u.key, accept = "text/event-stream",
                    ["cache-control"] = "no-cache", ["harness-sdk-info"] = "Proxy relayhost" } }
    end,
    -- One upstream event ("event: *\ndata: {json}"): its environment is re-fetched (once,
    -- however many arrive together).
    event = function(env_id, ev)
      local v = json.decode_table(ev.data)
      if not v or (v.domain ~= "flag" and v.domain ~= "target-segment") then return end
      self.feeds:refresh(self.envs[v.environment] and v.environment or env_id)
    end,
    -- Re-fetches one environment after an upstream event (as ff-proxy does: the whole list, not
    -- the item) and streams what changed to the SDKs.
    refresh = function(env_id)
      local envs, err = self:fetch(env_id)
      if not envs then return relay.log.warn("upstream_fetch_failed", { environment = env_id, error = err }) end
      local ok, why = self.sync:replace(envs, cfg.base_url)
      if not ok then relay.log.warn("upstream_config_refused", { environment = env_id, error = why }) end
    end,
    up = function(env_id)
      self.sync:set_stream("CONNECTED")
      relay.log.info("upstream_stream_connected", { environment = env_id })
    end,
    -- Upstream stream lost: SDK streams are closed (they poll, and get 503 until it is back).
    lost = function(env_id, why, was_open)
      if was_open then relay.log.warn("upstream_stream_lost", { environment = env_id, error = why }) end
      if self.sync:stream_ok() then relay.sse.close(nil) end
      self.sync:set_stream("DISCONNECTED")
    end }
end

-- A reload replaced this generation: its feeds close now (the new one opens its own).
function Upstream:stop()
  self.logins:stop()
  self.feeds:stop()
end

-- then_fn runs after the first sync (GENERATE_OFFLINE_CONFIG), instead of following streams.
function Upstream:start(then_fn)
  self.feeds:start(then_fn or function()
    if not self.cfg.flag_stream_enabled then self.sync:set_stream("DISCONNECTED") end
  end)
end

return M
