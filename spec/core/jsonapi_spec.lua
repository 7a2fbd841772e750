-- relay.jsonapi (lua/relay/jsonapi.lua) in a script the host runs: the headers on every answer,
-- encoded values with and without the trailing newline, text passed as it is, {"error": …}
-- bodies, the counter's labels (made once per set), the CORS preflight, and HS256 tokens
-- verified with the current secret or an older one, an expiring one checked every time.
local helpers = require "spec.helpers"
local cjson = require "cjson"

local SCRIPT = [[
local relay = require "relay"
local jsonapi = require "relay.jsonapi"
local app = relay.new { name = "jsonapi-test" }
local counter = relay.metrics.counter("test_answers_total", "answers", { "route", "code" })
local api = jsonapi.new { content_type = "application/json; charset=utf-8", newline = true, counter = counter,
                          headers = { ["Access-Control-Allow-Origin"] = "*", vary = "Origin" } }
local bare = jsonapi.new {}
local verify = jsonapi.jwt_verifier({ "new-secret", "old-secret" }, { leeway = 0, max_cached = 2 })
jsonapi.preflight(app, "GET,POST", "*,Authorization")
app:get("/metrics", relay.metrics.handler)

app:get("/value", function(_, res) api:send(res, 200, { a = relay.json.array() }, "/value") end)
app:get("/text", function(_, res) api:send(res, 200, "[1]\n", "/text") end)
app:get("/error", function(_, res) api:error(res, 404, "not found: x", "/error") end)
app:get("/bare", function(_, res) bare:send(res, 201, { b = 1 }) end)
app:get("/same-labels", function(_, res)
  res:send(200, tostring(api:labels(200, "/value") == api:labels(200, "/value")
    and api:labels(200, "/value") ~= api:labels(404, "/value")))
end)
app:get("/sign/:secret", function(req, res)
  local exp = req.args.exp and relay.time() + tonumber(req.args.exp) or nil
  res:send(200, relay.jwt.sign({ sub = "u", exp = exp }, req.params.secret))
end)
app:get("/me", function(req, res)
  local claims, err = verify(req:bearer() or "")
  if not claims then return api:error(res, 401, err, "/me") end
  api:send(res, 200, { sub = claims.sub }, "/me")
end)
return app
]]

describe("relay.jsonapi", function()
  local host
  setup(function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/api.lua", SCRIPT)
    host = helpers.start(dir .. "/api.lua")
  end)
  teardown(function() assert.equal(0, host:stop()) end)

  it("sends values encoded, text as it is, errors as {\"error\": …}, with the same headers", function()
    local r = host:get("/value")
    assert.same({ 200, '{"a":[]}\n', "application/json; charset=utf-8", "*", "Origin" },
      { r.status, r.body, r.headers["content-type"], r.headers["access-control-allow-origin"], r.headers.vary })
    assert.same({ 200, "[1]\n" }, { host:get("/text").status, host:get("/text").body })
    r = host:get("/error")
    assert.same({ 404, '{"error":"not found: x"}\n', "*" },
      { r.status, r.body, r.headers["access-control-allow-origin"] })
    r = host:get("/bare")
    assert.same({ 201, '{"b":1}', "application/json" }, { r.status, r.body, r.headers["content-type"] })
    assert.is_nil(r.headers["access-control-allow-origin"])
  end)

  it("counts each answer by the labels given, then the status, one label array per set", function()
    local function count(series)
      return tonumber(host:get("/metrics").body:match(series:gsub("%p", "%%%0") .. " (%d+)")) or 0
    end
    local ERRORS, VALUES = 'test_answers_total{route="/error",code="404"}', 'test_answers_total{route="/value",code="200"}'
    local errors, values = count(ERRORS), count(VALUES)
    host:get("/value")
    host:get("/error")
    host:get("/error")
    assert.equal(errors + 2, count(ERRORS))
    assert.equal(values + 1, count(VALUES))
    assert.equal("true", host:get("/same-labels").body)
  end)

  it("answers a CORS preflight for any path", function()
    local r = host:request { method = "OPTIONS", path = "/anything/at/all" }
    local vary = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
    assert.same({ 204, "*", "GET,POST", "*,Authorization", vary },
      { r.status, r.headers["access-control-allow-origin"], r.headers["access-control-allow-methods"],
        r.headers["access-control-allow-headers"], r.headers.vary })
  end)

  it("verifies tokens of the current secret and of older ones, and no other", function()
    local function me(token)
      local r = host:get("/me", { Authorization = "Bearer " .. token })
      return r.status, r.body
    end
    for _ = 1, 3 do -- again: from what was kept (max_cached 2 empties it on the third)
      assert.same({ 200, '{"sub":"u"}\n' }, { me(host:get("/sign/new-secret").body) })
      assert.same({ 200, '{"sub":"u"}\n' }, { me(host:get("/sign/old-secret").body) })
    end
    local status, body = me(host:get("/sign/other-secret").body)
    assert.same({ 401, "bad signature" }, { status, cjson.decode(body).error })
  end)

  it("checks a token with exp every time: it is refused once expired", function()
    local token = host:get("/sign/new-secret?exp=1").body
    assert.equal(200, host:get("/me", { Authorization = "Bearer " .. token }).status)
    helpers.wait_until(function()
      return host:get("/me", { Authorization = "Bearer " .. token }).status == 401
    end, 5, "the token to expire")
  end)
end)
