-- Keeping the cache fresh and telling the SDKs: the state (health for /health and /stream),
-- replacing environments and streaming what changed, and (with Redis) persisting it. Offline
-- mode is replace_all from the config directory (SIGHUP re-reads it); a read replica follows
-- Redis (start_replica); online mode lives in relay.flag.upstream, which calls replace_*.
local relay = require "relay"
local json = require "relay.json"
local validate = require "relay.flag.validate"

local refused = relay.metrics.counter("ff_proxy_config_refused_total",
  "flag configs refused because they do not fit the shape the SDKs rely on (nothing was replaced)")
local published = relay.metrics.counter("ff_proxy_primary_to_sdk_sse_producer_messages_published",
  "SSE events written to SDK streams", { "topic", "error" })

local M = {}
local Sync = {}
Sync.__index = Sync

-- The SSE channel of proxy-key streams (every environment; environment ids have no "*").
M.PROXY_CHANNEL = "*proxy-key*"

local function now_ms() return math.floor(relay.time() * 1000) end

function M.new(cfg, store)
  local t = now_ms()
  -- generating an offline config writes files only (the original disables Redis for it too)
  local redis = cfg.redis ~= "" and not cfg.generate_offline_config and require("relay.flag.redis_cache").new(cfg.redis) or nil
  return setmetatable({ redis = redis, cfg = cfg, store = store,
    config_status = { state = cfg.offline and "SYNCED" or "INITIALIZING", since = t },
    stream_status = { state = "INITIALIZING", since = t },
  }, Sync)
end

function Sync:set_config(state)
  local st = self.config_status
  if st.state ~= state then st.state, st.since = state, now_ms() end
end

-- The primary tells replicas (through Redis) whether changes are flowing.
function Sync:set_stream(state)
  local st = self.stream_status
  if st.state == state then return end
  st.state, st.since = state, now_ms()
  if self.redis and not self.cfg.read_replica then
    relay.after(0, function() self.redis:set_stream_health(st.state, st.since) end)
  end
end

-- Why the config is not synced and when the next try is, for /health's failing answer.
-- source: what was tried (the upstream URL, or Redis); retry_in: seconds to the next try.
function Sync:note_failure(source, err, retry_in)
  self.failure = { source = source, error = tostring(err), next_ms = now_ms() + math.floor(retry_in * 1000) }
end

-- /health's 500 body (FAILED_TO_SYNC): the original's 'error' key, saying what is wrong, and
-- when the next try is (retryIn seconds; nextAttempt in ms since the epoch, like 'since').
function Sync:failure_report(h)
  local f = self.failure
  local body = { configStatus = h.configStatus, streamStatus = h.streamStatus, cacheStatus = h.cacheStatus }
  if not f then
    body.error = "the first sync has not finished yet"
    return body
  end
  body.error = ("could not sync from %s: %s"):format(f.source, f.error)
  body.retryIn = math.max(0, math.ceil((f.next_ms - now_ms()) / 1000))
  body.nextAttempt = f.next_ms
  return body
end

function Sync:health()
  local cs = self.config_status.state
  local cache = self.redis and not self.redis:healthy() and "unhealthy" or "healthy"
  return { configStatus = { state = cs == "INITIALIZING" and "FAILED_TO_SYNC" or cs, since = self.config_status.since },
           streamStatus = self.stream_status, cacheStatus = cache }
end

-- SDK streams are served only while changes can reach them.
function Sync:stream_ok() return self.stream_status.state == "CONNECTED" end

-- Each event to the SDK streams of its environment and to proxy-key streams, as the SDKs read
-- it (spec §1.5): written in one piece.
local function publish(events)
  for _, ev in ipairs(events) do
    local bytes = "event: *\ndata: " .. json.encode({ event = ev.event, domain = ev.domain, identifier = ev.identifier,
      version = ev.version, environment = ev.environment, apiKey = "" }) .. "\n\n"
    relay.sse.publish(ev.environment, bytes)
    relay.sse.publish(M.PROXY_CHANNEL, bytes)
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

