-- --workers N: N processes on one port, reloaded together through the parent, restarted when
-- they die, stopped together.
local helpers = require "helpers"

describe("--workers", function()
  local dir, path, host

  local function script(version)
    return ([[
local relay = require "relay"
local app = relay.new { name = "workers" }
app:get("/", function(_, res) res:send(200, "v%d " .. relay.pid()) end)
return app
]]):format(version)
  end

  -- Versions and worker pids seen over n requests on fresh connections.
  local function sample(n)
    local pids, versions = {}, {}
    for _ = 1, n do
      -- a connection in a dying worker's accept queue may be reset: that one is asked again
      local res = helpers.wait_until(function() local ok, r = pcall(host.get, host, "/"); return ok and r end, 5, "an answer")
      local body = res.body
      local v, pid = body:match("^(v%d+) (%d+)$")
      versions[v] = true
      pids[pid] = true
    end
    return pids, versions
  end

  local function count(t) local k = 0 for _ in pairs(t) do k = k + 1 end return k end

  setup(function()
    dir = helpers.tmpdir()
    path = dir .. "/app.lua"
    helpers.write_file(path, script(1))
    host = helpers.start(path, { flags = { "--workers", "2" } })
  end)

  teardown(function()
    assert.equal(0, host:stop())
  end)

  it("serves from two processes on one port", function()
    helpers.wait_until(function() return count((sample(20))) == 2 end, 10, "both workers to answer")
  end)

  it("reloads every worker through the parent, and reports the outcome", function()
    helpers.write_file(path, script(2))
    local rc = helpers.run { "reload", "--pid-file", host.pid_file }
    assert.equal(0, rc)
    helpers.wait_until(function() local _, v = sample(20); return v.v2 and not v.v1 end, 10, "both on v2")
    helpers.write_file(path, "local relay = require 'relay'\nerror('broken')\n")
    local rc2, _, err = helpers.run { "reload", "--pid-file", host.pid_file }
    assert.equal(1, rc2)
    assert.matches("app%.lua:2: broken", err)
    local _, v = sample(10)
    assert.is_true(v.v2)
    helpers.write_file(path, script(2))
  end)

  it("reloads both workers under load without failing a request, and drains both at SIGTERM", function()
    local dir2 = helpers.tmpdir()
    local app = dir2 .. "/app.lua"
    local function v(n)
      return ([[
local relay = require "relay"
local app = relay.new { name = "workers-load" }
app:get("/", function(_, res) res:send(200, "v%d") end)
app:get("/slow", function(_, res) relay.sleep(1.5); res:send(200, "slow done") end)
return app
]]):format(n)
    end
    helpers.write_file(app, v(1))
    local h = helpers.start(app, { flags = { "--workers", "2", "--drain-timeout", "10" } })
    local out = dir2 .. "/codes"
    -- a real client on fresh connections all along (keep-alive would pin one worker)
    os.execute(("sh -c 'for i in $(seq 1 300); do curl -s -o /dev/null -w \"%%{http_code}\\n\" %s; done > %s; echo done >> %s' &")
      :format(h:url("/"), out, out))
    for n = 2, 6 do
      helpers.write_file(app, v(n))
      assert.equal(0, (helpers.run { "reload", "--pid-file", h.pid_file }))
      helpers.sleep(0.2)
    end
    local text = helpers.wait_until(function()
      local t = helpers.read_file(out); return t and t:match("done\n$") and t end, 90, "the load to finish")
    local ok, bad = 0, {}
    for code in text:gmatch("(%d+)\n") do if code == "200" then ok = ok + 1 else bad[#bad + 1] = code end end
    assert.equal(300, ok, "failed: " .. table.concat(bad, ","))
    -- SIGTERM with a request in flight in one worker: it finishes, then both exit
    local slow = h:client(10)
    assert(slow:send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"))
    helpers.sleep(0.3)
    h:signal("TERM")
    local res = slow:read_response()
    assert.equal(200, res.status)
    assert.equal("slow done", res.body)
    slow:close()
    assert.equal(0, h:stop(nil, 15))
  end)

  it("restarts a worker that dies", function()
    local pids = sample(20)
    local victim = next(pids)
    os.execute("kill -KILL " .. victim)
    helpers.wait_until(function() return not helpers.read_file("/proc/" .. victim .. "/status") end, 5)
    local res = helpers.wait_until(function() local ok, r = pcall(host.get, host, "/"); return ok and r end, 5, "the other worker") -- it serves meanwhile
    assert.equal("v2", res.body:match("^(v%d+)"))
    helpers.wait_until(function()
      local now = sample(20)
      return count(now) == 2 and not now[victim]
    end, 10, "a new worker in place of the dead one")
    assert.matches('"event":"worker_exited"', host:log())
  end)

  it("is refused, with the personality's reason, for a script whose state lives in its process", function()
    local stateful = helpers.tmpdir() .. "/stateful.lua"
    helpers.write_file(stateful, [[
local relay = require "relay"
local app = relay.new { name = "stateful", flags = { redis = { default = "" } },
  single_process = function(flags)
    if flags.redis == "" then return "its sessions live in this process; give --redis so workers share them" end
  end }
app:get("/", function(_, res) res:send(200, "ok") end)
return app
]])
    local rc, _, err = helpers.run { stateful, "--workers", "2", "--listen", "127.0.0.1:0" }
    assert.equal(1, rc)
    assert.matches("%-%-workers 2 refused: its sessions live in this process; give %-%-redis", err)
    local ok = helpers.start(stateful, { flags = { "--workers", "2", "--redis", "redis://127.0.0.1:1" } })
    assert.equal(200, ok:get("/").status)
    assert.equal(0, ok:stop())
    local one = helpers.start(stateful)
    assert.equal(200, one:get("/").status)
    assert.equal(0, one:stop())
  end)

  it("is refused for the stateful personalities unless their state meets through Redis", function()
    local rc, _, err = helpers.run { "flag-proxy", "--workers", "2", "--offline", "--config-dir",
      "examples/flag-proxy/config", "--port", "17999", "--auth-secret", "a-secret-for-the-spec" }
    assert.equal(1, rc)
    assert.matches("%-%-workers 2 refused: .*set REDIS_ADDRESS", err)
    rc, _, err = helpers.run { "workspace-relay", "--workers", "2" }
    assert.equal(1, rc)
    assert.matches("%-%-workers 2 refused: .*RELAY_BACKPLANE_MODE=redis", err)
    rc, _, err = helpers.run { "git-tunnel/server", "--workers", "2", "--tokens", "t" }
    assert.equal(1, rc)
    assert.matches("%-%-workers 2 refused: a tunnel lives in the process that accepted it", err)
  end)
end)
