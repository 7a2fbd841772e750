-- What a SIGHUP's rehearsal child costs does not grow with the file descriptor limit: it closes
-- the sockets it inherited by listing the open descriptors, where it once tried every number up to
-- the limit (20,000 fstat calls, 34 ms, per reload under bench/flag-proxy.sh's ulimit -n 20000).
-- Nor does a load compile machine code for code that runs a few times: each LuaJIT trace costs
-- mprotect calls (440 per flag proxy reload, host and child, ~20 ms on the benchmark machine).
-- Counted with strace -c -f on the running host; pending where strace cannot attach.
local helpers = require "helpers"

local script = [[
local relay = require "relay"
local app = relay.new { name = "rehearsed" }
app:get("/", function(_, res) res:send(200, "ok") end)
return app
]]

local root = debug.getinfo(1, "S").source:match("^@(.*)/spec/core/[^/]+$") or "."

local function sh(cmd) local p = io.popen(cmd); local out = p:read("*a"); p:close(); return out end

describe("a reload's rehearsal", function()
  local has_strace = sh("command -v strace"):match("%S") ~= nil
  local limit = math.min(20000, tonumber(sh("sh -c 'ulimit -Hn'"):match("%d+")) or 0)
  local run = (has_strace and limit >= 4096) and it or pending

  local function start(dir)
    helpers.write_file(dir .. "/app.lua", script)
    return helpers.start(dir .. "/app.lua", { nofile = limit, flags = { "--log-level=info" } })
  end

  -- calls of the named syscalls (a Lua pattern) in one reload of host, host and child; nil if
  -- strace cannot attach (clone, the rehearsal's fork, is traced to see that it did)
  local function count_calls(host, dir, names)
    local out = dir .. "/strace.txt"
    local spid = sh(("strace -c -f -e trace=clone,fstat,newfstatat,mprotect -p %d -o %s >/dev/null 2>&1 & echo $!"):format(host.pid, out))
    os.execute("sleep 1")
    local ok, why = host:reload()
    assert.is_true(ok, why)
    os.execute("kill -INT " .. spid:match("%d+") .. "; sleep 0.5")
    local report = helpers.read_file(out) or ""
    if not report:match("total") then return nil, report end
    local calls = 0
    for line in report:gmatch("[^\n]+") do -- % time, seconds, usecs/call, calls, [errors,] syscall
      local f = {}
      for w in line:gmatch("%S+") do f[#f + 1] = w end
      if f[#f]:match(names) and tonumber(f[4]) then calls = calls + tonumber(f[4]) end
    end
    return calls, report
  end

  run("does not try every descriptor number up to the limit", function()
    local dir = helpers.tmpdir()
    local host = start(dir)
    finally(function() host:stop() end)
    local conns = {}
    for i = 1, 20 do conns[i] = host:client() end -- open sockets the child must close
    local calls, report = count_calls(host, dir, "^n?e?w?fstata?t?$")
    if not calls then return pending("strace could not attach: " .. report) end
    assert.is_true(calls < limit / 4, ("%d fstat calls for one reload (limit %d):\n%s"):format(calls, limit, report))
    for _, c in ipairs(conns) do c:close() end
  end)

  run("compiles no machine code for the flag proxy's load", function()
    local dir = helpers.tmpdir()
    os.execute(("cp -r %s/examples/flag-proxy/config %s/config"):format(root, dir))
    local host = helpers.start("flag-proxy", { flags = { "--offline", "--config-dir=" .. dir .. "/config",
                                                           "--auth-secret=spec", "--log-level=info" } })
    finally(function() host:stop() end)
    local calls, report = count_calls(host, dir, "^mprotect$")
    if not calls then return pending("strace could not attach: " .. report) end
    assert.is_true(calls < 20, ("%d mprotect calls for one reload:\n%s"):format(calls, report))
  end)
end)
