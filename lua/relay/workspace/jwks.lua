-- Local admission: the token is a JWT signed with a key from RELAY_JWKS_URL (RS256, ES256 or
-- EdDSA, verified in C by relay.jwt.verify_jwks). Keys are trusted for RELAY_JWKS_REFRESH_MS;
-- then they are refetched in the background while they go on serving. One fetch runs at a time:
-- an admission that needs keys it does not have waits for the fetch in flight instead of
-- starting another. A failed fetch holds the next one back (1 s, doubling to 60 s), and a token
-- naming an unknown kid makes one early refetch at most every 10 s, so neither a failing key
-- server nor bad tokens make the relay hammer it.
local relay = require "relay"
local cjson = require "cjson"
local jwt = require "relay.jwt"

local M = {}
M.__index = M

local REFETCH_MIN, BACKOFF_MAX, WAIT_STEP = 10, 60, 0.02

function M.new(cfg, obs)
  return setmetatable({ cfg = cfg, obs = obs, keys = nil, fetched_at = -math.huge, refetched_at = -math.huge,
                        fetching = false, failures = 0, retry_at = -math.huge, last_err = nil }, M)
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

-- The one fetch in flight; its outcome sets the backoff. -> true | nil, err
function M:fetch_once()
  self.fetching = true
  local ok, done, err = pcall(self.fetch, self)
  self.fetching = false
  if not ok then done, err = nil, "jwks: " .. tostring(done) end
  if done then
    self.failures, self.retry_at, self.last_err = 0, -math.huge, nil
  else
    self.failures = self.failures + 1
    self.retry_at = relay.now() + math.min(BACKOFF_MAX, 2 ^ (self.failures - 1))
    self.last_err = err
  end
  return done, err
end

-- Fresh keys for a caller that needs them now: waits for the fetch in flight, or makes one
-- unless a failure holds it back. -> true | nil, err
function M:refresh()
  if self.fetching then
    local deadline = relay.now() + self.cfg.relay_admission_timeout_ms / 1000 + 1
    while self.fetching and relay.now() < deadline do relay.sleep(WAIT_STEP) end
    if self.fetching then return nil, "jwks: fetch still running" end
    return self.last_err == nil or nil, self.last_err
  end
  if relay.now() < self.retry_at then return nil, self.last_err .. " (next fetch after a backoff)" end
  return self:fetch_once()
end

-- Stale keys go on serving; a fetch behind the admissions renews them.
function M:renew_behind()
  if self.fetching or relay.now() < self.retry_at then return end
  self.fetching = true -- from now: the timer's task may start a turn later
  relay.after(0, function() self:fetch_once() end)
end

function M:options()
  local c = self.cfg
  return { iss = c.relay_jwt_issuer ~= "" and c.relay_jwt_issuer or nil,
           aud = c.relay_jwt_audience ~= "" and c.relay_jwt_audience or nil, require_exp = true, leeway = 5 }
end

-- -> claims | nil, err
function M:verify(token)
  local now = relay.now()
  if not self.keys then
    local _, err = self:refresh()
    if not self.keys then return nil, err end
  elseif now - self.fetched_at >= self.cfg.relay_jwks_refresh_ms / 1000 then
    self:renew_behind()
  end
  local claims, err, why = jwt.verify_jwks(token, self.keys, self:options())
  if not claims and why == "unknown_kid" and (self.fetching or now - self.refetched_at >= REFETCH_MIN) then
    if not self.fetching then self.refetched_at = now end
    if self:refresh() then claims, err = jwt.verify_jwks(token, self.keys, self:options()) end
  end
  return claims, err
end

return M
