-- relay.fleet (lua/relay/fleet.lua) over a real redis-server: two members of one fleet ("a" and
-- "b", in one host) find each other's held items through records with a lifetime, look them up
-- through a cache (asked again after max_age), write them again when Redis is found without them,
-- and pass messages through each other's inbox, a too-long one dropped in Redis and counted.
local helpers = require "helpers"
local cjson = require "cjson"
local rc = require "redis_cluster_support" -- command(): one line to one redis

local SCRIPT = [[
local relay = require "relay"
local fleet = require "relay.fleet"
local app = relay.new { name = "fleet-user", flags = { redis = { default = "" } } }
local redis = relay.redis(app.flags.redis)
local seen = { failed = {}, healed = {}, delivered = {}, dropped = 0 }
local members = {}
for _, name in ipairs { "a", "b" } do
  local held = {} -- item -> still held; a record() of nil: no longer held
  members[name] = fleet.new {
    transport = fleet.redis { redis = redis, key = function(item) return item end, records_prefix = "p:",
                              ttl_ms = 5000, max_record_bytes = 64, inbox_prefix = "q:", name = name, max_len = 10,
                              limit = 10, max_bytes = 32 },
    key = function(item) return item end, every = 60, each = 0.2, max_age = 1.5, max_cached = 8,
    record = function(item, v) if held[item] then return { by = name, v = v } end end,
    valid = function(rec) return type(rec.by) == "string", "no by" end,
    failed = function(what, err) table.insert(seen.failed, what .. ": " .. tostring(err)) end,
    healed = function(why) table.insert(seen.healed, name .. ": " .. why) end,
  }
  members[name].held = held
end
relay.after(0, function()
  members.b:run { every = 0.05, deliver = function(m) table.insert(seen.delivered, m) end,
                  dropped = function(n) seen.dropped = seen.dropped + n end }
end)
app:post("/hold", function(req, res)
  local m = members[req.args.m]
  m.held[req.args.item] = true
  res:json(200, { ok = m:hold(req.args.item, req.args.v) })
end)
app:post("/forget", function(req, res) members[req.args.m].held[req.args.item] = nil; res:json(200, {}) end)
app:post("/drop", function(req, res) members[req.args.m]:drop(req.args.item); res:json(200, {}) end)
app:get("/lookup", function(req, res)
  local rec, asked = members[req.args.m]:lookup(req.args.item)
  res:json(200, { rec = rec == nil and "nil" or rec, asked = asked or false })
end)
app:post("/send", function(req, res) res:json(200, { ok = members.a:send("b", req.args.msg) and true or false }) end)
app:get("/seen", function(_, res) res:json(200, seen) end)
return app
]]

describe("relay.fleet", function()
  local rig, port, host
  setup(function()
    rig = helpers.redis_rig(SCRIPT, "fleet.lua")
    port, host = rig.port, rig.host
  end)
  teardown(function() rig.stop() end)

  local function post(path) return cjson.decode(host:request { method = "POST", path = path, body = "" }.body) end
  local function get(path) return cjson.decode(host:get(path).body) end

  it("writes a held item's record with its lifetime, and another member looks it up through the cache", function()
    assert.same({ ok = "OK" }, post("/hold?m=a&item=i1&v=x"))
    local _, raw = rc.command(port, "GET p:i1")
    assert.same({ by = "a", v = "x" }, cjson.decode(raw))
    local pttl = tonumber((rc.command(port, "PTTL p:i1")):sub(2))
    assert.is_true(pttl > 4000 and pttl <= 5000, "PTTL " .. pttl)
    assert.same({ rec = { by = "a", v = "x" }, asked = true }, get("/lookup?m=b&item=i1"))
    post("/drop?m=a&item=i1")
    assert.same({ rec = { by = "a", v = "x" }, asked = false }, get("/lookup?m=b&item=i1")) -- cached
    helpers.wait_until(function() return get("/lookup?m=b&item=i1").rec == false end, 5, "the drop seen after max_age")
    assert.equal(0, rc.command(port, "EXISTS p:i1") == ":0" and 0 or 1)
  end)

  it("takes a record that is not valid() or too long for none, and says why", function()
    rc.command(port, "SET p:bad {}") -- a JSON object without "by"
    rc.command(port, "SET p:long " .. ("x"):rep(65))
    assert.same({ rec = false, asked = true }, get("/lookup?m=b&item=bad"))
    assert.same({ rec = false, asked = true }, get("/lookup?m=b&item=long"))
    local failed = table.concat(get("/seen").failed, "|")
    assert.matches("records: no by", failed, 1, true)
    assert.matches("records: record over 64 bytes", failed, 1, true)
  end)

  it("writes every held record again when Redis is found without them, and forgets one no longer held", function()
    post("/hold?m=a&item=k1&v=1")
    post("/hold?m=a&item=k2&v=2")
    post("/forget?m=a&item=k2") -- record() now gives nil: forgotten at the next write, not written
    rc.command(port, "FLUSHALL")
    helpers.wait_until(function() return select(2, rc.command(port, "GET p:k1")) ~= nil end, 5, "k1 written again")
    assert.is_nil(select(2, rc.command(port, "GET p:k2")))
    assert.matches("a: a record was missing", table.concat(get("/seen").healed, "|"), 1, true)
  end)

  it("passes messages to another member's inbox; a too-long one is dropped in Redis and counted", function()
    assert.same({ ok = true }, post("/send?msg=hello"))
    assert.same({ ok = true }, post("/send?msg=" .. ("y"):rep(33)))
    assert.same({ ok = true }, post("/send?msg=after"))
    helpers.wait_until(function() return #get("/seen").delivered == 2 end, 3, "two messages delivered")
    local seen = get("/seen")
    assert.same({ "hello", "after" }, seen.delivered)
    assert.equal(1, seen.dropped)
  end)
end)
