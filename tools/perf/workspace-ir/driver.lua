-- luajit driver.lua PORT PHASE N (tools/perf/workspace-ir/run.sh): N rounds of one phase, "warm": of each
-- LUA_PATH (run.sh): the checkout's spec/support (ws_raw) and lua/
local ws = require "ws_raw"
local port, n = tonumber(arg[1]), tonumber(arg[3])
local Q = "/ws?workspaceId=ws1&runtimeTargetId=rt1&role="
local function open(role, tok) return assert(ws.open(port, Q .. role, { authorization = "Bearer " .. tok })) end
local function send(c, text) c:push(ws.frame(ws.TEXT, text)) end
local function recv(c) local op, p = c:read_frame(10); assert(op, p); return p end
local d = open("workspace-daemon", "daemon-token-x1")
local cl = open("client", "client-token-1")
local E2EE = '{"type":"e2ee","version":2,"profile":"noise-ik","sessionId":"S%d","epoch":1,"seq":%d,"iv":"aa","tag":"bb","ciphertext":"cc"}'
local phase = arg[2]
for i = 1, ((phase == "frames" or phase == "warm") and n or 0) do
  -- client kex_init -> daemon; daemon kex_response -> client (Lua both ways)
  send(cl, ('{"type":"relay_key_exchange_init","version":2,"profile":"noise-ik","requestId":"r%d","clientPublicKey":"k","clientNonce":"n","clientProof":"p"}'):format(i))
  recv(d)
  send(d, ('{"type":"relay_key_exchange_response","version":2,"profile":"noise-ik","requestId":"r%d","sessionId":"S%d","proof":"p","daemonNonce":"n","epoch":1}'):format(i, i))
  recv(cl)
  -- client e2ee -> daemon (Lua); daemon e2ee -> client (C)
  send(cl, E2EE:format(i, 1)); recv(d)
  send(d, E2EE:format(i, 2)); recv(cl)
  -- subscribe, then a session event fanned out, then presence
  send(cl, '{"type":"viewport.session_events.subscribe/v1","channel":"agent-session:s1"}'); recv(d)
  send(d, '{"schema":"viewport.session_event_relay_frame/v1","channel":"agent-session:s1","event":{}}'); recv(cl)
end
-- connection churn: a client joins and leaves
for i = 1, ((phase == "conns" or phase == "warm") and n or 0) do
  local c = open("client", "client-token-c" .. i)
  c:push(ws.frame(ws.CLOSE, "\3\232")); c:read_close(5); c:close()
end
-- worker frames: an HTTP call each, and one refused for its path
local w = open("worker", "worker-token-1")
for i = 1, ((phase == "worker" or phase == "warm") and n or 0) do
  send(w, ('{"type":"viewport.worker_transport.request/v1","requestId":"w%d","method":"GET","path":"/api/runtime/workspaces/ws1/managed-executors/e1/jobs"}'):format(i))
  assert(recv(w):find('"status":200', 1, true))
  send(w, ('{"type":"viewport.worker_transport.request/v1","requestId":"x%d","method":"GET","path":"/api/runtime/workspaces/ws1/managed-executors/e2/jobs"}'):format(i))
  assert(recv(w):find('"status":403', 1, true))
end
w:close(); cl:close(); d:close()
print("ok")
