-- Local admission of the workspace relay: JWTs verified against a JWKS document (RS256, ES256,
-- EdDSA in C on OpenSSL). Keys are made with the openssl CLI at test time; the JWKS is served
-- and the tokens signed by the node fixture (spec/js/ws-peers.js).
local helpers = require "helpers"
local cjson = require "cjson"
local W = require "workspace_support"

local function sh(cmd) assert(os.execute(cmd .. " >/dev/null 2>&1") == 0, cmd) end

describe("workspace relay JWKS admission", function()
  local peers, host, dir
  local ISS, AUD = "https://issuer.test", "viewport-relay"

  local function keypair(name, genargs)
    sh(("openssl genpkey %s -out %s/%s.pem"):format(genargs, dir, name))
    sh(("openssl pkey -in %s/%s.pem -pubout -out %s/%s.pub"):format(dir, name, dir, name))
  end

  local function claims(over)
    local c = { workspaceId = "ws1", runtimeTargetId = "rt1", iss = ISS, aud = AUD, exp = os.time() + 300,
                iat = os.time(), sub = "user-1" }
    for k, v in pairs(over or {}) do c[k] = v end
    return c
  end

  local function token(alg, key, c, kid, header)
    return peers:sign { alg = alg, kid = kid == nil and key or (kid or nil), pem = dir .. "/" .. key .. ".pem",
                        claims = c, header = header }
  end

  local function serve_keys(names)
    local keys = {}
    for _, n in ipairs(names) do keys[#keys + 1] = { kid = n, pem = dir .. "/" .. n .. ".pub" } end
    peers:cmd { op = "jwks", keys = keys }
    peers:wait(nil, "fixture")
  end

  setup(function()
    dir = helpers.tmpdir()
    keypair("rsa", "-algorithm RSA -pkeyopt rsa_keygen_bits:2048")
    keypair("ec", "-algorithm EC -pkeyopt ec_paramgen_curve:P-256")
    keypair("ed", "-algorithm ED25519")
    keypair("rogue", "-algorithm RSA -pkeyopt rsa_keygen_bits:2048")
    keypair("later", "-algorithm ED25519")
    keypair("small", "-algorithm RSA -pkeyopt rsa_keygen_bits:1024")
    peers = require("ws_peers").start()
    W.fixture(peers)
    serve_keys { "rsa", "ec", "ed", "small" }
    host = W.start(peers, W.with_admin { RELAY_ADMISSION = "jwks", RELAY_JWT_ISSUER = ISS, RELAY_JWT_AUDIENCE = AUD,
                                         RELAY_JWKS_URL = ("http://127.0.0.1:%d/jwks.json"):format(peers.http_port) })
  end)

  teardown(function()
    assert.equal(0, host:stop())
    peers:stop()
  end)

  it("admits RS256, ES256 and EdDSA tokens without asking the validate endpoint, and routes", function()
    peers:requests()
    local d = token("RS256", "rsa", claims { role = "workspace-daemon", clientId = "d1", e2eeProfile = "noise-ik" })
    local a = token("ES256", "ec", claims { role = "client", scope = "runtime", clientId = "a1" })
    local b = token("EdDSA", "ed", claims { role = "client", scope = "runtime", clientId = "b1" })
    assert.equal("open", W.connect(peers, host, "jd", W.DAEMON_Q, d))
    assert.equal("open", W.connect(peers, host, "ja", W.CLIENT_Q, a))
    assert.equal("open", W.connect(peers, host, "jb", W.CLIENT_Q, b))
    peers:send("jb", W.kex_init("kb"))
    assert.equal("kb", peers:message("jd").requestId)
    peers:send("jd", W.kex_response("kb", "sb"))
    assert.equal("sb", peers:message("jb").sessionId)
    assert.is_true(peers:quiet("ja", "message", 0.2))
    for _, r in ipairs(peers:requests()) do assert.equal("/jwks.json", r.path) end
  end)

  it("refuses with 401 what it must not trust", function()
    local c = claims { role = "client", scope = "runtime", clientId = "x" }
    local cases = {
      expired = token("ES256", "ec", claims { role = "client", scope = "runtime", exp = os.time() - 60 }),
      not_yet = token("ES256", "ec", claims { role = "client", scope = "runtime", nbf = os.time() + 600 }),
      no_exp = token("ES256", "ec", claims { role = "client", scope = "runtime", exp = cjson.null }),
      wrong_iss = token("ES256", "ec", claims { role = "client", scope = "runtime", iss = "https://evil.test" }),
      wrong_aud = token("ES256", "ec", claims { role = "client", scope = "runtime", aud = "someone-else" }),
      rogue_key = token("RS256", "rogue", c, "rsa"),        -- claims to be signed by "rsa"
      unknown_kid = token("RS256", "rogue", c),             -- kid "rogue" is not served
      alg_mismatch = token("ES256", "ec", c, "rsa"),        -- an RSA key for an ES256 token
      small_rsa = token("RS256", "small", c),
      bad_claim = token("EdDSA", "ed", claims { role = "client", scope = "everything" }),
      crit = token("EdDSA", "ed", c, nil, { crit = { "b64" }, b64 = false }), -- an extension nobody here understands
      no_role = token("EdDSA", "ed", claims { scope = "runtime", clientId = "x" }),
    }
    local function b64url(v) return (require("mime").b64(cjson.encode(v)):gsub("=", ""):gsub("%+", "-"):gsub("/", "_")) end
    local h, _, sig = token("EdDSA", "ed", c):match("^([^.]+)%.([^.]+)%.([^.]+)$")
    cases.tampered = h .. "." .. b64url(claims { role = "workspace-daemon" }) .. "." .. sig -- payload swapped
    cases.alg_none = b64url { alg = "none", typ = "JWT" } .. "." .. b64url(c) .. ".AAAA"
    for name, t in pairs(cases) do
      assert.equal(401, W.connect(peers, host, "bad-" .. name, W.CLIENT_Q, t), name)
    end
    -- a client's token does not make a daemon
    local escalate = token("EdDSA", "ed", claims { role = "client", scope = "runtime", clientId = "x" })
    assert.equal(401, W.connect(peers, host, "bad-escalate", W.DAEMON_Q, escalate))
    local log = host:log()
    for _, why in ipairs { "token expired", "token not yet valid", "token has no exp", "wrong issuer", "wrong audience",
                           "no key for kid rogue", "unsupported alg none", "no key for kid rsa",
                           "RS256 needs an RSA key of 2048 bits", "bad claim scope", "bad signature",
                           "unsupported critical header b64", "role claim mismatch", "token has no role claim" } do
      assert.matches('"event":"admission_denied"[^\n]*' .. why, log)
    end
  end)

  it("picks up a rotated key by refetching the JWKS for an unknown kid, at most every 10 s", function()
    local jwks_url = ("http://127.0.0.1:%d/jwks.json"):format(peers.http_port)
    local r = W.start(peers, W.with_admin { RELAY_ADMISSION = "jwks", RELAY_JWKS_URL = jwks_url })
    local function tok(key, id) return token("EdDSA", key, claims { role = "client", scope = "runtime", clientId = id }) end
    assert.equal("open", W.connect(peers, r, "rot1", W.CLIENT_Q, tok("ed", "r1")))
    assert.equal(1, W.metric(r, "relay_jwks_fetch_ok_total"))
    serve_keys { "rsa", "ec", "ed", "later" }
    assert.equal("open", W.connect(peers, r, "rot2", W.CLIENT_Q, tok("later", "r2")))
    assert.equal(2, W.metric(r, "relay_jwks_fetch_ok_total"))
    -- another unknown kid right away does not make the relay fetch again
    assert.equal(401, W.connect(peers, r, "rot3", W.CLIENT_Q, token("RS256", "rogue", claims { role = "client", scope = "runtime" })))
    assert.equal(2, W.metric(r, "relay_jwks_fetch_ok_total"))
    assert.equal(0, r:stop())
  end)

  it("with RELAY_ADMISSION=jwks,validate needs both to agree", function()
    local both = W.start(peers, { RELAY_ADMISSION = "jwks,validate", RELAY_JWKS_URL = ("http://127.0.0.1:%d/jwks.json"):format(peers.http_port),
                                  RELAY_JWT_ISSUER = ISS })
    local t = token("ES256", "ec", claims { role = "client", scope = "runtime", clientId = "both" })
    assert.equal(401, W.connect(peers, both, "both1", W.CLIENT_Q, t)) -- the platform does not know it
    assert.matches('"event":"admission_denied"[^\n]*validate: unknown token', both:log())
    assert.equal(401, W.connect(peers, both, "both2", W.CLIENT_Q, "client-token-a")) -- not a JWT
    assert.matches('"event":"admission_denied"[^\n]*jwks: malformed token', both:log())
    assert.equal(0, both:stop())
  end)
end)
