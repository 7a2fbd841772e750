-- relay.jwks(url, opts): a JWKS document fetched over HTTP and kept, for relay.jwt.verify_jwks.
-- Keys are trusted for ttl seconds; then they are refetched in the background while they go on
-- serving. One fetch runs at a time: a verification that needs keys it does not have waits for
-- the fetch in flight instead of starting another. A failed fetch holds the next one back (1 s,
-- doubling to 60 s), and a token naming an unknown kid makes one early refetch at most every
-- refetch_min seconds (a key rotation is picked up at once; bad tokens cannot make the host
-- hammer the key server). The set belongs to whoever holds it: made in a script's main chunk, it
-- lives as long as that generation.
local core = require "relay.core"
local jwt = require "relay.jwt"
local check = require "relay.check"
local http = require "relay.http"
local backoff = require "relay.backoff"

local M = {}
local Set = {}
Set.__index = Set

local BACKOFF_MAX, WAIT_STEP = 60, 0.02
local DEFAULTS = { ttl = 300, refetch_min = 10, timeout = 5, max_body = 1048576 }

local NEW_KEYS = { "ttl", "refetch_min", "timeout", "max_body", "ca_file", "on_fetch", "log" }
local VERIFY_KEYS = { "leeway", "iss", "aud", "now", "require_exp" }

local function positive(opts, name, min)
  local v = opts[name]
  if v == nil then return DEFAULTS[name] end
  if type(v) ~= "number" or v ~= v or v < min then check.fail(("relay.jwks: %s must be a number >= %s"):format(name, min)) end
  return v
end

-- new(url, {ttl, refetch_min, timeout, max_body, ca_file, on_fetch, log}) -> set. log = false:
-- a failed fetch is not logged here (on_fetch gets the error, for a personality's own log).
function M.new(url, opts)
  opts = check.options(opts or {}, NEW_KEYS, "relay.jwks")
  if type(url) ~= "string" or not url:match("^https?://") then check.fail("relay.jwks: url must be http:// or https://") end
  if opts.on_fetch ~= nil and type(opts.on_fetch) ~= "function" then check.fail("relay.jwks: on_fetch must be a function") end
  if opts.ca_file ~= nil and type(opts.ca_file) ~= "string" then check.fail("relay.jwks: ca_file must be a path") end
  if opts.log ~= nil and type(opts.log) ~= "boolean" then check.fail("relay.jwks: log must be true or false") end
  return setmetatable({
    url = url, ttl = positive(opts, "ttl", 0), refetch_min = positive(opts, "refetch_min", 0),
    timeout = positive(opts, "timeout", 0.001), max_body = positive(opts, "max_body", 1), ca_file = opts.ca_file,
    on_fetch = opts.on_fetch, log = opts.log ~= false,
    current = nil, fetched_at = -math.huge, refetched_at = -math.huge,
    fetching = false, retry_at = -math.huge, last_err = nil,
    holdoff = backoff.new { min = 1, max = BACKOFF_MAX },
  }, Set)
end

-- One GET of the document. -> true | nil, why
function Set:fetch()
  local doc, why, res = http.json { url = self.url, timeout = self.timeout, max_body = self.max_body,
                                    ca_file = self.ca_file }
  if not doc and not (res and res.status == 200) then return nil, tostring(why) end
  if not (doc and type(doc.keys) == "table") then return nil, "not a JWKS document" end
  self.current, self.fetched_at = doc.keys, core.now()
  return true
end

-- The one fetch in flight; its outcome sets the backoff and is logged. -> true | nil, err
function Set:fetch_once()
  self.fetching = true
  local ok, done, why = pcall(self.fetch, self)
  self.fetching = false
  if not ok then done, why = nil, tostring(done) end
  if done then
    self.retry_at, self.last_err = -math.huge, nil
    self.holdoff:reset()
  else
    self.retry_at = core.now() + self.holdoff:next()
    self.last_err = "jwks: " .. why
    if self.log then core.log("warn", "jwks_fetch_failed", "url", self.url, "reason", why) end
  end
  if self.on_fetch then
    local hook_ok, hook_err = pcall(self.on_fetch, done == true, self.last_err)
    if not hook_ok then core.log("error", "jwks_on_fetch_failed", "error", tostring(hook_err)) end
  end
  return done, self.last_err
end

-- Fresh keys now: waits for the fetch in flight, or makes one unless a failure holds it back.
-- -> true | nil, err
function Set:refresh()
  if self.fetching then
    local deadline = core.now() + self.timeout + 1
    while self.fetching and core.now() < deadline do core.sleep(WAIT_STEP) end
    if self.fetching then return nil, "jwks: fetch still running" end
    return self.last_err == nil or nil, self.last_err
  end
  if core.now() < self.retry_at then return nil, self.last_err .. " (next fetch after a backoff)" end
  return self:fetch_once()
end

-- Stale keys go on serving; a fetch behind the verifications renews them.
function Set:renew_behind()
  if self.fetching or core.now() < self.retry_at then return end
  self.fetching = true -- from now: the timer's task may start a turn later
  core.timer(0, false, function() self:fetch_once() end)
end

-- keys() -> the "keys" array (fetched first if there is none yet) | nil, err
function Set:keys()
  if not self.current then
    local _, err = self:refresh()
    if not self.current then return nil, err end
  elseif core.now() - self.fetched_at >= self.ttl then
    self:renew_behind()
  end
  return self.current
end

-- verify(token, {leeway, iss, aud, now, require_exp}) -> claims, header | nil, err. Yields while
-- keys are fetched.
function Set:verify(token, opts)
  check.options(opts, VERIFY_KEYS, "relay.jwks set:verify")
  local keys, err = self:keys()
  if not keys then return nil, err end
  local claims, header, why = jwt.verify_jwks(token, keys, opts)
  local now = core.now()
  if not claims and why == "unknown_kid" and (self.fetching or now - self.refetched_at >= self.refetch_min) then
    if not self.fetching then self.refetched_at = now end
    if self:refresh() then claims, header = jwt.verify_jwks(token, self.current, opts) end
  end
  return claims, header
end

return M
