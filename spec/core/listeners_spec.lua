-- app:listener: a script serves some routes on a listener of their own beside --listen; each
-- route answers on the listener it names only (404 elsewhere), req.listener says where a request
-- came in, and the listener survives reloads and binary upgrades like --listen.
local helpers = require "helpers"

local SCRIPT = [[
local relay = require "relay"
local app = relay.new { name = "listeners", flags = { inner = { default = "" }, stray = { default = "" } } }
if app.flags.inner ~= "" then app:listener("inner", app.flags.inner) end
local inner = app.flags.inner ~= "" and "inner" or nil
app:get("/public", function(req, res) res:send(200, "public on " .. req.listener) end)
app:get("/private", function(req, res) res:send(200, "private on " .. req.listener) end, { listener = inner })
app:get("/both", function(req, res) res:send(200, "both on " .. req.listener) end, { listener = "*" })
app:get("/pid", function(_, res) res:send(200, tostring(relay.pid())) end, { listener = "*" })
if app.flags.stray ~= "" then app:get("/stray", function() end, { listener = app.flags.stray }) end
return app
]]

describe("app:listener", function()
  local dir, script

  before_each(function()
    dir = helpers.tmpdir()
    script = dir .. "/app.lua"
    helpers.write_file(script, SCRIPT)
  end)

  it("serves each route on the listener it names, 404 on the others", function()
    local host = helpers.start(script, { flags = { "--inner=127.0.0.1:0" } })
    local inner = host:on("inner")
    assert.not_equal(host.port, inner.port)
    assert.matches("listener 'inner' listening on 127%.0%.0%.1:" .. inner.port .. ", serving at http://127%.0%.0%.1:" .. inner.port .. "/", host:stdout())

    local res = host:get("/public")
    assert.equal(200, res.status)
    assert.equal("public on main", res.body)
    assert.equal(404, inner:get("/public").status)

    res = inner:get("/private")
    assert.equal(200, res.status)
    assert.equal("private on inner", res.body)
    res = host:get("/private")
    assert.equal(404, res.status)
    assert.equal("Not Found\n", res.body) -- the same answer as a path no route has

    assert.equal("both on main", host:get("/both").body)
    assert.equal("both on inner", inner:get("/both").body)
    assert.equal(404, inner:get("/nothing").status)
    assert.equal(0, host:stop())
  end)

  it("without listeners, every request is on main", function()
    local host = helpers.start(script)
    assert.equal("private on main", host:get("/private").body)
    assert.same({}, host.listeners)
    assert.equal(0, host:stop())
  end)

  it("refuses a route naming a listener that is not declared, and bad listener names", function()
    local rc, _, err = helpers.run { "check", script, "--stray=elsewhere" }
    assert.equal(1, rc)
    assert.matches("route GET /stray: listener 'elsewhere' is not declared", err)

    local bad = dir .. "/bad.lua"
    helpers.write_file(bad, 'local app = require("relay").new{}; app:listener("main", "127.0.0.1:0"); return app\n')
    rc, _, err = helpers.run { "check", bad }
    assert.equal(1, rc)
    assert.matches("name is letters, digits", err)
  end)

  it("says why a listener cannot be bound, and refuses --workers", function()
    local taken = helpers.start(script)
    -- a port in use is an error, for --listen too: a second host never quietly shares it
    local rc, _, err = helpers.run { script, "--listen=127.0.0.1:" .. taken.port }
    assert.equal(1, rc)
    assert.matches("listen 127%.0%.0%.1:" .. taken.port .. ": address already in use", err:lower())
    rc, _, err = helpers.run { script, "--listen=127.0.0.1:0", "--inner=127.0.0.1:" .. taken.port }
    assert.equal(1, rc)
    assert.matches("listener 'inner': ", err)
    rc, _, err = helpers.run { script, "--listen=127.0.0.1:0", "--inner=127.0.0.1:0", "--workers=2" }
    assert.equal(1, rc)
    assert.matches("%-%-workers 2 refused: the listener 'inner' %(app:listener%) is served by one process only", err)
    assert.equal(0, taken:stop())
  end)

  it("keeps the listener across a reload that tries to move it, with a warning", function()
    local host = helpers.start(script, { flags = { "--inner=127.0.0.1:0" } })
    local inner = host:on("inner")
    assert.is_true(host:reload())
    assert.equal("private on inner", inner:get("/private").body)
    assert.equal(0, host:count("reload_listeners_unchanged")) -- same setting: nothing to say

    helpers.write_file(script, (SCRIPT:gsub('app:listener%("inner", app%.flags%.inner%)', 'app:listener("inner", "127.0.0.2:0")')))
    assert.is_true(host:reload())
    assert.equal(1, host:count("reload_listeners_unchanged"))
    assert.equal("private on inner", inner:get("/private").body) -- still where it was bound
    assert.equal(404, host:get("/private").status)
    assert.equal(0, host:stop())
  end)

  it("hands the listener to the new binary on an upgrade", function()
    local bin = dir .. "/relayhost"
    assert(os.execute(("cp %q %q"):format(helpers.bin(), bin)))
    local host = helpers.start(script, { bin = bin, flags = { "--inner=127.0.0.1:0", "--drain-timeout=2" } })
    local inner = host:on("inner")
    local old = host.pid
    local rc, _, err = helpers.run { "upgrade", "--pid-file", host.pid_file }
    assert.equal(0, rc, err)
    local new = tonumber(helpers.read_file(host.pid_file):match("%d+"))
    assert.not_equal(old, new)
    helpers.wait_until(function()
      local r = inner:get("/pid")
      return r and r.status == 200 and tonumber(r.body) == new
    end, 15, "the new process to answer on the listener")
    assert.equal("private on inner", inner:get("/private").body)
    assert.equal(0, host:stop(nil, 10))
    os.execute(("kill -TERM %d"):format(new))
    helpers.wait_until(function() return os.execute(("kill -0 %d 2>/dev/null"):format(new)) ~= 0 end, 10,
      "the successor to exit")
  end)
end)
