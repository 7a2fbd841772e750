-- Hot reload, relayhost check / reload, drain and shutdown, against the built binary.
local helpers = require "helpers"

local function script(version, extra)
  return ([[
local relay = require "relay"
local app = relay.new { name = "reloadable" }
local hits = relay.shared("reload_spec")
app:get("/", function(_, res) res:send(200, "v%s") end)
app:get("/count", function(_, res) res:send(200, tostring(hits:incr("n", 1, 0))) end)
app:get("/slow", function(req, res)
  relay.sleep(tonumber(req.args.s) or 0.5)
  res:send(200, "slow v%s")
end)
app:get("/metrics", relay.metrics.handler)
%s
return app
]]):format(version, version, extra or "")
end

local function metric(host, name)
  local body = host:get("/metrics").body
  return tonumber(body:match("\n" .. name .. " ([%d%.e+-]+)"))
end

describe("relayhost check", function()
  local dir = helpers.tmpdir()

  it("exits 0 for a good script", function()
    helpers.write_file(dir .. "/good.lua", script(1))
    local rc, out = helpers.run { "check", dir .. "/good.lua" }
    assert.equal(0, rc)
    assert.matches("good%.lua: ok", out)
  end)

  it("names file and line of a syntax error", function()
    helpers.write_file(dir .. "/syntax.lua", "local relay = require 'relay'\nlocal x = = 1\n")
    local rc, _, err = helpers.run { "check", dir .. "/syntax.lua" }
    assert.not_equal(0, rc)
    assert.matches("syntax%.lua:2: ", err)
  end)

  it("names file and line of an error raised while loading", function()
    helpers.write_file(dir .. "/raise.lua", "local relay = require 'relay'\n\n\nerror('bad config')\n")
    local rc, _, err = helpers.run { "check", dir .. "/raise.lua" }
    assert.not_equal(0, rc)
    assert.matches("raise%.lua:4: bad config", err)
  end)

  it("runs on_init, whose failure fails the check", function()
    helpers.write_file(dir .. "/init.lua", script(1, "app:on_init(function() error('no database') end)"))
    local rc, _, err = helpers.run { "check", dir .. "/init.lua" }
    assert.not_equal(0, rc)
    assert.matches("init%.lua:%d+: no database", err)
  end)

  it("refuses a script that returns no app", function()
    helpers.write_file(dir .. "/noapp.lua", "return 42\n")
    local rc, _, err = helpers.run { "check", dir .. "/noapp.lua" }
    assert.not_equal(0, rc)
    assert.matches("must return an app", err)
  end)

  it("--help lists the script's flags with env vars and the host's flags", function()
    helpers.write_file(dir .. "/flags.lua", [[
local relay = require "relay"
local app = relay.new { name = "flagged", flags = { greeting = { default = "hi", help = "what to say" },
  max_conns = { default = 5, env = "MAXC", help = "a number" } } }
app:get("/", function(_, res) res:send(200, app.flags.greeting .. " " .. app.flags.max_conns) end)
return app
]])
    local rc, out = helpers.run { dir .. "/flags.lua", "--help" }
    assert.equal(0, rc)
    assert.matches("%-%-greeting VALUE", out)
    assert.matches("what to say  %[env FLAGS_GREETING%] %(default \"hi\"%)", out) -- the script is flags.lua
    assert.matches("%-%-max%-conns N", out)
    assert.matches("%[env MAXC%]", out)
    for _, f in ipairs { "listen", "workers", "log%-level", "admin%-listen", "trusted%-proxies",
                         "drain%-timeout", "tls%-cert", "tls%-key" } do
      assert.matches("%-%-" .. f, out)
    end
    local host = helpers.start(dir .. "/flags.lua", { flags = { "-greeting", "hey" }, env = { MAXC = "7" } })
    assert.equal("hey 7", host:get("/").body)
    assert.equal(0, host:stop())
  end)

  it("rejects an unknown flag", function()
    local rc, _, err = helpers.run { dir .. "/good.lua", "--no-such-flag=1" }
    assert.not_equal(0, rc)
    assert.matches("unknown flag %-%-no%-such%-flag", err)
  end)

  it("serves a bundled personality by name from any directory", function()
    local rc, out = helpers.run { "check", "demo" }
    assert.equal(0, rc)
    assert.matches("demo%.lua: ok", out)
  end)
end)

