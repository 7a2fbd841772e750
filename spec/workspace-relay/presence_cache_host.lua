-- Host for workspace_relay_presence_cache_spec: the workspace relay's backplane (RELAY_* settings
-- from the environment, a real Redis) with nothing else, so that a spec can make it look up the
-- presence of many scopes quickly and read the Lua heap afterwards.
local relay = require "relay"
local config = require "relay.workspace.config"
local backplane = require "relay.workspace.backplane"

local app = relay.new { name = "presence-cache-host", flags = config.flags, listen = config.listen }
local cfg = config.resolve(app.flags, "spec")
local obs = { inc = function() end, log = function() end }
local bp = backplane.new(cfg, { conns = { n = 0 } }, obs)

-- GET /lookups?from=I&n=N: looks up scopes wsI..ws(I+N-1) (runtime target rt), then answers the
-- Lua heap in kB after a full collection.
app:get("/lookups", function(req, res)
  local from, n = tonumber(req.args.from), tonumber(req.args.n)
  for i = from, from + n - 1 do
    bp:remote_daemon { key = "ws" .. i .. ":rt", workspace_id = "ws" .. i, runtime_target_id = "rt" }
  end
  collectgarbage("collect")
  collectgarbage("collect")
  res:json(200, { kb = collectgarbage("count") })
end)

return app
