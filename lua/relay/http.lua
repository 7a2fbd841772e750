-- Request, Response and Headers: the objects handlers receive. C builds them (the fields);
-- these metatables give them their methods.
local core = require "relay.core"
local check = require "relay.check"

local lower, type, rawget, rawset, setmetatable = string.lower, type, rawget, rawset, setmetatable

local M = {}

-- Headers: lowercase keys; any spelling finds them. Repeated fields: h[name] is the first
-- value, h:all(name) every value in order (kept in a weak side table, so pairs(h) is clean).
local multi = setmetatable({}, { __mode = "k" })
local Headers = {}
function Headers.all(h, name)
  local l = lower(name)
  local m = multi[h]
  if m and m[l] then return { unpack(m[l]) } end
  local v = rawget(h, l)
  return v and { v } or {}
end
Headers.__index = function(h, k)
  if k == "all" then return Headers.all end
  if type(k) ~= "string" then return nil end
  local l = lower(k)
  if l ~= k then return rawget(h, l) end
  return nil
end
Headers.__newindex = function(h, k, v)
  local l = lower(k)
  if multi[h] then multi[h][l] = nil end
  rawset(h, l, v)
end
M.Headers = Headers

function M.headers(t)
  local h = setmetatable({}, Headers)
  for k, v in pairs(t or {}) do h[k] = v end
  return h
end

local function unescape(s)
  s = s:gsub("+", " ")
  return (s:gsub("%%(%x%x)", function(hex) return string.char(tonumber(hex, 16)) end))
end

-- "a=1&b=2&a=3" -> { a = {"1", "3"}, b = "2" }; ';' separates too, as ff-proxy's users expect.
function M.parse_query(q)
  local args = {}
  for pair in (q or ""):gmatch("[^&;]+") do
    local k, v = pair:match("^([^=]*)=(.*)$")
    k = unescape(k or pair)
    v = v and unescape(v) or true
    local old = args[k]
    if old == nil then args[k] = v
    elseif type(old) == "table" then old[#old + 1] = v
    else args[k] = { old, v } end
  end
  return args
end

local Request = {}
function Request:body() return core.req_body(self._ex) end
function Request:header(name) return self.headers[name] end
-- The token of "Authorization: Bearer <token68>" or nil (relay.auth.bearer: the one rule).
local auth = require "relay.auth"
function Request:bearer() return auth.bearer(self) end
-- Takes a WebSocket upgrade on a plain route once the handler has decided to (checks that may
-- wait, such as an admission call, run before the 101): -> ws | nil, err. protocols: the
-- subprotocols spoken ("a,b"; "*": the client's first offer); opts: max_message (bytes, 1009
-- above), max_queued (bytes the peer may owe us before we stop reading it), going_away (a
-- reason: the session is closed 1001 with it as soon as SIGTERM arrives).
local WS_ACCEPT_KEYS = { "headers", "max_message", "max_queued", "going_away" }
function M.ws_accept(protocols, opts)
  check.options(opts, WS_ACCEPT_KEYS, "websocket accept options")
  return check.results(true, core.ws_accept(protocols, opts))
end
function Request:websocket(protocols, opts) return M.ws_accept(protocols, opts) end
-- args parsed on first use, then methods.
local function request_index(methods)
  return function(req, k)
    if k == "args" then
      local a = M.parse_query(rawget(req, "query"))
      rawset(req, "args", a)
      return a
    end
    return methods[k]
  end
end
M.Request = { __index = request_index(Request) }
-- A mount's access phase (core/lua/lua_proxy.c) gets the same readers; its body is not read
-- yet (it waits at the server's buffer until the phase returns), so it has no req:body().
-- req.upstream is kept aside with the line that set it, so that a choice the mount refuses once
-- the phase returns (core/lua/lua_proxy.c) is reported at the author's file:line.
local access_index = request_index({ header = Request.header, bearer = Request.bearer })
M.AccessRequest = {
  __index = function(req, k)
    if k == "upstream" then return rawget(req, "_upstream") end
    return access_index(req, k)
  end,
  __newindex = function(req, k, v)
    if k ~= "upstream" then return rawset(req, k, v) end
    rawset(req, "_upstream", v)
    rawset(req, "_upstream_at", check.where(2))
  end,
}

local Response = {}
Response.__index = Response

-- Headers set before the response starts: merged into send/start.
function Response:set_header(name, value)
  local h = rawget(self, "_headers")
  if not h then h = {}; rawset(self, "_headers", h) end
  h[lower(name)] = value
  return self
end

local function merged(self, headers)
  local pre = rawget(self, "_headers")
  if not pre then return headers end
  local out = {}
  for k, v in pairs(pre) do out[k] = v end
  for k, v in pairs(headers or {}) do out[lower(k)] = v end
  return out
end

-- What C refuses in a response (a status out of range, CR or LF in a header) is reported at the
-- handler's line: the C calls go through check.results.
function Response:send(status, body, headers)
  if type(body) == "table" then return self:json(status, body, headers) end
  return check.results(pcall(core.res_send, self._ex, status, body, merged(self, headers)))
end

local json
function Response:json(status, value, headers)
  json = json or require "relay.json"
  local h = merged(self, headers) or {}
  local has_type = false
  for k in pairs(h) do if lower(k) == "content-type" then has_type = true end end
  if not has_type then h["content-type"] = "application/json" end
  return check.results(pcall(core.res_send, self._ex, status, json.encode(value), h))
end

function Response:redirect(location, status)
  return check.results(pcall(core.res_send, self._ex, status or 302, "", merged(self, { location = location })))
end

function Response:start(status, headers)
  return check.results(pcall(core.res_start, self._ex, status, merged(self, headers)))
end
function Response:write(chunk) return core.res_write(self._ex, chunk) end
function Response:finish() return core.res_finish(self._ex) end
function Response:sent()
  local head_sent = core.res_state(self._ex)
  return head_sent
end
M.Response = Response

-- relay.http.json{url, method, headers, body, timeout, max_body, ca_file, any_status}: one call to
-- a JSON API (an upstream's, a JWKS endpoint, a platform's internal API). A table body is sent as
-- JSON, with content-type application/json unless headers name another. -> the decoded body of a
-- 200 answer when it is an object or array; else nil, why ("status 404", "not JSON") and the
-- response; or nil and relay.http.request's error (timeout, refused, TLS) when there was no
-- answer. any_status: every status is an answer (an API whose refusals carry a JSON reason) ->
-- the status, the decoded body (nil when not an object or array) and the response; or nil, err.
function M.json(opts)
  json = json or require "relay.json"
  local req = {}
  for k, v in pairs(opts) do req[k] = v end
  req.any_status = nil
  if type(opts.body) == "table" then
    req.body, req.headers = json.encode(opts.body), M.headers(opts.headers)
    req.headers["content-type"] = req.headers["content-type"] or "application/json"
  end
  local r, err = require("relay").http.request(req)
  if not r then return nil, err end
  if r.status ~= 200 and not opts.any_status then return nil, ("status %d"):format(r.status), r end
  local v = json.decode_table(r.body)
  if opts.any_status then return r.status, v, r end
  if not v then return nil, "not JSON", r end
  return v
end

core.set_classes(M.Request, M.Response, Headers, multi)
return M
