-- relay.jwt and the JWS "crit" header (RFC 7515 4.1.11): a token whose header names critical
-- extensions is refused, since this verifier understands none, and so is a crit that is not a
-- non-empty array of distinct extension names present in the header. The checks run inside the
-- host (`relayhost check`, in the script's on_init), where relay.core is the host's own.
local helpers = require "helpers"

local CHECKS = [=[
local relay = require "relay"
local jwt = require "relay.jwt"
local core = require "relay.core"
local cjson = require "cjson"
local app = relay.new {}

local SECRET, NOW = "a-secret-for-the-crit-spec", 1700000000

-- a header as a table (signed by jwt.sign), or as JSON text for shapes lua-cjson cannot
-- encode (an empty array)
local function token(header)
  if type(header) ~= "string" then return jwt.sign({ sub = "u1", exp = NOW + 60 }, SECRET, { header = header }) end
  local input = core.base64_encode(header, true) .. "." .. core.base64_encode(cjson.encode { sub = "u1", exp = NOW + 60 }, true)
  return input .. "." .. core.base64_encode(core.hmac_sha256(SECRET, input), true)
end
local function verify(header) return jwt.verify(token(header), SECRET, { now = NOW }) end

local function refused(header, want, name)
  local claims, err = verify(header)
  assert(claims == nil, name .. ": verified")
  assert(tostring(err):find(want, 1, true) == 1, name .. ": refused with " .. tostring(err) .. ", not " .. want)
end

app:on_init(function()
  assert(verify({ kid = "k1" }).sub == "u1", "a token without crit")
  assert(verify('{"alg":"HS256","typ":"JWT"}').sub == "u1", "a header as text without crit")
  refused({ crit = { "b64" }, b64 = false }, "unsupported critical header b64", "b64")
  refused({ crit = { "urn:x", "y" }, ["urn:x"] = 1, y = 2 }, "unsupported critical header urn:x", "two extensions")
  local bad = "invalid crit header: "
  refused('{"alg":"HS256","crit":[]}', bad .. "not a non-empty array", "empty array")
  refused({ crit = {} }, bad .. "not a non-empty array", "empty object")
  refused({ crit = "b64", b64 = false }, bad .. "not a non-empty array", "a string")
  refused({ crit = { b64 = true } }, bad .. "not a non-empty array", "an object")
  refused({ crit = true }, bad .. "not a non-empty array", "true")
  refused({ crit = cjson.null }, bad .. "not a non-empty array", "null")
  refused({ crit = { 1 } }, bad .. "a name that is not a string", "a number")
  refused({ crit = { "alg" } }, bad .. "lists the standard header alg", "alg")
  refused({ crit = { "kid" }, kid = "k1" }, bad .. "lists the standard header kid", "kid")
  refused({ crit = { "crit" } }, bad .. "lists the standard header crit", "crit")
  refused({ crit = { "b64", "b64" }, b64 = false }, bad .. "lists b64 twice", "twice")
  refused({ crit = { "absent" } }, bad .. "lists absent, which the header lacks", "absent")
end)
return app
]=]

describe("relay.jwt crit header", function()
  it("refuses an unknown or malformed crit and verifies a token without one", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/crit_check.lua", CHECKS)
    local rc, out, err = helpers.run { "check", dir .. "/crit_check.lua" }
    assert.equal(0, rc, err)
    assert.matches("crit_check%.lua: ok", out)
  end)
end)
