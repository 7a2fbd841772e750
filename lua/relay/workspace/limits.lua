-- Rate limiters keyed by strings, each bounding how many keys it tracks (the original's
-- *_MAX_KEYS): a fixed window (upgrades, key exchanges, pairing) and a token bucket (runtime
-- frames). allow(key, now) counts one event and says whether it is within the limit.
local M = {}

-- Keeps at most max keys: expired ones go first, then the oldest inserted.
local function make_room(self, now)
  if self.n < self.max then return end
  for k, e in pairs(self.t) do
    if self.expired(self, e, now) then self.t[k] = nil; self.n = self.n - 1 end
  end
  while self.n >= self.max do
    local k = next(self.t)
    self.t[k] = nil
    self.n = self.n - 1
  end
end

local function entry(self, key, now, fresh)
  local e = self.t[key]
  if not e then
    make_room(self, now)
    e = fresh(now)
    self.t[key] = e
    self.n = self.n + 1
  end
  return e
end

local Window = {}
Window.__index = Window

function M.window(limit, seconds, max_keys)
  return setmetatable({ limit = limit, period = seconds, max = max_keys, t = {}, n = 0,
                        expired = function(self, e, now) return now >= e.reset end }, Window)
end

function Window:allow(key, now)
  local period = self.period
  local e = entry(self, key, now, function(t) return { count = 0, reset = t + period } end)
  if now >= e.reset then e.count, e.reset = 0, now + period end
  e.count = e.count + 1
  return e.count <= self.limit
end

function Window:sweep(now)
  for k, e in pairs(self.t) do
    if now >= e.reset then self.t[k] = nil; self.n = self.n - 1 end
  end
end

local Bucket = {}
Bucket.__index = Bucket

-- per_minute tokens, refilled continuously; a full bucket holds per_minute.
function M.bucket(per_minute, max_keys)
  local rate = per_minute / 60
  return setmetatable({ cap = per_minute, rate = rate, max = max_keys, t = {}, n = 0,
                        expired = function(self, e, now) return e.tokens + (now - e.at) * rate >= self.cap end }, Bucket)
end

function Bucket:allow(key, now)
  local cap = self.cap
  local e = entry(self, key, now, function(t) return { tokens = cap, at = t } end)
  e.tokens = math.min(cap, e.tokens + (now - e.at) * self.rate)
  e.at = now
  if e.tokens < 1 then return false end
  e.tokens = e.tokens - 1
  return true
end

function Bucket:sweep(now)
  for k, e in pairs(self.t) do
    if self:expired(e, now) then self.t[k] = nil; self.n = self.n - 1 end
  end
end

return M
