-- The banner says what was bound and a URL that reaches it (issue 20: with --listen :8686 it
-- printed only "serving at http://127.0.0.1:8686/" while it listened on every interface).
local helpers = require "helpers"

local function stdout_line(host, what)
  helpers.wait_until(function() return host:stdout():match(what) end, 5, what)
  return host:stdout():match("[^\n]*" .. what .. "[^\n]*")
end

describe("banner", function()
  it("names the wildcard it bound and a loopback URL for this machine (--listen :PORT)", function()
    local host = helpers.start("demo", { listen = ":0" })
    local p = host.port
    local line = stdout_line(host, "listening on")
    assert.matches(("listening on 0%%.0%%.0%%.0:%d %%(every interface%%), serving at http://127%%.0%%.0%%.1:%d/ from this machine"):format(p, p), line)
    assert.matches(('"event":"listening","listen":"0%%.0%%.0%%.0:%d"'):format(p), host:log())
    assert.equal(200, host:get("/").status)
    assert.equal(0, host:stop())
  end)

  it("names an IPv6 wildcard as bound", function()
    local host = helpers.start("demo", { listen = "[::]:0" })
    local line = stdout_line(host, "listening on")
    assert.matches(("listening on %%[::%%]:%d %%(every interface%%), serving at http://%%[::1%%]:%d/"):format(host.port, host.port), line)
    assert.equal(0, host:stop())
  end)

  it("a script's default listener (as the flag proxy's 0.0.0.0:$PORT) and --admin-listen are announced as bound", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/wild.lua", [[
local relay = require "relay"
local app = relay.new { name = "wild", listen = function() return "0.0.0.0:0" end }
app:get("/", function(_, res) res:send(200, "ok") end)
return app
]])
    local host = helpers.start(dir .. "/wild.lua", { listen = false, flags = { "--admin-listen=127.0.0.1:0" } })
    local admin = host.listeners.admin
    assert.is_number(admin)
    assert.matches(("listening on 0%%.0%%.0%%.0:%d %%(every interface%%)"):format(host.port), stdout_line(host, "wild%.lua listening"))
    assert.matches(("%%-%%-admin%%-listen listening on 127%%.0%%.0%%.1:%d, serving at http://127%%.0%%.0%%.1:%d/$"):format(admin, admin),
                   stdout_line(host, "admin%-listen"))
    assert.equal(0, host:stop())
  end)

  it("a specific address is printed as it is, with its own URL", function()
    local host = helpers.start("demo")
    local line = stdout_line(host, "listening on")
    assert.matches(("listening on 127%%.0%%.0%%.1:%d, serving at http://127%%.0%%.0%%.1:%d/ %%(pid"):format(host.port, host.port), line)
    assert.equal(0, host:stop())
  end)
end)
