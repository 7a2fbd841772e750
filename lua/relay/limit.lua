-- relay.limit: rate limiters keyed by strings (a client address, a user, a connection), each
-- bounding how many keys it tracks, so a flood of new keys costs bounded memory.
--   limit.window(n, seconds, max_keys): at most n events per key in a fixed window that opens
--     at the key's first event;
--   limit.bucket(n, seconds, max_keys): a token bucket holding n, refilled at n per seconds.
-- l:allow(key, now) counts one event at now (relay.now()) and says whether it is within the
-- limit; l:sweep(now) forgets keys that are back to a clean slate (call it from a timer).
local M = {}

-- Keeps at most max keys: keys back to a clean slate go first, then any (the table's order).
-- Full, it makes room for an eighth of max at once, so that the sweep (a pass over every key)
-- runs once per max/8 new keys: a flood of new keys (addresses) costs O(1) each, not O(max).
local function make_room(self, now)
  if self.n < self.max then return end
  self:sweep(now)
  local keep = self.max - math.max(1, math.floor(self.max / 8))
  for k in pairs(self.t) do
    if self.n <= keep then break end
    self.t[k] = nil
    self.n = self.n - 1
  end
end

local function entry(self, key, now)
  local e = self.t[key]
  if not e then
    make_room(self, now)
    e = self:fresh(now)
    self.t[key] = e
    self.n = self.n + 1
  end
  return e
end

local function sweep(self, now)
  for k, e in pairs(self.t) do
    if self:clean(e, now) then self.t[k] = nil; self.n = self.n - 1 end
  end
end

local Window = { sweep = sweep }
Window.__index = Window

function M.window(n, seconds, max_keys)
  return setmetatable({ limit = n, period = seconds, max = max_keys, t = {}, n = 0 }, Window)
end

function Window:fresh(now) return { count = 0, reset = now + self.period } end
function Window:clean(e, now) return now >= e.reset end

function Window:allow(key, now)
  local e = entry(self, key, now)
  if now >= e.reset then e.count, e.reset = 0, now + self.period end
  e.count = e.count + 1
  return e.count <= self.limit
end

local Bucket = { sweep = sweep }
Bucket.__index = Bucket

function M.bucket(n, seconds, max_keys)
  return setmetatable({ cap = n, rate = n / seconds, max = max_keys, t = {}, n = 0 }, Bucket)
end

function Bucket:fresh(now) return { tokens = self.cap, at = now } end
function Bucket:clean(e, now) return e.tokens + (now - e.at) * self.rate >= self.cap end

function Bucket:allow(key, now)
  local e = entry(self, key, now)
  e.tokens = math.min(self.cap, e.tokens + (now - e.at) * self.rate)
  e.at = now
  if e.tokens < 1 then return false end
  e.tokens = e.tokens - 1
  return true
end

return M
