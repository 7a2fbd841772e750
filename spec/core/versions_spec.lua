-- relay.versions (lua/relay/versions.lua): versions of items of lists replaced whole, and the
-- change events. Checked inside the host (`relayhost check` runs on_init): it keeps its state in
-- relay.shared and hashes with relay.crypto; a reload (a new versions object on the same dict)
-- keeps counting.
local helpers = require "helpers"

local CHECKS = [=[
local relay = require "relay"
local versions = require "relay.versions"
local app = relay.new {}
local KINDS = { { name = "flag", id = "feature" }, { name = "segment", id = "identifier" } }

local function same(want, got, what)
  local w, g = relay.json.canon(want), relay.json.canon(got)
  assert(w == g, what .. ": want " .. w .. ", got " .. g)
end

app:on_init(function()
  local dict = relay.shared("versions-spec")
  local v = versions.new(dict, KINDS)
  -- the first time a scope is seen: versions, no events
  local a, b, s = { feature = "a" }, { feature = "b", version = 7 }, { identifier = "s" }
  same({}, v:update("env1", { flag = { a, b }, segment = { s } }), "first")
  same({ 1, 7, 1 }, { a.version, b.version, s.version }, "first versions")
  -- unchanged content keeps its version; a change goes one up; new and gone items
  local a2, b2, c = { feature = "a" }, { feature = "b", on = true }, { feature = "c" }
  same({ { event = "patch", kind = "flag", id = "b", version = 8, scope = "env1" },
         { event = "create", kind = "flag", id = "c", version = 1, scope = "env1" },
         { event = "delete", kind = "segment", id = "s", version = 2, scope = "env1" } },
       v:update("env1", { flag = { a2, b2, c }, segment = {} }), "second")
  same({ 1, 8 }, { a2.version, b2.version }, "second versions")
  -- an item's own higher version wins; scopes apart
  local b3 = { feature = "b", on = false, version = 20 }
  same({ { event = "patch", kind = "flag", id = "b", version = 20, scope = "env1" },
         { event = "delete", kind = "flag", id = "c", version = 2, scope = "env1" } },
       v:update("env1", { flag = { { feature = "a" }, b3 } }), "own version")
  same({}, v:update("env2", { flag = { { feature = "b", on = true } } }), "another scope")
  -- a reload: a new object on the same dict goes on from what it holds
  local again = versions.new(relay.shared("versions-spec"), KINDS)
  local b4 = { feature = "b", on = "changed" }
  same({ { event = "patch", kind = "flag", id = "b", version = 21, scope = "env1" } },
       again:update("env1", { flag = { { feature = "a" }, b4 } }), "after a reload")
  -- an item's version that is not a whole number below 2^53 is not its own (it could not be
  -- kept as digits): the same config again changes nothing (fuzz_flag_lua/huge-version)
  local odd = { { feature = "x", version = 8.9e32 }, { feature = "y", version = 1.5 },
                { feature = "z", version = 2^53 - 1 } }
  v:update("env3", { flag = odd })
  same({ 1, 1, 2^53 - 1 }, { odd[1].version, odd[2].version, odd[3].version }, "odd versions")
  same({}, v:update("env3", { flag = { { feature = "x", version = 8.9e32 }, { feature = "y", version = 1.5 },
                                       { feature = "z", version = 2^53 - 1 } } }), "odd versions again")
  -- an id listed twice is its last entry (fuzz_flag_lua/duplicate-id): the same list again
  -- changes nothing, both entries carry one version, and the id gone is one delete
  local function dup() return { { identifier = "d", x = 1 }, { identifier = "d", x = 2 } } end
  v:update("env4", { segment = dup() })
  local d = dup()
  same({}, v:update("env4", { segment = d }), "duplicate ids again")
  same({ 1, 1 }, { d[1].version, d[2].version }, "duplicate ids' versions")
  same({ { event = "delete", kind = "segment", id = "d", version = 2, scope = "env4" } },
       v:update("env4", { segment = {} }), "duplicate id gone")
end)
return app
]=]

describe("relay.versions", function()
  it("gives items versions that go up when their content changes, with create/patch/delete events", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/versions_check.lua", CHECKS)
    local rc, out, err = helpers.run({ "check", dir .. "/versions_check.lua" })
    assert.equal(0, rc, out .. err)
  end)
end)