describe("hot reload", function()
  local dir, path, host

  -- The slow request has reached its handler (the metrics request is the other task).
  local function in_flight()
    helpers.wait_until(function() return (metric(host, "relayhost_lua_tasks") or 0) >= 2 end, 10, "the request in flight")
  end

  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/app.lua"
    helpers.write_file(path, script(1))
    host = helpers.start(path, { flags = { "--drain-timeout=1" } })
  end)

  after_each(function()
    assert.equal(0, host:stop())
  end)

  it("switches to the changed script with no failed request while a client loops 20,000 requests", function()
    local out = dir .. "/loop.out"
    local lua_path = os.getenv("LUA_PATH") or ""
    os.execute(("LUA_PATH='%s' luajit %s %d / 20000 %s &"):format(lua_path,
      helpers.fixture("loadloop.lua"), host.port, out))
    helpers.wait_until(function() return host:count("access") > 200 or helpers.read_file(out) end, 10)
    helpers.write_file(path, script(2))
    assert.is_true(host:reload())
    helpers.write_file(path, script(3))
    assert.is_true(host:reload())
    local summary = helpers.wait_until(function() return helpers.read_file(out) end, 60, "the load loop")
    assert.matches("failures=0\n", summary)
    assert.matches("bodies=v1|v2|v3\n", summary)
  end)

  it("keeps serving the old script when the new one is broken, and counts the failure", function()
    helpers.write_file(path, "local relay = require 'relay'\nlocal app = relay.new{}\napp:get('/', nil\n")
    local ok, line = host:reload()
    assert.is_false(ok)
    assert.matches("app%.lua:%d+: '%)' expected", line)
    assert.equal("v1", host:get("/").body)
    assert.equal(1, metric(host, "relayhost_reload_failures_total"))
  end)

  it("stops the timers a broken script started while loading, and frees its generation", function()
    helpers.write_file(path, [[
local relay = require "relay"
relay.every(0.05, function() relay.log.info("tick_from_broken_generation") end)
error("broken after starting a timer")
]])
    local ok = host:reload()
    assert.is_false(ok)
    helpers.sleep(0.5)
    assert.equal(0, host:count("tick_from_broken_generation"))
    assert.equal(1, metric(host, "relayhost_generations"))
    assert.equal("v1", host:get("/").body)
  end)

  it("relayhost reload reports the outcome through the pid file", function()
    helpers.write_file(path, script(2))
    local rc, out = helpers.run { "reload", "--pid-file", host.pid_file }
    assert.equal(0, rc)
    assert.matches("reloaded", out)
    assert.equal("v2", host:get("/").body)
    helpers.write_file(path, "local relay = require 'relay'\n\nerror('broken on purpose')\n")
    local rc2, _, err = helpers.run { "reload", "--pid-file", host.pid_file }
    assert.equal(1, rc2)
    assert.matches("app%.lua:3: broken on purpose", err)
    assert.equal("v2", host:get("/").body)
  end)

  it("shared dictionaries survive a reload", function()
    assert.equal("1", host:get("/count").body)
    assert.equal("2", host:get("/count").body)
    helpers.write_file(path, script(2))
    assert.is_true(host:reload())
    assert.equal("3", host:get("/count").body)
  end)

  it("a request in flight finishes on the generation that started it, which is then freed", function()
    local c = host:client()
    c:send("GET /slow?s=0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
    in_flight()
    helpers.write_file(path, script(2))
    assert.is_true(host:reload())
    assert.equal(2, metric(host, "relayhost_generations"))
    assert.equal("v2", host:get("/").body)
    local res = c:read_response()
    assert.equal(200, res.status)
    assert.equal("slow v1", res.body)
    c:close()
    helpers.wait_until(function() return metric(host, "relayhost_generations") == 1 end, 5, "the old generation to close")
  end)

  it("cancels a coroutine still running after --drain-timeout", function()
    local c = host:client()
    c:send("GET /slow?s=30 HTTP/1.1\r\nHost: x\r\n\r\n")
    in_flight()
    helpers.write_file(path, script(2))
    assert.is_true(host:reload())
    local t0 = os.time()
    local res = c:read_response()
    assert.equal(503, res.status)
    assert.is_true(os.time() - t0 <= 3)
    assert.matches('"event":"task_cancelled"', host:log())
    c:close()
    helpers.wait_until(function() return metric(host, "relayhost_generations") == 1 end, 5)
  end)
end)

