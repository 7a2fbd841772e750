-- Multi-relay (the original's presence.ts, bus.ts, bus-signing.ts, redis-backplane.ts,
-- internal-api.ts): where each daemon is (presence), telling clients to reconnect to the relay that
-- holds their daemon (redirect), and carrying frames between relays (bus) when they do not.
--
-- Two transports with one shape, each keyed by scope: redis (presence keys with a TTL, one list
-- per relay as its inbox, the original's key names) and server (the platform's internal HTTP
-- API: the bus bodies are the original's; the presence bodies are our reading of it). Envelopes are
-- the original's, HMAC-signed the same way (relay.envelope), so mixed fleets interoperate. When the transport
-- fails, that is logged and counted and local routing goes on.
local relay = require "relay"
local cjson = require "cjson"
local platform = require "relay.workspace.platform"
local envelope = require "relay.envelope"
local fleet = require "relay.fleet"

local M = {}
M.__index = M

-- ---- transports ----

-- redis (relay.fleet.redis): the presence records (the original's key names) and one inbox per
-- relay for the bus. The longest envelope worth reading: a payload at the frame limit, each byte
-- escaped at most once more (a valid JSON frame has no raw control bytes), and the other fields;
-- a longer one is dropped in Redis. A record is a few hundred bytes: one over 4 KiB is never
-- read, and counts as no record.
local function redis_transport(cfg)
  local prefix = cfg.relay_redis_key_prefix
  -- The key is the scope's (hub.scope_key: the original's, one-to-one where the original's is not).
  return fleet.redis { redis = relay.redis(cfg.relay_redis_url), key = function(s) return s.key end,
    records_prefix = prefix .. ":presence:", ttl_ms = cfg.relay_redis_presence_ttl_ms,
    max_record_bytes = 4096,
    inbox_prefix = prefix .. ":queue:", name = cfg.relay_id, max_len = cfg.relay_redis_queue_max,
    limit = cfg.relay_bus_pull_limit, max_bytes = 2 * cfg.relay_max_frame_bytes + 4096 }
end

local Server = {}
Server.__index = Server

local function server_transport(cfg) return setmetatable({ cfg = cfg, since = 0 }, Server) end

function Server:post(path, body)
  local status, json = platform.post(self.cfg, self.cfg.server_url .. "/api/runtime/internal/relay/" .. path, body)
  if not status then return nil, json end
  if status < 200 or status > 299 or not json or json.ok == false then return nil, path .. ": status " .. status end
  return json
end

function Server:upsert(s, record)
  local body = record or { relayId = self.cfg.relay_id, daemonConnected = false }
  body.workspaceId, body.runtimeTargetId = s.workspace_id, s.runtime_target_id
  return self:post("presence/upsert", body)
end

function Server:resolve(s)
  local json, err = self:post("presence/resolve",
                              { workspaceId = s.workspace_id, runtimeTargetId = s.runtime_target_id })
  if not json then return nil, err end
  return type(json.presence) == "table" and json.presence or false
end

-- The platform keeps its records itself: not checked from here.
function Server:present() return true end

function Server:publish(_, raw) return self:post("bus/publish", cjson.decode(raw)) end

function Server:pull()
  local json, err = self:post("bus/pull", { relayId = self.cfg.relay_id, sinceId = self.since,
                                            limit = self.cfg.relay_bus_pull_limit,
                                            waitMs = math.min(2000, self.cfg.relay_bus_pull_wait_ms) })
  if not json then return nil, err end
  local out = {}
  for _, f in ipairs(type(json.frames) == "table" and json.frames or {}) do
    if type(f) == "table" and type(f.id) == "number" then
      if f.id > self.since then self.since = f.id end
      f.id = nil
      if f.sourceRelayId ~= self.cfg.relay_id then out[#out + 1] = cjson.encode(f) end
    end
  end
  return out
end

-- ---- the backplane ----

-- The bus envelope (bus.ts): the signed fields in order, and every field's type. Optional ones may
-- be absent or null (the original joins them into the signing input with Array.join, which
-- writes both as "").
local SIGNED = { "workspaceId", "runtimeTargetId", "machineId", "sourceRelayId", "targetRelayId", "direction",
                 "issuedAtMs", "payload" }
local FIELDS = { workspaceId = "string", sourceRelayId = "string", targetRelayId = "string", direction = "string",
                 payload = "string", signature = "string", issuedAtMs = "number",
                 runtimeTargetId = "optional", machineId = "optional" }

-- bus.ts receive checks (relay.envelope: types, signature, skew, replay), with ours first: the
-- target and the size.
local function bus_envelopes(cfg)
  return envelope.new { key = cfg.relay_bus_hmac_key, fields = SIGNED, types = FIELDS, time = "issuedAtMs",
    max_skew = cfg.relay_bus_signature_max_skew_ms,
    stream = function(e) return e.sourceRelayId .. "\0" .. e.workspaceId .. "\0" .. (e.runtimeTargetId or "") end,
    check = function(e)
      if e.targetRelayId ~= cfg.relay_id then return "foreign target" end
      if #e.payload > cfg.relay_max_frame_bytes then return "payload too large" end
    end }
end

-- The presence lookups cached (remote_daemon): the most recently used, so that the scopes peers
-- name, however many come and go, hold at most this many (each a record of at most 4 KiB). An
-- entry is worth at most 2 s anyway; one pushed out early costs one more lookup.
local CACHE_MAX = 1024

-- relay.fleet's names for what failed, and the original's (its metrics and log events).
local FAILED = { records = "presence", messages = "bus" }

function M.new(cfg, hub, obs)
  local self = setmetatable({ cfg = cfg, hub = hub, obs = obs, envelopes = bus_envelopes(cfg) }, M)
  -- The local daemons' records, written again every presence sync interval (they expire), and at
  -- once when Redis is back without them (relay.reannounce), not a sync period (20 s) later.
  local sync = cfg.relay_presence_sync_interval_ms / 1000
  self.fleet = fleet.new {
    transport = (cfg.backplane == "redis" and redis_transport or server_transport)(cfg),
    key = function(s) return s.key end, every = sync, each = math.min(1, sync),
    max_age = math.min(2, cfg.relay_redis_presence_ttl_ms / 1000), max_cached = CACHE_MAX,
    record = function(s, conn) return self:record(s, conn) end,
    valid = function(rec) return type(rec.relayId) == "string", "invalid presence record" end,
    failed = function(what, err) self:failed(FAILED[what] or what, err) end,
    healed = function(why)
      self.obs:inc("relay_presence_reannounced_total")
      self.obs:log("info", "presence_reannounced", { reason = why })
    end,
  }
  return self
end

-- A call to Redis (or the platform) failed, or a frame or a turn of the consumer raised
-- ("presence" or "bus"); relay.fleet has already told the records' watch.
function M:failed(what, err)
  self.obs:inc("relay_" .. what .. "_errors_total")
  self.obs:log("warn", what .. "_error", { reason = tostring(err) })
end

-- The presence record of the scope's daemon conn, or nil when conn is no longer its daemon (it is
-- forgotten, not written).
function M:record(s, conn)
  if s.daemon ~= conn then return nil end
  return { relayId = self.cfg.relay_id, relayWsBaseUrl = self.cfg.public_ws_base_url, daemonConnected = true,
           runtimeTargetId = s.runtime_target_id, machineId = conn.claims.machineId,
           updatedAtMs = envelope.now_ms() }
end

function M:daemon_up(s, conn)
  if self.cfg.presence_enabled and self.fleet:hold(s, conn) then self.obs:inc("relay_presence_upserts_total") end
end

function M:daemon_down(s)
  if self.cfg.presence_enabled then self.fleet:drop(s) end
end

-- The relay holding scope s's daemon, if it is another one (cached min(TTL, 2 s), CACHE_MAX scopes).
function M:remote_daemon(s)
  if not self.cfg.presence_enabled then return nil end
  local rec, asked = self.fleet:lookup(s)
  if asked then self.obs:inc("relay_presence_lookups_total") end
  return rec and rec.daemonConnected ~= false and rec.relayId ~= self.cfg.relay_id and rec or nil
end

-- presence.ts isAllowedRedirectWsBaseUrl
function M:redirect_allowed(url)
  local u = type(url) == "string" and relay.url.parse(url, { "ws", "wss" })
  if not u or u.user or u.query or u.fragment or (self.cfg.relay_mode == "prod" and u.scheme ~= "wss") then return false end
  local host = u.host:lower()
  local allowed = self.cfg.relay_redirect_allowed_hosts
  if #allowed == 0 then
    if self.cfg.relay_mode ~= "prod" then return true end
    local own = relay.url.parse(self.cfg.public_ws_base_url)
    allowed = { own and own.host:lower() or "" }
  end
  for _, h in ipairs(allowed) do if h:lower() == host then return true end end
  return false
end

function M:redirect(conn, rec, with_target)
  if not (self.cfg.redirect_enabled and rec.relayWsBaseUrl ~= self.cfg.public_ws_base_url
          and self:redirect_allowed(rec.relayWsBaseUrl)) then return false end
  self.obs:inc("relay_client_redirect_total")
  self.hub:status(conn, "RELAY_REDIRECT", "Workspace is assigned to a different relay instance",
                  { relayWsBaseUrl = rec.relayWsBaseUrl, runtimeTargetId = with_target and conn.runtime_target_id or nil })
  return true
end

-- Right after the upgrade: a client whose daemon is elsewhere is told where.
function M:client_joined(conn)
  if conn.role ~= "client" or not conn.runtime_target_id or conn.scope.daemon then return end
  local rec = self.cfg.redirect_enabled and self:remote_daemon(conn.scope)
  if rec then self:redirect(conn, rec, false) end
end

-- A client frame with no local daemon: redirect and/or carry it over the bus. true if the
-- daemon is on another relay.
function M:client_to_remote(conn, s, text)
  local rec = self:remote_daemon(s)
  if not rec then return false end
  local redirected = self:redirect(conn, rec, true)
  local carried = self.cfg.bus_enabled and self:publish(rec.relayId, "client_to_daemon", s, conn.claims.machineId, text)
  return redirected or carried
end

-- ---- the bus ----

function M:publish(target, direction, s, machine_id, payload)
  local e = { workspaceId = s.workspace_id, runtimeTargetId = s.runtime_target_id, machineId = machine_id,
              sourceRelayId = self.cfg.relay_id, targetRelayId = target, direction = direction, payload = payload }
  local ok, err = self.fleet:send(target, self.envelopes:seal(e))
  if not ok then self.fleet:failed("messages", err); return false end
  self.obs:inc("relay_bus_published_total")
  if direction == "client_to_daemon" then self.obs:inc("relay_client_messages_routed_bus_total") end
  return true
end

function M:rejected(why)
  self.obs:inc("relay_bus_rejected_total")
  self.obs:log("warn", "bus_envelope_rejected", { reason = why })
end

function M:deliver(raw)
  local e, why = self.envelopes:open(raw)
  if not e then return self:rejected(why) end
  self.obs:inc("relay_bus_received_total")
  local hub = self.hub
  local s = hub.scopes[hub.scope_key(e.workspaceId, e.runtimeTargetId)]
  if e.direction == "client_to_daemon" then
    if not (s and s.daemon) then return self.obs:inc("relay_bus_undeliverable_total") end
    hub:from_remote_client(s, e.sourceRelayId, e.payload)
  elseif e.direction == "daemon_to_clients" and s then
    hub:from_remote_daemon(s, e.payload)
  end
end

-- A failed pull waits this long before the next one, however long Redis has been failing. The
-- wait does not grow (the original's grows to 10 s): a pull to a node that is down fails here
-- without reaching Redis, and a grown wait only holds frames back once Redis is whole again
-- (measured: up to 4.7 s after a Cluster replica was promoted, with 1, 2, 4 s).
local RETRY_S = 1

-- The consumer (relay.fleet, relay.poll): for the generation's life, pull and deliver; an empty
-- inbox waits RELAY_BUS_POLL_INTERVAL_MS, as the original's consumer does. run() does not return.
function M:run()
  self.fleet:run { every = self.cfg.relay_bus_poll_interval_ms / 1000, retry = RETRY_S,
    idle = function() return self.hub.conns.n == 0 end,
    deliver = function(raw) self:deliver(raw) end,
    dropped = function(n) for _ = 1, n do self:rejected("envelope too large") end end }
end

return M
