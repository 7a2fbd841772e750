-- Binary upgrade (`relayhost upgrade`, SIGUSR2): the binary on disk takes over the listening
-- socket; the old process finishes what it has in flight and exits; a new binary that cannot
-- start changes nothing.
local helpers = require "helpers"

local SCRIPT = [[
local relay = require "relay"
local app = relay.new { name = "upgrade" }
app:get("/pid", function(_, res) res:send(200, tostring(relay.pid())) end)
app:get("/slow", function(_, res) relay.sleep(1.0); res:send(200, "slow " .. relay.pid()) end)
return app
]]

describe("relayhost upgrade", function()
  local dir, bin, script

  -- Installs a binary at bin the way a package manager does: a new file renamed into place.
  local function install(from)
    assert(os.execute(("cp %q %q.new && chmod +x %q.new && mv %q.new %q"):format(from, bin, bin, bin, bin)))
  end

  local function current_pid(pid_file) return tonumber((helpers.read_file(pid_file) or ""):match("%d+")) end

  local function pid_alive(pid) return os.execute(("kill -0 %d 2>/dev/null"):format(pid)) == 0 end

  before_each(function()
    dir = helpers.tmpdir()
    bin = dir .. "/relayhost"
    install(helpers.bin())
    script = dir .. "/app.lua"
    helpers.write_file(script, SCRIPT)
  end)

  local function stop_successor(host)
    local pid = current_pid(host.pid_file)
    if pid then os.execute(("kill -TERM %d"):format(pid)) end
    helpers.wait_until(function() return not pid or not pid_alive(pid) end, 10, "the successor to exit")
  end

  it("hands the listener to the new binary while the old one finishes its requests", function()
    local host = helpers.start(script, { bin = bin, flags = { "--drain-timeout", "10" } })
    local old = host.pid
    local slow = host:client(10)
    assert(slow:send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"))
    install(helpers.bin())
    local rc, out, err = helpers.run { "upgrade", "--pid-file", host.pid_file }
    assert.equal(0, rc, err)
    assert.matches("pid %d+ serves; pid " .. old .. " drains", out)
    local new = current_pid(host.pid_file)
    assert.not_equal(old, new)
    -- the port is the same socket: fresh connections reach the new process
    helpers.wait_until(function() local r = host:get("/pid"); return r.status == 200 and tonumber(r.body) == new end,
      15, "the new process to answer")
    local res = slow:read_response()
    assert.equal(200, res.status)
    assert.equal("slow " .. old, res.body) -- the request in flight finished in the old process
    slow:close()
    assert.equal(0, host:stop(nil, 10)) -- old: already draining; it exits 0 by itself
    assert.truthy(host:log():match('"event":"upgraded"'))
    assert.equal(200, host:get("/pid").status)
    stop_successor(host)
  end)

  it("loses no request on fresh connections while it upgrades", function()
    local host = helpers.start(script, { bin = bin })
    local out = dir .. "/statuses"
    -- a real client hammering the port over new connections through the whole upgrade
    os.execute(("sh -c 'for i in $(seq 1 200); do curl -s -o /dev/null -w \"%%{http_code}\\n\" %s; done > %s; echo done >> %s' &")
      :format(host:url("/pid"), out, out))
    helpers.wait_until(function() local f = io.open(out); local n = f and #f:read("*a") or 0; if f then f:close() end; return n > 100 end,
      30, "the load to start")
    local rc, _, err = helpers.run { "upgrade", "--pid-file", host.pid_file }
    assert.equal(0, rc, err)
    assert.equal(0, host:stop(nil, 10))
    local text = helpers.wait_until(function()
      local f = io.open(out); local t = f and f:read("*a"); if f then f:close() end
      return t and t:match("done\n$") and t end, 90, "the load to finish")
    local ok, bad = 0, {}
    for code in text:gmatch("(%d+)\n") do
      if code == "200" then ok = ok + 1 else bad[#bad + 1] = code end
    end
    assert.equal(200, ok, "failed: " .. table.concat(bad, ","))
    stop_successor(host)
  end)

  it("keeps serving and reports why when the new binary cannot start", function()
    local host = helpers.start(script, { bin = bin })
    helpers.write_file(bin .. ".broken", "#!/bin/sh\necho 'not relayhost' >&2\nexit 3\n")
    install(bin .. ".broken")
    local rc, _, err = helpers.run { "upgrade", "--pid-file", host.pid_file }
    assert.equal(1, rc)
    assert.matches("upgrade failed: the new binary exited with status 3", err)
    assert.equal(host.pid, current_pid(host.pid_file))
    assert.equal(tostring(host.pid), host:get("/pid").body)
    assert.equal(0, host:stop())
  end)

  it("upgrades --workers: a new parent's workers take the port, the old ones drain", function()
    local host = helpers.start(script, { bin = bin, flags = { "--workers", "2" } })
    local old = host.pid
    local rc, _, err = helpers.run { "upgrade", "--pid-file", host.pid_file }
    assert.equal(0, rc, err)
    assert.equal(0, host:stop(nil, 10)) -- the old parent exits once its workers drained
    local new = current_pid(host.pid_file)
    assert.not_equal(old, new)
    assert.is_true(pid_alive(new))
    assert.equal(200, helpers.wait_until(function()
      local ok, r = pcall(host.get, host, "/pid"); return ok and r.status end, 15, "the new workers"))
    stop_successor(host)
  end)

  it("says what is wrong with its own command line", function()
    local rc, _, err = helpers.run({ "upgrade" }, { RELAY_PID_FILE = "" })
    assert.equal(2, rc)
    assert.matches("%-%-pid%-file F is required", err)
    rc, _, err = helpers.run { "upgrade", "--pid-file", dir .. "/nothing.pid" }
    assert.equal(2, rc)
    assert.matches("no pid in it", err)
  end)
end)
