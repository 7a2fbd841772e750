-- tools/perf/workspace-ir/run.sh's platform: admits every token with the claims its role needs, and
-- answers a worker's call under its executor path.
local relay = require "relay"
local app = relay.new { name = "stub", listen = "127.0.0.1:" .. os.getenv("STUB_PORT") }
app:post("/api/runtime/internal/relay/validate", function(req, res)
  local b = relay.json.decode(req:body())
  local c = { workspaceId = b.workspaceId, runtimeTargetId = b.runtimeTargetId }
  if b.role == "client" then
    c.scope, c.clientId, c.sessionChannels = "runtime", b.relayToken, { "agent-session:s1" }
  end
  if b.role == "worker" then c.managedExecutorId = "e1" end
  res:json(200, { ok = true, claims = c })
end)
app:get("/api/runtime/workspaces/ws1/managed-executors/e1/jobs", function(_, res) res:json(200, { jobs = {} }) end)
return app
