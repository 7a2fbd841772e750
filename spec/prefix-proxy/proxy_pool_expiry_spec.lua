-- limits.keepalive_expiry: an upstream connection idle in the pool that long is closed, counted
-- from its last stay in the pool, not its first. The pool leaves a connection's timer running
-- while the connection is taken and checks the deadline when it fires (issue 17), so a
-- connection reused before its first deadline must outlive that deadline and still go later.
local helpers = require "helpers"
local S = require "status_support"
local socket = require "socket"

local PROXY = [[
local relay = require "relay"
local app = relay.new { name = "expiring" }
app:mount("/app", relay.proxy { target_base_url = "http://127.0.0.1:%d", limits = { keepalive_expiry = 2 } })
return app
]]

describe("prefix proxy, idle upstream connections", function()
  local origin, proxy, admin

  setup(function()
    origin = helpers.start("demo")
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/expiring.lua", PROXY:format(origin.port))
    admin = helpers.free_port()
    proxy = helpers.start(dir .. "/expiring.lua", { flags = { "--admin-listen", "127.0.0.1:" .. admin } })
  end)

  teardown(function()
    if proxy then assert.equal(0, proxy:stop(), proxy:log():sub(-3000)) end
    if origin then assert.equal(0, origin:stop(), origin:log():sub(-3000)) end
  end)

  local function idle()
    return S.json(admin).upstreams.idle_by_upstream["127.0.0.1:" .. origin.port] or 0
  end

  it("closes a connection keepalive_expiry after its last use, not its first", function()
    assert.equal(200, proxy:get("/app/count").status)
    assert.equal(1, idle())
    helpers.sleep(1.2)
    assert.equal(200, proxy:get("/app/count").status)
    local last = socket.gettime()
    helpers.sleep(1.2) -- past the first stay's deadline (2 s), within the second's
    assert.equal(1, idle(), "closed 2 s after its first stay in the pool")
    helpers.wait_until(function() return idle() == 0 end, 10, "the idle connection to be closed")
    local after = socket.gettime() - last
    assert.is_true(after >= 1.9, "closed " .. after .. " s after its last use")
  end)
end)
