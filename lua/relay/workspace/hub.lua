-- The workspace relay's registry and routing (the original's registry.ts, relay-routing.ts,
-- relay-connection-admission.ts). A scope is a (workspaceId, runtimeTargetId?) pair: one daemon, its
-- clients, and who owns which key exchange, session and pairing request. Client frames go to the
-- scope's daemon verbatim; daemon frames go to the one client that owns them, never to all.
local relay = require "relay"
local core = require "relay.core"
local cjson = require "cjson"
local frames = require "relay.workspace.frames"
local platform = require "relay.workspace.platform"
local limit = require "relay.limit"
local lru = require "relay.lru"
local wsconns = require "relay.wsconns"

local M = {}
M.__index = M

local encode = cjson.encode

-- A connection (or a remote owner) still worth sending to.
local function live(conn) return conn ~= nil and not conn.closing end

-- The connections (relay.wsconns), with the original's metrics and log lines.
local function connections(self, cfg, obs)
  return wsconns.new {
    max_pending = cfg.relay_max_pending_bytes, idle_timeout = cfg.relay_idle_timeout_ms / 1000,
    pong_timeout = cfg.relay_pong_timeout_ms / 1000, ping_interval = cfg.relay_ping_interval_ms / 1000,
    -- the original's safeSend: a consumer too far behind is cut off, not waited for
    on_overflow = function(conn, buffered)
      obs:inc("relay_ws_slow_client_terminated_total")
      obs:log("warn", "slow_client_terminated", { connectionId = conn.id, role = conn.role, buffered = buffered })
    end,
    on_terminate = function(conn, why)
      obs:inc("relay_ws_" .. why .. "_terminated_total")
      obs:log("info", "ws_" .. why .. "_terminated", { connectionId = conn.id, role = conn.role })
    end,
    on_ping = function(now) -- every ping interval: sweep the limiters
      for _, l in pairs(self.limits) do l:sweep(now) end
    end,
  }
end

function M.new(cfg, obs)
  local self = setmetatable({
    cfg = cfg, obs = obs, scopes = {}, nscopes = 0,
    limits = { -- per minute; keyed as LIMITED says
      kex = limit.window(cfg.relay_kex_init_rate_per_minute, 60, cfg.relay_kex_rate_limiter_max_keys),
      pairing = limit.window(cfg.relay_pairing_rate_per_minute, 60, cfg.relay_pairing_rate_limiter_max_keys),
      runtime = limit.bucket(cfg.relay_runtime_rate_per_minute, 60, cfg.relay_runtime_rate_limiter_max_keys),
      runtime_ws = limit.bucket(cfg.relay_runtime_rate_per_minute_workspace, 60,
                                cfg.relay_runtime_workspace_rate_limiter_max_keys),
    },
    -- The C side (core/hub): E2EE frames of a daemon reach their session's owner without Lua,
    -- and its per-scope token bucket is the daemon limit for every daemon and worker frame.
    fast = core.hub_new(cfg.relay_daemon_runtime_rate_per_minute, cfg.relay_max_pending_bytes),
    remote = nil, -- the backplane, when there is one (relay.workspace.backplane)
  }, M)
  self.conns = connections(self, cfg, obs)
  return self
end

