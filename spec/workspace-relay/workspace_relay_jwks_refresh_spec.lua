-- The workspace relay's JWKS refresh under load and failure, against a real JWKS endpoint that
-- counts its fetches and can be made slow or down (spec/fixtures/workspace_jwks_server.lua, run
-- by relayhost): one fetch in flight at a time, stale keys serve while a refresh runs, and a
-- failing endpoint is asked again only after a backoff.
local helpers = require "helpers"
local socket = require "socket"
local W = require "workspace_support"

describe("workspace relay JWKS refresh", function()
  local peers, jwks, dir, tok

  local function post(path, body) assert.equal(200, jwks:request { method = "POST", path = path, body = body or "" }.status) end
  local function fetches() return tonumber(jwks:get("/count").body) end

  local function relay_for(refresh_ms)
    return W.start(peers, W.with_admin { RELAY_ADMISSION = "jwks", RELAY_JWKS_URL = jwks:url("/jwks.json"),
                                         RELAY_JWKS_REFRESH_MS = tostring(refresh_ms), RELAY_ADMISSION_TIMEOUT_MS = "4000",
                                         RELAY_UPGRADE_RATE_PER_MINUTE = "100000", RELAY_MAX_CONNECTIONS_PER_IP = "1000",
                                         RELAY_MAX_CLIENTS_PER_WORKSPACE = "1000" })
  end

  -- n upgrades at once; their outcomes and the seconds until the last one. Open ones are closed.
  local n_opened = 0
  local function admit_all(r, n)
    local t0, ids, out = socket.gettime(), {}, {}
    for i = 1, n do
      n_opened = n_opened + 1
      ids[i] = "j" .. n_opened
      peers:open(ids[i], r:ws(W.CLIENT_Q), W.bearer(tok))
    end
    for i = 1, n do out[i] = peers:outcome(ids[i], 10) end
    local took = socket.gettime() - t0
    for i = 1, n do if out[i] == "open" then peers:cmd { op = "close", id = ids[i], code = 1000 } end end
    return out, took
  end

  local function all(list, v) for _, x in ipairs(list) do if x ~= v then return false end end return true end

  -- A relay that has fetched its keys once, and now holds them stale, the endpoint in mode.
  local function stale_relay(mode)
    local r = relay_for(1000)
    assert.is_true(all(admit_all(r, 1), "open"))
    post("/mode?m=" .. mode)
    helpers.sleep(1.2) -- the keys are now older than RELAY_JWKS_REFRESH_MS
    return r
  end

  setup(function()
    dir = helpers.tmpdir()
    assert(os.execute(("openssl genpkey -algorithm ED25519 -out %s/ed.pem >/dev/null 2>&1"):format(dir)) == 0)
    assert(os.execute(("openssl pkey -in %s/ed.pem -pubout -out %s/ed.pub >/dev/null 2>&1"):format(dir, dir)) == 0)
    peers = require("ws_peers").start()
    W.fixture(peers)
    peers:cmd { op = "jwks", keys = { { kid = "ed", pem = dir .. "/ed.pub" } } }
    peers:wait(nil, "fixture")
    local c = helpers.connect(peers.http_port)
    local doc = c:request { path = "/jwks.json" }.body
    c:close()
    jwks = helpers.start(helpers.fixture("workspace_jwks_server.lua"))
    post("/doc", doc)
    tok = peers:sign { alg = "EdDSA", kid = "ed", pem = dir .. "/ed.pem",
                       claims = { workspaceId = "ws1", runtimeTargetId = "rt1", role = "client", scope = "runtime",
                                  clientId = "jc", exp = os.time() + 600 } }
  end)

  teardown(function()
    assert.equal(0, jwks:stop())
    peers:stop()
  end)

  before_each(function() post("/mode?m=ok") end)

  it("makes one fetch for 40 concurrent admissions, with no keys yet and with stale keys", function()
    local r = relay_for(1000)
    local before = fetches()
    local out = admit_all(r, 40)
    assert.is_true(all(out, "open"), table.concat(out, " "))
    assert.equal(before + 1, fetches())
    helpers.sleep(1.2) -- the keys are now older than RELAY_JWKS_REFRESH_MS
    out = admit_all(r, 40)
    assert.is_true(all(out, "open"), table.concat(out, " "))
    helpers.sleep(0.5) -- the refresh runs behind the admissions
    assert.equal(before + 2, fetches())
    assert.equal(0, r:stop())
  end)

  it("admits with stale keys at once while a slow refresh runs", function()
    local r = stale_relay("slow&delay=6")
    local out, took = admit_all(r, 20)
    assert.is_true(all(out, "open"), table.concat(out, " "))
    assert.is_true(took < 2.5, ("20 admissions took %.2f s"):format(took)) -- waiting for the fetch: 4 s
    assert.equal(0, r:stop())
  end)

  it("backs off while the endpoint fails: stale keys keep admitting, and a relay with none refuses fast", function()
    local r = stale_relay("down")
    local before = fetches()
    for _ = 1, 30 do assert.is_true(all(admit_all(r, 1), "open")) end
    local made = fetches() - before
    assert.is_true(made >= 1 and made <= 4, made .. " fetches for 30 admissions") -- backoff 1, 2, 4 s
    assert.matches('"event":"jwks_fetch_failed"', r:log())
    assert.equal(0, r:stop())

    local cold = relay_for(300000)
    before = fetches()
    for _ = 1, 30 do assert.equal(401, admit_all(cold, 1)[1]) end
    made = fetches() - before
    assert.is_true(made >= 1 and made <= 4, made .. " fetches for 30 refused admissions")
    assert.equal(0, cold:stop())
  end)
end)
