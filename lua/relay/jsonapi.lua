-- relay.jsonapi: the answers of an HTTP API that speaks JSON (not the JSON:API format): one set of
-- headers on every answer (content-type, CORS), values encoded (with a trailing newline when
-- asked: Go's encoder writes one, and clients of a Go original may compare bytes), {"error": …}
-- bodies, each answer counted in a Prometheus counter by labels the caller gives; CORS
-- preflights; and bearer JWTs (HS256, with older secrets still accepted) verified once per token.
local json = require "relay.json"

local type, select, tostring = type, select, tostring

local M = {}
local Api = {}
Api.__index = Api

local NEW_KEYS = { "content_type", "headers", "newline", "counter" }

-- opts: { content_type ("application/json"), headers (more headers for every answer, e.g.
-- { ["access-control-allow-origin"] = "*", vary = "Origin" }), newline (end encoded values
-- with "\n"), counter (a relay.metrics counter: each answer counts 1, labelled by the labels a
-- send gives, then the status) }.
function M.new(opts)
  opts = opts or {}
  require("relay.check").options(opts, NEW_KEYS, "relay.jsonapi.new")
  local headers = { ["content-type"] = opts.content_type or "application/json" }
  for k, v in pairs(opts.headers or {}) do headers[k:lower()] = v end
  return setmetatable({ headers = headers, eol = opts.newline and "\n" or "", counter = opts.counter,
                        interned = {} }, Api)
end

-- The label array of (labels..., status), made once per distinct set and then looked up through
-- one table per label: counting an answer allocates nothing. The caller keeps label values
-- bounded (a value from a URL would add a Prometheus series per request).
function Api:labels(status, ...)
  local node, n = self.interned, select("#", ...)
  for i = 1, n do
    local v = select(i, ...)
    local nxt = node[v]
    if not nxt then
      nxt = {}
      node[v] = nxt
    end
    node = nxt
  end
  local l = node[status]
  if not l then
    l = { ... }
    l[n + 1] = tostring(status)
    node[status] = l
  end
  return l
end

-- Answers status with body: a string is sent as it is (JSON text already), anything else is
-- encoded. labels...: the counter's labels before the status (strings, none of them nil).
function Api:send(res, status, body, ...)
  if type(body) ~= "string" then body = json.encode(body) .. self.eol end
  if self.counter then self.counter:inc(1, self:labels(status, ...)) end
  return res:send(status, body, self.headers)
end

-- Answers status with {"error": message}.
function Api:error(res, status, message, ...)
  return self:send(res, status, { error = message }, ...)
end

-- Answers every OPTIONS request (a browser's CORS preflight) with 204: any origin, the methods
-- and request headers given (strings: "GET,OPTIONS,POST", "*,Authorization").
function M.preflight(app, methods, headers)
  app:options("/*", function(_, res)
    res:send(204, "", {
      ["access-control-allow-origin"] = "*",
      ["access-control-allow-methods"] = methods,
      ["access-control-allow-headers"] = headers,
      vary = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
    })
  end)
end

-- fn(token) -> claims | nil, err: an HS256 token signed with secrets[1], or with one of the
-- older secrets after it (still accepted while clients move over); err is the first secret's.
-- opts: { leeway (seconds, for exp/nbf), max_cached (10000) }. A token without exp, once
-- verified, stays valid for these secrets: its claims are kept (emptied when max_cached are),
-- which saves an HMAC and two decodes per request; one with exp is verified every time.
function M.jwt_verifier(secrets, opts)
  local jwt = require "relay.jwt"
  local vopts, max = { leeway = opts and opts.leeway or 0 }, opts and opts.max_cached or 10000
  local verified, n = {}, 0
  return function(token)
    local claims = verified[token]
    if claims then return claims end
    local err
    claims, err = jwt.verify(token, secrets[1], vopts)
    for i = 2, #secrets do
      if claims then break end
      claims = jwt.verify(token, secrets[i], vopts)
    end
    if not claims then return nil, err end
    if type(claims.exp) ~= "number" then
      if n >= max then verified, n = {}, 0 end
      verified[token], n = claims, n + 1
    end
    return claims
  end
end

return M
