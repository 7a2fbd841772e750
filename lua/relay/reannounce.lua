-- relay.reannounce: records a server keeps in Redis for others to find (the workspace relay's
-- presence, the git tunnel's registry), written again as soon as Redis is found without them.
--
-- Redis can come back without them: a restart without persistence, or a failover to a replica
-- that had not got the last writes. The owner's periodic refresh would write them again only a
-- period later, and until then no other server can reach what this one holds. So: after a failed
-- call (failed()), the next heal that finds Redis answering writes every record again; and every
-- `each` seconds one record (in turn, so each is looked at) is looked for, and if it is gone all
-- are written again, for a restart so quick that no call failed.
--
-- M.records keeps the held set itself: what to write is its only knowledge of Redis; M.watch is
-- the watch alone, for an owner that keeps its records otherwise.
local relay = require "relay"

local M = {}
local Watch = {}
Watch.__index = Watch

-- opts: each (seconds between looks), held (a table whose keys are the records kept),
-- present(item) -> true | false | nil (Redis cannot tell), rewrite() -> whether Redis took
-- every record, healed(why) after they were all written again.
function M.watch(opts)
  local self = setmetatable({ o = opts, lost = false, turn = 0 }, Watch)
  relay.every(opts.each, function() self:heal(true) end)
  return self
end

-- A call to Redis failed: Redis may come back without the records.
function Watch:failed() self.lost = true end

-- The next record in turn, or nil when none is kept.
function Watch:next_item()
  local n, first = 0, nil
  for item in pairs(self.o.held) do
    n = n + 1
    first = first or item
    if n == self.turn + 1 then
      self.turn = n
      return item
    end
  end
  self.turn = first ~= nil and 1 or 0
  return first
end

function Watch:missing()
  local item = self:next_item()
  if item == nil then return false end
  local there = self.o.present(item)
  if there == nil then self.lost = true end
  return there == false
end

-- check: also look for a missing record (the timer); without it, only after a failed call.
function Watch:heal(check)
  if next(self.o.held) == nil or not (self.lost or (check and self:missing())) then return end
  local why = self.lost and "redis was failing" or "a record was missing"
  self.lost = false
  if self.o.rewrite() then self.o.healed(why) else self.lost = true end
end

-- ---- records held in Redis ----

local Records = {}
Records.__index = Records

-- opts: write(item, value) -> ok | nil, err (value nil: remove the item's record), every (seconds
-- between writes of every record: they expire), each, present and healed as M.watch's, failed(err)
-- (optional: told of each failed write). r.held: item -> value.
function M.records(opts)
  local self = setmetatable({ o = opts, held = {} }, Records)
  self.watch = M.watch { each = opts.each, held = self.held, present = opts.present, healed = opts.healed,
                         rewrite = function() return self:refresh() end }
  relay.every(opts.every, function() self:refresh() end)
  return self
end

-- Writes item's record -> whether Redis took it (if not, it is written again once Redis answers).
function Records:write(item, value)
  local ok, err = self.o.write(item, value)
  if not ok then
    self.watch:failed()
    if self.o.failed then self.o.failed(err) end
  end
  return ok
end

-- Holds item (value: what its record says, true when nil) and writes its record. -> ok
function Records:hold(item, value)
  if value == nil then value = true end
  self.held[item] = value
  return self:write(item, value)
end

function Records:drop(item)
  self.held[item] = nil
  return self:write(item, nil)
end

-- Writes every record again. -> whether Redis took them all
function Records:refresh()
  for item, value in pairs(self.held) do
    if not self:write(item, value) then return false end
  end
  return true
end

return M
