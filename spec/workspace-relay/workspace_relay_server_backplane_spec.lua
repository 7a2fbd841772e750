-- RELAY_BACKPLANE_MODE=server (inferred from RELAY_INTERNAL_KEY): presence and the bus through
-- the platform's internal API, played by the node fixture. Frames cross relays; when the platform
-- fails, that is logged and counted and local routing goes on.
local helpers = require "helpers"
local W = require "workspace_support"

describe("workspace relay backplane (server)", function()
  local peers, A, B

  local function relay(id, extra)
    return W.start_named(peers, id, { RELAY_BACKPLANE_MODE = false, RELAY_BUS_ENABLED = "1",
                                      RELAY_BUS_HMAC_KEY = "server-bus-key-0123456789abcdef",
                                      RELAY_PRESENCE_SYNC_INTERVAL_MS = "300", RELAY_BUS_POLL_INTERVAL_MS = "50" }, extra)
  end

  setup(function()
    peers = require("ws_peers").start()
    W.fixture(peers)
    A = relay("srv-a")
    B = relay("srv-b", { RELAY_CLIENT_REDIRECT_ENABLED = "0" })
  end)

  teardown(function()
    for _, h in ipairs { A, B } do assert.equal(0, h:stop()) end
    peers:stop()
  end)

  it("infers server mode and carries frames between relays through the platform", function()
    local st = require("cjson").decode(A:get("/state", W.bearer("admin-token-for-tests")).body)
    assert.same({ "server", true, true }, { st.backplaneMode, st.busEnabled, st.clientRedirectEnabled })
    assert.equal("open", W.connect(peers, A, "sd", W.DAEMON_Q, "daemon-token-1"))
    helpers.wait_until(function() return W.metric(A, "relay_presence_upserts_total") >= 1 end, 3)
    assert.equal("open", W.connect(peers, B, "sb", W.CLIENT_Q, "client-token-b"))
    peers:send("sb", W.kex_init("srv-k"))
    assert.equal("srv-k", peers:message("sd", 5).requestId)
    peers:send("sd", W.kex_response("srv-k", "srv-s"))
    assert.equal("srv-s", peers:message("sb", 5).sessionId)
    local paths = {}
    for _, r in ipairs(peers:requests()) do paths[r.path:match("relay/(.*)$") or r.path] = true end
    for _, p in ipairs { "presence/upsert", "presence/resolve", "bus/publish", "bus/pull" } do assert.is_true(paths[p], p) end
  end)

  it("keeps local routing when the platform fails, counting the failures", function()
    assert.equal("open", W.connect(peers, A, "la", W.CLIENT_Q, "client-token-a"))
    peers:fixture { internal_down = true }
    helpers.wait_until(function() return W.metric(A, "relay_presence_errors_total") >= 1 end, 3, "a presence error")
    helpers.wait_until(function() return W.metric(A, "relay_bus_errors_total") >= 1 end, 3, "a bus error")
    peers:send("la", W.kex_init("local-k"))
    assert.equal("local-k", peers:message("sd").requestId)
    peers:send("sd", W.kex_response("local-k", "local-s"))
    assert.equal("local-s", peers:message("la").sessionId)
    -- a client on B finds no daemon while the platform cannot say where it is
    peers:send("sb", W.e2ee("srv-s", 2, "lost"))
    assert.equal("DAEMON_UNAVAILABLE", peers:message("sb", 5).code)
    peers:fixture { internal_down = false }
  end)
end)
