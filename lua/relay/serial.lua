-- relay.serial: functions run one at a time, in the order they were queued, in a task of their
-- own: writes that must not interleave (a change, and a rewrite of everything after Redis lost
-- it; a registry's refresh and its re-announcement) without a lock in each caller.
local relay = require "relay"

local M = {}
local Serial = {}
Serial.__index = Serial

-- opts: log_event (an error a function raises is logged as it, default "serial_job_failed", and
-- the next one runs), tick (seconds between looks while wait() waits, default 0.05).
function M.new(opts)
  opts = opts or {}
  return setmetatable({ q = {}, running = false, stopped = false, tick = opts.tick or 0.05,
                        log_event = opts.log_event or "serial_job_failed" }, Serial)
end

-- Queues fn: it runs after everything queued before it.
function Serial:push(fn)
  local q = self.q
  q[#q + 1] = fn
  if self.running or self.stopped then return end
  self.running = true
  relay.after(0, function()
    while #q > 0 and not self.stopped do
      local ok, err = pcall(table.remove(q, 1))
      if not ok then relay.log.warn(self.log_event, { error = tostring(err) }) end
    end
    self.running = false
  end)
end

-- Queues fn and yields until it has run (behind what was queued before it, never beside it),
-- or the queue was stopped.
function Serial:wait(fn)
  local done = false
  self:push(function()
    local ok, err = pcall(fn)
    done = true
    if not ok then error(err, 0) end
  end)
  while not done and not self.stopped do relay.sleep(self.tick) end
end

-- Nothing more runs (a reload replaced the generation that queued them).
function Serial:stop() self.stopped = true end

return M
