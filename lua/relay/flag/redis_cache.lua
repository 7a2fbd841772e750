-- The Redis side of the flag proxy (ff-proxy v2's key layout, spec §3.4): a primary writes
-- every environment and streams its change events to proxy:sse_events; read replicas load from
-- Redis and follow that stream. Redis down: the memory cache keeps serving, /health says
-- cacheStatus "unhealthy", relay.redis reconnects with backoff. Redis back empty or old: the
-- primary's relay.snapshot finds it (the seed mark SEEDED gone, a key gone or stale) and writes
-- everything again.
local relay = require "relay"
local json = require "relay.json"
local snapshot = require "relay.snapshot"
local sha256_hex = relay.crypto.sha256_hex

local M = {}
local Cache = {}
Cache.__index = Cache

local EVENTS = "proxy:sse_events"
M.EVENTS = EVENTS
local CONTROL = "proxy:primary_to_replica_control_events"
local HEALTH = "ffproxy_saas_stream_health"
local METRICS = "stream:sdk_metrics"
local SEEDED = "key-relayhost-seeded"

-- An environment's keys that hold its lists (read back by read_env), by the field they fill.
local LISTS = { keys = "-api-configs", flags = "-feature-configs", segments = "-segments",
                targets = "-target-configs" }

-- One environment's keys (ff-proxy's), and its auth-key-* ones (shared: an SDK key moved to
-- another environment is written by that one, so never deleted as gone from this one).
local function env_writes(env_id, env)
  local p, auth, auth_keys = "env-" .. env_id, json.array(), {}
  for _, h in ipairs(env.keys) do
    auth[#auth + 1] = "auth-key-" .. h
    auth_keys["auth-key-" .. h] = json.encode(env_id)
  end
  local fc, segs = json.encode(env.flags), json.encode(env.segments)
  local writes = {
    [p .. "-api-configs"] = json.encode(auth),
    [p .. "-feature-configs"] = fc, [p .. "-feature-configs-latest"] = json.encode(sha256_hex(fc)),
    [p .. "-segments"] = segs, [p .. "-segments-latest"] = json.encode(sha256_hex(segs)),
    [p .. "-target-configs"] = json.encode(env.targets),
  }
  for _, f in ipairs(env.flags) do writes[p .. "-feature-config-" .. f.feature] = json.encode(f) end
  for _, s in ipairs(env.segments) do writes[p .. "-segment-" .. s.identifier] = json.encode(s) end
  return writes, auth_keys
end

-- store: what is served (relay.flag.store); stream() -> the stream state and since, written with
-- the whole cache; lost(why): Redis lost it (relay.snapshot's connection takes the commands).
-- The stream health's key is always looked for (whichever primary wrote it).
function M.new(url, store, stream, lost)
  local self = setmetatable({}, Cache)
  self.snap = snapshot.new { url = url, mark = SEEDED, inventory = "key-relayhost-%s-inventory",
    compare = "%-latest$", expect = { HEALTH }, what = "the flag cache", lost = lost,
    groups = function() return store:ids() end,
    writes = function(id)
      if store.envs[id] then return env_writes(id, store.envs[id]) end
    end,
    before_mark = function() return self:set_stream_health(stream()) end }
  self.r = self.snap.r
  return self
end

function Cache:publish(events)
  for _, ev in ipairs(events) do
    local ok, err = self.r:call("XADD", EVENTS, "MAXLEN", "~", "1000", "*", "event", json.encode(ev))
    if not ok then return nil, err end
  end
  return true
end

function Cache:set_stream_health(state, since)
  local ok, err = self.r:call("SET", HEALTH, json.encode({ state = state, since = since }))
  if not ok then return nil, err end
  return self.r:call("XADD", CONTROL, "MAXLEN", "~", "100", "*", "event",
    json.encode({ event = "stream_action", domain = state }))
end

local function get_json(r, key)
  local v, err = r:call("GET", key)
  if type(v) ~= "string" then return nil, err or ("missing " .. key) end
  local ok, d = pcall(json.decode, v)
  if not ok then return nil, key .. ": not JSON" end
  return d
end

-- The primary's upstream stream state, as it last wrote it (nil if none).
function Cache:stream_health()
  local h = get_json(self.r, HEALTH)
  return type(h) == "table" and h or nil
end

-- One environment's lists as the primary wrote them (sources name the keys in
-- relay.flag.validate's messages), or nil and why; targets may be missing.
function Cache:read_env(env_id)
  local env, p = { sources = {} }, "env-" .. env_id
  for field, suffix in pairs(LISTS) do
    local v, err = get_json(self.r, p .. suffix)
    if not v and field ~= "targets" then return nil, err end
    env[field], env.sources[field] = v or {}, "redis " .. p .. suffix
  end
  local keys = {}
  for _, a in ipairs(env.keys) do keys[#keys + 1] = a:match("^auth%-key%-(%x+)$") end
  env.keys = keys
  return env
end

-- Every environment a primary wrote: { [env_id] = data } or nil, err.
function Cache:read_all()
  local envs, cursor = {}, "0"
  repeat
    local reply, err = self.r:call("SCAN", cursor, "MATCH", "env-*-api-configs", "COUNT", "100")
    if type(reply) ~= "table" then return nil, err or "SCAN failed" end
    cursor = reply[1]
    for _, key in ipairs(reply[2]) do
      local env_id = key:match("^env%-(.+)%-api%-configs$")
      local env, e = self:read_env(env_id)
      if not env then return nil, e end
      envs[env_id] = env
    end
  until cursor == "0"
  return envs
end

-- Replicas hand SDK metrics to the primary (stream:sdk_metrics, as ff-proxy's replicas do).
function Cache:push_metrics(env_id, body)
  return self.r:call("XADD", METRICS, "MAXLEN", "~", "1000", "*", "event",
    json.encode({ environment = env_id, body = body }))
end

function Cache:follow_metrics(fn, failed) self.snap:follow_always(METRICS, fn, failed) end

-- A reload replaced this generation: its loops end (the new one runs its own).
function Cache:stop() self.snap:stop() end

return M