-- systemd and container runtimes start a process with only 0-2 open: the reload rehearsal once
-- moved its result pipe onto fd 3, the loop's epoll there, and every reload failed.
describe("hot reload started with only stdin, stdout and stderr open", function()
  it("reloads", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/app.lua", script(1))
    local run = dir .. "/run.sh"
    helpers.write_file(run, ([[
for fd in $(ls /proc/$$/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done
%s %s/app.lua --listen 127.0.0.1:0 --drain-timeout=1 >%s/out 2>%s/log &
echo $! >%s/pid
]]):format(helpers.bin(), dir, dir, dir, dir))
    os.execute("bash " .. run .. " </dev/null")
    local pid = helpers.wait_until(function() return (helpers.read_file(dir .. "/pid") or ""):match("%d+") end, 5)
    finally(function() os.execute("kill " .. pid .. " 2>/dev/null") end)
    local log = function() return helpers.read_file(dir .. "/log") or "" end
    helpers.wait_until(function() return log():find('"event":"listening"', 1, true) end, 10, "the host to listen")
    helpers.write_file(dir .. "/app.lua", script(2))
    os.execute("kill -HUP " .. pid)
    helpers.wait_until(function() return log():find('"event":"reload', 1, true) end, 10, "the reload's outcome")
    assert.falsy(log():find('"event":"reload_failed"', 1, true), log())
    assert.truthy(log():find('"event":"reloaded"', 1, true), log())
  end)
end)

describe("shutdown", function()
  it("SIGTERM stops accepting, lets a request in flight finish, and exits 0", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/app.lua", script(1))
    local host = helpers.start(dir .. "/app.lua")
    local c = host:client()
    c:send("GET /slow?s=0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
    helpers.wait_until(function() return (metric(host, "relayhost_lua_tasks") or 0) >= 2 end, 10)
    host:signal("TERM")
    helpers.sleep(0.1)
    assert.is_nil(require("relay.test").connect(host.port))
    local res = c:read_response()
    assert.equal(200, res.status)
    assert.equal("slow v1", res.body)
    assert.equal("close", res.headers.connection)
    c:close()
    assert.equal(0, host:stop())
  end)

  -- Closing libuv's signal handle restores SIGTERM's default action for a moment; a second
  -- SIGTERM then (a supervisor repeating itself, CI's host:stop) once ended the exit with 143.
  it("exits 0 while SIGTERMs keep arriving through the whole shutdown", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/app.lua", script(1))
    local host = helpers.start(dir .. "/app.lua")
    os.execute(("(for i in $(seq 1 20000); do kill -TERM %d 2>/dev/null || exit 0; done) &"):format(host.pid))
    assert.equal(0, helpers.wait_until(function() return host:exited() end, 10, "the host to exit"))
  end)

  it("answers the first request of a connection accepted before SIGTERM that had sent nothing yet", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/app.lua", script(1))
    local host = helpers.start(dir .. "/app.lua")
    local fresh, idle = host:client(), host:client()
    assert.equal(200, idle:get("/").status) -- a keep-alive connection, idle from now on
    helpers.sleep(0.1)
    host:signal("TERM")
    helpers.sleep(0.2)
    -- the idle keep-alive one was closed (a client retries on those); the fresh one still counts
    fresh:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    local res = fresh:read_response()
    assert.equal(200, res.status)
    assert.equal("v1", res.body)
    assert.equal("close", res.headers.connection)
    fresh:close()
    idle:close()
    assert.equal(0, host:stop())
  end)
  it("runs app:on_retire in the replaced generation, and SIGTERM ends a replaced generation's work at once", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/app.lua", [[
local relay = require "relay"
local app = relay.new { name = "retire" }
app:get("/", function(_, res) res:send(200, "gen " .. relay.generation()) end)
app:on_init(function() relay.after(0, function() relay.sleep(600) end) end) -- background work
app:on_retire(function(a) relay.log.info("retired", { generation = relay.generation(), app = a.name }) end)
return app
]])
    local host = helpers.start(dir .. "/app.lua", { flags = { "--drain-timeout=300" } })
    assert.is_true(host:reload())
    local retired = host:log():match('[^\n]*"event":"retired"[^\n]*')
    assert.matches('"generation":1', retired)
    assert.matches('"app":"retire"', retired)
    assert.equal("gen 2", host:get("/").body)
    -- the first generation still drains (its background task runs for 600 s), but SIGTERM does
    -- not wait for it: before, the process ran on until that generation's 300 s drain deadline
    local t0 = require("socket").gettime()
    assert.equal(0, host:stop(nil, 10))
    assert.is_true(require("socket").gettime() - t0 < 5)
    assert.equal(1, host:count("retired")) -- not at shutdown
  end)
end)