-- An id's bytes outside the original's query alphabet as %XX: '%' (so the escape is one-to-one),
-- and NUL and the rest a claim may carry (the C hub takes keys as C strings).
local function escape(id, extra)
  return (id:gsub("[^%w._" .. extra .. "-]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- The scope key, also the Redis presence key's tail: workspaceId[:runtimeTargetId] as the
-- original writes it, but one-to-one. Ids may contain ':', so the original's key cannot tell
-- workspace "a:b" from workspace "a" with target "b"; here a workspace id's ':' is escaped, so the
-- first ':' ends the workspace id. Every pair whose workspace id has no ':' keeps the
-- original's key (and interoperates with it); for the others the original's key is ambiguous.
function M.scope_key(workspace_id, runtime_target_id)
  local ws = escape(workspace_id, "")
  return runtime_target_id and (ws .. ":" .. escape(runtime_target_id, ":")) or ws
end

function M:scope(workspace_id, runtime_target_id)
  local key = M.scope_key(workspace_id, runtime_target_id)
  local s = self.scopes[key]
  if not s then
    s = { key = key, workspace_id = workspace_id, runtime_target_id = runtime_target_id, clients = {}, nclients = 0,
          pairing = lru.new { max_items = self.cfg.relay_pairing_request_track_max }, subs = {}, generation = -1,
          last_activity = relay.time() }
    self:forget_sessions(s)
    self.scopes[key] = s
    self.nscopes = self.nscopes + 1
  end
  return s
end

-- A new scope, and each new daemon, start with no key exchanges and no session owners. The
-- owners are mirrored into the C hub, which forgets what the table forgets. Each table keeps the
-- most recently used requests and sessions (relay.lru), within RELAY_*_TRACK_MAX.
function M:forget_sessions(s)
  local fast, key, max = self.fast, s.key, self.cfg.relay_session_owner_track_max
  fast:clear(key)
  s.kex = lru.new { max_items = max }
  s.owners = lru.new { max_items = max, on_evict = function(session) fast:own(key, session, nil) end }
end

function M:client_count(workspace_id, runtime_target_id)
  local s = self.scopes[M.scope_key(workspace_id, runtime_target_id)]
  return s and s.nclients or 0
end

-- ---- sending ----

function M:status(conn, code, message, p)
  p = p or {}
  p.type, p.code, p.message, p.workspaceId = "relay_status", code, message, conn.workspace_id
  self.conns:send(conn, encode(p))
end

function M:target_required(conn)
  self:status(conn, "RUNTIME_TARGET_REQUIRED", "Runtime client must specify a runtime target", { retryable = false })
end

-- ---- joining and leaving ----

-- After the upgrade: the claim checks of relay-connection-admission.ts. Returns true, or nil
-- plus the 4008 reason.
function M:register(conn)
  local c = conn.claims
  if not c.workspaceId then return nil, "missing workspace claim" end
  if c.workspaceId ~= conn.workspace_id then return nil, "workspace claim mismatch" end
  if conn.runtime_target_id and c.runtimeTargetId and c.runtimeTargetId ~= conn.runtime_target_id then
    return nil, "runtime target claim mismatch"
  end
  conn.runtime_target_id = conn.runtime_target_id or c.runtimeTargetId
  if conn.role == "client" and not c.scope then return nil, "invalid scope claim" end
  local needs_target = conn.role == "workspace-daemon" or
    (conn.role == "client" and (c.scope == "runtime" or c.scope == "session-events"))
  if needs_target and not conn.runtime_target_id then
    self:target_required(conn)
    return nil, "missing runtime target claim"
  end
  local s = self:scope(conn.workspace_id, conn.runtime_target_id)
  if conn.role == "workspace-daemon" then
    if live(s.daemon) then return nil, "daemon already connected" end
    local gen = tonumber(c.daemonIssueGeneration)
    if gen and gen < s.generation then return nil, "stale daemon generation" end
    if gen then s.generation = gen end
    s.daemon = conn
    self:forget_sessions(s)
    self.fast:tap(conn.ws, s.key, c.e2eeProfile)
    if self.remote then self.remote:daemon_up(s, conn) end
  elseif conn.role == "client" then
    self.fast:peer(conn.ws)
    s.clients[conn] = true
    s.nclients = s.nclients + 1
  end
  conn.scope = s
  s.empty_since = nil
  s.last_activity = relay.time()
  return true
end

-- Takes member out of channel ch's subscribers. A channel nobody follows is forgotten: a daemon
-- may stay for weeks while sessions, a channel each, come and go.
local function unsubscribe(s, ch, member)
  local subs = s.subs[ch]
  if not subs then return end
  subs[member] = nil
  if next(subs) == nil then s.subs[ch] = nil end
end

function M:unregister(conn)
  if not self.conns:remove(conn) then return end
  local s = conn.scope
  if not s then return end
  if s.daemon == conn then
    s.daemon = nil
    if self.remote then self.remote:daemon_down(s, conn) end
  end
  if s.clients[conn] then
    s.clients[conn] = nil
    s.nclients = s.nclients - 1
  end
  for ch in pairs(s.subs) do unsubscribe(s, ch, conn) end
  if not s.daemon and s.nclients == 0 then s.empty_since = relay.now() end
end

-- ---- client -> daemon ----

local INVALID = "client frame must be a valid runtime or pairing control frame"

-- The frame kinds a client of each scope may send (other scopes: any).
local SESSION = { subscribe = true, unsubscribe = true, presence = true }
local SCOPE_KINDS = { pairing = { pairing = true }, ["session-events"] = SESSION,
                      runtime = setmetatable({ e2ee = true, kex_init = true }, { __index = SESSION }) }

-- The rate-limited client frames: the limiter (keyed per client connection; the runtime ones
-- per client and per workspace), and the words of the metric and the 4008 reason.
local LIMITED = { kex_init = { "kex", "key exchange" }, pairing = { "pairing", "pairing" },
                  e2ee = { "runtime", "runtime" } }

function M:daemon_unavailable(conn)
  if not conn.runtime_target_id then return self:target_required(conn) end
  self:status(conn, "DAEMON_UNAVAILABLE", "No machine runtime is connected for this runtime target",
              { retryable = true, runtimeTargetId = conn.runtime_target_id, machineId = conn.claims.machineId })
end

-- Returns nil, or the 4008 reason when the frame breaks a limit.
function M:client_limits(conn, kind, now)
  local l, client = LIMITED[kind], conn.claims.clientId or conn.id
  if not l then return end
  local ok
  if kind == "e2ee" then
    ok = self.limits.runtime:allow(client, now) and self.limits.runtime_ws:allow(conn.workspace_id, now)
  else
    -- the clientId's length first: ids and IPv6 addresses both hold ':', so "x" at "64:ff9b::1.2.3.4"
    -- and "x:64:ff9b:" at "1.2.3.4" would otherwise share a key
    ok = self.limits[l[1]]:allow(#client .. ":" .. client .. conn.ip, now)
  end
  if ok then return end
  self.obs:inc("relay_frames_client_" .. l[1] .. "_rate_limited_total")
  return l[2] .. " rate limit exceeded"
end

function M:client_frame(conn, text)
  local f, kind = frames.client(text)
  if not kind then
    self.obs:inc("relay_frames_client_rejected_total")
    return self:status(conn, "INVALID_FRAME", INVALID)
  end
  local allowed, s = SCOPE_KINDS[conn.claims.scope], conn.scope
  if allowed and not allowed[kind] then
    return self.conns:close(conn, 4008, conn.claims.scope .. " scope only")
  end
  if f.profile and conn.claims.e2eeProfile and f.profile ~= conn.claims.e2eeProfile then
    return self.conns:close(conn, 4008, "e2ee profile mismatch")
  end
  local limited = self:client_limits(conn, kind, relay.now())
  if limited then return self.conns:close(conn, 4008, limited) end
  s.last_activity = relay.time()
  if kind == "subscribe" and not self:channel_allowed(conn, f.channel) then
    return self.conns:send(conn, encode { type = "viewport.session_events.subscribe_denied/v1",
                                          channel = f.channel, reason = "CHANNEL_NOT_AUTHORIZED" })
  end
  if kind == "presence" then return self:fan_out(s, f.channel, text, conn) end
  self:open(s, conn, f, kind)
  self:to_daemon(conn, s, text)
end

-- What a client frame opens in its scope: a request whose answer goes back to its owner (who
-- asked), or a subscription. A remote owner stands for every client of its relay, so that
-- relay's clients unsubscribe there, not here.
function M:open(s, owner, f, kind)
  if kind == "kex_init" then s.kex:set(f.requestId, owner)
  elseif kind == "pairing" then s.pairing:set(f.requestId, owner)
  elseif kind == "subscribe" then
    s.subs[f.channel] = s.subs[f.channel] or {}
    s.subs[f.channel][owner] = true
  elseif kind == "unsubscribe" and not owner.remote then
    unsubscribe(s, f.channel, owner)
  end
end

function M:channel_allowed(conn, ch)
  for _, allowed in ipairs(type(conn.claims.sessionChannels) == "table" and conn.claims.sessionChannels or {}) do
    if allowed == ch then return true end
  end
  return false
end

-- The frame and byte counters of each direction (names made once, not per frame).
local TO_DAEMON = { "relay_frames_client_to_daemon_total", "relay_bytes_client_to_daemon_total" }
local TO_CLIENTS = { "relay_frames_daemon_to_clients_total", "relay_bytes_daemon_to_clients_total" }

-- Sends and counts it in counters (TO_DAEMON or TO_CLIENTS). -> whether it was queued
function M:forward(conn, text, counters)
  if not (live(conn) and self.conns:send(conn, text)) then return false end
  self.obs:inc(counters[1])
  self.obs:inc(counters[2], #text)
  return true
end

function M:to_daemon(conn, s, text)
  if live(s.daemon) then return self:forward(s.daemon, text, TO_DAEMON) end
  if self.remote and self.remote:client_to_remote(conn, s, text) then return end
  self.obs:inc("relay_client_messages_dropped_total")
  self:daemon_unavailable(conn)
end

-- ---- daemon -> clients ----

-- To one owner: a local connection, or (a client on another relay) over the bus.
function M:deliver(s, conn, text)
  if conn and conn.remote then return self.remote:publish(conn.remote, "daemon_to_clients", s, nil, text) end
  return self:forward(conn, text, TO_CLIENTS)
end

function M:fan_out(s, ch, text, except)
  local n = 0
  for sub in pairs(s.subs[ch] or {}) do
    if sub ~= except and self:deliver(s, sub, text) then n = n + 1 end
  end
  return n
end

-- Routes one daemon frame within scope s; returns true if someone got it.
function M:route_daemon(s, f, kind, text)
  if kind == "kex_response" then
    local owner = s.kex:take(f.requestId)
    if live(owner) then -- its sessions' frames go to it, from C alone when they are E2EE
      s.owners:set(f.sessionId, owner)
      self.fast:own(s.key, f.sessionId, owner.ws)
    end
    return self:deliver(s, owner, text)
  elseif kind == "e2ee" or kind == "key_update" then
    return self:deliver(s, s.owners:get(f.sessionId), text)
  elseif kind == "pairing_response" then
    return self:deliver(s, s.pairing:take(f.requestId), text)
  elseif kind == "session_event" then
    return self:fan_out(s, f.channel, text) > 0
  end
  return false
end

-- The daemon limit (the C hub's per-scope bucket), for daemon and worker frames alike: a frame
-- over it is counted and its connection closed 4008. -> whether the frame may go on
function M:daemon_allowed(conn)
  if self.fast:allow(conn.scope.key) then return true end
  self.obs:inc("relay_frames_daemon_rate_limited_total")
  self.conns:close(conn, 4008, "daemon rate limit exceeded")
  return false
end

function M:daemon_frame(conn, text)
  if not self:daemon_allowed(conn) then return end
  local f, kind = frames.daemon(text)
  if not kind then
    self.obs:inc("relay_frames_daemon_rejected_total")
    return self.obs:log("warn", "unroutable_daemon_frame", { workspaceId = conn.workspace_id, reason = "invalid" })
  end
  if frames.weaker(f.profile, conn.claims.e2eeProfile) then
    return self.conns:close(conn, 4008, "e2ee profile downgrade")
  end
  conn.scope.last_activity = relay.time()
  if not self:route_daemon(conn.scope, f, kind, text) then
    self.obs:inc("relay_frames_daemon_unroutable_total")
    self.obs:log("debug", "unroutable_daemon_frame", { workspaceId = conn.workspace_id, kind = kind })
  end
end

-- A worker's frame (under the daemon limit, as daemon frames): an HTTP call to the platform
-- (relay.workspace.platform), answered with a viewport.worker_transport.response/v1 frame.
function M:worker_frame(conn, text)
  if not self:daemon_allowed(conn) then return end
  local f = frames.parse(text)
  if not (f and frames.worker_request(f)) then
    self.obs:inc("relay_frames_client_rejected_total")
    return self:status(conn, "INVALID_FRAME", "worker frame must be a valid worker transport request")
  end
  local status, body = platform.worker_call(self.cfg, conn, f)
  self.conns:send(conn, encode { type = "viewport.worker_transport.response/v1", requestId = f.requestId,
                                 status = status, body = body })
end

-- ---- frames that crossed relays (relay.workspace.backplane) ----

-- A client on another relay spoke to this scope's daemon: its relay checked the frame; here
-- what it opens is owned by that relay (one owner per relay, which fans channel events out to its
-- own clients).
function M:from_remote_client(s, relay_id, text)
  local f, kind = frames.client(text)
  if not kind then return self.obs:inc("relay_bus_undeliverable_total") end
  s.relays = s.relays or {}
  s.relays[relay_id] = s.relays[relay_id] or { remote = relay_id, closing = false }
  self:open(s, s.relays[relay_id], f, kind)
  if not self:forward(s.daemon, text, TO_DAEMON) then
    self.obs:inc("relay_bus_undeliverable_total")
  end
end

-- The daemon on another relay answered one of this relay's clients.
function M:from_remote_daemon(s, text)
  local f, kind = frames.daemon(text)
  if not (kind and self:route_daemon(s, f, kind, text)) then self.obs:inc("relay_bus_undeliverable_total") end
end

-- ---- timers ----

function M:evict(now)
  for key, s in pairs(self.scopes) do
    if s.empty_since and now - s.empty_since >= self.cfg.relay_empty_workspace_ttl_ms / 1000 then
      self.scopes[key] = nil
      self.fast:clear(key)
      self.nscopes = self.nscopes - 1
      self.obs:inc("relay_workspace_evictions_total")
    end
  end
end

function M:snapshot(include_ids)
  local out = {}
  for _, s in pairs(self.scopes) do
    local ids
    if include_ids then
      ids = relay.json.array()
      for c in pairs(s.clients) do ids[#ids + 1] = c.claims.clientId or c.id end
      table.sort(ids)
    end
    out[#out + 1] = { workspaceId = s.workspace_id, runtimeTargetId = s.runtime_target_id or cjson.null,
                      daemonConnected = s.daemon ~= nil, clientCount = s.nclients, clientIds = ids,
                      lastActivityAt = os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(s.last_activity)) }
  end
  table.sort(out, function(a, b) return a.workspaceId .. tostring(a.runtimeTargetId) < b.workspaceId .. tostring(b.runtimeTargetId) end)
  return out
end

return M
