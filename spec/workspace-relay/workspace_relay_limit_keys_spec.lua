-- The per-client frame limiters (key exchange, pairing) are keyed by clientId and address
-- together; the key must tell every pair apart. Joined with ':' alone, client "x" at
-- 64:ff9b::1.2.3.4 and client "x:64:ff9b:" at 1.2.3.4 shared one limiter (an IPv6 address has
-- ':' in it, and a clientId may), so one could spend the other's allowance.
local W = require "workspace_support"

describe("workspace relay frame limiter keys", function()
  local peers

  setup(function()
    peers = require("ws_peers").start()
    local function client(id) return { claims = { workspaceId = "ws1", runtimeTargetId = "rt1", role = "client",
                                                  scope = "runtime", clientId = id } } end
    W.tokens["client-token-colon-1"] = client("x")
    W.tokens["client-token-colon-2"] = client("x:64:ff9b:")
    W.fixture(peers)
  end)
  teardown(function() peers:stop() end)

  it("gives client x at 64:ff9b::1.2.3.4 and client x:64:ff9b: at 1.2.3.4 a key exchange allowance each", function()
    local h = W.start(peers, W.with_admin { RELAY_KEX_INIT_RATE_PER_MINUTE = "1" }, { "--trusted-proxies=127.0.0.1/32" })
    assert.equal("open", W.connect(peers, h, "d", W.DAEMON_Q, "daemon-token-1"))
    assert.equal("open", W.connect(peers, h, "a", W.CLIENT_Q, "client-token-colon-1",
                                   { ["x-forwarded-for"] = "64:ff9b::1.2.3.4" }))
    assert.equal("open", W.connect(peers, h, "b", W.CLIENT_Q, "client-token-colon-2",
                                   { ["x-forwarded-for"] = "1.2.3.4" }))
    peers:send("a", W.kex_init("rq-a"))
    peers:wait("d", "message") -- the daemon got a's frame: a's allowance is spent
    peers:send("b", W.kex_init("rq-b"))
    local got = peers:message("d") -- b's own allowance: it reaches the daemon too
    assert.equal("rq-b", got.requestId)
    assert.equal(0, W.metric(h, "relay_frames_client_kex_rate_limited_total"))
    -- each allowance is still one a minute: a's second is refused
    peers:send("a", W.kex_init("rq-a2"))
    local c = peers:wait("a", "close")
    assert.same({ 4008, "key exchange rate limit exceeded" }, { c.code, c.reason })
    assert.equal(0, h:stop())
  end)
end)
