-- relay.jwks (lua/relay/jwks.lua): a JWKS kept for relay.jwt.verify_jwks, against a real JWKS
-- origin (a relayhost script that counts its fetches and can be made slow or down) and real
-- Ed25519 tokens signed by the openssl CLI: one fetch for many verifications, one fetch in flight
-- for concurrent ones, a refetch on an unknown kid (at most one per refetch_min), stale keys
-- serving while the ttl's refresh runs behind, and a backoff after a failed fetch. The origin is
-- spec/fixtures/workspace_jwks_server.lua (POST /doc, POST /mode?m=ok|slow|down&delay=, GET /count).
local helpers = require "helpers"
local mime = require "mime"


local VERIFIER = [[
local relay = require "relay"
local app = relay.new { name = "jwks-user", flags = { jwks = { default = "" }, ttl = { default = 300 }, log = { default = true } } }
local fetched = { ok = 0, failed = 0 }
local keys = relay.jwks(app.flags.jwks, { ttl = app.flags.ttl, timeout = 3, log = app.flags.log,
  on_fetch = function(ok) if ok then fetched.ok = fetched.ok + 1 else fetched.failed = fetched.failed + 1 end end })
app:get("/v", function(req, res)
  local claims, err = keys:verify(req.args.token, { require_exp = true })
  if not claims then return res:send(401, err) end
  res:send(200, claims.sub)
end)
app:get("/fetched", function(_, res) res:send(200, fetched.ok .. " " .. fetched.failed) end)
return app
]]

local function b64url(s) return (mime.b64(s):gsub("+", "-"):gsub("/", "_"):gsub("=", "")) end

local function sh(cmd) assert(os.execute(cmd .. " >/dev/null 2>&1") == 0, cmd) end

