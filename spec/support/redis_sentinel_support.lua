-- A real Redis Sentinel setup for the specs: a primary, one replica and three sentinels (quorum
-- 2), each on a free loopback port in its own directory. down-after-milliseconds is 1 s and
-- failover-timeout 3 s, so that a failover takes seconds. stop() kills every process.
-- The sentinels run as `redis-server sentinel.conf --sentinel` (what the redis-sentinel program
-- is), so redis-server is all they need.
local helpers = require "helpers"
local socket = require "socket"

local M = { master = "mymaster" }
local Setup = {}
Setup.__index = Setup

-- What redis-cli prints (--raw: one line per element of an array).
function M.cli(port, args)
  local p = io.popen(("redis-cli -h 127.0.0.1 -p %d --raw %s 2>&1"):format(port, args))
  local out = p:read("*a")
  p:close()
  return out
end

local function lines(s)
  local t = {}
  for l in s:gmatch("[^\r\n]+") do t[#t + 1] = l end
  return t
end

local function start_redis(extra)
  local dir = helpers.tmpdir()
  local port, pid = helpers.start_redis(dir, nil, ("--dir %s %s"):format(dir, extra or ""))
  return { port = port, pid = pid, dir = dir }
end

-- One sentinel watching the primary. A port another spec took first makes ours exit: retried.
local function start_sentinel(primary_port)
  local dir = helpers.tmpdir()
  for _ = 1, 5 do
    local port = helpers.free_port()
    helpers.write_file(dir .. "/sentinel.conf", table.concat({
      "port " .. port, "bind 127.0.0.1", "dir " .. dir,
      ("sentinel monitor %s 127.0.0.1 %d 2"):format(M.master, primary_port),
      ("sentinel down-after-milliseconds %s 1000"):format(M.master),
      ("sentinel failover-timeout %s 3000"):format(M.master), "" }, "\n"))
    os.execute(("redis-server %s/sentinel.conf --sentinel > %s/sentinel.log 2>&1 & echo $! > %s/sentinel.pid")
      :format(dir, dir, dir))
    local pid = helpers.wait_until(function() return helpers.read_file(dir .. "/sentinel.pid") end):gsub("%s", "")
    local ok = pcall(helpers.wait_until, function()
      if not helpers.read_file("/proc/" .. pid .. "/status") then error("redis-sentinel exited") end
      return M.cli(port, "INFO server"):find("process_id:" .. pid .. "%s")
    end, 5)
    if ok then return { port = port, pid = pid, dir = dir } end
    os.execute("kill " .. pid .. " 2>/dev/null")
  end
  error("could not start a sentinel: " .. tostring(helpers.read_file(dir .. "/sentinel.log")))
end

-- The port of the primary a sentinel names (nil if it names none).
function Setup:primary_port(sentinel)
  local addr = lines(M.cli((sentinel or self.sentinels[1]).port, "SENTINEL get-master-addr-by-name " .. M.master))
  return tonumber(addr[2])
end

-- What a sentinel knows of the master (SENTINEL MASTER: field, value, field, value, …).
function Setup:master_info(sentinel)
  local l, t = lines(M.cli(sentinel.port, "SENTINEL MASTER " .. M.master)), {}
  for i = 1, #l - 1, 2 do t[l[i]] = l[i + 1] end
  return t
end

-- Every sentinel sees the replica and the two others, and the replica has synced (a replica
-- that never has is not promoted).
function Setup:ready()
  for _, s in ipairs(self.sentinels) do
    local m = self:master_info(s)
    if m["num-slaves"] ~= "1" or m["num-other-sentinels"] ~= "2" then return false end
  end
  return M.cli(self.replica.port, "INFO replication"):find("master_link_status:up", 1, true) ~= nil
end

function M.start()
  local self = setmetatable({ sentinels = {} }, Setup)
  local ok, err = pcall(function()
    self.primary = start_redis()
    self.replica = start_redis("--replicaof 127.0.0.1 " .. self.primary.port)
    for i = 1, 3 do self.sentinels[i] = start_sentinel(self.primary.port) end
    helpers.wait_until(function() return self:ready() end, 30, "sentinels that know the replica and each other")
  end)
  if not ok then
    self:stop()
    error(err)
  end
  local addrs = {}
  for i, s in ipairs(self.sentinels) do addrs[i] = "127.0.0.1:" .. s.port end
  self.url = ("redis-sentinel://%s/%s"):format(table.concat(addrs, ","), M.master)
  return self
end

-- Kills the primary (SIGKILL, as a crash). Returns when (socket.gettime()).
function Setup:kill_primary()
  os.execute("kill -9 " .. self.primary.pid)
  self.primary, self.dead = nil, self.primary
  return socket.gettime()
end

-- After kill_primary: every sentinel names the replica, and it says it is a master (then it is
-- self.primary).
function Setup:promoted()
  if self.primary then return true end
  for _, s in ipairs(self.sentinels) do
    if self:primary_port(s) ~= self.replica.port then return false end
  end
  if lines(M.cli(self.replica.port, "ROLE"))[1] ~= "master" then return false end
  self.primary, self.replica = self.replica, nil
  return true
end

-- Kills the primary and waits until the replica is promoted: the seconds that took.
function Setup:fail_over(timeout)
  local t0 = self:kill_primary()
  helpers.wait_until(function() return self:promoted() end, timeout or 30, "the sentinels to promote the replica")
  return socket.gettime() - t0
end

function Setup:stop()
  local all = { self.primary, self.replica, self.dead }
  for i, s in ipairs(self.sentinels) do all[3 + i] = s end
  for i = 1, 3 + #self.sentinels do
    local p = all[i]
    if p then os.execute("kill " .. p.pid .. " 2>/dev/null; rm -rf " .. p.dir) end
  end
end

return M
