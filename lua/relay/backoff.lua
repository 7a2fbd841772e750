-- relay.backoff: how long to wait before trying again (a feed, a connection, a fetch): min
-- seconds after the first failure, doubled after each one up to max, back to min once something
-- held (reset). With jitter, each wait is between half and all of that, so clients that lost a
-- server together do not return together. Pure Lua.
local M = {}
local Backoff = {}
Backoff.__index = Backoff

-- opts: min, max (seconds), jitter (bool). b.wait is the next wait without jitter. No wait is
-- over max, the first either: a max below min (git tunnel's --backoff-max=0.01) caps every one.
function M.new(opts)
  local b = setmetatable({ min = opts.min, max = opts.max, jitter = opts.jitter }, Backoff)
  b:reset()
  return b
end

-- The wait to sleep now; the one after is doubled (up to max).
function Backoff:next()
  local d = self.wait
  self.wait = math.min(d * 2, self.max)
  if self.jitter then return d / 2 + math.random() * d / 2 end
  return d
end

-- It held: the next failure waits min again.
function Backoff:reset() self.wait = math.min(self.min, self.max) end

return M
