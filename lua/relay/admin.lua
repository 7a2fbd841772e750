-- relay.admin: a script's operator endpoints (its state, logs, metrics) behind a switch and
-- bearer tokens. Off, they answer as if nothing were there; on, a request must carry one of the
-- tokens (relay.auth.match: constant time, whatever the lengths), as Authorization: Bearer or in
-- a header of the script's own.
local auth = require "relay.auth"
local check = require "relay.check"

local M = {}

local function not_found(_, res) res:send(404, "") end
local function unauthorized(_, res) res:send(401, "") end

-- opts (may be nil): enabled (default true), tokens (strings; none, or an empty one, match
-- nothing), header (another header that may carry the token), disabled(req, res) (default: a
-- bare 404), unauthorized(req, res) (default: a bare 401). -> guard(fn): fn as a handler that
-- runs only for an admitted request.
local NEW = { "enabled", "tokens", "header", "disabled", "unauthorized" }
function M.new(opts)
  opts = check.options(opts, NEW, "relay.admin.new") or {}
  local tokens, header = opts.tokens or {}, opts.header
  local refuse_off, refuse = opts.disabled or not_found, opts.unauthorized or unauthorized
  local enabled = opts.enabled ~= false
  return function(fn)
    return function(req, res)
      if not enabled then return refuse_off(req, res) end
      if not auth.match(tokens, req:bearer() or header and req.headers[header]) then return refuse(req, res) end
      return fn(req, res)
    end
  end
end

return M
