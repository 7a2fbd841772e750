-- relay.records (lua/relay/records.lua): JSON records with a lifetime in a real redis-server:
-- written under prefix .. key with PX, read back, removed; a record past max_bytes or one that is
-- not a JSON object reads as no record, and a Redis that does not answer says so.
local helpers = require "helpers"
local cjson = require "cjson"
local rc = require "redis_cluster_support" -- command(): one line to one redis

local SCRIPT = [[
local relay = require "relay"
local records = require "relay.records"
local app = relay.new { name = "records-user", flags = { redis = { default = "" } } }
local redis = relay.redis(app.flags.redis)
local store = records.new { redis = redis, prefix = "rec:", ttl_ms = 5000, max_bytes = 64 }
local function answer(res, a, b) res:json(200, { a = a == nil and "nil" or a, b = b or "" }) end
app:post("/put", function(req, res)
  answer(res, store:put(req.args.key, req.args.v and { v = req.args.v } or nil))
end)
app:get("/get", function(req, res) answer(res, store:get(req.args.key)) end)
app:get("/exists", function(req, res) answer(res, store:exists(req.args.key)) end)
return app
]]

describe("relay.records", function()
  local rig, port, host
  setup(function()
    rig = helpers.redis_rig(SCRIPT, "records.lua")
    port, host = rig.port, rig.host
  end)
  teardown(function() rig.stop() end)

  local function call(method, path)
    local body = method == "POST" and "" or nil
    return cjson.decode(host:request { method = method, path = path, body = body }.body)
  end

  it("writes a record under prefix .. key with the lifetime, reads it back, and removes it", function()
    assert.same({ a = "OK", b = "" }, call("POST", "/put?key=k1&v=x"))
    local _, raw = rc.command(port, "GET rec:k1")
    assert.same({ v = "x" }, cjson.decode(raw))
    local pttl = tonumber((rc.command(port, "PTTL rec:k1")):sub(2))
    assert.is_true(pttl > 4000 and pttl <= 5000, "PTTL " .. pttl)
    assert.same({ a = { v = "x" }, b = "" }, call("GET", "/get?key=k1"))
    assert.same({ a = true, b = "" }, call("GET", "/exists?key=k1"))
    call("POST", "/put?key=k1") -- no value: removed
    assert.same({ a = false, b = "" }, call("GET", "/exists?key=k1"))
    assert.same({ a = false, b = "" }, call("GET", "/get?key=k1"))
  end)

  it("reads a record past max_bytes, or one that is not a JSON object, as no record", function()
    rc.command(port, "SET rec:big " .. ("x"):rep(65))
    assert.same({ a = false, b = "record over 64 bytes" }, call("GET", "/get?key=big"))
    rc.command(port, "SET rec:fits " .. ("x"):rep(64)) -- at the bound: read, and not JSON
    assert.same({ a = false, b = "" }, call("GET", "/get?key=fits"))
    rc.command(port, "SET rec:arr 5")
    assert.same({ a = false, b = "" }, call("GET", "/get?key=arr"))
  end)

  it("says why when Redis does not answer", function()
    rig.kill_redis()
    local answers = { call("POST", "/put?key=k&v=1"), call("GET", "/get?key=k"),
                      call("GET", "/exists?key=k") }
    for _, r in ipairs(answers) do
      assert.equal("nil", r.a)
      assert.matches("redis", r.b)
    end
  end)
end)
