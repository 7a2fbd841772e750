-- relay.envelope (lua/relay/envelope.lua): HMAC-signed envelopes between servers, in a real host:
-- a script seals, signs and opens what the spec sends it, and says why it refused one.
local helpers = require "helpers"
local cjson = require "cjson"
local socket = require "socket"

local SCRIPT = [[
local relay = require "relay"
local envelope = require "relay.envelope"
local cjson = require "cjson"
local app = relay.new { name = "envelope-user", flags = { key = { default = "k1" } } }
local env = envelope.new { key = app.flags.key, fields = { "from", "to", "at", "body" },
  types = { from = "string", to = "optional", body = "string", signature = "string", at = "number" },
  time = "at", max_skew = 5000, stream = function(e) return e.from end,
  check = function(e) if e.body == "refuse me" then return "refused by check" end end }
app:post("/seal", function(req, res) res:send(200, env:seal(cjson.decode(req:body()))) end)
app:post("/sign", function(req, res) res:send(200, env:sign(cjson.decode(req:body()))) end)
app:post("/open", function(req, res)
  local e, why = env:open(req:body())
  res:json(200, e and { ok = true, e = e } or { ok = false, why = why })
end)
return app
]]

describe("relay.envelope", function()
  local dir, host
  setup(function()
    dir = helpers.tmpdir()
    helpers.write_file(dir .. "/env.lua", SCRIPT)
    host = helpers.start(dir .. "/env.lua")
  end)
  teardown(function() host:stop() end)

  local function post(path, body)
    local r = host:request { method = "POST", path = path, body = body }
    assert.equal(200, r.status, r.body)
    return r.body
  end
  local function open(text) return cjson.decode(post("/open", text)) end
  local function signed(e) -- e as given (its own time), signed
    e.signature = post("/sign", cjson.encode(e))
    return cjson.encode(e)
  end
  local function now_ms() return math.floor(socket.gettime() * 1000) end

  it("opens what it sealed, once: the same envelope again is a replay", function()
    local text = post("/seal", cjson.encode { from = "a", to = "b", body = "hi" })
    local r = open(text)
    assert.is_true(r.ok)
    assert.same({ "a", "b", "hi" }, { r.e.from, r.e.to, r.e.body })
    assert.is_true(math.abs(r.e.at - now_ms()) < 5000)
    assert.same({ ok = false, why = "replay" }, open(text))
  end)

  it("refuses a changed field, a wrong key, a stale time and an older one in the same stream", function()
    local e = cjson.decode(post("/seal", cjson.encode { from = "c", body = "x" }))
    e.body = "y"
    assert.same({ ok = false, why = "bad signature" }, open(cjson.encode(e)))
    local stale = signed { from = "c", body = "x", at = now_ms() - 60000 }
    assert.same({ ok = false, why = "clock skew" }, open(stale))
    local t = now_ms()
    assert.is_true(open(signed { from = "d", body = "1", at = t - 100 }).ok)
    assert.same({ ok = false, why = "replay" }, open(signed { from = "d", body = "2", at = t - 200 }))
    assert.is_true(open(signed { from = "e", body = "2", at = t - 200 }).ok) -- another stream
  end)

  it("checks the fields' types before anything else, a null optional field counting as absent", function()
    local at = now_ms()
    assert.same({ ok = false, why = "not JSON" }, open("{nope"))
    assert.same({ ok = false, why = "missing from" }, open(cjson.encode { body = "x", at = at, signature = "s" }))
    local bad_to = cjson.encode { from = "f", to = 7, body = "x", at = at, signature = "s" }
    assert.same({ ok = false, why = "bad to" }, open(bad_to))
    assert.same({ ok = false, why = "bad at" }, open('{"from":"f","body":"x","at":1e999,"signature":"s"}'))
    local refused = signed { from = "f", body = "refuse me", at = at }
    assert.same({ ok = false, why = "refused by check" }, open(refused))
    local sig = post("/sign", cjson.encode { from = "g", body = "x", at = at }) -- "to" absent: signed as ""
    local r = open(('{"from":"g","to":null,"body":"x","at":%d,"signature":"%s"}'):format(at, sig))
    assert.is_true(r.ok)
    assert.is_nil(r.e.to)
  end)
end)
