-- The repo's spec helpers: relay.test (what script authors use too) plus fixture paths.
local test = require "relay.test"

local helpers = setmetatable({}, { __index = test })

local root = (debug.getinfo(1, "S").source:match("^@(.*)/spec/helpers%.lua$")) or "."
helpers.root = root
function helpers.fixture(name) return root .. "/spec/fixtures/" .. name end

-- A redis-server of our own on a free port (retried: a parallel test may take the port before
-- redis binds it). Returns the port and the pid. PING tells redis from others.
function helpers.start_redis(dir, fixed_port)
  local socket = require "socket"
  local function pong(p)
    local c = test.connect(p)
    if not c then return false end
    c:send("PING\r\n")
    local line = c.sock:receive("*l")
    c:close()
    return line == "+PONG"
  end
  for _ = 1, 5 do
    local port = fixed_port
    if not port then
      local s = socket.bind("127.0.0.1", 0)
      port = select(2, s:getsockname())
      s:close()
    end
    os.execute(("redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no --daemonize no " ..
      "> %s/redis.log 2>&1 & echo $! > %s/redis.pid"):format(port, dir, dir))
    local pid = test.wait_until(function() return test.read_file(dir .. "/redis.pid") end):gsub("%s", "")
    local ok = pcall(test.wait_until, function()
      if not test.read_file("/proc/" .. pid .. "/status") then error("redis exited") end
      return pong(port)
    end, 5)
    if ok then return tonumber(port), pid end
  end
  error("could not start redis-server: " .. tostring(test.read_file(dir .. "/redis.log")))
end

return helpers
