-- --trusted-proxies: behind a trusted hop the client is the last untrusted X-Forwarded-For
-- entry; from anyone else it is the socket peer, whatever headers say.
local helpers = require "helpers"
local cjson = require "cjson"

local function peer(host, xff)
  return cjson.decode(host:get("/headers", xff and { ["X-Forwarded-For"] = xff } or nil).body).peer
end

describe("client address", function()
  it("is the socket peer when no proxy is trusted", function()
    local host = helpers.start(helpers.fixture("basic.lua"))
    assert.equal("127.0.0.1", peer(host, "1.2.3.4"))
    assert.equal(0, host:stop())
  end)

  it("walks X-Forwarded-For from the right past trusted hops", function()
    local host = helpers.start(helpers.fixture("basic.lua"), { flags = { "--trusted-proxies", "127.0.0.0/8, 10.1.0.0/16" } })
    assert.equal("1.2.3.4", peer(host, "1.2.3.4"))
    assert.equal("5.6.7.8", peer(host, "1.2.3.4, 5.6.7.8, 10.1.2.3"))
    assert.equal("9.9.9.9", peer(host, "9.9.9.9, 10.1.0.1, 127.0.0.5"))
    assert.equal("10.1.0.1", peer(host, "10.1.0.1")) -- every hop trusted: the first one
    assert.equal("127.0.0.1", peer(host, nil))
    assert.equal(0, host:stop())
  end)

  it("refuses a malformed range at start", function()
    local rc, _, err = helpers.run { helpers.fixture("basic.lua"), "--trusted-proxies", "10.0.0.0/99", "--listen", "127.0.0.1:0" }
    assert.not_equal(0, rc)
    assert.matches("trusted%-proxies: '10.0.0.0/99' is not an address or CIDR range", err)
  end)
end)
