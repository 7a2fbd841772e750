-- relay.batch: pieces of text gathered per key and sent on in one request per key (SDK metrics
-- to an events service, access records to a collector), every `every` seconds or as soon as
-- flush_at bytes wait. Bounded: what waits and what is in flight stay within max_bytes (anyone
-- may post what is gathered, and a slow or unreachable receiver holds a batch for its timeout);
-- past it add() refuses. One flush at a time: what comes meanwhile waits for the next.
local relay = require "relay"

local M = {}
local Batch = {}
Batch.__index = Batch

-- opts: max_bytes, flush_at (bytes), every (seconds; start() runs the timer), send(key, parts)
-- (parts: { [field] = array of the texts added, in order }; an error it raises is logged with
-- log_event, the key as key_field; default "batch_send_failed" and "batch").
function M.new(opts)
  return setmetatable({ o = opts, batches = {}, bytes = 0, in_flight = nil, dropped = 0 }, Batch)
end

-- parts: { [field] = text } ("" adds nothing to that field). -> true, or false when it would
-- pass max_bytes (nothing of it kept; b.dropped counts these since the last flush).
function Batch:add(key, parts)
  local n = 0
  for _, text in pairs(parts) do n = n + #text end
  if self.bytes + (self.in_flight or 0) + n > self.o.max_bytes then
    self.dropped = self.dropped + 1
    return false
  end
  local q = self.batches[key] or {}
  for field, text in pairs(parts) do
    q[field] = q[field] or {}
    if text ~= "" then q[field][#q[field] + 1] = text end
  end
  self.batches[key] = q
  self.bytes = self.bytes + n
  if self.o.flush_at and self.bytes >= self.o.flush_at and not self.in_flight then
    relay.after(0, function() self:flush() end)
  end
  return true
end

-- Sends every key's batch (one send each, in this task); nothing when a flush is running.
function Batch:flush()
  if self.in_flight or self.bytes == 0 then return end
  local batches = self.batches
  self.batches, self.in_flight, self.bytes, self.dropped = {}, self.bytes, 0, 0
  for key, parts in pairs(batches) do
    local ok, err = pcall(self.o.send, key, parts) -- whatever happens, the next flush may run
    if not ok then
      local fields = { [self.o.key_field or "batch"] = key, error = tostring(err) }
      relay.log.warn(self.o.log_event or "batch_send_failed", fields)
    end
  end
  self.in_flight = nil
end

-- Flushes every opts.every seconds (a timer of the running generation).
function Batch:start()
  relay.every(self.o.every, function() self:flush() end)
end

return M
