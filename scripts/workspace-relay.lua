-- workspace-relay: a drop-in for the Viewport WebSocket relay (services/relay). A workspace's
-- daemon and its browser clients meet at GET /ws; the relay admits each one with the platform
-- (or a JWKS), then routes their opaque E2EE frames: client frames to the scope's daemon,
-- daemon frames to the one client that owns them. Settings are the original's env names.
local relay = require "relay"
local config = require "relay.workspace.config"
local hub_mod = require "relay.workspace.hub"
local observe = require "relay.observe"
local admission = require "relay.workspace.admission"
local limit = require "relay.limit"
local admin = require "relay.admin"

local cfg -- below: its admission steps and backplane go in the 'serving' line

local app = relay.new {
  name = "workspace-relay",
  description = "Viewport-compatible workspace relay: GET /ws for daemons and clients, admin /health /state /logs /metrics",
  flags = config.flags,
  listen = config.listen,
  -- a daemon and its clients must meet: in one process, or through the Redis backplane
  summary = function() return { admission = table.concat(cfg.admission, ","), backplane = cfg.backplane } end,
  single_process = function(f)
    if f.relay_backplane_mode ~= "redis" then
      return "a workspace's daemon and clients meet in one process; set RELAY_BACKPLANE_MODE=redis (with RELAY_BUS_ENABLED) so that workers reach each other"
    end
  end,
}

cfg = config.resolve(app.flags, relay.crypto.hex(relay.crypto.random(6)))
local obs = observe.new { max_logs = cfg.max_logs }
local hub = hub_mod.new(cfg, obs)
-- Local admission (RELAY_ADMISSION=jwks): the key set, fetched and kept by relay.jwks.
local jwks = cfg.relay_jwks_url ~= "" and relay.jwks(cfg.relay_jwks_url, {
  ttl = cfg.relay_jwks_refresh_ms / 1000, timeout = cfg.relay_admission_timeout_ms / 1000,
  max_body = cfg.relay_admission_max_response_bytes,
  on_fetch = function(ok) obs:inc(ok and "relay_jwks_fetch_ok_total" or "relay_jwks_fetch_failed_total") end,
}) or nil
local upgrades = limit.window(cfg.relay_upgrade_rate_per_minute, 60, cfg.relay_upgrade_bucket_max)
local started = relay.now()
local on_frame = { ["workspace-daemon"] = hub.daemon_frame, worker = hub.worker_frame,
                   client = hub.client_frame }

-- Refusals before the upgrade: a bare status, and the connection closes. The log event is
-- `what`, the metric relay_<what>_total.
local function refuse(res, status, what, fields)
  obs:inc("relay_" .. what .. "_total")
  obs:inc("relay_ws_connections_rejected_total")
  obs:log("warn", what, fields)
  res:send(status, "", { connection = "close" })
end

-- The original's order of checks (index.ts server.on('upgrade')).
local function admit(req, res)
  local ip, a = req.peer, req.args
  if not upgrades:allow(ip, relay.now()) then return refuse(res, 429, "upgrade_rate_limited", { ip = ip }) end
  if hub.conns.n >= cfg.relay_max_total_connections then
    return refuse(res, 503, "upgrade_rejected_total_connections", { ip = ip })
  end
  if hub.conns:count(ip) >= cfg.relay_max_connections_per_ip then
    return refuse(res, 429, "upgrade_rejected_ip_connections", { ip = ip })
  end
  local query_ok, bad = admission.check_query(a)
  if not query_ok then return refuse(res, 400, "upgrade_invalid_query", { ip = ip, reason = bad }) end
  local role, ws_id, rt_id = a.role, a.workspaceId, a.runtimeTargetId
  local token = admission.token(req, cfg.relay_mode == "dev")
  if not token then return refuse(res, 401, "upgrade_missing_auth", { ip = ip, role = role }) end
  if role == "client" and hub:client_count(ws_id, rt_id) >= cfg.relay_max_clients_per_workspace then
    return refuse(res, 429, "upgrade_rejected_workspace_clients", { ip = ip, workspaceId = ws_id })
  end
  local claims, why = admission.admit(cfg, jwks, token, role, ws_id, rt_id)
  if not claims then
    return refuse(res, 401, "admission_denied", { ip = ip, role = role, workspaceId = ws_id, reason = why })
  end
  obs:inc("relay_admission_ok_total")
  return { ip = ip, role = role, workspace_id = ws_id, runtime_target_id = rt_id, claims = claims,
           id = relay.uuid() }
end

local function serve(conn)
  local ok, why = hub:register(conn)
  if not ok then
    obs:log("warn", "connection_rejected", { reason = why, role = conn.role, workspaceId = conn.workspace_id })
    conn.ws:close(4008, why)
    return
  end
  obs:log("info", "ws_connected", { connectionId = conn.id, role = conn.role, workspaceId = conn.workspace_id,
                                     runtimeTargetId = conn.runtime_target_id })
  if hub.remote then hub.remote:client_joined(conn) end
  local on_message = on_frame[conn.role]
  while not conn.closing do
    local data, _, code, reason = conn.ws:recv()
    if not data then
      if code == 1009 then obs:inc("relay_ws_frame_too_large_total") end
      obs:log("info", "ws_closed", { connectionId = conn.id, role = conn.role, code = code, reason = reason })
      break
    end
    on_message(hub, conn, data)
  end
end

