-- relayhost's usage and its "no such script" answer name every bundled personality: the list in
-- core/cli/main.c is the folder scripts/, no more and no less.
local helpers = require "helpers"

local function bundled()
  local names = {}
  local p = io.popen("cd " .. helpers.root .. "/scripts && find . -name '*.lua' | sort")
  for line in p:lines() do names[#names + 1] = line:gsub("^%./", ""):gsub("%.lua$", "") end
  p:close()
  table.sort(names)
  return names
end

local function listed(text)
  -- the comma list of names that closes a parenthesis
  local list = assert(text:match("([%w%-/]+, [%w%-/, ]+)%)"), "no list of bundled names in:\n" .. text)
  local names = {}
  for name in list:gmatch("[^,%s]+") do names[#names + 1] = name end
  table.sort(names)
  return names
end

describe("relayhost's usage", function()
  it("lists every bundled personality", function()
    local _, out, err = helpers.run({})
    assert.same(bundled(), listed(out .. err))
  end)

  it("names them when a script is not found", function()
    local rc, _, err = helpers.run({ "no-such-personality" })
    assert.equal(2, rc)
    assert.matches("no such script", err)
    assert.same(bundled(), listed(err))
  end)
end)
