-- relay.inbox: an inbox per server in Redis (a list under prefix .. name), for servers that pass
-- messages to one another: any of them pushes to a server by its name, the server pulls its own.
-- Bounded both ways: a push trims the list to its newest max_len, and a pull takes at most limit
-- messages and max_bytes bytes (past the first). A message longer than max_bytes is dropped by a
-- script that runs in Redis, so it never crosses into the process; one far longer is dropped
-- without Redis reading it either (PULL).
local M = {}
local Inbox = {}
Inbox.__index = Inbox

-- -> { dropped, { message, ... } }. Redis says a message's length only by reading it, and
-- reading one of 32 MiB into the script (and again in LPOP's answer) takes it seconds: longer
-- than the puller waits. So the head is first bounded unread: MEMORY USAGE with one sample is
-- the first node's bytes times the nodes (1 to LLEN of them), and a first node over 64 KiB (the
-- most a node of several messages holds) is one message. A head certainly over max is trimmed
-- unread; any other is read and checked. LTRIM removes without answering the message.
local PULL = [[
local out, dropped, total = {}, 0, 0
local key, limit, max = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local function over(n)
  if redis.call('OBJECT', 'ENCODING', key) ~= 'quicklist' then return false end
  return (redis.call('MEMORY', 'USAGE', key, 'SAMPLES', 1) - 1024) / n > 2 * max + 65536
end
while #out < limit do
  local n = redis.call('LLEN', key)
  if n == 0 then break end
  local v = not over(n) and redis.call('LINDEX', key, 0)
  if not v or #v > max then
    dropped = dropped + 1
  elseif #out > 0 and total + #v > max then
    break
  else
    out[#out + 1], total = v, total + #v
  end
  redis.call('LTRIM', key, 1, -1)
end
return { dropped, out }
]]

-- opts: redis (a relay.redis), prefix, name (this server's), max_len, limit, max_bytes
function M.new(opts) return setmetatable({ o = opts, key = opts.prefix .. opts.name }, Inbox) end

-- -> ok | nil, err
function Inbox:push(name, message)
  local key = self.o.prefix .. name
  local ok, err = self.o.redis:call("RPUSH", key, message)
  if not ok then return nil, err end
  return self.o.redis:call("LTRIM", key, -self.o.max_len, -1)
end

-- Polled: no blocking pop (BLPOP would hand over the first message whatever its size).
-- -> { message, ... }, how many were dropped as too long | nil, err
function Inbox:pull()
  local r, err = self.o.redis:call("EVAL", PULL, 1, self.key, self.o.limit, self.o.max_bytes)
  if not r then return nil, err end
  if type(r) ~= "table" or type(r[2]) ~= "table" then return nil, "unexpected reply to the pull script" end
  return r[2], tonumber(r[1]) or 0
end

return M
