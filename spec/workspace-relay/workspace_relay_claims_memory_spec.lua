-- Lua heap per admitted connection when the platform's claims are heavy (a pairingSecret, a
-- daemonPublicKey, sessionIds, ids of 128 characters, each one different per token): only the
-- claims used after admission are kept for the connection's life. The relay is the real script,
-- wrapped to answer its Lua heap after a full collection; the clients are node `ws` peers
-- admitted by the validate fixture.
local W = require "workspace_support"

local N = 200

-- s made n characters long, different for each i.
local function unique(i, s, n) return (s .. ("%04d"):format(i)):rep(n):sub(1, n) end

local function heavy_claims(i)
  local session_ids, channels = {}, {}
  for k = 1, 20 do session_ids[k] = unique(i * 100 + k, "session-", 36) end
  for k = 1, 5 do channels[k] = "agent-session:" .. unique(i * 10 + k, "s", 24) end
  return { claims = {
    workspaceId = "ws1", runtimeTargetId = "rt1", role = "client", scope = "runtime",
    e2eeProfile = "noise-ik", clientId = unique(i, "client-", 40), userId = unique(i, "user-", 128),
    installId = unique(i, "install-", 128), machineId = unique(i, "machine-", 64),
    policyMode = unique(i, "policy-", 128), sessionIds = session_ids, sessionChannels = channels,
    daemonPublicKey = unique(i, "dpk-", 512), pairingSecret = unique(i, "secret-", 1024),
    relayWsBaseUrl = "wss://" .. unique(i, "relay-", 400) .. ".example/ws", iss = unique(i, "iss-", 255),
    aud = { "viewport-relay", unique(i, "aud-", 100) }, jti = unique(i, "jti-", 255), iat = 1700000000 + i,
    exp = 1900000000 + i, nbf = 1700000000 + i, ver = 3 } }
end

describe("workspace relay, claims-heavy tokens", function()
  local peers, host

  setup(function()
    local tokens = {}
    for i = 1, 2 * N do tokens[("heavy-token-%04d"):format(i)] = heavy_claims(i) end
    peers = require("ws_peers").start()
    peers:fixture { validate = tokens, key = W.KEY }
    host = W.start_measured(peers, { RELAY_ADMISSION_MAX_RESPONSE_BYTES = "65536",
                            RELAY_MAX_CLIENTS_PER_WORKSPACE = "10000", RELAY_MAX_CONNECTIONS_PER_IP = "10000",
                            RELAY_UPGRADE_RATE_PER_MINUTE = "100000" })
  end)

  teardown(function()
    assert.equal(0, host:stop())
    peers:stop()
  end)

  local function heap() return host:heap() end

  -- Opens tokens first..last as clients of ws1/rt1 -> their peer ids.
  local function open(first, last)
    local ids = {}
    for i = first, last do
      ids[#ids + 1] = "h" .. i
      peers:open("h" .. i, host:ws(W.CLIENT_Q), W.bearer(("heavy-token-%04d"):format(i)))
    end
    for _, id in ipairs(ids) do assert.equal("open", peers:outcome(id, 10)) end
    return ids
  end

  local function close(ids)
    for _, id in ipairs(ids) do peers:cmd { op = "close", id = id, code = 1000 } end
    for _, id in ipairs(ids) do peers:wait(id, "close", 10) end
  end

  it("keeps only the claims it uses after admission", function()
    -- the first N fill what the relay keeps anyway (its log ring, its tables), then go
    close(open(1, N))
    local before = heap()
    local ids = open(N + 1, 2 * N)
    local per = (heap() - before) / N
    -- measured: ~1,900-2,200 B; ~7,700-8,000 B when every claim was kept
    print(("\nworkspace relay: %d bytes of Lua heap per held client with claims-heavy tokens"):format(per))
    close(ids)
    assert(per < 3200, ("%d bytes of Lua heap per held client"):format(per))
  end)
end)
