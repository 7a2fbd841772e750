-- The workspace relay's settings: the original's names, its mode inference, and clear refusals
-- of combinations that cannot work (relayhost check exits 1 with the message).
local helpers = require "helpers"

local SCRIPT = helpers.root .. "/scripts/workspace-relay.lua"

local function check(env)
  return helpers.run({ "check", SCRIPT }, env)
end

describe("workspace relay settings", function()
  it("refuses what cannot work, naming the variable", function()
    local cases = {
      { { RELAY_BACKPLANE_MODE = "redis", RELAY_INTERNAL_KEY = "k" }, "RELAY_REDIS_URL is required when RELAY_BACKPLANE_MODE=redis" },
      { { RELAY_BACKPLANE_MODE = "server" }, "RELAY_INTERNAL_KEY is required when RELAY_BACKPLANE_MODE=server" },
      { { RELAY_BACKPLANE_MODE = "mesh" }, "$RELAY_BACKPLANE_MODE: 'mesh' is not one of single, server, redis" },
      { { RELAY_INTERNAL_KEY = "k", RELAY_BUS_ENABLED = "1" }, "RELAY_BUS_HMAC_KEY is required when the bus is enabled" },
      { { RELAY_MODE = "test" }, "$RELAY_MODE: 'test' is not one of dev, staging, prod" },
      { { PORT = "abc" }, "PORT: 'abc' is not a port number" },
      { { RELAY_ADMISSION = "magic" }, "$RELAY_ADMISSION: 'magic' is not one of validate, jwks" },
      { { RELAY_ADMISSION = "jwks" }, "RELAY_ADMISSION=jwks needs RELAY_JWKS_URL" },
      { { RELAY_MAX_FRAME_BYTES = "lots" }, "'lots' is not a number" },
      { { RELAY_BUS_ENABLED = "maybe" }, "$RELAY_BUS_ENABLED: 'maybe' is not a boolean" },
      { { SERVER_URL = "getviewport.test" }, "$SERVER_URL: 'getviewport.test' is not a URL starting with http:// or https://" },
      { { RELAY_PUBLIC_WS_BASE_URL = "https://relay.test/ws" }, "is not a URL starting with ws:// or wss://" },
      { { RELAY_REDIS_URL = "localhost:6379" }, "is not a URL starting with redis:// or rediss://" },
      -- the combinations that cannot work, all in one message
      { { RELAY_BACKPLANE_MODE = "redis", RELAY_ADMISSION = "jwks" }, "RELAY_ADMISSION=jwks needs RELAY_JWKS_URL; " ..
        "RELAY_INTERNAL_KEY is required when RELAY_BACKPLANE_MODE=redis; RELAY_REDIS_URL is required when RELAY_BACKPLANE_MODE=redis" },
    }
    for _, c in ipairs(cases) do
      local status, out, err = check(c[1])
      assert.equal(1, status)
      assert.truthy((out .. err):find(c[2], 1, true), c[2] .. " in: " .. out .. err)
    end
  end)

  it("infers the backplane as the original does and takes both names of the port", function()
    local function config(env)
      local status, out, err = check(env)
      assert.equal(0, status, out .. err)
      return (out .. err):match('"event":"relay_config"[^\n]*')
    end
    assert.matches('"backplaneMode":"single"', config {})
    assert.matches('"backplaneMode":"server"', config { RELAY_INTERNAL_KEY = "k" })
    assert.matches('"relayId":"127.0.0.1:7791:', config { RELAY_LISTEN_PORT = "7791" })
    assert.matches('"relayId":"127.0.0.1:7792:', config { RELAY_LISTEN_PORT = "7791", PORT = "7792" })
    -- only the docs' RELAY_VALIDATE_URL: the platform base is that URL without its path
    assert.truthy(config({ RELAY_VALIDATE_URL = "https://api.example.com/api/runtime/internal/relay/validate" })
      :find('"serverUrl":"https://api.example.com"', 1, true))
  end)

  it("warns at start when the admin endpoints are on without a token (every call would be 401)", function()
    local _, out, err = check { RELAY_ENABLE_ADMIN_HTTP = "1" }
    assert.matches('"event":"admin_without_token"', out .. err)
    _, out, err = check { RELAY_ENABLE_ADMIN_HTTP = "1", RELAY_ADMIN_TOKEN = "t" }
    assert.not_matches("admin_without_token", out .. err)
  end)
end)
