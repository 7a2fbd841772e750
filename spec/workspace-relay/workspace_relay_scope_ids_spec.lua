-- Workspace and runtime-target ids may contain ':' (the original's query check allows it), so
-- "workspaceId:runtimeTargetId" alone cannot tell workspace "a:b" with no target from workspace
-- "a" with target "b". Two distinct (workspace, target) pairs must never share a scope: not in one
-- relay, not in the Redis presence keys, not across relays over the bus. Real node `ws` peers,
-- the built relay, a real redis-server. The presence key keeps the original's format
-- (<prefix>:presence:<ws>:<rt>) whenever the workspace id has no ':'.
local helpers = require "helpers"
local cjson = require "cjson"
local W = require "workspace_support"

local HMAC = "bus-hmac-key-for-tests-0123456789"
local DAEMON = "role=workspace-daemon&"

local function claims(ws, rt, role, id, scope)
  return { claims = { workspaceId = ws, runtimeTargetId = rt, role = role, clientId = id, scope = scope } }
end

local TOKENS = {
  ["daemon-a-b-token"] = claims("a", "b", "workspace-daemon", "daemon-a-b"),
  ["daemon-a-bc-token"] = claims("a", "b:c", "workspace-daemon", "daemon-a-bc"),
  ["daemon-ab-c-token"] = claims("a:b", "c", "workspace-daemon", "daemon-ab-c"),
  ["pairing-ab-token"] = claims("a:b", nil, "client", "pairing-ab", "pairing"),
  ["client-ab-c-token"] = claims("a:b", "c", "client", "client-ab-c", "runtime"),
}

local function redis_get(port, key)
  local c = assert(helpers.connect(port))
  c:send(("*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n"):format(#key, key))
  local head = c.sock:receive("*l")
  local value = head ~= "$-1" and c.sock:receive(tonumber(head:match("^%$(%d+)"))) or nil
  c:close()
  return value
end

describe("workspace relay scope ids with ':'", function()
  local peers, dir, rport, rpid, A, B

  local function relay(id, extra)
    return W.start_named(peers, id, {
      RELAY_BACKPLANE_MODE = "redis", RELAY_REDIS_URL = "redis://127.0.0.1:" .. rport,
      RELAY_BUS_ENABLED = "1", RELAY_BUS_HMAC_KEY = HMAC, RELAY_PRESENCE_SYNC_INTERVAL_MS = "300",
      RELAY_REDIS_PRESENCE_TTL_MS = "3000", RELAY_BUS_POLL_INTERVAL_MS = "50" }, extra)
  end

  -- The presence record under key, once there (decoded).
  local function presence(key)
    local full = "viewport:relay:presence:" .. key
    return cjson.decode(helpers.wait_until(function() return redis_get(rport, full) end, 3, full))
  end

  setup(function()
    dir = helpers.tmpdir()
    rport, rpid = helpers.start_redis(dir)
    peers = require("ws_peers").start()
    peers:fixture { validate = TOKENS, key = W.KEY }
    A = relay("relay-a")
    B = relay("relay-b", { RELAY_CLIENT_REDIRECT_ENABLED = "0" })
  end)

  teardown(function()
    for _, h in ipairs { A, B } do assert.equal(0, h:stop()) end
    peers:stop()
    os.execute("kill " .. rpid)
  end)

  it("keeps workspace 'a:b' (no target) apart from workspace 'a' with target 'b' in one relay", function()
    assert.equal("open", W.connect(peers, A, "d-a-b", DAEMON .. "workspaceId=a&runtimeTargetId=b",
                                   "daemon-a-b-token"))
    assert.equal("open", W.connect(peers, A, "p-ab", "role=client&workspaceId=a:b", "pairing-ab-token"))
    peers:send("p-ab", W.pairing_offer("cross-workspace"))
    local st = peers:message("p-ab")
    assert.same({ "relay_status", "RUNTIME_TARGET_REQUIRED", "a:b" }, { st.type, st.code, st.workspaceId })
    assert.is_true(peers:quiet("d-a-b", "message", 0.3)) -- the other workspace's daemon got nothing
    local state = cjson.decode(A:get("/state", { authorization = "Bearer admin-token-for-tests" }).body)
    local scopes = {}
    for _, s in ipairs(state.workspaces) do 
      local rt = s.runtimeTargetId == cjson.null and "-" or s.runtimeTargetId
      scopes[#scopes + 1] = s.workspaceId .. "|" .. rt
    end
    table.sort(scopes)
    assert.same({ "a:b|-", "a|b" }, scopes)
  end)

  it("writes the original's presence key for a workspace id without ':' and another one for 'a:b'", function()
    assert.equal("open", W.connect(peers, A, "d-a-bc", DAEMON .. "workspaceId=a&runtimeTargetId=b:c",
                                   "daemon-a-bc-token"))
    local rec = presence("a:b:c") -- the original's key for workspace "a", target "b:c"
    assert.same({ "relay-a", "b:c" }, { rec.relayId, rec.runtimeTargetId })
    assert.equal("open", W.connect(peers, A, "d-ab-c", DAEMON .. "workspaceId=a:b&runtimeTargetId=c",
                                   "daemon-ab-c-token"))
    assert.same({ "relay-a", "c" }, { presence("a%3Ab:c").relayId, presence("a%3Ab:c").runtimeTargetId })
    assert.equal("b:c", presence("a:b:c").runtimeTargetId) -- not overwritten by the other scope
    peers:cmd { op = "close", id = "d-ab-c", code = 1000 }
    peers:wait("d-ab-c", "close")
    helpers.wait_until(function() return redis_get(rport, "viewport:relay:presence:a%3Ab:c") == nil end, 3)
  end)

  it("does not carry a client's frame over the bus to another scope's daemon", function()
    -- the daemon of workspace "a", target "b:c" is on A (above); this client is of workspace
    -- "a:b", target "c", on B, whose daemon is nowhere
    assert.equal("open", W.connect(peers, B, "c-ab-c", "role=client&workspaceId=a:b&runtimeTargetId=c",
                                   "client-ab-c-token"))
    peers:send("c-ab-c", W.kex_init("cross-relay"))
    assert.equal("DAEMON_UNAVAILABLE", peers:message("c-ab-c", 5).code)
    assert.is_true(peers:quiet("d-a-bc", "message", 0.5))
    -- once its own daemon is up (on A), the same client's frames reach that daemon only
    assert.equal("open", W.connect(peers, A, "d-ab-c2", DAEMON .. "workspaceId=a:b&runtimeTargetId=c",
                                   "daemon-ab-c-token"))
    presence("a%3Ab:c")
    helpers.sleep(2.1) -- B's cached "no record" expires
    peers:send("c-ab-c", W.kex_init("own-daemon"))
    assert.equal("own-daemon", peers:message("d-ab-c2", 5).requestId)
    assert.is_true(peers:quiet("d-a-bc", "message", 0.3))
  end)
end)
