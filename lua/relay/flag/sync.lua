-- Keeping the cache fresh and telling the SDKs: the state (health for /health and /stream),
-- replacing environments and streaming what changed, and (with Redis) persisting it. Offline
-- mode replaces all from the config directory (SIGHUP re-reads it); a read replica follows
-- Redis (start_replica); online mode lives in relay.flag.upstream, which calls replace.
local relay = require "relay"
local json = require "relay.json"
local validate = require "relay.flag.validate"

local refused = relay.metrics.counter("ff_proxy_config_refused_total",
  "flag configs refused because they do not fit the shape the SDKs rely on (nothing was replaced)")
local published = relay.metrics.counter("ff_proxy_primary_to_sdk_sse_producer_messages_published",
  "SSE events written to SDK streams", { "topic", "error" })
local cache_lost = relay.metrics.counter("ff_proxy_redis_cache_lost_total",
  "times Redis was found without the flag cache written to it (restart without persistence, failover that lost writes, FLUSHALL)",
  { "role" })

local redis_cache = require "relay.flag.redis_cache"

local M = {}
local Sync = {}
Sync.__index = Sync

-- The SSE channel of proxy-key streams (every environment; environment ids have no "*").
M.PROXY_CHANNEL = "*proxy-key*"

local function now_ms() return math.floor(relay.time() * 1000) end

-- Redis lost the cache (relay.snapshot found it): counted and logged; a primary writes it again,
-- a replica serves from memory until the primary has.
local function lost(role)
  return function(why)
    cache_lost:inc(1, { role })
    relay.log.warn("redis_cache_lost", { role = role, error = why })
  end
end

function M.new(cfg, store)
  local t = now_ms()
  local self = setmetatable({ cfg = cfg, store = store,
    config_status = { state = cfg.offline and "SYNCED" or "INITIALIZING", since = t },
    stream_status = { state = "INITIALIZING", since = t } }, Sync)
  -- generating an offline config writes files only (the original disables Redis for it too)
  if cfg.redis ~= "" and not cfg.generate_offline_config then
    local st = self.stream_status
    self.redis = redis_cache.new(cfg.redis, store, function() return st.state, st.since end, lost("primary"))
  end
  return self
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
    self.redis.snap:run(function() self.redis:set_stream_health(st.state, st.since) end)
  end
end

-- Why the config is not synced and when the next try is, for /health's failing answer.
-- source: what was tried (the upstream URL, or Redis); retry_in: seconds to the next try (nil:
-- none, as for an API key the upstream refused).
function Sync:note_failure(source, err, retry_in)
  self.failure = { source = source, error = tostring(err), next_ms = retry_in and now_ms() + math.floor(retry_in * 1000) }
end

-- /health: status and body. ff-proxy's three keys; with an unhealthy cache, cacheError says why
-- (relayhost's addition): why the Redis cache is not whole right now (nil when it is, or when
-- there is no Redis). FAILED_TO_SYNC is a 500 with the original's 'error' key, saying what is
-- wrong, and when the next try is (retryIn seconds; nextAttempt in ms since the epoch, like 'since').
function Sync:health()
  local cs, why, f = self.config_status.state, self.redis and self.redis.snap:problem(), self.failure
  local h = { configStatus = { state = cs == "INITIALIZING" and "FAILED_TO_SYNC" or cs, since = self.config_status.since },
              streamStatus = self.stream_status, cacheStatus = why and "unhealthy" or "healthy", cacheError = why }
  if h.configStatus.state ~= "FAILED_TO_SYNC" then return 200, h end
  h.error = f and ("could not sync from %s: %s"):format(f.source, f.error) or "the first sync has not finished yet"
  if f and f.next_ms then -- nil for a key the upstream refused: no retry is planned
    h.retryIn, h.nextAttempt = math.max(0, math.ceil((f.next_ms - now_ms()) / 1000)), f.next_ms
  end
  return 500, h
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

