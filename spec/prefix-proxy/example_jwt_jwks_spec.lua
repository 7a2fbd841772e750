-- examples/jwt-jwks.lua against a real JWKS origin (spec/fixtures/workspace_jwks_server.lua, a
-- relayhost script that counts its fetches) and real Ed25519 tokens signed by the openssl CLI:
-- a valid token passes with its subject upstream as X-Subject (the client's own X-Subject and
-- the token do not go up); expired, wrong-audience, wrong-issuer, tampered and unknown-kid tokens
-- get 401 with the reason; many requests cost one JWKS fetch.
local helpers = require "helpers"
local json = require "cjson"
local mime = require "mime"

local UPSTREAM = [[
local relay = require "relay"
local app = relay.new { name = "jwt-upstream" }
local seen = 0
app:any("/app/*", function(req, res)
  seen = seen + 1
  res:json(200, { path = req.path, subject = req.headers["x-subject"] or false,
                  authorization = req.headers["authorization"] or false })
end)
app:get("/seen", function(_, res) res:send(200, tostring(seen)) end)
return app
]]

local ISS, AUD = "https://idp.test/", "orders-api"

local function b64url(s) return (mime.b64(s):gsub("+", "-"):gsub("/", "_"):gsub("=", "")) end
local function sh(cmd) assert(os.execute(cmd .. " >/dev/null 2>&1") == 0, cmd) end

describe("examples/jwt-jwks.lua", function()
  local dir, jwks, upstream, proxy
  local keys = {} -- kid -> { pem, jwk }

  local function new_key(kid)
    local pem = ("%s/%s.pem"):format(dir, kid)
    sh(("openssl genpkey -algorithm ED25519 -out %q"):format(pem))
    sh(("openssl pkey -in %q -pubout -outform DER -out %q.der"):format(pem, pem))
    local x = helpers.read_file(pem .. ".der"):sub(-32)
    keys[kid] = { pem = pem, jwk = ('{"kty":"OKP","crv":"Ed25519","kid":"%s","x":"%s"}'):format(kid, b64url(x)) }
  end

  -- claims over the defaults (sub alice, our iss and aud, exp in 10 minutes)
  local function token(kid, over)
    local claims = { sub = "alice", iss = ISS, aud = AUD, exp = os.time() + 600 }
    for k, v in pairs(over or {}) do claims[k] = v end
    local input = b64url(('{"alg":"EdDSA","typ":"JWT","kid":"%s"}'):format(kid)) .. "." .. b64url(json.encode(claims))
    helpers.write_file(dir .. "/input", input)
    sh(("openssl pkeyutl -sign -rawin -inkey %q -in %q/input -out %q/sig"):format(keys[kid].pem, dir, dir))
    return input .. "." .. b64url(helpers.read_file(dir .. "/sig"))
  end

  local function fetches() return tonumber(jwks:get("/count").body) end
  local function seen() return tonumber(upstream:get("/seen").body) end
  local function get(tok, headers)
    headers = headers or {}
    headers.authorization = tok and "Bearer " .. tok or nil
    return proxy:get("/api/orders/7", headers)
  end

  setup(function()
    dir = helpers.tmpdir()
    new_key("k1")
    new_key("k-unserved")
    jwks = helpers.start(helpers.fixture("workspace_jwks_server.lua"))
    assert.equal(200, jwks:request { method = "POST", path = "/doc", body = '{"keys":[' .. keys.k1.jwk .. ']}' }.status)
    helpers.write_file(dir .. "/upstream.lua", UPSTREAM)
    upstream = helpers.start(dir .. "/upstream.lua")
    proxy = helpers.start(helpers.root .. "/examples/jwt-jwks.lua", { flags = {
      "--upstream", upstream:url("/app"), "--prefix", "/api", "--jwks-url", jwks:url("/jwks.json"),
      "--issuer", ISS, "--audience", AUD, "--leeway", "0" } })
  end)

  teardown(function()
    if proxy then assert.equal(0, proxy:stop(), proxy:log():sub(-3000)) end
    if upstream then assert.equal(0, upstream:stop()) end
    if jwks then assert.equal(0, jwks:stop()) end
  end)

  it("passes valid tokens with the subject as X-Subject, fetching the JWKS once for all", function()
    local before = seen()
    for i = 1, 20 do
      local res = get(token("k1", { sub = "user-" .. (i % 3) }), { ["x-subject"] = "root" })
      assert.equal(200, res.status, res.body)
      local up = json.decode(res.body)
      assert.equal("/app/orders/7", up.path)
      assert.equal("user-" .. (i % 3), up.subject)
      assert.is_false(up.authorization)
    end
    assert.equal(before + 20, seen())
    assert.equal(1, fetches())
  end)

  it("answers 401 with the reason, and nothing reaches the upstream", function()
    local before = seen()
    local function denied(tok, reason)
      local res = get(tok)
      assert.equal(401, res.status, res.body)
      assert.equal(reason .. "\n", res.body)
      assert.equal(('Bearer error="invalid_token", error_description="%s"'):format(reason), res.headers["www-authenticate"])
    end
    denied(nil, "missing bearer token")
    denied(token("k1", { exp = os.time() - 60 }), "token expired")
    denied(token("k1", { aud = "another-api" }), "wrong audience")
    denied(token("k1", { iss = "https://evil.test/" }), "wrong issuer")
    denied(token("k1", { sub = json.null }), "token has no subject")
    local good = token("k1")
    denied(good:sub(1, -3) .. (good:sub(-2, -2) == "A" and "B" or "A") .. good:sub(-1), "bad signature")
    assert.equal(before, seen())
    assert.equal(1, fetches()) -- none of these made a refetch
  end)

  it("answers 401 for a kid the JWKS does not have, after one early refetch", function()
    local before = seen()
    local res = get(token("k-unserved"))
    assert.equal(401, res.status)
    assert.equal("no key for kid k-unserved\n", res.body)
    assert.equal(before, seen())
    assert.equal(2, fetches())
    -- at most one early refetch per refetch_min (10 s): a second unknown kid does not fetch again
    assert.equal(401, get(token("k-unserved")).status)
    assert.equal(2, fetches())
  end)

  it("shows its flags with help in --help", function()
    local rc, out = helpers.run { helpers.root .. "/examples/jwt-jwks.lua", "--help" }
    assert.equal(0, rc)
    for _, flag in ipairs { "--upstream", "--jwks-url", "--jwks-ttl", "--issuer", "--audience", "--leeway", "--prefix" } do
      assert.matches(flag:gsub("%-", "%%-") .. " [^\n]*\n%s+%S", out)
    end
  end)

  it("is run in README with flags it has", function()
    local readme = helpers.read_file(helpers.root .. "/README.md")
    local cmd = assert(readme:match("`(relayhost examples/jwt%-jwks%.lua [^`]*)`"), "README has no command for it")
    local _, out = helpers.run { helpers.root .. "/examples/jwt-jwks.lua", "--help" }
    for flag in cmd:gmatch("%s(%-%-[%w-]+)") do assert.matches("\n  " .. flag:gsub("%-", "%%-") .. " ", out) end
  end)
end)
