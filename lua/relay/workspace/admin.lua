-- The original's plain HTTP endpoints (index.ts): /health always; /state, /logs and /metrics
-- only with RELAY_ENABLE_ADMIN_HTTP (404 otherwise, indistinguishable from nothing there) and a
-- bearer token compared in constant time (as security.ts: SHA-256 of both sides, then compare).
local relay = require "relay"

local M = {}

local function presented_token(req) return req:bearer() or req.headers["x-relay-admin-token"] end

-- ctx: cfg, hub, obs, started
function M.mount(app, ctx)
  local cfg, hub, obs = ctx.cfg, ctx.hub, ctx.obs
  local want = cfg.relay_admin_token:match("^%s*(.-)%s*$")
  local want_hash = want ~= "" and relay.crypto.sha256(want) or nil

  local function authorized(req)
    local t = presented_token(req)
    -- both sides hashed, so the comparison takes the same time whatever the lengths
    local ok = want_hash ~= nil and relay.crypto.constant_time_equal(relay.crypto.sha256(t or ""), want_hash)
    return ok and t ~= nil
  end

  local function guarded(fn)
    return function(req, res)
      if not cfg.relay_enable_admin_http then return res:json(404, { ok = false, reason = "ADMIN_ENDPOINTS_DISABLED" }) end
      if not authorized(req) then
        obs:inc("relay_admin_unauthorized_total")
        return res:json(401, { ok = false, reason = "ADMIN_UNAUTHORIZED" })
      end
      return fn(req, res)
    end
  end

  local function verbose(body)
    if cfg.health_verbose then
      body.tlsEnabled = false
      body.relayMode = cfg.relay_mode
      body.relayId = cfg.relay_id
    end
    return body
  end

  app:get("/health", function(_, res)
    res:json(200, verbose { ok = true, service = "relay", uptimeMs = math.floor((relay.now() - ctx.started) * 1000) })
  end)

  app:get("/state", guarded(function(_, res)
    local body = { ok = true, service = "relay", relayMode = cfg.relay_mode, relayId = cfg.relay_id,
                   backplaneMode = cfg.backplane, busEnabled = cfg.bus_enabled,
                   clientRedirectEnabled = cfg.redirect_enabled,
                   workspaces = relay.json.array(hub:snapshot(cfg.include_client_ids)) }
    if cfg.health_verbose then
      body.serverUrl = cfg.server_url
      body.tlsEnabled = false
      body.tlsHost = cfg.relay_tls_host
      body.wsBaseUrl = cfg.public_ws_base_url
    end
    res:json(200, body)
  end))

  app:get("/logs", guarded(function(req, res)
    local logs = obs:recent(cfg.health_verbose and req.args.summary ~= "1")
    res:json(200, { ok = true, logs = relay.json.array(logs) })
  end))

  app:get("/metrics", guarded(function(_, res)
    local frames, bytes = hub.fast:stats()
    local body = obs:render({ { "relay_connections_total", hub.nconns }, { "relay_workspaces_total", hub.nscopes } },
                            { relay_frames_daemon_to_clients_total = frames, relay_bytes_daemon_to_clients_total = bytes,
                              relay_frames_daemon_to_clients_fast_total = frames }) -- ours: how many went C only
    res:send(200, body, { ["content-type"] = "text/plain; version=0.0.4; charset=utf-8" })
  end))

  app:any("/*", function(_, res) res:json(404, { ok = false, reason = "NOT_FOUND" }) end)
end

return M
