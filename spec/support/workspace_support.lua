-- Shared by the workspace relay specs: start the relay against the peers' validate fixture,
-- tokens and their claims, and frames of the Viewport protocol.
local helpers = require "helpers"
local cjson = require "cjson"

local M = {}

M.KEY = "internal-key-for-tests-0123456789"

-- Tokens the validate fixture knows (token -> claims). Tokens are 10+ characters.
M.tokens = {
  ["daemon-token-1"] = { claims = { workspaceId = "ws1", runtimeTargetId = "rt1", role = "workspace-daemon",
                                    e2eeProfile = "noise-ik", clientId = "daemon-1", daemonIssueGeneration = 2 } },
  ["daemon-token-2"] = { claims = { workspaceId = "ws1", runtimeTargetId = "rt1", role = "workspace-daemon",
                                    e2eeProfile = "noise-ik", clientId = "daemon-2", daemonIssueGeneration = 2 } },
  ["daemon-token-old"] = { claims = { workspaceId = "ws1", runtimeTargetId = "rt1", role = "workspace-daemon",
                                      e2eeProfile = "noise-ik", clientId = "daemon-0", daemonIssueGeneration = 1 } },
  ["daemon-token-rt3-gen5"] = { claims = { workspaceId = "ws1", runtimeTargetId = "rt3", role = "workspace-daemon",
                                           clientId = "daemon-5", daemonIssueGeneration = 5 } },
  ["daemon-token-rt3-gen4"] = { claims = { workspaceId = "ws1", runtimeTargetId = "rt3", role = "workspace-daemon",
                                           clientId = "daemon-4", daemonIssueGeneration = 4 } },
  ["client-token-noworkspace"] = { claims = { runtimeTargetId = "rt1", role = "client", scope = "runtime", clientId = "c-nw" } },
  ["client-token-a"] = { claims = { workspaceId = "ws1", runtimeTargetId = "rt1", role = "client", scope = "runtime",
                                    e2eeProfile = "noise-ik", clientId = "client-a", userId = "u1" } },
  ["client-token-b"] = { claims = { workspaceId = "ws1", runtimeTargetId = "rt1", role = "client", scope = "runtime",
                                    e2eeProfile = "noise-ik", clientId = "client-b", userId = "u2" } },
  ["client-token-c"] = { claims = { workspaceId = "ws1", runtimeTargetId = "rt1", role = "client", scope = "runtime",
                                    e2eeProfile = "noise-ik", clientId = "client-c", userId = "u3" } },
  ["client-token-other-ws"] = { claims = { workspaceId = "ws2", runtimeTargetId = "rt1", role = "client", scope = "runtime",
                                           clientId = "client-x" } },
  ["client-token-notarget"] = { claims = { workspaceId = "ws1", role = "client", scope = "runtime", clientId = "client-n" } },
  ["client-token-noscope"] = { claims = { workspaceId = "ws1", runtimeTargetId = "rt1", role = "client", clientId = "client-s" } },
  ["client-token-pairing"] = { claims = { workspaceId = "ws1", runtimeTargetId = "rt1", role = "client", scope = "pairing",
                                          clientId = "client-p" } },
  ["client-token-psk"] = { claims = { workspaceId = "ws1", runtimeTargetId = "rt1", role = "client", scope = "runtime",
                                      e2eeProfile = "noise-ikpsk2", clientId = "client-psk" } },
  ["client-token-events"] = { claims = { workspaceId = "ws1", runtimeTargetId = "rt1", role = "client",
                                         scope = "session-events", clientId = "client-e1",
                                         sessionChannels = { "agent-session:s1" } } },
  ["client-token-events2"] = { claims = { workspaceId = "ws1", runtimeTargetId = "rt1", role = "client",
                                          scope = "session-events", clientId = "client-e2",
                                          sessionChannels = { "agent-session:s1" } } },
  ["client-token-rt2"] = { claims = { workspaceId = "ws1", runtimeTargetId = "rt2", role = "client", scope = "runtime",
                                      clientId = "client-r2" } },
  ["worker-token-1"] = { claims = { workspaceId = "ws1", runtimeTargetId = "rt1", role = "worker", clientId = "worker-1",
                                    managedExecutorId = "ex1" } },
  -- null where the role may go without the claim (a daemon no executor manages, …)
  ["daemon-token-nulls"] = { claims = { workspaceId = "ws1", runtimeTargetId = "rt9", role = "workspace-daemon",
                                        clientId = "daemon-n", managedExecutorId = cjson.null, machineId = cjson.null,
                                        e2eeProfile = cjson.null, scope = cjson.null, userId = cjson.null,
                                        daemonIssueGeneration = cjson.null, sessionIds = cjson.null } },
  ["client-token-nulls"] = { claims = { workspaceId = "ws1", runtimeTargetId = "rt9", role = "client", scope = "runtime",
                                        clientId = "client-n9", e2eeProfile = cjson.null, sessionChannels = cjson.null,
                                        managedExecutorId = cjson.null, installId = cjson.null, ver = cjson.null } },
  ["worker-token-nulls"] = { claims = { workspaceId = "ws1", role = "worker", managedExecutorId = "ex1",
                                        runtimeTargetId = cjson.null, scope = cjson.null, policyMode = cjson.null } },
  -- null where the role needs the claim
  ["client-token-null-scope"] = { claims = { workspaceId = "ws1", runtimeTargetId = "rt1", role = "client", scope = cjson.null } },
  ["worker-token-null-exec"] = { claims = { workspaceId = "ws1", role = "worker", managedExecutorId = cjson.null } },
  ["daemon-token-null-ws"] = { claims = { workspaceId = cjson.null, runtimeTargetId = "rt1", role = "workspace-daemon" } },
  ["client-token-wrong-type"] = { claims = { workspaceId = "ws1", role = "client", scope = "runtime", managedExecutorId = 5 } },
  ["bad-claims-token"] = { claims = { workspaceId = "ws1", role = "client", scope = "runtime", surprise = "yes" } },
  ["not-ok-token"] = { body = { ok = false, reason = "REVOKED" } },
  ["slow-token-x"] = { delay_ms = 4000, claims = { workspaceId = "ws1", runtimeTargetId = "rt1", role = "client",
                                                  scope = "runtime", clientId = "client-slow" } },
  ["huge-token-x"] = { raw = '{"ok":true,"claims":{"workspaceId":"ws1"},"pad":"' .. ("x"):rep(4096) .. '"}' },
  ["garbage-token"] = { raw = "this is not json" },
}

