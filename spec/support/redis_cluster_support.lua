-- A real Redis Cluster for the specs: n primaries (3 unless told) on loopback ports below 55535
-- (each node also binds its port + 10000 for the cluster bus), each in its own directory, joined
-- with `redis-cli --cluster create`, waited for until every node says cluster_state:ok.
-- cluster-node-timeout is 1 s so that a failover takes seconds. stop() kills every node.
local helpers = require "helpers"
local socket = require "socket"

local M = {}
local Cluster = {}
Cluster.__index = Cluster

local function free(port)
  local s = socket.bind("127.0.0.1", port)
  if not s then return false end
  s:close()
  return true
end

-- n consecutive ports p with p and p + 10000 free. Seeded per process: specs run side by side.
local seeded
local function pick_ports(n)
  if not seeded then
    local f = io.open("/proc/self/stat")
    math.randomseed(os.time() * 1000 + (f and f:read("*n") or 0))
    if f then f:close() end
    seeded = true
  end
  for _ = 1, 50 do
    local base = math.random(20000, 45000 - n)
    local ok = true
    for p = base, base + n - 1 do ok = ok and free(p) and free(p + 10000) end
    if ok then
      local ports = {}
      for i = 1, n do ports[i] = base + i - 1 end
      return ports
    end
  end
  error("no free ports for a Redis Cluster")
end

-- One RESP command over a fresh connection; the first line of the reply, and the rest of a
-- bulk reply when there is one.
function M.command(port, line)
  local c = assert(helpers.connect(port))
  c:send(line .. "\r\n")
  local first = c.sock:receive("*l")
  local body
  if first and first:sub(1, 1) == "$" and tonumber(first:sub(2)) >= 0 then
    body = c.sock:receive(tonumber(first:sub(2)) + 2):sub(1, -3)
  end
  c:close()
  return first, body
end

local function alive(port)
  local c = helpers.connect(port, nil, 1)
  if c then c:close() end
  return c ~= nil
end

local function start_node(dir, port, args)
  local d = ("%s/node%d"):format(dir, port)
  os.execute("mkdir -p " .. d)
  os.execute(("redis-server --dir %s --port %d --bind 127.0.0.1 --cluster-enabled yes " ..
    "--cluster-config-file nodes.conf --cluster-node-timeout 1000 --save '' --appendonly no %s " ..
    "--daemonize no > %s/redis.log 2>&1 & echo $! > %s/redis.pid"):format(d, port, args or "", d, d))
  local pid = helpers.wait_until(function() return helpers.read_file(d .. "/redis.pid") end):gsub("%s", "")
  -- Ours, not another spec's that took the port first (then ours exits: bind failed).
  local ok = pcall(helpers.wait_until, function()
    if not helpers.read_file("/proc/" .. pid .. "/status") then error("redis-server exited") end
    local info = alive(port) and select(2, M.command(port, "INFO server"))
    return info and info:find("process_id:" .. pid .. "\r", 1, true)
  end, 5, "redis-server on " .. port)
  if not ok then os.execute("kill " .. pid .. " 2>/dev/null") end
  return ok and pid
end

-- Every node sees the cluster whole, and every replica has synced with its primary (a replica
-- that never has is not promoted: its data counts as too old).
function Cluster:ok()
  local synced = 0
  for _, p in ipairs(self.ports) do
    local _, info = M.command(p, "CLUSTER INFO")
    if not (info or ""):find("cluster_state:ok", 1, true) then return false end
    local _, repl = M.command(p, "INFO replication")
    if repl:find("master_link_status:up", 1, true) then synced = synced + 1 end
  end
  return synced == #self.ports - self.primaries
end

-- A node's TLS port, besides its plain one, with helpers.tls_pki's files in pki: the cluster bus
-- and clients over TLS, a client certificate required.
local function tls_args(self, i, pki)
  self.tls_ports[i] = helpers.free_port()
  return ("--tls-port %d --tls-cert-file %s/server.pem --tls-key-file %s/server.key --tls-ca-cert-file %s/ca.pem " ..
    "--tls-cluster yes --tls-auth-clients yes"):format(self.tls_ports[i], pki, pki, pki)
end

-- opts: primaries (3), replicas (per primary, 0), tls (a helpers.tls_pki directory: every node
-- also listens with TLS; self.tls_seeds lists those ports)
function M.start(opts)
  opts = opts or {}
  local primaries, replicas = opts.primaries or 3, opts.replicas or 0
  local self = setmetatable({ dir = helpers.tmpdir(), pids = {}, primaries = primaries }, Cluster)
  local addrs
  for _ = 1, 5 do
    self.ports, self.pids, addrs, self.tls_ports = pick_ports(primaries * (1 + replicas)), {}, {}, {}
    for i, p in ipairs(self.ports) do
      self.pids[i] = start_node(self.dir, p, opts.tls and tls_args(self, i, opts.tls)) -- false: the port was taken
      addrs[i] = "127.0.0.1:" .. p
    end
    local all = true
    for _, pid in ipairs(self.pids) do all = all and pid end
    if all then break end
    self:stop()
    self.dir = helpers.tmpdir()
  end
  local out = io.popen(("redis-cli --cluster create %s --cluster-replicas %d --cluster-yes 2>&1")
    :format(table.concat(addrs, " "), replicas)):read("*a")
  if not out:find("All 16384 slots covered", 1, true) then
    self:stop()
    error("redis-cli --cluster create failed: " .. out)
  end
  helpers.wait_until(function() return self:ok() end, 20, "cluster_state:ok on every node")
  self.seeds = table.concat(addrs, ",")
  local tls = {}
  for i, p in ipairs(self.tls_ports) do tls[i] = "127.0.0.1:" .. p end
  self.tls_seeds = table.concat(tls, ",")
  return self
end

-- The port of the primary that serves slot, as CLUSTER NODES on the first live node says (fields 9 on are
-- its slots: "N" or "A-B"; "[…]" entries are slots migrating).
function Cluster:owner(slot)
  local nodes
  for _, p in ipairs(self.ports) do
    if not nodes and alive(p) then nodes = select(2, M.command(p, "CLUSTER NODES")) end
  end
  for line in nodes:gmatch("[^\n]+") do
    local f = {}
    for w in line:gmatch("%S+") do f[#f + 1] = w end
    if f[3]:find("master", 1, true) then
      for i = 9, #f do
        local a, b = f[i]:match("^(%d+)%-?(%d*)$")
        if a and slot >= tonumber(a) and slot <= tonumber(b ~= "" and b or a) then
          return tonumber(f[2]:match(":(%d+)@"))
        end
      end
    end
  end
end

-- The node's id (CLUSTER MYID).
function Cluster:id(port)
  local _, id = M.command(port, "CLUSTER MYID")
  return id
end

-- Kills the node at port (as a crash would: SIGKILL).
function Cluster:kill(port)
  for i, p in ipairs(self.ports) do
    if p == port then os.execute("kill -9 " .. self.pids[i]) end
  end
end

function Cluster:stop()
  for _, pid in ipairs(self.pids) do
    if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
  end
  os.execute("rm -rf " .. self.dir)
end

return M
