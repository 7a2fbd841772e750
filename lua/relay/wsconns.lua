-- relay.wsconns: the WebSocket connections a script holds for peers on the network, and the chores
-- every such script has: counting them (in all and per client address, from the upgrade on, so
-- that limits see the ones being admitted), sending without waiting on a peer that does not read
-- (one owed more than max_pending bytes is cut off, close 4008 "buffer overflow", and the sender
-- goes on), pinging them, and terminating (no close frame) the silent and those that answer no
-- ping. A connection is the script's own table: conn.ip, conn.ws once upgraded, and conn.closing and
-- conn.overflow, which are set here. All are pinged in one sweep, so the time of the ping is kept
-- once, not in each table: a field more per held connection would double the table's hash part.
local relay = require "relay"

local M = {}
local Conns = {}
Conns.__index = Conns

-- opts: max_pending (bytes), idle_timeout (seconds without a message), pong_timeout (seconds a
-- ping may go unanswered), ping_interval (seconds; every one, the stale and idle are terminated,
-- the others pinged, and on_ping(now) runs), and for a script's metrics and logs
-- on_overflow(conn, buffered) and on_terminate(conn, "stale" | "idle").
function M.new(opts)
  local self = setmetatable({ o = opts, all = {}, n = 0, per_ip = {} }, Conns)
  relay.every(opts.ping_interval, function()
    self:reap()
    self:ping(relay.now())
    relay.after(opts.pong_timeout, function() self:reap() end)
  end)
  return self
end

function Conns:add(conn)
  self.all[conn] = true
  self.n = self.n + 1
  self.per_ip[conn.ip] = (self.per_ip[conn.ip] or 0) + 1
end

-- -> whether conn was held
function Conns:remove(conn)
  if not self.all[conn] then return false end
  self.all[conn] = nil
  self.n = self.n - 1
  local n = self.per_ip[conn.ip] - 1
  self.per_ip[conn.ip] = n > 0 and n or nil
  return true
end

-- Connections from the client address ip.
function Conns:count(ip) return self.per_ip[ip] or 0 end

-- Closes conn from any task; the task that reads it sees recv() end.
function Conns:close(conn, code, reason)
  if conn.closing then return end
  conn.closing = true
  conn.ws:close(code, reason)
end

-- -> whether text was queued for conn
function Conns:send(conn, text)
  if conn.closing then return false end
  local buffered = conn.ws:buffered()
  if buffered > self.o.max_pending then
    conn.overflow = true
    if self.o.on_overflow then self.o.on_overflow(conn, buffered) end
    self:close(conn, 4008, "buffer overflow")
    return false
  end
  return conn.ws:send(text) ~= nil
end

-- A sweep (reap, ping) goes over every connection and gives the loop a turn after each SLICE of
-- them: in one go, a ping to each of 10,000 held connections (a write each) held every other
-- connection's frames back ~135 ms. It goes over the connections held when it starts, skipping
-- those gone or closing since. From a task (a timer's, a handler's).
local SLICE = 64

local function sweep(self, fn)
  local list, n = {}, 0
  for conn in pairs(self.all) do
    n = n + 1
    list[n] = conn
  end
  for i = 1, n do
    local conn = list[i]
    if self.all[conn] and conn.ws and not conn.closing then fn(self, conn) end
    if i % SLICE == 0 and i < n then relay.sleep(0) end
  end
end

-- Whether conn was silent for idle_timeout, or sent nothing, not even a pong, within
-- pong_timeout of a ping (one opened after the ping has heard from its peer since). The clock is
-- read per connection: a sweep spans turns of the loop.
local function terminate_if_quiet(self, conn)
  local since_ping = self.pinged_at and relay.now() - self.pinged_at
  local stale = since_ping and conn.ws:idle() > since_ping and since_ping >= self.o.pong_timeout
  if stale or conn.ws:silent() >= self.o.idle_timeout then
    if self.o.on_terminate then self.o.on_terminate(conn, stale and "stale" or "idle") end
    conn.closing = true
    conn.ws:terminate()
  end
end

-- Terminates the silent and the unanswering (terminate_if_quiet).
function Conns:reap() sweep(self, terminate_if_quiet) end

local function ping_one(_, conn) conn.ws:ping() end

function Conns:ping(now)
  self.pinged_at = now
  sweep(self, ping_one)
  if self.o.on_ping then self.o.on_ping(now) end
end

-- After conn's task is done with it: a peer cut off for not reading (conn.overflow) gets up to
-- `seconds` to take its close frame, then is terminated.
function Conns.linger(conn, seconds)
  if not conn.overflow then return end
  local deadline = relay.now() + seconds
  while conn.ws:buffered() > 0 and relay.now() < deadline do relay.sleep(0.05) end
  if conn.ws:buffered() > 0 then conn.ws:terminate() end
end

return M