describe("relay.jwks", function()
  local dir, origin, hosts = nil, nil, {}
  local keys = {} -- kid -> { pem = private key path, jwk = table }

  local function new_key(kid)
    local pem = ("%s/%s.pem"):format(dir, kid)
    sh(("openssl genpkey -algorithm ED25519 -out %q"):format(pem))
    sh(("openssl pkey -in %q -pubout -outform DER -out %q.der"):format(pem, pem))
    local x = helpers.read_file(pem .. ".der"):sub(-32)
    keys[kid] = { pem = pem, jwk = ('{"kty":"OKP","crv":"Ed25519","kid":"%s","x":"%s"}'):format(kid, b64url(x)) }
  end

  local function token(kid, sub)
    local input = b64url(('{"alg":"EdDSA","typ":"JWT","kid":"%s"}'):format(kid)) .. "." ..
      b64url(('{"sub":"%s","exp":%d}'):format(sub, os.time() + 600))
    helpers.write_file(dir .. "/input", input)
    sh(("openssl pkeyutl -sign -rawin -inkey %q -in %q/input -out %q/sig"):format(keys[kid].pem, dir, dir))
    return input .. "." .. b64url(helpers.read_file(dir .. "/sig"))
  end

  local function post(path, body) assert.equal(200, origin:request { method = "POST", path = path, body = body or "" }.status) end
  local function serve(...)
    local jwks = {}
    for _, kid in ipairs { ... } do jwks[#jwks + 1] = keys[kid].jwk end
    post("/doc", '{"keys":[' .. table.concat(jwks, ",") .. ']}')
  end
  local function fetches() return tonumber(origin:get("/count").body) end

  local function verifier(ttl, log)
    local h = helpers.start(dir .. "/verifier.lua", { flags = { "--jwks=" .. origin:url("/jwks.json"), "--ttl=" .. (ttl or 300),
                                                                "--log=" .. tostring(log ~= false) } })
    hosts[#hosts + 1] = h
    return h
  end
  local function verify(h, tok) return h:get("/v?token=" .. tok) end

  setup(function()
    dir = helpers.tmpdir()
    helpers.write_file(dir .. "/verifier.lua", VERIFIER)
    for _, kid in ipairs { "k1", "k2", "k3" } do new_key(kid) end
    origin = helpers.start(helpers.fixture("workspace_jwks_server.lua"))
  end)

  teardown(function()
    for _, h in ipairs(hosts) do h:stop() end
    if origin then assert.equal(0, origin:stop()) end
  end)

  before_each(function()
    post("/mode?m=ok")
    serve("k1")
  end)

  it("fetches once for many verifications, and verifies with the fetched key", function()
    local h, before = verifier(), fetches()
    local tok = token("k1", "ada")
    for _ = 1, 20 do
      local res = verify(h, tok)
      assert.equal(200, res.status, res.body)
      assert.equal("ada", res.body)
    end
    assert.equal(before + 1, fetches())
    assert.equal("1 0", h:get("/fetched").body)
    local a, b = token("k1", "ada"), token("k1", "eve") -- eve's claims under ada's signature
    local res = verify(h, b:match("^[^.]+%.[^.]+") .. a:match("%.[^.]+$"))
    assert.equal(401, res.status)
    assert.equal("bad signature", res.body)
  end)

  it("makes one fetch for concurrent verifications that find no keys yet", function()
    local h = verifier()
    post("/mode?m=slow&delay=0.5")
    local before, tok, clients = fetches(), token("k1", "bob"), {}
    for i = 1, 20 do
      clients[i] = h:client(10)
      clients[i]:send(("GET /v?token=%s HTTP/1.1\r\nHost: x\r\n\r\n"):format(tok))
    end
    for i = 1, 20 do
      local res = clients[i]:read_response()
      clients[i]:close()
      assert.equal(200, res.status, res.body)
      assert.equal("bob", res.body)
    end
    assert.equal(before + 1, fetches())
  end)

  it("refetches on an unknown kid (a rotation), at most once per refetch_min", function()
    local h = verifier()
    assert.equal(200, verify(h, token("k1", "a")).status)
    local before = fetches()
    serve("k1", "k2")
    local res = verify(h, token("k2", "rotated"))
    assert.equal(200, res.status, res.body)
    assert.equal("rotated", res.body)
    assert.equal(before + 1, fetches())
    res = verify(h, token("k3", "x"))
    assert.equal(401, res.status)
    assert.equal("no key for kid k3", res.body)
    assert.equal(before + 1, fetches()) -- within refetch_min (10 s) of the last early refetch
    assert.equal(200, verify(h, token("k1", "a")).status)
  end)

  it("serves stale keys past the ttl while a fetch behind renews them", function()
    local h = verifier(1)
    local tok = token("k1", "stale")
    assert.equal(200, verify(h, tok).status)
    local before = fetches()
    post("/mode?m=slow&delay=1")
    helpers.sleep(1.2)
    local t0 = require("socket").gettime()
    assert.equal(200, verify(h, tok).status)
    assert.is_true(require("socket").gettime() - t0 < 0.8, "the stale keys answered at once")
    helpers.wait_until(function() return fetches() == before + 1 end, 5, "a fetch behind")
    helpers.sleep(1.2)
    assert.equal("2 0", h:get("/fetched").body)
  end)

  it("backs off after a failed fetch, logs it, and recovers", function()
    post("/mode?m=down")
    local h = verifier()
    local before = fetches()
    local res = verify(h, token("k1", "a"))
    assert.equal(401, res.status)
    assert.equal("jwks: status 503", res.body)
    res = verify(h, token("k1", "a"))
    assert.equal(401, res.status)
    assert.matches("next fetch after a backoff", res.body, 1, true)
    assert.equal(before + 1, fetches())
    assert.equal("0 1", h:get("/fetched").body)
    assert.matches('"event":"jwks_fetch_failed"', h:log(), 1, true)
    post("/mode?m=ok")
    helpers.sleep(1.1) -- the first backoff is 1 s
    assert.equal(200, verify(h, token("k1", "a")).status)
    -- log = false: on_fetch hears of it, the host log does not
    post("/mode?m=down")
    local quiet = verifier(300, false)
    assert.equal(401, verify(quiet, token("k1", "a")).status)
    assert.equal("0 1", quiet:get("/fetched").body)
    assert.is_nil(quiet:log():find("jwks_fetch_failed", 1, true))
  end)

  it("names a 200 that is not a JWKS document (not JSON, or no keys array) as that", function()
    for _, doc in ipairs { "not json", '{"nokeys":[]}', '[1,2]', '"keys"' } do
      post("/doc", doc)
      local res = verify(verifier(), token("k1", "a"))
      assert.equal(401, res.status)
      assert.equal("jwks: not a JWKS document", res.body, doc)
    end
  end)

  it("refuses options it does not know and urls it cannot fetch, at the author's line", function()
    for _, case in ipairs {
      { 'relay.jwks("https://x/jwks", { tll = 1 })', "unknown option 'tll'" },
      { 'relay.jwks("ftp://x/jwks")', "url must be http:// or https://" },
      { 'relay.jwks("https://x/jwks", { ttl = -1 })', "ttl must be a number >= 0" },
    } do
      helpers.write_file(dir .. "/bad.lua", 'local relay = require "relay"\nlocal app = relay.new {}\n' .. case[1] .. "\nreturn app\n")
      local rc, out, err = helpers.run { "check", dir .. "/bad.lua" }
      assert.are_not.equal(0, rc)
      assert.matches("bad.lua:3: ", out .. err, 1, true)
      assert.matches(case[2], out .. err, 1, true)
    end
  end)
end)
