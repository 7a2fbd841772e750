-- relay.crypto, relay.base64, relay.uuid and relay.jwt against known answers (the checks run
-- inside the host, in the fixture's on_init).
local helpers = require "helpers"

describe("relay crypto helpers", function()
  it("give the known answers", function()
    local rc, out, err = helpers.run { "check", helpers.fixture("crypto_check.lua") }
    assert.equal(0, rc, err)
    assert.matches("crypto_check%.lua: ok", out)
  end)

  it("a wrong answer would fail the check, naming the line", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/bad.lua", [[
local relay = require "relay"
local app = relay.new {}
app:on_init(function() assert(relay.base64.encode("a") == "nope", "base64 of a") end)
return app
]])
    local rc, _, err = helpers.run { "check", dir .. "/bad.lua" }
    assert.not_equal(0, rc)
    assert.matches("bad%.lua:3: base64 of a", err)
  end)
end)
