-- relay.envelope: messages one server signs for another with a shared key (HMAC-SHA256), over a
-- path neither trusts alone (a shared Redis, a platform's bus). The signing input is a fixed list
-- of fields joined by "\n" (an absent one as ""); a receiver refuses an envelope of the wrong
-- shape, one its own check refuses, a bad signature (compared in constant time), one issued too
-- far from its clock, and one it has taken before (a replay). The workspace relay's bus
-- envelopes are these (the Viewport relay's bus-signing.ts), so mixed fleets interoperate.
local relay = require "relay"
local cjson = require "cjson"

local M = {}
local Envelope = {}
Envelope.__index = Envelope

-- Signatures remembered against replays: past this many they are forgotten at once, and the
-- newest issue time of each stream still refuses anything older.
M.MAX_SEEN = 100000

-- opts: key (the shared secret), fields (the signed fields, in order), types ({ field = "string"
-- | "number" | "optional" }, every field the envelope must have, the signature included:
-- "optional" is a string, absent or null), time (the field holding the issue time in ms),
-- max_skew (ms), stream(e) (whose issue times must not go back: the sender's stream), check(e)
-- -> why it is refused, or nil (optional: the receiver's own rules, before the signature).
function M.new(opts) return setmetatable({ o = opts, seen = {}, nseen = 0, last = {} }, Envelope) end

function M.now_ms() return math.floor(relay.time() * 1000) end

function Envelope:sign(e)
  local parts = {}
  for i, k in ipairs(self.o.fields) do parts[i] = e[k] == nil and "" or tostring(e[k]) end
  return relay.base64.encode(relay.crypto.hmac_sha256(self.o.key, table.concat(parts, "\n")), true)
end

-- The envelope e, issued now and signed, as JSON text.
function Envelope:seal(e)
  e[self.o.time] = M.now_ms()
  e.signature = self:sign(e)
  return cjson.encode(e)
end

-- A wrong type refuses the envelope before anything uses it; a null optional field becomes absent
-- (the original joins null and absent alike into the signing input: both as "").
local function typed(types, time, e)
  for k, want in pairs(types) do
    local v = e[k]
    if want == "optional" then
      if v == cjson.null then e[k] = nil elseif v ~= nil and type(v) ~= "string" then return "bad " .. k end
    elseif type(v) ~= want then
      return (v == nil or v == cjson.null) and "missing " .. k or "bad " .. k
    end
  end
  if e[time] ~= e[time] or math.abs(e[time]) == math.huge then return "bad " .. time end
end

-- raw JSON text -> the envelope | nil, why it was refused ("not JSON", "missing f", "bad f",
-- check's reason, "bad signature", "clock skew", "replay").
function Envelope:open(raw)
  local o = self.o
  local ok, e = pcall(cjson.decode, raw)
  if not ok or type(e) ~= "table" then return nil, "not JSON" end
  local bad = typed(o.types, o.time, e) or (o.check and o.check(e))
  if bad then return nil, bad end
  if not relay.crypto.constant_time_equal(e.signature, self:sign(e)) then return nil, "bad signature" end
  local t = e[o.time]
  if math.abs(M.now_ms() - t) > o.max_skew then return nil, "clock skew" end
  local stream = o.stream(e)
  local id = stream .. "\0" .. e.signature
  if self.seen[id] or (self.last[stream] or 0) > t then return nil, "replay" end
  if self.nseen > M.MAX_SEEN then self.seen, self.nseen = {}, 0 end
  self.seen[id], self.nseen = true, self.nseen + 1
  self.last[stream] = t
  return e
end

return M
