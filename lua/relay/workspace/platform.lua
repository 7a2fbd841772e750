-- The platform's internal HTTP API as the relay calls it: a JSON POST with the internal key
-- (admission's validate endpoint, the backplane's server mode), and the worker role's transport.
local relay = require "relay"
local cjson = require "cjson"
local frames = require "relay.workspace.frames"

local M = {}

-- -> the status and the answer as a JSON object (nil when it is not one) | nil, err
function M.post(cfg, url, body)
  return relay.http.json { method = "POST", url = url, body = body, any_status = true,
    headers = { ["x-relay-internal-key"] = cfg.internal_key ~= "" and cfg.internal_key or nil },
    timeout = cfg.relay_admission_timeout_ms / 1000, max_body = cfg.relay_admission_max_response_bytes }
end

-- ---- the worker role (managed executors) ----
-- viewport.worker_transport.request/v1 frames become HTTP calls to the platform, but only under
-- the worker's own executor path; the answer goes back as a viewport.worker_transport.response/v1
-- frame (403 on a denied path, 502 on a failed call).

local function reply(hub, conn, id, status, body)
  hub.conns:send(conn, cjson.encode { type = "viewport.worker_transport.response/v1", requestId = id, status = status, body = body })
end

function M.worker_frame(hub, conn, text)
  if not hub:daemon_allowed(conn) then return end
  local f = frames.parse(text)
  if not (f and frames.worker_request(f)) then
    hub.obs:inc("relay_frames_client_rejected_total")
    return hub:status(conn, "INVALID_FRAME", "worker frame must be a valid worker transport request")
  end
  local prefix = ("/api/runtime/workspaces/%s/managed-executors/%s"):format(conn.workspace_id,
    tostring(conn.claims.managedExecutorId))
  local rest = f.path:sub(#prefix + 1)
  if not conn.claims.managedExecutorId or f.path:sub(1, #prefix) ~= prefix or (rest ~= "" and rest:sub(1, 1) ~= "/" and rest:sub(1, 1) ~= "?") then
    return reply(hub, conn, f.requestId, 403, cjson.encode { ok = false, reason = "PATH_NOT_ALLOWED" })
  end
  local headers = {}
  for k, v in pairs(f.headers or {}) do if type(v) == "string" then headers[k] = v end end
  headers["x-relay-internal-key"] = hub.cfg.internal_key ~= "" and hub.cfg.internal_key or nil
  local res, err = relay.http.request { method = f.method, url = hub.cfg.server_url .. f.path, headers = headers,
                                        body = f.body, timeout = hub.cfg.relay_admission_timeout_ms / 1000 }
  if not res then return reply(hub, conn, f.requestId, 502, cjson.encode { ok = false, reason = tostring(err) }) end
  reply(hub, conn, f.requestId, res.status, res.body)
end

return M
