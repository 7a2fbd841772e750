-- relay.auth: the one reading of an Authorization header. Pure Lua (no host needed).
local type, lower, match = type, string.lower, string.match

local M = {}

-- RFC 6750 2.1 and RFC 9110 11.4: credentials = auth-scheme 1*SP token68, the scheme
-- case-insensitive. Spaces or tabs between (RFC 9110 11.3 allows several SP; a tab is taken
-- too, as Go's and Node's servers do), trailing OWS allowed; anything else, a second token
-- or a character outside token68 included, is no bearer token.
local function from_value(v)
  if type(v) ~= "string" then return nil end
  local scheme, token = match(v, "^(%a+)[ \t]+([%w%-%._~%+/]+=*)[ \t]*$")
  if scheme and lower(scheme) == "bearer" then return token end
  return nil
end

-- bearer(x) -> token | nil. x: an Authorization value, a headers table, or a request (req).
-- Two Authorization fields are no token (which one counts is ambiguous).
function M.bearer(x)
  if type(x) ~= "table" then return from_value(x) end
  local h = x.headers or x
  local all = type(h.all) == "function" and h:all("authorization")
  if all and #all > 1 then return nil end
  return from_value(h.authorization or h.Authorization)
end

return M