local socket = require "socket"

-- A port nobody listens on right now (for a relay that must know its own URL before it starts).
M.free_port = helpers.free_port

-- env plus the admin endpoints, with the token the specs use.
function M.with_admin(env)
  env = env or {}
  env.RELAY_ENABLE_ADMIN_HTTP, env.RELAY_ADMIN_TOKEN = "1", "admin-token-for-tests"
  return env
end

function M.fixture(peers) peers:fixture { validate = M.tokens, key = M.KEY } end

-- Starts the relay; env adds to (or, with false, removes from) the base settings. script: another
-- script in its place (one that wraps it).
function M.start(peers, env, flags, listen, script)
  local e = { SERVER_URL = "http://127.0.0.1:" .. peers.http_port, RELAY_INTERNAL_KEY = M.KEY,
              RELAY_BACKPLANE_MODE = "single", RELAY_ADMISSION_TIMEOUT_MS = "2500",
              RELAY_ADMISSION_MAX_RESPONSE_BYTES = "2048" }
  for k, v in pairs(env or {}) do e[k] = v or nil end
  local host = helpers.start(script or helpers.root .. "/scripts/workspace-relay.lua",
                             { env = e, flags = flags, listen = listen })
  host.ws = function(_, query) return ("ws://127.0.0.1:%d/ws?%s"):format(host.port, query) end
  return host
end

-- The real relay wrapped to answer GET /lua-heap (its Lua heap after two full collections), for
-- the memory specs; host:heap() reads it in bytes.
function M.start_measured(peers, env)
  local dir = helpers.tmpdir()
  helpers.write_file(dir .. "/heap.lua", ([[
local app = dofile(%q)
app:get("/lua-heap", function(_, res)
  collectgarbage("collect")
  collectgarbage("collect")
  res:json(200, { bytes = collectgarbage("count") * 1024 })
end)
return app
]]):format(helpers.root .. "/scripts/workspace-relay.lua"))
  local host = M.start(peers, env, nil, nil, dir .. "/heap.lua")
  host.heap = function(h)
    local res = h:get("/lua-heap")
    assert(res.status == 200, "GET /lua-heap: status " .. tostring(res.status))
    return cjson.decode(res.body).bytes
  end
  return host
