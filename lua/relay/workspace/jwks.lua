-- Local admission: the token is a JWT signed with a key from RELAY_JWKS_URL (RS256, ES256 or
-- EdDSA, verified in C by relay.jwt.verify_jwks). Keys are cached for RELAY_JWKS_REFRESH_MS; a
-- token naming an unknown kid makes one early refetch (at most every 10 s), so rotated keys are
-- picked up without letting bad tokens hammer the key server.
local relay = require "relay"
local cjson = require "cjson"
local jwt = require "relay.jwt"

local M = {}
M.__index = M

local REFETCH_MIN = 10

function M.new(cfg, obs)
  return setmetatable({ cfg = cfg, obs = obs, keys = nil, fetched_at = -math.huge, refetched_at = -math.huge }, M)
end

function M:fetch()
  local res, err = relay.http.request { url = self.cfg.relay_jwks_url, timeout = self.cfg.relay_admission_timeout_ms / 1000,
                                        max_body = self.cfg.relay_admission_max_response_bytes }
  local why
  if not res then why = tostring(err)
  elseif res.status ~= 200 then why = "status " .. res.status
  else
    local ok, doc = pcall(cjson.decode, res.body)
    if ok and type(doc) == "table" and type(doc.keys) == "table" then
      self.keys, self.fetched_at = doc.keys, relay.now()
      self.obs:inc("relay_jwks_fetch_ok_total")
      return true
    end
    why = "not a JWKS document"
  end
  self.obs:inc("relay_jwks_fetch_failed_total")
  self.obs:log("warn", "jwks_fetch_failed", { url = self.cfg.relay_jwks_url, reason = why })
  return nil, "jwks: " .. why
end

function M:options()
  local c = self.cfg
  return { iss = c.relay_jwt_issuer ~= "" and c.relay_jwt_issuer or nil,
           aud = c.relay_jwt_audience ~= "" and c.relay_jwt_audience or nil, require_exp = true, leeway = 5 }
end

-- -> claims | nil, err
function M:verify(token)
  local now = relay.now()
  if not self.keys or now - self.fetched_at >= self.cfg.relay_jwks_refresh_ms / 1000 then
    local ok, err = self:fetch()
    if not ok and not self.keys then return nil, err end -- stale keys beat no keys
  end
  local claims, err, why = jwt.verify_jwks(token, self.keys, self:options())
  if not claims and why == "unknown_kid" and now - self.refetched_at >= REFETCH_MIN then
    self.refetched_at = now
    if self:fetch() then claims, err = jwt.verify_jwks(token, self.keys, self:options()) end
  end
  return claims, err
end

return M
