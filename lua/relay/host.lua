-- The host's side of loading a script: run it, check it returned an app, resolve the flags,
-- install the routes, run on_init, then make globals read-only. Called from C for every
-- generation (start, reload, `relayhost check`).
local M = {}

local function lock_globals()
  setmetatable(_G, {
    __newindex = function(_, name)
      error(("assignment to undeclared global '%s' (use local)"):format(tostring(name)), 2)
    end,
  })
end

-- Errors keep their file:line; a table error is --help asking to print and exit.
local function handler(err)
  if type(err) == "table" then return err end
  return debug.traceback(tostring(err), 2)
end

function M.load(script, argv)
  local relay = require "relay"
  relay._begin_load(argv, script)
  local chunk, err = loadfile(script)
  if not chunk then error(err, 0) end
  local ok, app = xpcall(chunk, handler)
  if not ok then
    if type(app) == "table" and app.relay_help then return { help = app.relay_help } end
    error(app, 0)
  end
  app = app or relay._last_app()
  if type(app) ~= "table" or not app._is_app then
    error(script .. ": the script must return an app made by relay.new{...}", 0)
  end
  local settings = app:_install()
  lock_globals()
  return settings
end

return M
