-- relay.logins: credentials (API keys, say) a relay presents to an upstream, each tried on its
-- own, so that one that fails holds back none of the others. One that works is used at once. A
-- failure that may pass (no answer, a 5xx) is tried again after `min` seconds doubling to `max`,
-- with jitter (1 s to 60 s, as the Go SDKs of several vendors do), until what the credential
-- gives is in use. One the upstream refuses is not tried again: it will not change its mind
-- until the credentials change (a reload).
local relay = require "relay"
local backoff = require "relay.backoff"

local M = {}
local Logins = {}
Logins.__index = Logins

-- opts: keys (a list); login(key) -> true | nil, why, refused (bool); in_use(key) -> whether
-- what it gives is in use yet; use(key) after a retry logged in and it is not (fetch what it
-- gives); failed(k, retry_in) at each retry planned after a failure; refused(k), once; min (1),
-- max (60). l.keys[i]: { key, state = "new" | "pending" | "ok" | "refused", why, retry_at }.
function M.new(opts)
  local keys = {}
  for i, key in ipairs(opts.keys) do keys[i] = { key = key, state = "new" } end
  return setmetatable({ o = opts, keys = keys }, Logins)
end

function Logins:try(k)
  local ok, why, refused = self.o.login(k.key)
  k.state, k.why = ok and "ok" or refused and "refused" or "pending", not ok and why or nil
  if k.state == "refused" then self.o.refused(k) end
end

-- The first credential not logged in (in the order given), and how many are not.
function Logins:unserved()
  local first, n = nil, 0
  for _, k in ipairs(self.keys) do
    if k.state == "pending" or k.state == "refused" then first, n = first or k, n + 1 end
  end
  return first, n
end

-- Tried again after the next wait, until what it gives is in use.
function Logins:retry(k, wait)
  wait = wait or backoff.new { min = self.o.min or 1, max = self.o.max or 60, jitter = true }
  local d = wait:next()
  k.retry_at = relay.time() + d
  if k.state == "pending" then self.o.failed(k, d) end
  relay.after(d, function()
    if self.stopped then return end
    if k.state == "pending" then self:try(k) end
    if k.state == "refused" then return end
    if k.state == "ok" and not self.o.in_use(k.key) then self.o.use(k.key) end
    if not self.o.in_use(k.key) then self:retry(k, wait) end
  end)
end

-- Each credential once, now (in this task); those that failed are then tried again on their own.
function Logins:start()
  for _, k in ipairs(self.keys) do self:try(k) end
  for _, k in ipairs(self.keys) do
    if k.state == "pending" then self:retry(k) end
  end
end

-- A reload replaced this generation: no retry runs any more.
function Logins:stop() self.stopped = true end

return M
