-- The workspace relay's redirect check (backplane.lua redirect_allowed, the original's
-- isAllowedRedirectWsBaseUrl) reads the URL with relay.url.parse: only ws/wss, no userinfo,
-- query or fragment, a valid port, wss in prod, the host compared without its port. Runs in the
-- host (`relayhost check` of a script that writes its answers).
local helpers = require "helpers"
local cjson = require "cjson"

local SCRIPT = [[
local relay = require "relay"
local cjson = require "cjson"
local B = require "relay.workspace.backplane"
local out = {}
for i, c in ipairs(cjson.decode(os.getenv("CASES"))) do out[i] = B.redirect_allowed({ cfg = c.cfg }, c.url) end
local f = assert(io.open(os.getenv("OUT"), "w"))
f:write(cjson.encode(out))
f:close()
return relay.new { name = "redirect" }
]]

local DEV = { relay_mode = "dev", relay_redirect_allowed_hosts = {}, public_ws_base_url = "ws://own:1/ws" }
local PROD = { relay_mode = "prod", relay_redirect_allowed_hosts = {}, public_ws_base_url = "wss://own.example/ws" }
local LISTED = { relay_mode = "prod", relay_redirect_allowed_hosts = { "a.example" }, public_ws_base_url = "wss://own.example/ws" }

local cases = {
  { DEV, "ws://h:1/ws", true },
  { DEV, "wss://[::1]:9/ws", true },
  { DEV, "ws://u@h/ws", false },
  { DEV, "ws://h/ws?x=1", false },
  { DEV, "ws://h/ws#f", false },
  { DEV, "http://h/ws", false },
  { DEV, "ws://h:99999/ws", false },
  { DEV, "ws://h:1:2/ws", false },
  { DEV, "ws://[::1/ws", false },
  { PROD, "ws://own.example/ws", false },
  { PROD, "wss://own.example:8443/ws", true },
  { PROD, "WSS://Own.Example/ws", true },
  { PROD, "wss://own.example@evil.example/ws", false },
  { PROD, "wss://other.example/ws", false },
  { LISTED, "wss://A.example:8443/x", true },
  { LISTED, "wss://own.example/ws", false },
}

describe("workspace relay redirect URLs", function()
  it("allows only a clean ws(s) URL to an allowed host", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/r.lua", SCRIPT)
    local list = {}
    for i, c in ipairs(cases) do list[i] = { cfg = c[1], url = c[2] } end
    local rc, _, err = helpers.run({ "check", dir .. "/r.lua" }, { CASES = cjson.encode(list), OUT = dir .. "/out.json" })
    assert.equal(0, rc, err)
    local got = cjson.decode(helpers.read_file(dir .. "/out.json"))
    for i, c in ipairs(cases) do assert.equal(c[3], got[i], c[2]) end
  end)
end)
