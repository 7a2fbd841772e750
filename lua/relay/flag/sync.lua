-- Keeping the cache fresh and telling the SDKs: offline, from the config directory (SIGHUP
-- re-reads it); online, from an upstream that speaks the Harness client API (auth per SDK key,
-- full fetches, the upstream's /stream, a poll fallback). Health for /health and /stream.
local relay = require "relay"
local api = require "relay.flag.api"
local json = require "relay.flag.json"

local sha256_hex = require("relay.flag.store").sha256_hex

local M = {}
local Sync = {}
Sync.__index = Sync

local function now_ms() return math.floor(relay.time() * 1000) end

function M.new(cfg, store)
  local t = now_ms()
  local redis = cfg.redis ~= "" and require("relay.flag.redis_cache").new(cfg.redis) or nil
  return setmetatable({ redis = redis,
    cfg = cfg, store = store, upstream = {}, metrics = {}, metrics_bytes = 0,
    config_status = { state = cfg.offline and "SYNCED" or "INITIALIZING", since = t },
    stream_status = { state = "INITIALIZING", since = t },
    cache_status = "healthy",
  }, Sync)
end

local function set_status(st, state)
  if st.state ~= state then st.state, st.since = state, now_ms() end
end

-- The primary tells replicas (through Redis) whether changes are flowing.
function Sync:set_stream(state)
  local changed = self.stream_status.state ~= state
  set_status(self.stream_status, state)
  if changed and self.redis and not self.cfg.read_replica then
    local st = self.stream_status
    relay.after(0, function() self.redis:set_stream_health(st.state, st.since) end)
  end
end

function Sync:health()
  local cs = self.config_status.state
  local cache = self.redis and not self.redis:healthy() and "unhealthy" or "healthy"
  return { configStatus = { state = cs == "INITIALIZING" and "FAILED_TO_SYNC" or cs, since = self.config_status.since },
           streamStatus = self.stream_status, cacheStatus = cache }
end

-- SDK streams are served only while changes can reach them.
function Sync:stream_ok() return self.stream_status.state == "CONNECTED" end

local published = relay.metrics.counter("ff_proxy_primary_to_sdk_sse_producer_messages_published",
  "SSE events written to SDK streams", { "topic", "error" })

local PROXY_CHANNEL = require("relay.flag.proxy_api").CHANNEL

function M.publish(events)
  for _, ev in ipairs(events) do
    local bytes = api.event_bytes(ev)
    relay.sse.publish(ev.environment, bytes)
    relay.sse.publish(PROXY_CHANNEL, bytes)
    published:inc(1, { ev.environment, "false" })
  end
end

-- Replaces every environment (offline load, or a full online sync). Environments that are gone
-- lose their streams; events go out once this generation serves (after on_init).
function Sync:replace_all(envs)
  local dict, events, ids = self.store.dict, {}, {}
  for id, data in pairs(envs) do
    for _, ev in ipairs(self.store:set_env(id, data)) do events[#events + 1] = ev end
    ids[#ids + 1] = id
  end
  for old in (dict:get("envs") or ""):gmatch("[^\n]+") do
    if not envs[old] then self.store:remove_env(old); relay.sse.close(old) end
  end
  table.sort(ids)
  dict:set("envs", table.concat(ids, "\n"))
  if #events > 0 then
    relay.after(0, function() M.publish(events) end)
    relay.log.info("flag_config_changed", { events = #events })
  end
  self:persist(ids, events)
  return events
end

-- A primary with Redis writes what it serves and streams the events to the replicas.
function Sync:persist(env_ids, events)
  if not self.redis or self.cfg.read_replica then return end
  relay.after(0, function()
    for _, id in ipairs(env_ids) do
      local env = self.store.envs[id]
      local ok, err = true, nil
      if env then ok, err = self.redis:write_env(id, env) end
      if not ok then relay.log.warn("redis_write_failed", { environment = id, error = err }) end
    end
    local ok, err = self.redis:publish(events)
    if not ok then relay.log.warn("redis_publish_failed", { error = err }) end
  end)
end

-- ---- online: an upstream speaking the Harness client API ----

local function upstream_get(self, env_id, path)
  local u = self.upstream[env_id]
  local r, err = relay.http.request {
    url = self.cfg.base_url .. path, timeout = 10,
    headers = { authorization = "Bearer " .. u.token, ["harness-sdk-info"] = "Proxy relayhost",
                ["harness-environmentid"] = env_id },
  }
  if not r then return nil, err end
  if r.status ~= 200 then return nil, ("%s: status %d"):format(path, r.status) end
  local ok, v = pcall(json.decode, r.body)
  if not ok or type(v) ~= "table" then return nil, path .. ": not a JSON array" end
  return v
end

-- POST /client/auth for one SDK key -> environment id and token.
function Sync:auth_key(key)
  local r, err = relay.http.request {
    method = "POST", url = self.cfg.base_url .. "/client/auth", timeout = 10,
    headers = { ["content-type"] = "application/json" }, body = json.encode({ apiKey = key }),
  }
  if not r then return nil, err end
  if r.status ~= 200 then return nil, ("/client/auth: status %d"):format(r.status) end
  local ok, body = pcall(json.decode, r.body)
  local token = ok and type(body) == "table" and body.authToken
  local payload = type(token) == "string" and token:match("^[^.]+%.([^.]+)%.")
  local claims = payload and select(2, pcall(json.decode, relay.base64.decode(payload) or ""))
  if type(claims) ~= "table" or not claims.environment then return nil, "/client/auth: token without environment" end
  return claims.environment, token, claims.clusterIdentifier or "1"
end

-- Fetches flags and segments of every known environment; returns the envs table or nil, err.
local function fetch_env(self, env_id, u)
  local q = "?cluster=" .. u.cluster
  local flags, err = upstream_get(self, env_id, "/client/env/" .. env_id .. "/feature-configs" .. q)
  if not flags then return nil, err end
  local segs, err2 = upstream_get(self, env_id, "/client/env/" .. env_id .. "/target-segments" .. q .. "&rules=v2")
  if not segs then return nil, err2 end
  local old = self.store.envs[env_id]
  return { flags = flags, segments = segs, targets = old and old.targets or {}, keys = u.keys }
end

-- Fetches flags and segments of every known environment (or only one); returns the envs table
-- or nil, err.
function Sync:fetch_all(only)
  local envs = {}
  for env_id, u in pairs(self.upstream) do
    if not only or env_id == only then
      local env, err = fetch_env(self, env_id, u)
      if not env then return nil, err end
      envs[env_id] = env
    end
  end
  return envs
end

-- v2 style: one Proxy Key covers many environments (POST /proxy/auth, GET /proxy/config pages).
function Sync:proxy_authenticate()
  local r, err = relay.http.request {
    method = "POST", url = self.cfg.base_url .. "/proxy/auth", timeout = 10,
    headers = { ["content-type"] = "application/json" }, body = json.encode({ proxyKey = self.cfg.proxy_key }),
  }
  if not r then return nil, err end
  local ok, body = pcall(json.decode, r.body)
  if r.status ~= 200 or not ok or type(body) ~= "table" or type(body.token) ~= "string" then
    return nil, ("/proxy/auth: status %d"):format(r.status)
  end
  self.proxy_token = body.token
  return true
end

function Sync:proxy_fetch()
  local envs, page = {}, 0
  repeat
    local r, err = relay.http.request {
      url = ("%s/proxy/config?key=%s&cluster=1&pageNumber=%d&pageSize=10"):format(self.cfg.base_url, sha256_hex(self.cfg.proxy_key), page),
      timeout = 10, headers = { authorization = "Bearer " .. self.proxy_token },
    }
    if not r then return nil, err end
    local ok, cfg = pcall(json.decode, r.body)
    if r.status ~= 200 or not ok or type(cfg) ~= "table" then return nil, ("/proxy/config: status %d"):format(r.status) end
    for _, e in ipairs(cfg.environments or {}) do
      local old = self.store.envs[e.id]
      envs[e.id] = { flags = e.featureConfigs or {}, segments = e.segments or {}, keys = e.apiKeys or {},
                     targets = old and old.targets or {} }
      self.upstream[e.id] = self.upstream[e.id] or { cluster = "1", keys = e.apiKeys or {}, token = self.proxy_token,
                                                   key = self.cfg.proxy_key }
    end
    page = page + 1
  until page >= (tonumber(cfg.pageCount) or 1)
  return envs
end

function Sync:authenticate()
  if self.cfg.proxy_key ~= "" and #self.cfg.api_keys == 0 then return self:proxy_authenticate() end
  for _, key in ipairs(self.cfg.api_keys) do
    local env_id, token, cluster = self:auth_key(key)
    if not env_id then return nil, token end
    local u = self.upstream[env_id] or { keys = {} }
    u.token, u.cluster, u.key = token, cluster, key
    local h = sha256_hex(key)
    local have = false
    for _, k in ipairs(u.keys) do have = have or k == h end
    if not have then u.keys[#u.keys + 1] = h end
    self.upstream[env_id] = u
  end
  return true
end

-- One full sync. by_poll: changes found this way reach no SSE stream as events, so (like
-- ff-proxy) every SDK stream of a changed environment is closed and the SDKs re-fetch.
function Sync:proxy_mode() return self.cfg.proxy_key ~= "" and #self.cfg.api_keys == 0 end

function Sync:sync(by_poll)
  if not next(self.upstream) and not self.proxy_token then
    local ok, err = self:authenticate()
    if not ok then return nil, err end
  end
  local envs, err
  if self:proxy_mode() then envs, err = self:proxy_fetch() else envs, err = self:fetch_all() end
  if not envs then return nil, err end
  local events = self:replace_all(envs)
  set_status(self.config_status, "SYNCED")
  if by_poll and #events > 0 then
    local closed = {}
    for _, ev in ipairs(events) do
      if not closed[ev.environment] then closed[ev.environment] = true; relay.sse.close(ev.environment) end
    end
  end
  return true
end

function Sync:poll_once()
  local ok, err = self:sync(true)
  if not ok then
    relay.log.warn("upstream_sync_failed", { upstream = self.cfg.base_url, error = err })
    if self.config_status.state ~= "SYNCED" then set_status(self.config_status, "FAILED_TO_SYNC") end
  end
  return ok, err
end

-- Re-fetches one environment after an upstream event (as ff-proxy does: the whole list, not the
-- item) and streams what changed to the SDKs.
function Sync:refresh_env(env_id)
  local envs, err
  if self:proxy_mode() then envs, err = self:proxy_fetch() else envs, err = self:fetch_all(env_id) end
  if not envs then
    relay.log.warn("upstream_fetch_failed", { environment = env_id, error = err })
    return
  end
  self:replace_some(envs)
end

-- Environments from the upstream's events: no streams close, the events say what changed.
function Sync:replace_some(envs)
  local events, ids = {}, {}
  for id, data in pairs(envs) do
    for _, ev in ipairs(self.store:set_env(id, data)) do events[#events + 1] = ev end
    ids[#ids + 1] = id
  end
  M.publish(events)
  self:persist(ids, events)
end

-- The environments whose upstream streams we follow: each SDK key's, or (proxy key) one
-- account-level stream that carries every environment.
function Sync:stream_envs()
  local ids = {}
  for id in pairs(self.upstream) do ids[#ids + 1] = id end
  table.sort(ids)
  if self:proxy_mode() then return { ids[1] } end
  return ids
end

local function all_connected(self)
  local ids = self:stream_envs()
  for _, id in ipairs(ids) do if not self.upstream[id].connected then return false end end
  return #ids > 0
end

-- Upstream stream lost: SDK streams are closed (they poll, and get 503 until it is back).
function Sync:stream_lost(env_id, why)
  local u = self.upstream[env_id]
  if u.connected then relay.log.warn("upstream_stream_lost", { environment = env_id, error = why }) end
  u.connected = false
  if self.stream_status.state == "CONNECTED" then relay.sse.close(nil) end
  self:set_stream("DISCONNECTED")
end

-- Reads one upstream SSE feed until it fails. Events are "event: *\ndata: {json}\n\n".
function Sync:read_stream(env_id, s)
  local buf = ""
  while true do
    local data, err = s:read()
    if not data then return err end
    buf = buf .. data
    while true do
      local i, j = buf:find("\n\n", 1, true)
      if not i then break end
      local block = buf:sub(1, i - 1)
      buf = buf:sub(j + 1)
      local payload = block:match("data:%s*([^\n]*)")
      local ok, ev = pcall(json.decode, payload or "")
      if ok and type(ev) == "table" and (ev.domain == "flag" or ev.domain == "target-segment") then
        local target = self.upstream[ev.environment] and ev.environment or env_id
        local tu = self.upstream[target]
        if not tu.refreshing then
          tu.refreshing = true -- events that arrive during a fetch are covered by it
          relay.after(0, function() tu.refreshing = false; self:refresh_env(target) end)
        end
      end
    end
  end
end

function Sync:follow(env_id)
  local backoff = 1
  while not self.stopped do
    local u = self.upstream[env_id]
    local s, status = relay.http.stream {
      url = self.cfg.base_url .. "/stream?cluster=" .. u.cluster, timeout = 60,
      headers = { authorization = "Bearer " .. u.token, ["api-key"] = u.key, accept = "text/event-stream",
                  ["cache-control"] = "no-cache", ["harness-sdk-info"] = "Proxy relayhost" },
    }
    if s and status == 200 then
      backoff = 1
      u.connected = true
      if all_connected(self) then
        local was = self.stream_status.state
        self:set_stream("CONNECTED")
        relay.log.info("upstream_stream_connected", { environment = env_id })
        if was == "DISCONNECTED" then self:poll_once() end -- what changed while we were away
      end
      local why = self:read_stream(env_id, s)
      s:close()
      self:stream_lost(env_id, why)
    else
      if s then s:close() end
      self:stream_lost(env_id, s and ("status " .. tostring(status)) or status)
    end
    relay.sleep(backoff)
    backoff = math.min(backoff * 2, 60)
  end
end

function Sync:start()
  relay.after(0, function()
    self:poll_once()
    if self.cfg.generate then return self:generate() end
    if self.cfg.stream then
      for _, env_id in ipairs(self:stream_envs()) do relay.after(0, function() self:follow(env_id) end) end
    else
      self:set_stream("DISCONNECTED")
    end
  end)
  -- polls only while no upstream stream carries the changes
  relay.every(self.cfg.poll_interval, function()
    if self.stream_status.state ~= "CONNECTED" then self:poll_once() end
  end)
  if self.cfg.metric_post > 0 then
    relay.every(self.cfg.metric_post, function() self:flush_metrics() end)
    if self.redis then relay.after(0, function() self:collect_replica_metrics() end) end
  end
end

-- A primary takes the metrics its replicas pushed to Redis into its own batches.
function Sync:collect_replica_metrics()
  local last, backoff = nil, 0.5
  while true do
    local err
    last, err = self.redis:follow_metrics(function(m)
      if type(m.environment) == "string" and type(m.body) == "string" then self:queue_metrics(m.environment, m.body) end
    end, last)
    relay.log.warn("redis_metrics_follow_failed", { error = err })
    relay.sleep(backoff)
    backoff = math.min(backoff * 2, 5)
  end
end

-- ---- read replica: everything comes from the primary through Redis ----

function Sync:replica_load()
  local envs, err = self.redis:read_all()
  if not envs then return nil, err end
  self:replace_all(envs)
  set_status(self.config_status, "READ_REPLICA")
  local h = self.redis:stream_health()
  set_status(self.stream_status, h and h.state or "DISCONNECTED")
  return true
end

function Sync:start_replica()
  set_status(self.config_status, "INITIALIZING")
  relay.after(0, function()
    local backoff, last = 0.5, nil
    while true do
      local ok, err = self:replica_load()
      if ok then
        backoff = 0.5
        last, err = self.redis:follow(function(ev)
          if ev.environment and (ev.domain == "flag" or ev.domain == "target-segment") then
            local env = self.redis:read_env(ev.environment)
            if env then self:replace_some({ [ev.environment] = env }) end
          end
        end, last)
      end
      relay.log.warn("replica_redis_failed", { error = err })
      relay.sleep(backoff)
      backoff = math.min(backoff * 2, 5)
    end
  end)
  -- the primary's stream health decides whether SDK streams are served (spec §1.5)
  relay.every(2, function()
    local h = self.redis:stream_health()
    if h and h.state ~= self.stream_status.state then
      if h.state ~= "CONNECTED" then relay.sse.close(nil) end
      set_status(self.stream_status, h.state)
    end
  end)
end

function Sync:generate()
  local offline = require "relay.flag.offline"
  if self.config_status.state ~= "SYNCED" then
    relay.log.error("generate_offline_config_failed", { upstream = self.cfg.base_url, error = "could not sync" })
    os.exit(1)
  end
  local ok, err = offline.write(self.cfg.config_dir, self.store)
  if not ok then
    relay.log.error("generate_offline_config_failed", { config_dir = self.cfg.config_dir, error = err })
    os.exit(1)
  end
  relay.log.info("offline_config_generated", { config_dir = self.cfg.config_dir })
  require("relay.flag.fs").terminate() -- a clean exit 0, like any SIGTERM
end

-- SDK metrics are merged per environment and posted upstream in one request each.
function Sync:queue_metrics(env_id, body)
  if self.cfg.read_replica then -- the primary forwards them
    relay.after(0, function() self.redis:push_metrics(env_id, body) end)
    return
  end
  if self.cfg.offline or self.cfg.metric_post <= 0 then return end
  local ok, m = pcall(json.decode, body)
  if not ok or type(m) ~= "table" then return end
  local q = self.metrics[env_id] or { metricsData = {}, targetData = {} }
  for _, d in ipairs(type(m.metricsData) == "table" and m.metricsData or {}) do q.metricsData[#q.metricsData + 1] = d end
  for _, d in ipairs(type(m.targetData) == "table" and m.targetData or {}) do q.targetData[#q.targetData + 1] = d end
  self.metrics[env_id] = q
  self.metrics_bytes = self.metrics_bytes + #body
  if self.metrics_bytes >= 1024 * 1024 then relay.after(0, function() self:flush_metrics() end) end
end

local forwarded = relay.metrics.counter("ff_proxy_metrics_forwarded", "SDK metrics batches posted upstream", { "envID", "error" })

function Sync:flush_metrics()
  local batches = self.metrics
  self.metrics, self.metrics_bytes = {}, 0
  for env_id, m in pairs(batches) do
    local u = self.upstream[env_id]
    local r, err = relay.http.request {
      method = "POST", url = ("%s/metrics/%s?cluster=%s"):format(self.cfg.events_url, env_id, u and u.cluster or "1"),
      timeout = 10, body = json.encode(m),
      headers = { ["content-type"] = "application/json", authorization = u and ("Bearer " .. u.token) or nil },
    }
    local failed = not r or r.status >= 300
    forwarded:inc(1, { env_id, tostring(failed) })
    if failed then relay.log.warn("metrics_forward_failed", { environment = env_id, error = err or ("status " .. r.status) }) end
  end
end

function Sync:target_seen() end

return M
