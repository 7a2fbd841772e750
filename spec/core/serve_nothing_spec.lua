-- relay.new{listen = false}: a one-shot run (the flag proxy's GENERATE_OFFLINE_CONFIG) binds
-- nothing, not even the --listen or --admin-listen it was given, so it runs beside a server that
-- holds those ports.
local helpers = require "spec.helpers"
local socket = require "socket"

local SCRIPT = [[
local relay = require "relay"
local app = relay.new { name = "once", listen = false }
app:get("/", function(_, res) res:send(200, "no") end)
app:on_init(function()
  relay.after(0, function() io.stdout:write("done\n"); io.stdout:flush(); os.exit(0) end)
end)
return app
]]

describe("a script that serves nothing", function()
  local dir, held, port
  setup(function()
    dir = helpers.tmpdir()
    helpers.write_file(dir .. "/once.lua", SCRIPT)
    held = assert(socket.bind("127.0.0.1", 0))
    port = select(2, held:getsockname())
  end)
  teardown(function() held:close() end)

  it("binds no listener, not the --listen or --admin-listen it is given", function()
    local at = "127.0.0.1:" .. port
    local rc, out, err = helpers.run({ dir .. "/once.lua", "--listen", at, "--admin-listen", at })
    assert.equal(0, rc, err)
    assert.equal("done\n", out)
    assert.is_nil(err:find('"event":"listening"', 1, true), err)
  end)

  it("refuses --workers above 1", function()
    local rc, _, err = helpers.run({ dir .. "/once.lua", "--workers", "2" })
    assert.are_not.equal(0, rc)
    assert.truthy(err:find("--workers 2 refused: this run serves nothing", 1, true), err)
  end)
end)
