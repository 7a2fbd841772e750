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
  return setmetatable({
    cfg = cfg, store = store, upstream = {}, metrics = {}, metrics_bytes = 0,
    config_status = { state = cfg.offline and "SYNCED" or "INITIALIZING", since = t },
    stream_status = { state = cfg.offline and "CONNECTED" or "INITIALIZING", since = t },
    cache_status = "healthy",
  }, Sync)
end

local function set_status(st, state)
  if st.state ~= state then st.state, st.since = state, now_ms() end
end

function Sync:health()
  local cs = self.config_status.state
  return { configStatus = { state = cs == "INITIALIZING" and "FAILED_TO_SYNC" or cs, since = self.config_status.since },
           streamStatus = self.stream_status, cacheStatus = self.cache_status }
end

-- SDK streams are served only while changes can reach them.
function Sync:stream_ok() return self.stream_status.state == "CONNECTED" end

local published = relay.metrics.counter("ff_proxy_primary_to_sdk_sse_producer_messages_published",
  "SSE events written to SDK streams", { "topic", "error" })

function M.publish(events)
  for _, ev in ipairs(events) do
    relay.sse.publish(ev.environment, api.event_bytes(ev))
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
  return events
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
function Sync:fetch_all()
  local envs = {}
  for env_id, u in pairs(self.upstream) do
    local q = "?cluster=" .. u.cluster
    local flags, err = upstream_get(self, env_id, "/client/env/" .. env_id .. "/feature-configs" .. q)
    if not flags then return nil, err end
    local segs, err2 = upstream_get(self, env_id, "/client/env/" .. env_id .. "/target-segments" .. q .. "&rules=v2")
    if not segs then return nil, err2 end
    local old = self.store.envs[env_id]
    envs[env_id] = { flags = flags, segments = segs, targets = old and old.targets or {}, keys = u.keys }
  end
  return envs
end

function Sync:authenticate()
  for _, key in ipairs(self.cfg.api_keys) do
    local env_id, token, cluster = self:auth_key(key)
    if not env_id then return nil, token end
    local u = self.upstream[env_id] or { keys = {} }
    u.token, u.cluster = token, cluster
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
function Sync:sync(by_poll)
  if not next(self.upstream) then
    local ok, err = self:authenticate()
    if not ok then return nil, err end
  end
  local envs, err = self:fetch_all()
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
  return ok
end

function Sync:start()
  relay.after(0, function() self:poll_once() end)
  relay.every(self.cfg.poll_interval, function() self:poll_once() end)
end

function Sync:queue_metrics(env_id, body)
  if self.cfg.offline then return end
  local q = self.metrics[env_id] or {}
  q[#q + 1] = body
  self.metrics[env_id] = q
  self.metrics_bytes = self.metrics_bytes + #body
end

function Sync:target_seen() end

return M
