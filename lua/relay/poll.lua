-- relay.poll: a task that takes messages from a source by polling (an inbox in Redis, an HTTP
-- API's pull) and hands each one on, for the generation's life. No input ends it: a message
-- whose delivery raises is reported and the next one delivered; a turn that raises is reported
-- and the next turn runs after a pause. Waits are fixed, not grown: a source that was down is
-- read again at most `retry` seconds after it is back.
local relay = require "relay"
local check = require "relay.check"

local M = {}

-- One turn: pull and deliver. -> how long to wait before the next turn (0: more may be waiting)
function M.turn(o)
  if o.idle and o.idle() then return o.every end
  local batch, err = o.pull()
  if not batch then
    o.failed(err, false)
    return math.max(o.retry or 0, o.every)
  end
  for _, message in ipairs(batch) do
    local ok, why = pcall(o.deliver, message)
    if not ok then o.failed("delivery: " .. tostring(why), true) end
  end
  return #batch == 0 and o.every or 0
end

-- opts: pull() -> { message, ... } | nil, err; deliver(message); failed(why, raised) (raised:
-- a delivery or a turn raised, rather than the source failing); every (seconds after an empty
-- pull); retry (seconds after a failed one; at least, and by default, every); idle() -> true to
-- skip a turn (nothing to deliver to). Runs in the calling task and does not return.
local KEYS = { "pull", "deliver", "failed", "every", "retry", "idle" }
function M.run(o)
  check.options(o, KEYS, "relay.poll.run")
  if type(o.every) ~= "number" then check.fail("relay.poll.run: every must be a number of seconds") end
  while true do
    local ok, wait = pcall(M.turn, o)
    if not ok then o.failed("consumer: " .. tostring(wait), true) end
    if not ok or wait > 0 then relay.sleep(ok and wait or o.every) end
  end
end

return M
