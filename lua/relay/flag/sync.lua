-- Keeping the cache fresh and telling the SDKs: the state (health for /health and /stream),
-- replacing environments and streaming what changed, and (with Redis) persisting it. Offline
-- mode replaces all from the config directory (SIGHUP re-reads it); a read replica follows
-- Redis (start_replica); online mode lives in relay.flag.upstream, which calls replace.
local relay = require "relay"
local json = require "relay.json"
local backoff = require "relay.backoff"
local validate = require "relay.flag.validate"

local refused = relay.metrics.counter("ff_proxy_config_refused_total",
  "flag configs refused because they do not fit the shape the SDKs rely on (nothing was replaced)")
local published = relay.metrics.counter("ff_proxy_primary_to_sdk_sse_producer_messages_published",
  "SSE events written to SDK streams", { "topic", "error" })
local cache_lost = relay.metrics.counter("ff_proxy_redis_cache_lost_total",
  "times Redis was found without the flag cache written to it (restart without persistence, failover that lost writes, FLUSHALL)",
  { "role" })

-- Watching Redis for a lost cache: the connection's state is looked at every TICK (no I/O, so a
-- reconnect is seen at once), the seed mark read every MARK_TICKS ticks (one GET), and (by a
-- primary) every key it wrote checked every AUDIT_EVERY seconds and after each reconnect.
local TICK, MARK_TICKS, AUDIT_EVERY = 0.05, 5, 30
local redis_cache = require "relay.flag.redis_cache"
local SEEDED = redis_cache.SEEDED

local M = {}
local Sync = {}
Sync.__index = Sync

-- The SSE channel of proxy-key streams (every environment; environment ids have no "*").
M.PROXY_CHANNEL = "*proxy-key*"

local function now_ms() return math.floor(relay.time() * 1000) end

