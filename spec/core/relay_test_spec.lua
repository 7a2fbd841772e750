-- relay.test's stop_all, and the spec helper's use of it: a spec file that fails before it stops
-- a host it started does not leave that relayhost running through the rest of the suite.
local helpers = require "helpers"

local function alive(pid)
  local stat = helpers.read_file("/proc/" .. pid .. "/stat")
  return stat ~= nil and not stat:match("^%d+ %b() Z") -- a zombie has ended
end

describe("relay.test.stop_all", function()
  it("kills the hosts still running, forgets them, and says how many", function()
    local a = helpers.start(helpers.fixture("basic.lua"))
    local b = helpers.start(helpers.fixture("basic.lua"))
    assert.equal(0, b:stop())
    assert.equal(1, helpers.stop_all())
    assert.truthy(a:exited(), "the running host was stopped")
    assert.is_false(alive(a.pid))
    assert.equal(0, helpers.stop_all())
  end)

  it("runs at the end of a spec file that failed with a host still running", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/leaves_host_spec.lua", ([[
local helpers = require "helpers"
describe("a spec that fails before it stops its host", function()
  it("fails", function()
    local host = helpers.start(%q)
    helpers.write_file(%q, tostring(host.pid))
    error("failed on purpose")
  end)
end)
]]):format(helpers.fixture("basic.lua"), dir .. "/pid"))
    local p = io.popen(("cd %q && luajit /usr/bin/busted --helper=spec/helpers.lua -o TAP %q 2>&1"):format(
      helpers.root, dir .. "/leaves_host_spec.lua"))
    local out = p:read("*a")
    p:close()
    local pid = assert(helpers.read_file(dir .. "/pid"), out)
    assert.truthy(out:find("failed on purpose", 1, true), out)
    assert.truthy(out:find("killed 1 relayhost process(es) it left running", 1, true), out)
    assert.is_false(alive(pid))
  end)
end)