-- The log's list of what changed: "flag:dark-mode,segment:beta", at most CHANGED_MAX names
-- (a config of thousands of flags stays one readable line), then how many more.
local CHANGED_MAX = 20
local function sorted(events, name_of)
  local names, seen = {}, {}
  for _, ev in ipairs(events) do
    local name = name_of(ev)
    if not seen[name] then seen[name] = true; names[#names + 1] = name end
  end
  table.sort(names)
  return names
end

-- One line per change of the served config, naming what changed.
local function log_changed(events)
  if #events == 0 then return end
  local envs = sorted(events, function(ev) return ev.environment end)
  local names = sorted(events, function(ev)
    return (ev.domain == "target-segment" and "segment" or ev.domain) .. ":" .. ev.identifier
  end)
  local more = #names - CHANGED_MAX
  relay.log.info("flag_config_changed", { events = #events, environments = table.concat(envs, ","),
    changed = table.concat(names, ",", 1, math.min(#names, CHANGED_MAX))
      .. (more > 0 and (" … and %d more"):format(more) or "") })
end

-- Replaces environments: all (an offline load, a full online sync) or some (re-fetched after
-- the upstream's events). Each config is checked first (relay.flag.validate; where names it in
-- the message about a config with no flags at all): nil and why it was refused, and nothing
-- changed. Else the events: with all, environments that are gone lose their streams and the
-- events go out once this generation serves (after on_init); with some, no stream closes.
function Sync:replace(envs, where, all)
  local elsewhere = 0 -- flags of environments this leaves as they are
  for id, env in pairs(all and {} or self.store.envs) do
    if not envs[id] then elsewhere = elsewhere + #env.flags end
  end
  local ok, why = validate.envs(envs, { allow_empty = self.cfg.allow_empty, flags_elsewhere = elsewhere,
                                        where = where })
  if not ok then
    refused:inc(1)
    return nil, why
  end
  local events, ids = {}, {}
  for id, data in pairs(envs) do
    for _, ev in ipairs(self.store:set_env(id, data)) do events[#events + 1] = ev end
    ids[#ids + 1] = id
  end
  table.sort(ids)
  if all then
    local dict = self.store.dict
    for old in (dict:get("envs") or ""):gmatch("[^\n]+") do
      if not envs[old] then self.store:remove_env(old); relay.sse.close(old) end
    end
    dict:set("envs", table.concat(ids, "\n"))
    relay.after(0, function() publish(events) end)
  else
    publish(events)
  end
  log_changed(events)
  -- A primary with Redis writes what it serves and streams the events to the replicas
  -- (relay.snapshot: one write at a time; Redis hanging, nothing queues and all is written
  -- whole once it answers).
  if self.redis and not self.cfg.read_replica then
    self.redis.snap:put(ids, function()
      local ok, err = self.redis:publish(events)
      if not ok then relay.log.warn("redis_publish_failed", { error = err }) end
    end)
  end
  return events
end

-- ---- read replica: everything comes from the primary through Redis (its writes and events) ----

-- Everything comes from the primary through Redis (relay.snapshot's reader): its whole cache,
-- loaded again at each new seed mark and after the feed failed, and its change events. Without
-- a mark (ff-proxy's own primary writes none) a load takes whatever is there, but never an empty
-- Redis: that is a cache not written yet (or lost), and loading it would refuse every SDK key
-- while /health said all was well. A load that failed is said on /health, with its retry.
function Sync:start_replica()
  self.redis.snap:read { stream = redis_cache.EVENTS,
    load = function(mark, known)
      if mark == nil and known then
        return nil, "Redis lost the flag cache: waiting for the primary to write it again"
      end
      local envs, err = self.redis:read_all()
      if envs and mark == nil and not next(envs) then
        return nil, "Redis holds no flag cache: waiting for a primary to write it"
      end
      return envs, err
    end,
    apply = function(envs)
      local ok, why = self:replace(envs, "redis", true)
      if not ok then return nil, why end
      self:set_config("READ_REPLICA")
      local h = self.redis:stream_health()
      self:set_stream(h and h.state or "DISCONNECTED")
      return true
    end,
    event = function(ev) self:replica_event(ev) end,
    failed = function(why, retry)
      relay.log.warn("replica_redis_failed", { error = why })
      if retry then self:note_failure("redis", why, retry) end
    end,
    reloaded = function() relay.log.info("redis_cache_reloaded", { environments = #self.store:ids() }) end,
    lost = lost("replica") }
  -- the primary's stream health decides whether SDK streams are served (spec §1.5)
  relay.every(2, function()
    local h = self.redis:stream_health()
    if h and h.state ~= self.stream_status.state then
      if h.state ~= "CONNECTED" then relay.sse.close(nil) end
      self:set_stream(h.state)
    end
  end)
end

-- An event of the primary: re-read that environment from Redis.
function Sync:replica_event(ev)
  if not ev.environment or (ev.domain ~= "flag" and ev.domain ~= "target-segment") then return end
  local env = self.redis:read_env(ev.environment)
  local ok, why = true, nil
  if env then ok, why = self:replace({ [ev.environment] = env }, "redis") end
  if not ok then relay.log.warn("redis_config_refused", { environment = ev.environment, error = why }) end
end

-- A reload replaced this generation: its loops end (the new one runs its own).
function Sync:stop()
  if self.redis then self.redis:stop() end
end

return M
