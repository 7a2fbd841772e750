-- --listen and app:listener addresses, read by core/net/url's host:port form: a host name is
-- resolved at start-up (it was "host must be an IP address"), a bad address is refused naming
-- what was wrong, and a failed bind says which address it tried.
local helpers = require "helpers"
local socket = require "socket"

local basic = helpers.fixture("basic.lua")

local free_port = helpers.free_port

describe("listen addresses", function()
  it("serves on --listen localhost:PORT, announced by name", function()
    local port = free_port()
    local host = helpers.start(basic, { listen = "localhost:" .. port })
    assert.equal(port, host.port)
    -- the banner may be written just after the port accepts (seen empty once under ASan in CI)
    local banner = "serving at http://localhost:" .. port .. "/"
    helpers.wait_until(function() return host:stdout():find(banner, 1, true) end, 5, banner)
    local res = host:get("/")
    assert.equal(200, res.status)
    assert.equal("hello\n", res.body)
    assert.equal(0, host:stop())
  end)

  it("picks a free port for localhost:0, with --workers too", function()
    local host = helpers.start(basic, { listen = "localhost:0", flags = { "--workers=2" } })
    assert.is_true(host.port > 0)
    assert.equal(200, host:get("/").status)
    assert.equal(0, host:stop())
  end)

  it("resolves an app:listener's name", function()
    local dir = helpers.tmpdir()
    local port = free_port()
    helpers.write_file(dir .. "/l.lua", ([[
local relay = require "relay"
local app = relay.new { name = "l" }
app:listener("side", "localhost:%d")
app:get("/", function(_, res) res:send(200, "side\n") end, { listener = "*" })
return app
]]):format(port))
    local host = helpers.start(dir .. "/l.lua")
    assert.equal(port, host.listeners.side)
    assert.equal("side\n", host:on("side"):get("/").body)
    assert.equal(0, host:stop())
  end)

  local refused = {
    { "nosuchhost.invalid:8080", "cannot resolve 'nosuchhost.invalid'" },
    { "127.0.0.1:99999", "port out of range" },
    { "127.0.0.1:80x", "port '80x' is not a number" },
    { "[::1:8080", "IPv6 literal not closed" },
    { "localhost", "missing port" },
  }
  for _, case in ipairs(refused) do
    it("refuses --listen " .. case[1] .. " naming why", function()
      local status, out, err = helpers.run { basic, "--listen", case[1] }
      assert.equal(1, status)
      assert.matches(case[2], out .. err, 1, true)
    end)
  end

  it("names the address it tried when the bind fails", function()
    local busy = assert(socket.bind("127.0.0.1", 0))
    local port = select(2, busy:getsockname())
    local status, out, err = helpers.run { basic, "--listen", "localhost:" .. port }
    busy:close()
    assert.equal(1, status)
    assert.matches(("listen localhost:%d (127.0.0.1): Address already in use"):format(port), out .. err, 1, true)
  end)
end)