function M.new(cfg, store)
  local t = now_ms()
  -- generating an offline config writes files only (the original disables Redis for it too)
  local redis = cfg.redis ~= "" and not cfg.generate_offline_config and redis_cache.new(cfg.redis) or nil
  return setmetatable({ redis = redis, cfg = cfg, store = store,
    config_status = { state = cfg.offline and "SYNCED" or "INITIALIZING", since = t },
    stream_status = { state = "INITIALIZING", since = t },
    -- a primary's changes not yet in Redis: environment ids, and events for the replicas
    unwritten = {}, unsent = {},
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
  if self.redis and not self.cfg.read_replica then self.health_due = true; self:write_soon() end
end

-- Why the config is not synced and when the next try is, for /health's failing answer.
-- source: what was tried (the upstream URL, or Redis); retry_in: seconds to the next try (nil:
-- none, as for an API key the upstream refused).
function Sync:note_failure(source, err, retry_in)
  self.failure = { source = source, error = tostring(err), next_ms = retry_in and now_ms() + math.floor(retry_in * 1000) }
end

-- /health's 500 body (FAILED_TO_SYNC): the original's 'error' key, saying what is wrong, and
-- when the next try is (retryIn seconds; nextAttempt in ms since the epoch, like 'since').
function Sync:failure_report(h)
  local f = self.failure
  local body = { configStatus = h.configStatus, streamStatus = h.streamStatus, cacheStatus = h.cacheStatus,
                 cacheError = h.cacheError, error = "the first sync has not finished yet" }
  if f then
    body.error = ("could not sync from %s: %s"):format(f.source, f.error)
    if f.next_ms then -- nil for a key the upstream refused: no retry is planned
      body.retryIn, body.nextAttempt = math.max(0, math.ceil((f.next_ms - now_ms()) / 1000)), f.next_ms
    end
  end
  return body
end

-- Why the Redis cache is not whole right now (nil when it is, or when there is no Redis).
function Sync:cache_error()
  if not self.redis then return nil end
  local stalled = self.redis:stalled()
  if stalled then return ("Redis has not answered for %d s"):format(stalled) end
  if not self.redis:healthy() then return "not connected to Redis" end
  if self.redis_down then return "reconnected to Redis: checking that it still holds the flag cache" end
  return self.cache_problem or self.mark_error
end

-- ff-proxy's three keys; with an unhealthy cache, cacheError says why (relayhost's addition).
function Sync:health()
  local cs = self.config_status.state
  local why = self:cache_error()
  return { configStatus = { state = cs == "INITIALIZING" and "FAILED_TO_SYNC" or cs, since = self.config_status.since },
           streamStatus = self.stream_status, cacheStatus = why and "unhealthy" or "healthy", cacheError = why }
end

-- The ids of the environments served.
function Sync:ids()
  local ids = {}
  for id in pairs(self.store.envs) do ids[#ids + 1] = id end
  return ids
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

-- ---- watching Redis, for a primary and a replica alike ----

-- check(self, up) runs every MARK_TICKS ticks, and at once after a kick (a primary's change) or a
-- reconnect. Back from being down (up: whether Redis answers), Redis is not whole until checked
-- (a restart may have emptied it).
function Sync:watch(check)
  relay.after(0, function()
    local ticks = 0
    while not self.stopped do
      local up = self.redis:healthy()
      if not up then self.redis_down = true end
      if self.kick or up and self.redis_down or ticks % MARK_TICKS == 0 then
        self.kick = false
        check(self, up)
      end
      ticks = ticks + 1
      relay.sleep(TICK)
    end
  end)
end

-- The seed mark; a Redis that does not answer it (a Cluster node down while the others are up)
-- is not whole either. The mark, or nil (none), or nil and the error.
function Sync:read_mark()
  local mark, err = self.redis:seed_mark()
  self.mark_error = mark == nil and err and ("reading " .. SEEDED .. " failed: " .. tostring(err)) or nil
  return mark, err
end

-- ---- primary: writes what it serves; Redis that came back empty, or lost writes, is written whole ----

-- A primary with Redis writes what it serves and streams the events to the replicas, at once
-- (or, while a write is running, at the watcher's next tick). Redis hanging: nothing queues;
-- the cache is written whole once it answers.
function Sync:persist(env_ids, events)
  if not self.redis or self.cfg.read_replica then return end
  if not self.audit_at then
    self.audit_at = relay.time() + AUDIT_EVERY
    self:watch(self.primary_run)
  end
  if self.redis:stalled() then self.dirty = true; return end
  for _, id in ipairs(env_ids) do self.unwritten[id] = true end
  for _, ev in ipairs(events) do self.unsent[#self.unsent + 1] = ev end
  self:write_soon()
end

function Sync:write_soon() relay.after(0, function() self:primary_run(false) end) end

-- A primary's Redis writes run one at a time, in order: a change and a re-seed never interleave
-- (the seed mark is only written after a whole cache). One asked for meanwhile runs at the next tick.
function Sync:primary_run(check)
  if self.busy then self.kick = true; return end
  self.busy = true
  local ok, err = pcall(self.primary_tick, self, check)
  self.busy = false
  if not ok then relay.log.warn("redis_job_failed", { error = tostring(err) }) end
end

-- The changes persist() left, then (check: the watcher's, while Redis answers) the check. A
-- write that fails marks the cache dirty: the check writes all of it again (a Cluster node that
-- failed over mid-write may hold any mix of old and new keys).
function Sync:primary_tick(check)
  local ids, events = self.unwritten, self.unsent
  self.unwritten, self.unsent = {}, {}
  for id in pairs(ids) do
    local env = self.store.envs[id]
    local ok, err = true, nil
    if env then ok, err = self.redis:write_env(id, env) end
    if not ok then
      -- written whole at the next tick
      self.dirty, self.kick, self.cache_problem = true, true, "a write to Redis failed: " .. tostring(err)
      relay.log.warn("redis_write_failed", { environment = id, error = err })
    end
  end
  local ok, err = self.redis:publish(events)
  if not ok then relay.log.warn("redis_publish_failed", { error = err }) end
  if self.health_due then
    self.health_due = false
    self.redis:set_stream_health(self.stream_status.state, self.stream_status.since)
  end
  if check then self:primary_check() end
end

-- Every environment, the stream state, then a new seed mark (last: a replica that sees it reads
-- a whole cache, and reloads: a change whose event was lost reaches it too). Whole once that
-- worked, else dirty (tried again at the next check).
function Sync:rewrite(reason)
  local t0, ok, err = relay.time(), true, nil
  for id, env in pairs(self.store.envs) do
    if ok then ok, err = self.redis:write_env(id, env) end
  end
  local st = self.stream_status
  if ok then ok, err = self.redis:set_stream_health(st.state, st.since) end
  if ok then ok, err = self.redis:set_seed_mark(now_ms()) end
  if not ok then
    self.dirty, self.cache_problem = true, "writing the flag cache to Redis failed: " .. tostring(err)
    return relay.log.warn("redis_rewrite_failed", { reason = reason, error = err })
  end
  self.seeded, self.dirty, self.cache_problem = true, false, nil
  relay.log.info("redis_cache_written", { reason = reason, seconds = relay.time() - t0 })
end

-- Redis lost what this primary wrote: counted, logged, unhealthy until written again (rewrite).
function Sync:lost(what)
  cache_lost:inc(1, { "primary" })
  self.cache_problem = "Redis lost the flag cache (" .. what .. "): writing it again"
  relay.log.warn("redis_cache_lost", { role = "primary", error = self.cache_problem })
  self:rewrite("lost")
end

-- One check: the seed mark gone, or (after a reconnect, and every AUDIT_EVERY seconds) a key
-- gone or stale, means Redis lost it; a failed write means it may have.
function Sync:primary_check()
  if relay.time() >= self.audit_at then self.audit_at, self.audit_due = relay.time() + AUDIT_EVERY, true end
  local mark, err = self:read_mark()
  if mark == nil and err then self.audit_due = true; return end
  if self.redis_down then -- answered again: cache_problem says the rest until this check is done
    self.redis_down, self.audit_due = false, true
    self.cache_problem = "reconnected to Redis: checking that it still holds the flag cache"
  end
  if mark == nil then
    if self.seeded then return self:lost(SEEDED .. " is gone") end
    return self:rewrite("first start")
  end
  self.seeded = true
  if self.dirty then return self:rewrite("a write had failed") end
  if not self.audit_due then return end
  local missing = self.redis:missing(self:ids())
  if missing == nil then return end -- Redis went away mid-check: audit_due stays
  self.audit_due = false
  if missing then return self:lost(missing .. " is gone or stale") end
  self.cache_problem = nil
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
  self:persist(ids, events)
  return events
end

-- ---- read replica: everything comes from the primary through Redis (its writes and events) ----

-- Loads everything a primary wrote. With a seed mark (a relayhost primary) only a whole cache:
-- the mark read before (mark) and after the environments must be the same. Without one (ff-proxy's
-- own primary writes none) whatever is there, but never an empty Redis: that is a cache not written
-- yet (or lost), and loading it would refuse every SDK key while /health said all was well.
function Sync:replica_load(mark)
  if mark == nil and self.seed_seen then return nil, "Redis lost the flag cache: waiting for the primary to write it again" end
  local top, err = self.redis:top() -- the feed follows on from here: no event after the read is missed
  if not top then return nil, err end
  local envs, e1 = self.redis:read_all()
  if not envs then return nil, e1 end
  if mark == nil and not next(envs) then return nil, "Redis holds no flag cache: waiting for a primary to write it" end
  local again, e2 = self.redis:seed_mark()
  if again == nil and e2 then return nil, e2 end
  if again ~= mark then return nil, "the primary was writing the cache while it was read: reading it again" end
  local ok, why = self:replace(envs, "redis", true)
  if not ok then return nil, why end
  self.seed_seen, self.cache_problem, self.mark_lost = mark, nil, false
  self.need_load, self.feed_from = false, top
  self:set_config("READ_REPLICA")
  local h = self.redis:stream_health()
  self:set_stream(h and h.state or "DISCONNECTED")
  return true
end

-- The seed mark gone: Redis lost the cache (serving from memory meanwhile). A new one: the
-- primary wrote it whole again, so everything is read again at once, without waiting for the
-- feed. And a load the feed needs (at start, after it failed): retried with backoff, at once
-- after a reconnect.
function Sync:replica_check(up)
  local due = self.need_load and relay.time() >= self.retry_at
  if not (up or due) then return end
  if up and self.redis_down then self.redis_down, due = false, self.need_load end
  local mark, err = self:read_mark()
  if mark == nil and err then
    if due then self:replica_failed(err) end
    return
  end
  if mark == nil and self.seed_seen and not self.mark_lost then
    self.mark_lost = true
    cache_lost:inc(1, { "replica" })
    self.cache_problem = "Redis lost the flag cache: serving from memory until the primary writes it again"
    return relay.log.warn("redis_cache_lost", { role = "replica", error = self.cache_problem })
  end
  local fresh = mark ~= nil and mark ~= self.seed_seen
  if not (fresh or due) then return end
  local ok, loaded, why = pcall(self.replica_load, self, mark)
  if not (ok and loaded) then return self:replica_failed(ok and why or tostring(loaded)) end
  self.wait:reset()
  if fresh and self.loaded then relay.log.info("redis_cache_reloaded", { environments = #self:ids() }) end
  self.loaded = true
end

-- A load that failed: logged, said on /health (before the first), and tried again after a backoff.
function Sync:replica_failed(why)
  relay.log.warn("replica_redis_failed", { error = why })
  local retry = self.wait:next()
  self:note_failure("redis", why, retry)
  self.retry_at = relay.time() + retry
end

-- An event of the primary: re-read that environment from Redis.
function Sync:replica_event(ev)
  if not ev.environment or (ev.domain ~= "flag" and ev.domain ~= "target-segment") then return end
  local env = self.redis:read_env(ev.environment)
  local ok, why = true, nil
  if env then ok, why = self:replace({ [ev.environment] = env }, "redis") end
  if not ok then relay.log.warn("redis_config_refused", { environment = ev.environment, error = why }) end
end

-- The follower: the change events from where the last load began. A feed that fails (Redis
-- down, or its node down or failing over) is followed again as soon as that node answers, with
-- everything read again first (events may have been missed meanwhile).
function Sync:replica_feed()
  local quick = backoff.new { min = 0.5, max = 5 } -- a feed that fails at once is not hammered
  while not self.stopped do
    if not self.need_load then
      local started = relay.time()
      local _, err = self.redis:follow(function(ev) self:replica_event(ev) end, self.feed_from)
      if self.stopped then return end
      relay.log.warn("replica_redis_failed", { error = err })
      self.cache_problem = self.cache_problem or ("reading Redis failed: " .. tostring(err))
      if relay.time() - started < 1 then relay.sleep(quick:next()) else quick:reset() end
      while not self.stopped and not self.redis:top() do relay.sleep(TICK * MARK_TICKS) end
      self.need_load, self.retry_at = true, 0
    end
    relay.sleep(TICK)
  end
end

function Sync:start_replica()
  self.need_load, self.retry_at, self.wait = true, 0, backoff.new { min = 0.5, max = 5 }
  self:watch(self.replica_check)
  relay.after(0, function() self:replica_feed() end)
  -- the primary's stream health decides whether SDK streams are served (spec §1.5)
  relay.every(2, function()
    local h = self.redis:stream_health()
    if h and h.state ~= self.stream_status.state then
      if h.state ~= "CONNECTED" then relay.sse.close(nil) end
      self:set_stream(h.state)
    end
  end)
end

-- A reload replaced this generation: its loops end (the new one runs its own).
function Sync:stop()
  self.stopped = true
  if self.redis then self.redis.stopped = true end
end

return M
