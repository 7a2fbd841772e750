-- The process lifecycle under hostile or careless operation (issues 14 and 15): a reload whose
-- script never returns, overlapping reloads, a --workers parent killed with SIGKILL, a second
-- start on a live pid file, and a new binary that never gets ready. Everything is driven the
-- way an operator drives it: the built binary, real signals, `relayhost reload|upgrade`.
local helpers = require "helpers"
local socket = require "socket"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function script(version, extra)
  return ([[
local relay = require "relay"
local app = relay.new { name = "lifecycle" }
app:get("/", function(_, res) res:send(200, "v%s " .. relay.pid()) end)
app:get("/slow", function(req, res) relay.sleep(tonumber(req.args.s) or 1); res:send(200, "slow v%s") end)
app:get("/metrics", relay.metrics.handler)
%s
return app
]]):format(version, version, extra or "")
end

local function metric(host, name)
  return tonumber(host:get("/metrics").body:match("\n" .. name .. " ([%d%.e+-]+)"))
end

-- Hosts a test started, and pids it must not leave behind when an assertion fails first.
local started, strays = {}, {}
local start = function(path, opts)
  local h = helpers.start(path, opts)
  started[#started + 1] = h
  return h
end
after_each(function()
  for _, h in ipairs(started) do
    if not h:exited() then
      local p = io.popen("pgrep -P " .. h.pid) -- its workers, should it not stop them
      for pid in p:read("*a"):gmatch("%d+") do strays[#strays + 1] = pid end
      p:close()
      h:stop(nil, 2)
    end
  end
  for _, pid in ipairs(strays) do os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
  started, strays = {}, {}
end)

-- A zombie has exited: whoever adopted an orphan reaps it in its own time.
local function alive(pid)
  local stat = helpers.read_file("/proc/" .. pid .. "/stat")
  return stat ~= nil and not stat:match("^%d+ %b() [ZX]")
end

-- The pids of a --workers 2 host's workers, once both answer ("listening" means one accepts: the
-- other may still be loading the script, from disk).
local function both_workers(host)
  local workers, n = {}, 0
  helpers.wait_until(function()
    local pid = tonumber(host:get("/").body:match("(%d+)$"))
    if not workers[pid] then workers[pid], n = true, n + 1 end
    return n == 2
  end, 10, "both workers")
  return workers
end

-- `relayhost ARGS` in the background; returns a function that gives rc, stdout, stderr once it
-- has exited (nil before).
local function run_bg(args, env)
  local dir = helpers.tmpdir()
  local quoted = {}
  for _, a in ipairs(args) do quoted[#quoted + 1] = q(a) end
  local prefix = ""
  for k, v in pairs(env or {}) do prefix = prefix .. k .. "=" .. q(v) .. " " end
  os.execute("sh -c " .. q(("%s%s %s >%s/out 2>%s/err; echo $? >%s/rc"):format(prefix, q(helpers.bin()),
    table.concat(quoted, " "), dir, dir, dir)) .. " >/dev/null 2>&1 &")
  return function()
    local rc = tonumber(helpers.read_file(dir .. "/rc") or "")
    if rc then return rc, helpers.read_file(dir .. "/out") or "", helpers.read_file(dir .. "/err") or "" end
  end
end

local function wait_bg(done, seconds)
  local rc, out, err
  helpers.wait_until(function() rc, out, err = done(); return rc end, seconds or 20, "the command to finish")
  return rc, out, err
end

describe("a reload whose script never returns", function()
  local dir, path

  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/app.lua"
    helpers.write_file(path, script(1))
  end)

  -- The watchdog at 1 s: before the fix it ended the whole process at 2 s.
  local function never_returns(host, loop_script, deadline)
    local c = host:client(20)
    assert(c:send("GET /slow?s=3 HTTP/1.1\r\nHost: x\r\n\r\n"))
    helpers.sleep(0.2)
    helpers.write_file(path, loop_script)
    local t0 = socket.gettime()
    local rc, _, err = helpers.run { "reload", "--pid-file", host.pid_file, "--timeout", "15" }
    local took = socket.gettime() - t0
    assert.equal(1, rc, err)
    assert.matches("did not finish loading within " .. deadline .. " s %(%-%-reload%-timeout%)", err)
    assert.is_true(took < 10, "took " .. took)
    local res = c:read_response()
    assert.equal(200, res.status)        -- the request in flight completed
    assert.equal("slow v1", res.body)
    c:close()
    assert.is_nil(host:exited())
    assert.matches("^v1 ", host:get("/").body)
    assert.matches('"event":"reload_failed"[^\n]*within ' .. deadline .. ' s', host:log())
    assert.is_nil(host:log():match('"event":"watchdog_exit"'))
    -- and the next reload of a good script works
    helpers.write_file(path, script(2))
    assert.equal(0, (helpers.run { "reload", "--pid-file", host.pid_file }))
    assert.matches("^v2 ", host:get("/").body)
  end

  it("at the top of the script: reload_failed naming the deadline, and the process serves on", function()
    local host = start(path, { env = { RELAY_WATCHDOG = "1" } })
    never_returns(host, "local relay = require 'relay'\nwhile true do end\n", 1)
    assert.equal(1, metric(host, "relayhost_reload_failures_total"))
    assert.equal(0, host:stop())
  end)

  it("in on_init, with --reload-timeout", function()
    local host = start(path, { env = { RELAY_RELOAD_TIMEOUT = "0.5" } })
    never_returns(host, script(9, "app:on_init(function() while true do end end)"), 0.5)
    assert.equal(0, host:stop())
  end)

  it("with --workers 2: the parent's check has the deadline too, and no worker is touched", function()
    local host = start(path, { flags = { "--workers", "2" }, env = { RELAY_RELOAD_TIMEOUT = "1" } })
    both_workers(host)
    helpers.write_file(path, "local relay = require 'relay'\nwhile true do end\n")
    local rc, _, err = helpers.run { "reload", "--pid-file", host.pid_file, "--timeout", "15" }
    assert.equal(1, rc, err)
    assert.matches("did not finish loading within 1 s", err)
    for _ = 1, 10 do assert.matches("^v1 ", host:get("/").body) end
    helpers.wait_until(function() -- counted by each worker (whichever answers)
      for _ = 1, 6 do if metric(host, "relayhost_reload_failures_total") ~= 1 then return false end end
      return true
    end, 5, "the failure in both workers' metrics")
    helpers.write_file(path, script(2))
    assert.equal(0, (helpers.run { "reload", "--pid-file", host.pid_file }))
    helpers.wait_until(function() return host:get("/").body:match("^v2 ") end, 5, "v2")
    assert.equal(0, host:stop())
  end)
end)

describe("overlapping reloads", function()
  -- v2 takes 3 s to load; v3 is broken. The second reload must not report the first's outcome.
  local function slow(version, marker)
    return script(version, ("io.open(%q, 'w'):close() os.execute('sleep 3')"):format(marker))
  end
  -- slow to fail too: before, the second command read the first's "ok" while the second ran
  local broken = "local relay = require 'relay'\nos.execute('sleep 1') error('broken v3')\n"

  local function overlap(flags)
    local dir = helpers.tmpdir()
    local path = dir .. "/app.lua"
    helpers.write_file(path, script(1))
    local host = start(path, { flags = flags })
    if flags then both_workers(host) end
    helpers.write_file(path, slow(2, dir .. "/loading"))
    local first = run_bg { "reload", "--pid-file", host.pid_file, "--timeout", "20" }
    helpers.wait_until(function() return helpers.read_file(dir .. "/loading") end, 10, "the slow load to start")
    helpers.write_file(path, broken)
    local rc2, out2, err2 = helpers.run { "reload", "--pid-file", host.pid_file, "--timeout", "20" }
    local rc1, out1, err1 = wait_bg(first)
    return host, rc1, out1 .. err1, rc2, out2 .. err2
  end

  it("each `relayhost reload` gets its own reload's outcome", function()
    local host, rc1, msg1, rc2, msg2 = overlap()
    assert.equal(1, rc2, msg2)
    assert.matches("app%.lua:2: broken v3", msg2)
    -- the first one's script was replaced while it was checked: it did not load what it checked
    if rc1 == 0 then assert.matches("^v2 ", host:get("/").body) else assert.equal(1, rc1, msg1) end
    assert.is_nil(host:exited())
    assert.equal(0, host:stop())
  end)

  it("with --workers 2: a success means the workers run what the parent checked", function()
    local host, rc1, msg1, rc2, msg2 = overlap { "--workers", "2" }
    assert.equal(1, rc2, msg2)
    assert.matches("app%.lua:2: broken v3", msg2)
    assert.equal(1, rc1, msg1)
    assert.matches("changed while", msg1)
    for _ = 1, 10 do assert.matches("^v1 ", host:get("/").body) end
    assert.equal(0, host:stop())
  end)
end)

describe("--workers parent killed with SIGKILL", function()
  it("its workers exit, and a new start replaces the stale pid file", function()
    local dir = helpers.tmpdir()
    local path = dir .. "/app.lua"
    helpers.write_file(path, script(1))
    local host = start(path, { flags = { "--workers", "2" } })
    local workers = both_workers(host)
    for pid in pairs(workers) do strays[#strays + 1] = pid end
    os.execute("kill -KILL " .. host.pid)
    local ok = pcall(helpers.wait_until, function()
      for pid in pairs(workers) do if alive(pid) then return false end end
      return true
    end, 5, "the orphaned workers to exit")
    for pid in pairs(workers) do os.execute("kill -KILL " .. pid .. " 2>/dev/null") end -- no leftovers
    assert.is_true(ok, "workers outlived their parent")
    -- the pid file still names the dead parent: a new start takes it over
    assert.equal(host.pid, tonumber(helpers.read_file(host.pid_file):match("%d+")))
    local again = run_bg { path, "--listen=127.0.0.1:0", "--pid-file=" .. host.pid_file }
    local pid = helpers.wait_until(function()
      local p = tonumber((helpers.read_file(host.pid_file) or ""):match("%d+"))
      return p ~= host.pid and p
    end, 10, "the new start to write the pid file")
    os.execute("kill -TERM " .. pid)
    assert.equal(0, (wait_bg(again)))
  end)

  it("a start refuses a pid file whose process is alive, naming the file and the pid", function()
    local dir = helpers.tmpdir()
    local path = dir .. "/app.lua"
    helpers.write_file(path, script(1))
    local host = start(path)
    local out = dir .. "/second"
    os.execute(("timeout 10 %s %s --listen=127.0.0.1:0 --pid-file=%s >%s.out 2>%s.err; echo $? >%s.rc"):format(
      q(helpers.bin()), q(path), q(host.pid_file), out, out, out))
    local rc = tonumber(helpers.read_file(out .. ".rc"))
    local err = helpers.read_file(out .. ".err")
    assert.equal(1, rc, err)
    assert.matches("%-%-pid%-file " .. host.pid_file:gsub("%p", "%%%0") .. ": pid " .. host.pid .. " is running", err)
    assert.equal(host.pid, tonumber(helpers.read_file(host.pid_file):match("%d+")))
    assert.matches("^v1 ", host:get("/").body)
    assert.equal(0, host:stop())
  end)
end)

describe("an upgrade to a binary that never gets ready", function()
  local function install(from, bin)
    assert(os.execute(("cp %q %q.new && chmod +x %q.new && mv %q.new %q"):format(from, bin, bin, bin, bin)))
  end

  local function case(flags)
    local dir = helpers.tmpdir()
    local bin = dir .. "/relayhost"
    install(helpers.bin(), bin)
    local path = dir .. "/app.lua"
    helpers.write_file(path, script(1))
    -- long enough for a good binary to be ready (its workers load the script), even under ASan
    local deadline = helpers.asan() and 4 or 2
    local host = start(path, { bin = bin, flags = flags, env = { RELAY_UPGRADE_TIMEOUT = tostring(deadline) } })
    helpers.write_file(dir .. "/hang", "#!/bin/sh\nexec sleep 30\n")
    install(dir .. "/hang", bin)
    local first = run_bg { "upgrade", "--pid-file", host.pid_file, "--timeout", "10" }
    helpers.sleep(0.3)
    host:signal("USR2") -- while the first is in progress: said in the log
    local rc, _, err = wait_bg(first)
    assert.equal(1, rc, err)
    assert.matches("upgrade failed: the new binary was not ready within " .. deadline .. " s %(%-%-upgrade%-timeout%); it was killed", err)
    assert.matches('"event":"upgrade_in_progress"', host:log())
    assert.equal(host.pid, tonumber(helpers.read_file(host.pid_file):match("%d+")))
    assert.matches("^v1 ", host:get("/").body)
    -- the next upgrade runs
    install(helpers.bin(), bin)
    local rc2, _, err2 = helpers.run { "upgrade", "--pid-file", host.pid_file, "--timeout", "10" }
    assert.equal(0, rc2, err2)
    assert.equal(0, host:stop(nil, 10))
    local new = tonumber(helpers.read_file(host.pid_file):match("%d+"))
    assert.not_equal(host.pid, new)
    os.execute("kill -TERM " .. new)
    helpers.wait_until(function() return not alive(new) end, 10, "the successor to exit")
  end

  it("is killed at --upgrade-timeout, reported failed, and the next upgrade runs", function() case() end)
  it("the same with --workers 2", function() case { "--workers", "2" } end)
end)

describe("a reload asked for while the host stops", function()
  it("is answered when the host exits, not left to time out", function()
    local dir = helpers.tmpdir()
    local path = dir .. "/app.lua"
    helpers.write_file(path, script(1))
    local host = start(path, { flags = { "--drain-timeout", "10" } })
    local c = host:client(10)
    assert(c:send("GET /slow?s=1 HTTP/1.1\r\nHost: x\r\n\r\n"))
    helpers.sleep(0.2)
    host:signal("TERM") -- draining: the request in flight has a second to go
    helpers.sleep(0.1)
    local t0 = socket.gettime()
    local rc, _, err = helpers.run { "reload", "--pid-file", host.pid_file, "--timeout", "20" }
    assert.equal(1, rc, err)
    assert.matches("the host stopped before this reload ran", err)
    assert.is_true(socket.gettime() - t0 < 5)
    assert.equal(200, c:read_response().status)
    c:close()
    assert.equal(0, host:stop())
  end)
end)

describe("a --workers worker restarted onto a script that never returns", function()
  it("is ended by the watchdog and restarted, logged, while the other serves on", function()
    local dir = helpers.tmpdir()
    local path = dir .. "/app.lua"
    helpers.write_file(path, script(1))
    local host = start(path, { flags = { "--workers", "2" }, env = { RELAY_WATCHDOG = "1" } })
    local victim = next(both_workers(host))
    helpers.write_file(path, "local relay = require 'relay'\nwhile true do end\n")
    os.execute("kill -KILL " .. victim)
    helpers.wait_until(function() return host:log():match('"event":"worker_exited"[^\n]*"status":70') end, 15,
      "the restarted worker to be ended by the watchdog")
    for _ = 1, 5 do assert.matches("^v1 ", host:get("/").body) end
    helpers.write_file(path, script(1))
    assert.equal(0, host:stop())
  end)
end)
