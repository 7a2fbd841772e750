-- relay.inbox: an inbox per server in Redis (a list under prefix .. name), for servers that pass
-- messages to one another: any of them pushes to a server by its name, the server pulls its own.
-- Bounded both ways: a push trims the list to its newest max_len, and a pull takes at most limit
-- messages and max_bytes bytes (past the first). A message longer than max_bytes is dropped by a
-- script that runs in Redis, so it never crosses into the process.
local M = {}
local Inbox = {}
Inbox.__index = Inbox

-- -> { dropped, { message, ... } }
local PULL = [[
local out, dropped, total = {}, 0, 0
local limit, max = tonumber(ARGV[1]), tonumber(ARGV[2])
while #out < limit do
  local v = redis.call('LINDEX', KEYS[1], 0)
  if not v then break end
  if #v > max then
    dropped = dropped + 1
  elseif #out > 0 and total + #v > max then
    break
  else
    out[#out + 1], total = v, total + #v
  end
  redis.call('LPOP', KEYS[1])
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
