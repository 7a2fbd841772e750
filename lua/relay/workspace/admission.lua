-- Who may connect: the token from the upgrade request (upgrade-auth.ts), and the admission
-- decision: the platform's validate endpoint (admission.ts) and/or local JWT verification against
-- a JWKS document (our addition; the docs promise it, the original's code lacks it).
local platform = require "relay.workspace.platform"
local S = require "relay.schema"
local auth = require "relay.auth"

local M = {}

-- Authorization: Bearer <t>, then a Sec-WebSocket-Protocol entry auth.<t>, then ?token= (dev
-- mode only). Returns the token or nil; the first one found decides.
function M.token(req, dev)
  local t = req:bearer() or auth.subprotocol(req, "auth.") or dev and req.args.token
  return type(t) == "string" and #t >= 10 and #t <= 4096 and t or nil
end

-- The upgrade's query: ?role=…&workspaceId=…[&runtimeTargetId=…] -> true | nil, what did not fit.
local ID = S.string { min = 1, max = 128, pattern = "^[%w._:-]+$", what = "an id of 1 to 128 letters, digits, '.', '_', ':' or '-'" }
local QUERY = S.object { role = S.enum { "workspace-daemon", "client", "worker" }, workspaceId = ID, runtimeTargetId = S.optional(ID) }
function M.check_query(args) return S.check(QUERY, args) end

-- ---- the claims the relay accepts (a strict schema: unknown keys reject the whole set) ----

local function str(max) return S.optional(S.string { min = 1, max = max }, true) end
local function enum(values) return S.optional(S.enum(values), true) end
local function int(min) return S.optional(S.integer { min = min }, true) end
local strings = S.optional(S.array(S.string()), true)

-- Every claim may be null, which counts as absent (the roles' needed claims are checked apart).
local FIELDS = {
  clientId = str(128), userId = str(128), installId = str(128), runtimeTargetId = str(128),
  machineId = str(128), workspaceId = str(128), managedExecutorId = str(128), policyMode = str(128),
  role = enum { "workspace-daemon", "client", "worker" }, scope = enum { "runtime", "pairing", "session-events" },
  sessionIds = strings, sessionChannels = strings, e2eeProfile = enum { "noise-ik", "noise-ikpsk2" },
  daemonPublicKey = str(512), pairingSecret = str(1024), relayWsBaseUrl = str(512),
  iss = str(255), aud = S.optional(S.one_of { S.string { min = 1, max = 255 }, S.array(S.string()) }, true),
  jti = str(255), iat = int(), exp = int(), nbf = int(), ver = int(), daemonIssueGeneration = int(0),
}
local CLAIMS = S.object(FIELDS, { strict = true })
local SOME_CLAIMS = S.object(FIELDS) -- a JWT's: its registered claims (sub, ...) are let through, then dropped

-- The claims a role cannot go without (docs/workspace-relay.md, "Claims"). Missing, they close
-- the connection 4008 after the upgrade (hub.register, as the original); null is refused here.
local needed = {
  ["workspace-daemon"] = { "workspaceId" },
  client = { "workspaceId", "scope" },
  worker = { "workspaceId", "managedExecutorId" },
}

-- The claims a connection keeps for its life: those used after admission (hub.register,
-- frames, the worker path, presence, /state). The others (a pairingSecret, a daemonPublicKey,
-- sessionIds, userId, iat, ...) are checked, then dropped: kept, a claims-heavy token cost ~8 KB
-- of Lua heap per connection (workspace_relay_claims_memory_spec).
local KEPT = { "workspaceId", "runtimeTargetId", "daemonIssueGeneration", "scope", "e2eeProfile", "clientId",
               "machineId", "sessionChannels", "managedExecutorId" }

-- The claims the relay keeps (KEPT), without JSON nulls, or nil and what failed. lenient: claims
-- the schema does not know are dropped instead of refused (a JWT carries sub and others).
local function check_claims(claims, role, lenient)
  if type(claims) ~= "table" then return nil, "claims missing" end
  local ok, why = S.check(lenient and SOME_CLAIMS or CLAIMS, claims)
  if not ok then return nil, "bad claim " .. why end
  for _, k in ipairs(needed[role] or {}) do
    if claims[k] == S.null then return nil, ("null %s for a %s"):format(k, role) end
  end
  local out = {}
  for _, k in ipairs(KEPT) do
    if claims[k] ~= S.null then out[k] = claims[k] end
  end
  return out
end

-- ---- the validate endpoint ----

-- -> claims | nil, reason
local function validate(cfg, _, token, role, workspace_id, runtime_target_id)
  local status, json = platform.post(cfg, cfg.validate_url, { relayToken = token, role = role,
                                      workspaceId = workspace_id, runtimeTargetId = runtime_target_id })
  if not status then return nil, "admission request failed: " .. json end
  if not json then return nil, "INVALID_JSON" end
  if status < 200 or status > 299 or json.ok ~= true then
    local why = json.reason or json.error
    return nil, type(why) == "string" and why or "VALIDATION_FAILED"
  end
  local claims, why = check_claims(json.claims, role)
  if not claims then return nil, "INVALID_CLAIMS: " .. why end
  return claims
end

-- A locally verified token's claims, for a connection of this role: the token must name that
-- role (the validate endpoint is told the role and judges it; a JWT is judged by itself alone).
local function token_claims(cfg, jwks, token, role)
  local claims, why = jwks:verify(token, { iss = cfg.relay_jwt_issuer ~= "" and cfg.relay_jwt_issuer or nil,
                                           aud = cfg.relay_jwt_audience ~= "" and cfg.relay_jwt_audience or nil,
                                           require_exp = true, leeway = 5 })
  if not claims then return nil, why end
  if claims.role ~= role then
    return nil, claims.role == nil and "token has no role claim" or "role claim mismatch"
  end
  return check_claims(claims, role, true)
end

local STEPS = { jwks = token_claims, validate = validate }

-- Runs the configured steps in order (cfg.admission: "validate", "jwks"); every step must
-- admit. A jwks step's claims are the token's; a later validate step's claims replace them.
function M.admit(cfg, jwks, token, role, workspace_id, runtime_target_id)
  local claims, why
  for _, step in ipairs(cfg.admission) do
    claims, why = STEPS[step](cfg, jwks, token, role, workspace_id, runtime_target_id)
    if not claims then return nil, step .. ": " .. why end
  end
  return claims
end

return M
