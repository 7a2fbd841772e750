-- Keeping the cache fresh and telling the SDKs: the state (health for /health and /stream),
-- replacing environments and streaming what changed, and (with Redis) persisting it. Offline
-- mode is replace_all from the config directory (SIGHUP re-reads it); the other modes live in
-- upstream.lua, upstream_stream.lua, replica.lua and metrics_forward.lua.
local relay = require "relay"
local api = require "relay.flag.api"
local json = require "relay.flag.json"
local validate = require "relay.flag.validate"

local refused = relay.metrics.counter("ff_proxy_config_refused_total",
  "flag configs refused because they do not fit the shape the SDKs rely on (nothing was replaced)")

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

-- Every config is checked before it replaces anything (relay.flag.validate): where names it
-- in the message about a config with no flags at all.
function Sync:check(envs, where, partial)
  local elsewhere = 0
  if partial then
    for id, env in pairs(self.store.envs) do if not envs[id] then elsewhere = elsewhere + #env.flags end end
  end
  local ok, err = validate.envs(envs, { allow_empty = self.cfg.allow_empty, flags_elsewhere = elsewhere, where = where })
  if not ok then refused:inc(1) end
  return ok, err
end

-- Replaces every environment (offline load, or a full online sync). Environments that are gone
-- lose their streams; events go out once this generation serves (after on_init). Returns the
-- events, or nil and why the config was refused (then nothing changed).
function Sync:replace_all(envs, where)
  local valid, why = self:check(envs, where)
  if not valid then return nil, why end
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

-- Environments from the upstream's events: no streams close, the events say what changed.
-- Returns true, or nil and why the config was refused (then nothing changed).
function Sync:replace_some(envs, where)
  local valid, why = self:check(envs, where, true)
  if not valid then return nil, why end
  local events, ids = {}, {}
  for id, data in pairs(envs) do
    for _, ev in ipairs(self.store:set_env(id, data)) do events[#events + 1] = ev end
    ids[#ids + 1] = id
  end
  M.publish(events)
  self:persist(ids, events)
  return true
end

function Sync:target_seen() end

M.set_status = set_status
M.Sync = Sync
-- The modes, each a module adding its methods to Sync.
require("relay.flag.upstream")(Sync, M)
require("relay.flag.upstream_stream")(Sync, M)
require("relay.flag.replica")(Sync, M)
require("relay.flag.metrics_forward")(Sync, M)

return M