app:get("/ws", function(req, res)
  local conn = admit(req, res)
  if not conn then return end
  local ws, err = req:websocket("*", { max_message = cfg.relay_max_frame_bytes, max_queued = cfg.relay_max_pending_bytes,
                                       going_away = "relay shutting down" })
  if not ws then
    obs:inc("relay_upgrade_errors_total")
    return obs:log("warn", "upgrade_error", { reason = err })
  end
  conn.ws = ws
  -- The request (headers, args, the upgrade's strings) and response objects are not needed once
  -- the socket is open; the handler's frame would keep them for the socket's life (~1.3 KB each).
  req, res = nil, nil
  obs:inc("relay_ws_connections_opened_total")
  hub.conns:add(conn) -- counted from the upgrade on: the limits see connections being admitted
  local ok, e = pcall(serve, conn)
  hub:unregister(conn)
  obs:inc("relay_ws_connections_closed_total")
  hub.conns.linger(conn, 2) -- a consumer cut off for not reading: a little time to take its close frame
  if not ok then error(e, 0) end
end)

-- ---- the original's plain HTTP endpoints (index.ts) ----
-- /health always; /state, /logs and /metrics only with RELAY_ENABLE_ADMIN_HTTP (404 otherwise,
-- indistinguishable from nothing there) and a bearer token compared in constant time (relay.admin;
-- as security.ts: SHA-256 of both sides, so the time is the same whatever the lengths).

local admin_only = admin.new {
  enabled = cfg.relay_enable_admin_http, header = "x-relay-admin-token",
  tokens = { (cfg.relay_admin_token:match("^%s*(.-)%s*$")) }, -- empty: matches nothing
  disabled = function(_, res) res:json(404, { ok = false, reason = "ADMIN_ENDPOINTS_DISABLED" }) end,
  unauthorized = function(_, res)
    obs:inc("relay_admin_unauthorized_total")
    res:json(401, { ok = false, reason = "ADMIN_UNAUTHORIZED" })
  end,
}

-- body with the fields only verbose mode shows (RELAY_HEALTH_VERBOSE; TLS ends in front of the relay).
local function verbose(body, fields)
  if cfg.health_verbose then for k, v in pairs(fields) do body[k] = v end end
  return body
end

app:get("/health", function(_, res)
  res:json(200, verbose({ ok = true, service = "relay", uptimeMs = math.floor((relay.now() - started) * 1000) },
                        { tlsEnabled = false, relayMode = cfg.relay_mode, relayId = cfg.relay_id }))
end)

app:get("/state", admin_only(function(_, res)
  res:json(200, verbose({ ok = true, service = "relay", relayMode = cfg.relay_mode, relayId = cfg.relay_id,
    backplaneMode = cfg.backplane, busEnabled = cfg.bus_enabled, clientRedirectEnabled = cfg.redirect_enabled,
    workspaces = relay.json.array(hub:snapshot(cfg.include_client_ids)) },
    { serverUrl = cfg.server_url, tlsEnabled = false, tlsHost = cfg.relay_tls_host, wsBaseUrl = cfg.public_ws_base_url }))
end))

app:get("/logs", admin_only(function(req, res)
  local logs = obs:recent(cfg.health_verbose and req.args.summary ~= "1")
  res:json(200, { ok = true, logs = relay.json.array(logs) })
end))

app:get("/metrics", admin_only(function(_, res)
  local frames, bytes = hub.fast:stats()
  local body = obs:render({ { "relay_connections_total", hub.conns.n }, { "relay_workspaces_total", hub.nscopes } },
                          { relay_frames_daemon_to_clients_total = frames, relay_bytes_daemon_to_clients_total = bytes,
                            relay_frames_daemon_to_clients_fast_total = frames }) -- ours: how many went C only
  res:send(200, body, { ["content-type"] = "text/plain; version=0.0.4; charset=utf-8" })
end))

-- The admin status page's panel: counts only (workspace ids stay behind /state's token).
relay.status(function()
  local daemons, clients = 0, 0
  for _, s in pairs(hub.scopes) do
    daemons, clients = daemons + (s.daemon and 1 or 0), clients + s.nclients
  end
  return { title = "workspace relay", workspaces = hub.nscopes, connections = hub.conns.n, daemons = daemons, clients = clients, backplane = cfg.backplane }
end)

app:any("/*", function(_, res) res:json(404, { ok = false, reason = "NOT_FOUND" }) end)

relay.every(cfg.relay_cleanup_interval_ms / 1000, function() hub:evict(relay.now()) end)

if cfg.backplane ~= "single" then
  local backplane = require("relay.workspace.backplane").new(cfg, hub, obs)
  hub.remote = backplane
  if cfg.bus_enabled then relay.after(0, function() backplane:run() end) end
end

app:on_init(function()
  obs:log("info", "relay_config", { relayId = cfg.relay_id, relayMode = cfg.relay_mode, backplaneMode = cfg.backplane,
                                     serverUrl = cfg.server_url, validateUrl = cfg.validate_url,
                                     admission = table.concat(cfg.admission, ","), adminHttp = cfg.relay_enable_admin_http })
  if cfg.relay_enable_admin_http and cfg.relay_admin_token:match("^%s*$") then -- as the original: every admin call 401s
    obs:log("warn", "admin_without_token", { message = "RELAY_ENABLE_ADMIN_HTTP is set but RELAY_ADMIN_TOKEN is empty: " ..
      "/state, /logs and /metrics answer every request 401" })
  end
end)

return app
