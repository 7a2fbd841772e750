-- The Redis side of the flag proxy (ff-proxy v2's key layout, spec §3.4): a primary writes
-- every environment and streams its change events to proxy:sse_events; read replicas load from
-- Redis and follow that stream. Redis down: the memory cache keeps serving, /health says
-- cacheStatus "unhealthy", relay.redis reconnects with backoff. Redis back empty: the seed mark
-- (SEEDED, written last by a primary once Redis holds its whole cache) is gone, and relay.flag.sync
-- writes everything again; missing() checks, key by key, what was written.
local relay = require "relay"
local json = require "relay.json"
local sha256_hex = relay.crypto.sha256_hex

local M = {}
local Cache = {}
Cache.__index = Cache

local EVENTS = "proxy:sse_events"
local CONTROL = "proxy:primary_to_replica_control_events"
local HEALTH = "ffproxy_saas_stream_health"
local METRICS = "stream:sdk_metrics"
local SEEDED = "key-relayhost-seeded"
M.SEEDED = SEEDED

-- An environment's keys that hold its lists (read back by read_env), by the field they fill.
local LISTS = { keys = "-api-configs", flags = "-feature-configs", segments = "-segments",
                targets = "-target-configs" }

-- Seconds Redis may owe an answer before it counts as not answering (a stopped server or a
-- partition leaves the connection up): /health says so before relay.redis's reply timeout (3 s)
-- fails the command.
local STALL = 1

function M.new(url)
  -- commands on one connection; the blocking XREAD of a replica on a second one
  -- written: env_id -> { [key] = value } of every key last written for it; the stream health's
  -- key is always expected (whichever primary wrote it)
  local written = { [HEALTH] = { [HEALTH] = true } }
  return setmetatable({ r = relay.redis(url), feed = relay.redis(url), written = written }, Cache)
end

-- Seconds Redis has owed the command connection an answer, once that is over STALL; else nil
-- (r:stalled() counts on across the connections the reply timeout gives up, until Redis speaks).
function Cache:stalled()
  local waited = self.r:stalled()
  if waited and waited > STALL then return waited end
end

function Cache:healthy() return self.r:ready() and not self:stalled() end

-- SETs every key of a { [key] = value } table. true, or nil and Redis's error.
function Cache:set_all(writes)
  for key, value in pairs(writes) do
    local ok, err = self.r:call("SET", key, value)
    if not ok then return nil, err end
  end
  return true
end

-- Writes one environment (ff-proxy's keys) and deletes the per-item keys of items now gone.
function Cache:write_env(env_id, env)
  local r, p = self.r, "env-" .. env_id
  local auth, auth_keys = json.array(), {}
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
  local ok, err = self:set_all(auth_keys)
  if ok then ok, err = self:set_all(writes) end
  if not ok then return nil, err end
  -- the inventory of per-item keys, to delete what disappeared
  local inv_key, inv = "key-relayhost-" .. env_id .. "-inventory", {}
  local old = r:call("GET", inv_key)
  local decoded, prev = pcall(json.decode, type(old) == "string" and old or "{}")
  for key in pairs(decoded and type(prev) == "table" and prev or {}) do
    if not writes[key] then r:call("DEL", key) end
  end
  for key in pairs(writes) do inv[key] = "" end
  ok, err = r:call("SET", inv_key, json.encode(inv))
  if not ok then return nil, err end
  for key, value in pairs(auth_keys) do writes[key] = value end
  writes[inv_key], self.written[env_id] = true, writes
  return true
end

-- Whether Redis still holds what was last written for each of ids (and the stream health): every
-- key there (one EXISTS each: keys of one environment live in many slots of a Cluster) and the
-- list hashes (-latest) equal. false; or the first key found wrong; or nil and Redis's error.
function Cache:missing(ids)
  ids[#ids + 1] = HEALTH
  for _, id in ipairs(ids) do
    if not self.written[id] then return "env-" .. id .. " (not written yet)" end
    for key, want in pairs(self.written[id]) do
      local cmd = key:find("%-latest$") and "GET" or "EXISTS"
      local v, err = self.r:call(cmd, key)
      if v == nil and err then return nil, err end
      if v ~= (cmd == "GET" and want or 1) then return key end
    end
  end
  return false
end

-- The seed mark: its value (a string), nil when there is none, or nil and Redis's error.
function Cache:seed_mark()
  local v, err = self.r:call("GET", SEEDED)
  if v == nil and err then return nil, err end
  return v
end

-- A new seed mark: replicas that see it change load everything again.
function Cache:set_seed_mark(since)
  return self.r:call("SET", SEEDED, json.encode({ seed = relay.uuid(), since = since }))
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

-- Calls fn(value) for the JSON field `event` of every entry added to a Redis stream from now
-- on (XREAD BLOCK on its own connection); returns the last id and why when Redis fails (or
-- "stopped" once a reload replaced this generation).
function Cache:follow_stream(name, fn, last_id)
  if not last_id then -- "$" in every XREAD would miss what comes between two calls
    local err
    last_id, err = self:top(name)
    if not last_id then return nil, err end
  end
  while not self.stopped do
    local reply, err = self.feed:call("XREAD", "BLOCK", "5000", "STREAMS", name, last_id)
    if reply == nil and err then return last_id, err end
    for _, stream in ipairs(type(reply) == "table" and reply or {}) do
      for _, entry in ipairs(stream[2] or {}) do
        last_id = entry[1]
        local fields = entry[2]
        for i = 1, #fields, 2 do
          if fields[i] == "event" then
            local ok, v = pcall(json.decode, fields[i + 1])
            if ok and type(v) == "table" then fn(v) end
          end
        end
      end
    end
  end
  return last_id, "stopped"
end

-- The id of the newest entry of a stream (default: the change events), "0-0" when it has none,
-- or nil and why; read on the feed's connection (a cheap read on the stream's own slot).
function Cache:top(name)
  local top, err = self.feed:call("XREVRANGE", name or EVENTS, "+", "-", "COUNT", "1")
  if type(top) ~= "table" then return nil, err or "XREVRANGE failed" end
  return top[1] and top[1][1] or "0-0"
end

-- The primary's change events (proxy:sse_events).
function Cache:follow(fn, last_id) return self:follow_stream(EVENTS, fn, last_id) end

-- Replicas hand SDK metrics to the primary (stream:sdk_metrics, as ff-proxy's replicas do).
function Cache:push_metrics(env_id, body)
  return self.r:call("XADD", METRICS, "MAXLEN", "~", "1000", "*", "event",
    json.encode({ environment = env_id, body = body }))
end

function Cache:follow_metrics(fn, last_id) return self:follow_stream(METRICS, fn, last_id) end

return M
