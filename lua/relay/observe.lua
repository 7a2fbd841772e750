-- relay.observe: what a script tells its operators on its own admin endpoints, kept in its Lua
-- state: counters by name (rendered as Prometheus text the plain way: "# TYPE n counter" and
-- "n v", no HELP, no labels), and a ring of recent log entries (for a /logs endpoint) with the
-- detail keys that name a secret or a payload redacted. Every entry also goes to the host log.
-- The workspace relay's /metrics and /logs are these, under the original's names.
local relay = require "relay"

local M = {}
M.__index = M

-- The default redaction rule (the Viewport relay's logger.ts): any key naming a secret or a payload.
M.secret_words = { "authorization", "credential", "token", "secret", "password", "api_key", "api-key",
                       "apikey", "private_key", "private-key", "privatekey", "signature", "payload", "body",
                       "content", "frame", "message" }

local function redacted_key(words, k)
  k = tostring(k):lower()
  for _, w in ipairs(words) do if k:find(w, 1, true) then return true end end
  return false
end

function M:redact(details)
  local out = {}
  for k, v in pairs(details or {}) do out[k] = redacted_key(self.secret_words, k) and "[redacted]" or v end
  return out
end

-- opts: max_logs (entries the ring keeps), secret_words (lower-case substrings of the detail keys
-- to redact; default M.secret_words).
function M.new(opts)
  return setmetatable({ counters = {}, logs = {}, max_logs = opts.max_logs, next_log = 1,
                        secret_words = opts.secret_words or M.secret_words }, M)
end

function M:inc(name, by) self.counters[name] = (self.counters[name] or 0) + (by or 1) end

function M:log(level, event, details)
  local d = self:redact(details)
  local entry = { ts = os.date("!%Y-%m-%dT%H:%M:%SZ"), level = level, event = event, details = d }
  self.logs[self.next_log] = entry
  self.next_log = self.next_log % self.max_logs + 1
  relay.log[level](event, d)
end

-- The ring, oldest first; without verbose, each entry without its details.
function M:recent(verbose)
  local out, n = {}, self.max_logs
  for i = 0, n - 1 do
    local e = self.logs[(self.next_log - 1 + i) % n + 1]
    if e then out[#out + 1] = verbose and e or { ts = e.ts, level = e.level, event = e.event } end
  end
  return out
end

-- gauges: { {name, value}, ... }; counted_in_c: counters kept in C, added to the Lua ones.
function M:render(gauges, counted_in_c)
  local lines, names, values = {}, {}, {}
  for n, v in pairs(self.counters) do values[n] = v end
  for n, v in pairs(counted_in_c or {}) do values[n] = (values[n] or 0) + v end
  for n in pairs(values) do names[#names + 1] = n end
  table.sort(names)
  local function family(kind, name, v) lines[#lines + 1] = ("# TYPE %s %s\n%s %d\n"):format(name, kind, name, v) end
  for _, n in ipairs(names) do family("counter", n, values[n]) end
  for _, g in ipairs(gauges) do family("gauge", g[1], g[2]) end
  return table.concat(lines)
end

return M
