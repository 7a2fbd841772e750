-- Online mode: an upstream that speaks the Harness client API (SaaS or another relayhost).
-- Auth per SDK key (or one v2 proxy key), full syncs and polls, and following the upstream's
-- /stream (one per SDK key's environment, or one account-level stream for a proxy key) with
-- reconnects; what it fetches replaces the cache through relay.flag.sync.
local relay = require "relay"
local json = require "relay.json"
local eventsource = require "relay.eventsource"
local logins = require "relay.logins"
local sha256_hex = relay.crypto.sha256_hex

local M = {}
local Upstream = {}
Upstream.__index = Upstream

-- As the original shows a key in its logs (token.MaskRight): the first 4 characters.
local function masked(key) return key:sub(1, 4) .. ("*"):rep(#key - 4) end

-- envs: env_id -> { token, cluster, key, keys (sha256 hex), connected, feed, refreshing }
-- logins: the API keys (relay.logins), each authenticated on its own; its environment is fetched
-- by the next full sync. A key the upstream refuses (401/403) is not tried again: the original's
-- SDK gives up on it ("non-retryable"), and SaaS will not change its mind until API_KEYS does (a
-- reload). Any other failure (no answer, 5xx, a bad token) may pass: tried again with backoff.
function M.new(cfg, sync)
  local self = setmetatable({ cfg = cfg, sync = sync, store = sync.store, envs = {},
    proxy_mode = cfg.proxy_key ~= "" and #cfg.api_keys == 0 }, Upstream)
  self.logins = logins.new { keys = cfg.api_keys,
    login = function(key)
      local env_id, token_or_why, cluster_or_status = self:auth_key(key)
      if env_id then return self:add_key(key, env_id, token_or_why, cluster_or_status) end
      return nil, token_or_why, cluster_or_status == 401 or cluster_or_status == 403
    end,
    in_use = function(key) return self.store:env_of_key(key) ~= nil end,
    use = function()
      self:poll_once()
      self:follow_all()
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

-- POST /client/auth for one SDK key -> environment id, token and cluster; or nil, why and the
-- upstream's status when it answered.
function Upstream:auth_key(key)
  local body, err, res = self:call("/client/auth", { method = "POST", body = { apiKey = key } })
  if not body then return nil, err, res and res.status end
  local token = body.authToken
  local payload = type(token) == "string" and token:match("^[^.]+%.([^.]+)%.")
  local claims = payload and select(2, pcall(json.decode, relay.base64.decode(payload) or ""))
  if type(claims) ~= "table" or not claims.environment then return nil, "/client/auth: token without environment" end
  return claims.environment, token, claims.clusterIdentifier or "1"
end

function Upstream:auth_proxy_key()
  local body, err = self:call("/proxy/auth", { method = "POST", body = { proxyKey = self.cfg.proxy_key } })
  if body and type(body.token) ~= "string" then body, err = nil, "/proxy/auth: no token" end
  if not body then return nil, err end
  self.proxy_token = body.token
  return true
end

-- ---- API keys ----

-- The key's environment is fetched with the next sync (keys of one environment share it).
function Upstream:add_key(key, env_id, token, cluster)
  local u = self.envs[env_id] or { keys = {} }
  if not u.token then u.token, u.cluster, u.key = token, cluster, key end
  u.keys[#u.keys + 1] = sha256_hex(key) -- each once: config.resolve made API_KEYS distinct
  self.envs[env_id] = u
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
  if self.proxy_mode then
    if self.proxy_token then return true end
    return self:auth_proxy_key()
  end
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

-- A full sync that failed: the last good config keeps serving, and /health says why (a key not
-- served says more than the poll) and when the next try is.
function Upstream:sync_failed(err)
  relay.log.warn("upstream_sync_failed", { upstream = self.cfg.base_url, error = err })
  self.sync:note_failure(self.cfg.base_url, err, (self.next_poll or relay.time() + self.cfg.poll_interval) - relay.time())
  if self.sync.config_status.state ~= "SYNCED" then self.sync:set_config("FAILED_TO_SYNC") end
  if self.logins:unserved() then self:report() end
end

-- One full sync at a time (a poll, a stream's reconnect, a key that authenticated late): one
-- asked for meanwhile runs once more after it, so what it would have fetched is fetched.
function Upstream:poll_once()
  if self.syncing then self.again = true; return end
  self.syncing = true
  repeat
    self.again = false
    local ran, ok, err = pcall(self.sync_all, self) -- a throw must not leave syncing set for good
    if not ok then self:sync_failed(ran and err or tostring(ok)) end
  until not self.again or self.stopped
  self.syncing = false
end

-- Re-fetches one environment after an upstream event (as ff-proxy does: the whole list, not the
-- item) and streams what changed to the SDKs.
function Upstream:refresh_env(env_id)
  local envs, err = self:fetch(env_id)
  if not envs then return relay.log.warn("upstream_fetch_failed", { environment = env_id, error = err }) end
  local ok, why = self.sync:replace(envs, self.cfg.base_url)
  if not ok then relay.log.warn("upstream_config_refused", { environment = env_id, error = why }) end
end

-- ---- following the upstream's /stream ----

function Upstream:all_connected()
  for _, id in ipairs(self.followed) do if not self.envs[id].connected then return false end end
  return true
end

-- Upstream stream lost: SDK streams are closed (they poll, and get 503 until it is back).
function Upstream:stream_lost(env_id, why)
  local u = self.envs[env_id]
  if u.connected then relay.log.warn("upstream_stream_lost", { environment = env_id, error = why }) end
  u.connected = false
  if self.sync:stream_ok() then relay.sse.close(nil) end
  self.sync:set_stream("DISCONNECTED")
end

-- One upstream event: its environment is re-fetched (once, however many arrive meanwhile).
function Upstream:on_event(env_id, ev)
  if ev.domain ~= "flag" and ev.domain ~= "target-segment" then return end
  local target = self.envs[ev.environment] and ev.environment or env_id
  local tu = self.envs[target]
  if tu.refreshing then return end
  tu.refreshing = true -- events that arrive during a fetch are covered by it
  relay.after(0, function() tu.refreshing = false; self:refresh_env(target) end)
end

-- Follows one upstream /stream (relay.eventsource: reconnects with backoff, 1 s doubling to
-- 60 s). Events are "event: *\ndata: {json}\n\n". late: followed after the others (its key
-- authenticated later), so what changed between its fetch and its stream's open is fetched then.
function Upstream:follow(env_id, late)
  if self.stopped then return end -- stopped during the first sync
  local u = self.envs[env_id]
  u.feed = eventsource.follow {
    request = function()
      return { url = self.cfg.base_url .. "/stream?cluster=" .. u.cluster, timeout = 60,
        headers = { authorization = "Bearer " .. u.token, ["api-key"] = u.key, accept = "text/event-stream",
                    ["cache-control"] = "no-cache", ["harness-sdk-info"] = "Proxy relayhost" } }
    end,
    on_open = function()
      u.connected = true
      if late then late = false; self:refresh_env(env_id) end
      if not self:all_connected() then return end
      local was = self.sync.stream_status.state
      self.sync:set_stream("CONNECTED")
      relay.log.info("upstream_stream_connected", { environment = env_id })
      if was == "DISCONNECTED" then self:poll_once() end -- what changed while we were away
    end,
    on_event = function(ev)
      local ok, v = pcall(json.decode, ev.data)
      if ok and type(v) == "table" then self:on_event(env_id, v) end
    end,
    on_lost = function(why) self:stream_lost(env_id, why) end,
  }
end

-- Follows the upstream's streams once there are environments to follow: after the first sync,
-- or (the upstream could not be reached then) after the first poll that reached it; and the
-- environment of an API key that authenticated later, once it has one.
function Upstream:follow_all()
  if not self.streaming or not next(self.envs) then return end
  local ids = {}
  for id in pairs(self.envs) do ids[#ids + 1] = id end
  table.sort(ids)
  if self.proxy_mode then -- one account-level stream carries every environment
    if not self.followed then self.followed = { ids[1] }; self:follow(ids[1]) end
    return
  end
  local late = self.followed ~= nil
  self.followed = self.followed or {}
  for _, id in ipairs(ids) do
    if not self.envs[id].feed then
      self.followed[#self.followed + 1] = id
      self:follow(id, late)
    end
  end
end

-- A reload replaced this generation: its feeds close now (the new one opens its own).
function Upstream:stop()
  self.stopped = true
  self.logins:stop()
  for _, u in pairs(self.envs) do
    if u.feed then u.feed:stop() end
  end
end

-- then_fn runs after the first sync (GENERATE_OFFLINE_CONFIG), instead of following streams.
function Upstream:start(then_fn)
  relay.after(0, function()
    self:poll_once()
    if then_fn then return then_fn() end
    if not self.cfg.flag_stream_enabled then return self.sync:set_stream("DISCONNECTED") end
    self.streaming = true
    self:follow_all()
  end)
  -- polls only while no upstream stream carries the changes; next_poll tells /health when
  self.next_poll = relay.time() + self.cfg.poll_interval
  relay.every(self.cfg.poll_interval, function()
    self.next_poll = relay.time() + self.cfg.poll_interval
    if not self.sync:stream_ok() then self:poll_once() end
    self:follow_all()
  end)
end

return M