end

-- A relay that knows its own public URL before it starts (multi-relay specs), admin on.
function M.start_named(peers, id, env, extra)
  local port = M.free_port()
  env = M.with_admin(env)
  env.RELAY_ID, env.RELAY_PUBLIC_WS_BASE_URL = id, ("ws://127.0.0.1:%d/ws"):format(port)
  for k, v in pairs(extra or {}) do env[k] = v end
  return M.start(peers, env, nil, "127.0.0.1:" .. port)
end

function M.bearer(token) return { authorization = "Bearer " .. token } end

M.DAEMON_Q = "role=workspace-daemon&workspaceId=ws1&runtimeTargetId=rt1"
M.CLIENT_Q = "role=client&workspaceId=ws1&runtimeTargetId=rt1"

-- Opens a connection and waits for the upgrade; returns its outcome ("open" or a status).
function M.connect(peers, host, id, query, token, extra_headers)
  local headers = token and M.bearer(token) or {}
  for k, v in pairs(extra_headers or {}) do headers[k] = v end
  peers:open(id, host:ws(query), headers)
  return peers:outcome(id)
end

-- ---- frames ----

function M.kex_init(request_id, profile)
  return { type = "relay_key_exchange_init", version = 3, profile = profile or "noise-ik", requestId = request_id,
           clientEphemeralPublicKey = "ephemeral", encryptedClientStatic = "static" }
end

function M.kex_response(request_id, session_id)
  return { type = "relay_key_exchange_response", version = 3, profile = "noise-ik", requestId = request_id,
           daemonPublicKey = "dpk", daemonEphemeralPublicKey = "dek", encryptedMetadata = "meta",
           sessionId = session_id, epoch = 1, proof = "proof" }
end

function M.e2ee(session_id, seq, ciphertext, profile)
  return { type = "e2ee", version = 2, profile = profile or "noise-ik", sessionId = session_id, epoch = 1,
           seq = seq or 1, iv = "iv", tag = "tag", ciphertext = ciphertext or "opaque" }
end

function M.pairing_offer(request_id)
  return { type = "relay_pairing_offer_request", requestId = request_id, clientChannelPublicKey = "ccpk" }
end

function M.pairing_response(request_id)
  return { type = "relay_pairing_offer_response", requestId = request_id, ok = true, daemonChannelPublicKey = "d",
           encIv = "i", encTag = "t", encCiphertext = "c" }
end

-- ---- the bus ----

-- base64url(HMAC-SHA256(key, data)), by the openssl CLI (not by the code under test).
function M.hmac_b64url(key, data)
  local dir = helpers.tmpdir()
  helpers.write_file(dir .. "/in", data)
  local p = io.popen(("openssl dgst -sha256 -hmac '%s' -binary %s/in | base64 -w0"):format(key, dir))
  local out = p:read("*a")
  p:close()
  return (out:gsub("=", ""):gsub("%+", "-"):gsub("/", "_"))
end

-- A bus envelope from relay-x to target, signed with key the way the original signs (absent
-- optional fields as ""). over replaces fields after signing.
function M.envelope(key, target, issued, payload, over)
  local e = { workspaceId = "ws1", runtimeTargetId = "rt1", sourceRelayId = "relay-x", targetRelayId = target,
              direction = "client_to_daemon", issuedAtMs = issued, payload = payload }
  e.signature = M.hmac_b64url(key, table.concat({ "ws1", "rt1", "", "relay-x", target, "client_to_daemon",
                                                   string.format("%d", issued), payload }, "\n"))
  for k, v in pairs(over or {}) do e[k] = v end
  return e
end

-- Counter value from /metrics (admin must be on), or 0.
function M.metric(host, name, token)
  local res = host:get("/metrics", { authorization = "Bearer " .. (token or "admin-token-for-tests") })
  return tonumber(res.body:match("\n" .. name .. " (%d+)") or res.body:match("^" .. name .. " (%d+)")) or 0
end

return M
