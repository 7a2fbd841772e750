-- relay.auth: the one reading of an Authorization header, and the one comparison of a presented
-- token with configured ones. bearer() is pure Lua; match() needs relay.core (hashes).
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

-- subprotocol(x, prefix) -> token | nil: the rest of the first Sec-WebSocket-Protocol entry that
-- starts with prefix ("auth.<token>", say: a browser cannot set Authorization on a WebSocket).
-- x: a request, or its headers.
function M.subprotocol(x, prefix)
  local pattern = "[,%s]" .. prefix:gsub("%p", "%%%0") .. "([^,%s]+)"
  for _, v in ipairs((x.headers or x):all("sec-websocket-protocol")) do
    local token = (" " .. v):match(pattern)
    if token then return token end
  end
  return nil
end

-- match(tokens, given) -> the entry of tokens that given equals | nil. tokens: an array of
-- strings, or of tables with a .token string (the entry is returned, with whatever it carries).
-- Every entry is compared, with no early exit, as SHA-256 digests of both sides: the time taken
-- tells neither which entry matched nor how long a token is (a byte compare of unequal lengths
-- returns at once). Empty tokens match nothing.
function M.match(tokens, given)
  if type(given) ~= "string" or given == "" or type(tokens) ~= "table" then return nil end
  local core = require "relay.core"
  local want, found = core.sha256(given), nil
  for _, entry in ipairs(tokens) do
    local t = type(entry) == "table" and entry.token or entry
    if type(t) == "string" and t ~= "" and core.constant_time_equal(core.sha256(t), want) then found = entry end
  end
  return found
end

return M