-- The log's list of what changed: "flag:dark-mode,segment:beta", at most CHANGED_MAX names
-- (a config of thousands of flags stays one readable line), then how many more.
local CHANGED_MAX = 20
local function changed_names(events)
  local names, seen = {}, {}
  for _, ev in ipairs(events) do
    local name = (ev.domain == "target-segment" and "segment" or ev.domain) .. ":" .. ev.identifier
    if not seen[name] then seen[name] = true; names[#names + 1] = name end
  end
  table.sort(names)
  local more = #names - CHANGED_MAX
  if more <= 0 then return table.concat(names, ",") end
  return table.concat(names, ",", 1, CHANGED_MAX) .. (" … and %d more"):format(more)
end

-- One line per change of the served config, naming what changed.
local function log_changed(events)
  if #events == 0 then return end
  local envs, seen = {}, {}
  for _, ev in ipairs(events) do
    if not seen[ev.environment] then seen[ev.environment] = true; envs[#envs + 1] = ev.environment end
  end
  table.sort(envs)
  relay.log.info("flag_config_changed", { events = #events, environments = table.concat(envs, ","),
                                          changed = changed_names(events) })
end

-- Stores the checked envs; returns their events and ids.
function Sync:set_envs(envs)
  local events, ids = {}, {}
  for id, data in pairs(envs) do
    for _, ev in ipairs(self.store:set_env(id, data)) do events[#events + 1] = ev end
    ids[#ids + 1] = id
  end
  return events, ids
end

-- Replaces every environment (offline load, or a full online sync). Environments that are gone
-- lose their streams; events go out once this generation serves (after on_init). Returns the
-- events, or nil and why the config was refused (then nothing changed).
function Sync:replace_all(envs, where)
  local valid, why = self:check(envs, where)
  if not valid then return nil, why end
  local dict = self.store.dict
  local events, ids = self:set_envs(envs)
  for old in (dict:get("envs") or ""):gmatch("[^\n]+") do
    if not envs[old] then self.store:remove_env(old); relay.sse.close(old) end
  end
  table.sort(ids)
  dict:set("envs", table.concat(ids, "\n"))
  if #events > 0 then
    relay.after(0, function() publish(events) end)
  end
  log_changed(events)
  self:persist(ids, events)
  return events
end

-- Environments from the upstream's events: no streams close, the events say what changed.
-- Returns true, or nil and why the config was refused (then nothing changed).
function Sync:replace_some(envs, where)
  local valid, why = self:check(envs, where, true)
  if not valid then return nil, why end
  local events, ids = self:set_envs(envs)
  publish(events)
  log_changed(events)
  self:persist(ids, events)
  return true
end

-- ---- read replica: everything comes from the primary through Redis (its writes and events) ----

function Sync:replica_load()
  local envs, err = self.redis:read_all()
  if not envs then return nil, err end
  local ok, why = self:replace_all(envs, "redis")
  if not ok then return nil, why end
  self:set_config("READ_REPLICA")
  local h = self.redis:stream_health()
  self:set_stream(h and h.state or "DISCONNECTED")
  return true
end

-- An event of the primary: re-read that environment from Redis.
function Sync:replica_event(ev)
  if not ev.environment or (ev.domain ~= "flag" and ev.domain ~= "target-segment") then return end
  local env = self.redis:read_env(ev.environment)
  local ok, why = true, nil
  if env then ok, why = self:replace_some({ [ev.environment] = env }, "redis") end
  if not ok then relay.log.warn("redis_config_refused", { environment = ev.environment, error = why }) end
end

function Sync:start_replica()
  relay.after(0, function()
    local backoff, last = 0.5, nil
    while true do
      local ok, err = self:replica_load()
      if ok then
        backoff = 0.5
        last, err = self.redis:follow(function(ev) self:replica_event(ev) end, last)
      end
      relay.log.warn("replica_redis_failed", { error = err })
      self:note_failure("redis", err, backoff)
      relay.sleep(backoff)
      backoff = math.min(backoff * 2, 5)
    end
  end)
  -- the primary's stream health decides whether SDK streams are served (spec §1.5)
  relay.every(2, function()
    local h = self.redis:stream_health()
    if h and h.state ~= self.stream_status.state then
      if h.state ~= "CONNECTED" then relay.sse.close(nil) end
      self:set_stream(h.state)
    end
  end)
end

return M
