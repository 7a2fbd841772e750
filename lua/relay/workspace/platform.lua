-- The platform's internal HTTP API as the relay calls it: a JSON POST with the internal key
-- (admission's validate endpoint, the backplane's server mode), and the worker role's calls.
local relay = require "relay"
local cjson = require "cjson"

local M = {}

-- -> the status and the answer as a JSON object (nil when it is not one) | nil, err
function M.post(cfg, url, body)
  return relay.http.json { method = "POST", url = url, body = body, any_status = true,
    headers = { ["x-relay-internal-key"] = cfg.internal_key ~= "" and cfg.internal_key or nil },
    timeout = cfg.relay_admission_timeout_ms / 1000, max_body = cfg.relay_admission_max_response_bytes }
end

-- ---- the worker role (managed executors) ----
-- A viewport.worker_transport.request/v1 frame (hub.worker_frame) becomes an HTTP call to the
-- platform, but only under the worker's own executor path. -> the answer's status and body (403
-- on a denied path, 502 on a failed call)
function M.worker_call(cfg, conn, f)
  local exec, path = conn.claims.managedExecutorId, f.path
  local prefix = exec and ("/api/runtime/workspaces/%s/managed-executors/%s"):format(conn.workspace_id, exec)
  if not (prefix and path:sub(1, #prefix) == prefix and (#path == #prefix or path:find("^[/?]", #prefix + 1))) then
    return 403, cjson.encode { ok = false, reason = "PATH_NOT_ALLOWED" }
  end
  local headers = {}
  for k, v in pairs(f.headers or {}) do if type(v) == "string" then headers[k] = v end end
  headers["x-relay-internal-key"] = cfg.internal_key ~= "" and cfg.internal_key or nil
  local res, err = relay.http.request { method = f.method, url = cfg.server_url .. f.path, headers = headers,
                                        body = f.body, timeout = cfg.relay_admission_timeout_ms / 1000 }
  if not res then return 502, cjson.encode { ok = false, reason = tostring(err) } end
  return res.status, res.body
end

return M
