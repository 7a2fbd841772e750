-- The one Authorization rule (lua/relay/auth.lua): relay.auth.bearer(value | headers | req) and
-- req:bearer(). RFC 6750 2.1 / RFC 9110 11.4: the scheme "Bearer" in any case, one or more
-- spaces or tabs, a token68, optional trailing whitespace; anything else is no token. Before it
-- there were three patterns in five places ([Bb]earer only, %S+ tokens, trailing OWS or not).
local helpers = require "helpers"
local auth = require "relay.auth"

describe("relay.auth.bearer", function()
  it("takes the scheme in any case, SP or HTAB runs, a token68 and trailing whitespace", function()
    for value, token in pairs {
      ["Bearer abc"] = "abc",
      ["bearer abc"] = "abc",
      ["BEARER abc"] = "abc",
      ["bEaReR abc"] = "abc",
      ["Bearer   abc"] = "abc",
      ["Bearer\tabc"] = "abc",
      ["Bearer \t abc \t "] = "abc",
      ["Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.sig-_~+/=="] = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.sig-_~+/==",
      ["Bearer abc=="] = "abc==",
    } do
      assert.equal(token, auth.bearer(value), value)
    end
  end)

  it("gives nil for every other shape", function()
    for _, value in ipairs {
      "", "Bearer", "Bearer ", "Bearerabc", "Basic YWxhZGRpbjpvcGVu", "Bearer a b", "Bearer a,b",
      "Bearer a=b", "Bearer =abc", "Bearer a\"b", " Bearer abc", "Bearer abc\r\n", "Bearer\nabc",
      "Token abc", "Bearer2 abc", "Bearer ab\0c", "Bearer é",
    } do
      assert.is_nil(auth.bearer(value), value)
    end
    assert.is_nil(auth.bearer(nil))
    assert.is_nil(auth.bearer(42))
    assert.is_nil(auth.bearer({}))
  end)

  it("reads a headers table or a request, and no token from two Authorization fields", function()
    assert.equal("t1", auth.bearer({ authorization = "Bearer t1" }))
    assert.equal("t1", auth.bearer({ headers = { authorization = "Bearer t1" } }))
    local two = setmetatable({ authorization = "Bearer t1" },
      { __index = { all = function() return { "Bearer t1", "Bearer t2" } end } })
    assert.is_nil(auth.bearer(two))
  end)
end)

describe("req:bearer()", function()
  local host

  setup(function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/bearer.lua", [[
      local relay = require "relay"
      local app = relay.new { name = "bearer" }
      app:get("/b", function(req, res)
        assert(req:bearer() == relay.auth.bearer(req.headers))
        res:send(200, tostring(req:bearer()))
      end)
      app:get("/proto", function(req, res)
        assert(relay.auth.subprotocol(req, "auth.") == relay.auth.subprotocol(req.headers, "auth."))
        res:send(200, tostring(relay.auth.subprotocol(req, req.args.prefix or "auth.")))
      end)
      local tokens = { "short", { token = "a-much-longer-token", name = "b" }, "", { name = "no token" } }
      app:get("/admin", function(req, res)
        local entry = relay.auth.match(tokens, req:bearer())
        if not entry then return res:json(401, { ok = false, reason = "UNAUTHORIZED" }) end
        res:json(200, { ok = true, name = type(entry) == "table" and entry.name or entry, list = relay.json.array() })
      end)
      return app
    ]])
    host = helpers.start(dir .. "/bearer.lua")
  end)

  teardown(function() if host then host:stop() end end)

  it("is the same rule inside the host", function()
    assert.equal("abc", host:get("/b", { Authorization = "bearer\tabc  " }).body)
    assert.equal("nil", host:get("/b", { Authorization = "Bearer a b" }).body)
    assert.equal("nil", host:get("/b").body)
  end)

  it("relay.auth.subprotocol: the rest of the first Sec-WebSocket-Protocol entry with the prefix", function()
    local function proto(values, prefix)
      local c = host:client()
      local head = "GET /proto" .. (prefix and ("?prefix=" .. prefix) or "") .. " HTTP/1.1\r\nHost: x\r\n"
      for _, v in ipairs(values) do head = head .. "Sec-WebSocket-Protocol: " .. v .. "\r\n" end
      c:send(head .. "\r\n")
      local res = c:read_response()
      c:close()
      return res.body
    end
    assert.equal("tok-1", proto { "auth.tok-1" })
    assert.equal("tok-2", proto { "v1.relay, auth.tok-2, auth.tok-3" })
    assert.equal("tok-4", proto { "v1", "x,auth.tok-4", "auth.tok-5" }) -- over several fields: the first
    assert.equal("nil", proto { "v1, xauth.tok, auth." })
    assert.equal("nil", proto {})
    assert.equal("k", proto({ "auth.x, a.b-k" }, "a.b-")) -- the prefix is plain text, not a pattern
    assert.equal("nil", proto({ "axb-k" }, "a.b-"))
  end)

  it("relay.auth.match: the entry a presented token equals, nothing for others or an empty one", function()
    local json = require "cjson"
    local body = host:get("/admin", { Authorization = "Bearer short" }).body
    assert.same({ ok = true, name = "short", list = {} }, json.decode(body))
    assert.matches('"list":[]', body, 1, true) -- res:json writes relay.json.array() as []
    assert.same({ ok = true, name = "b", list = {} }, json.decode(host:get("/admin", { Authorization = "Bearer a-much-longer-token" }).body))
    for _, h in ipairs { "Bearer shor", "Bearer shortx", "Bearer a-much-longer-tokeN", "Bearer ", "" } do
      local res = host:get("/admin", { Authorization = h })
      assert.equal(401, res.status, h)
      assert.same({ ok = false, reason = "UNAUTHORIZED" }, json.decode(res.body))
    end
  end)

  it("is nil when the request carries two Authorization fields", function()
    local c = host:client()
    c:send("GET /b HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t1\r\nAuthorization: Bearer t2\r\n\r\n")
    local res = c:read_response()
    c:close()
    assert.equal("nil", res.body)
  end)
end)
