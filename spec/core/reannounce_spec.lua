-- relay.reannounce (lua/relay/reannounce.lua): records a server keeps in a real redis-server
-- (hashes), written again at once when Redis is found without them: after a FLUSHALL no call
-- noticed (the watch looks for one record in turn), after a write Redis refused, and after a
-- restart that made writes fail.
local helpers = require "helpers"
local socket = require "socket"
local rc = require "redis_cluster_support" -- command(): one line to one redis

local SCRIPT = [[
local relay = require "relay"
local reannounce = require "relay.reannounce"
local app = relay.new { name = "records-user", flags = { redis = { default = "" } } }
local r = relay.redis(app.flags.redis)
local healed, failed = {}, 0
local records = reannounce.records { every = 60, each = 0.2,
  write = function(k, v)
    if v == nil then return r:call("DEL", "rec:" .. k) end
    return r:call("HSET", "rec:" .. k, "v", v)
  end,
  present = function(k)
    local n = r:call("EXISTS", "rec:" .. k)
    if n == nil then return nil end
    return n == 1
  end,
  healed = function(why) healed[#healed + 1] = why end,
  failed = function() failed = failed + 1 end }
app:post("/hold", function(req, res)
  res:send(200, records:hold(req.args.k, req.args.v) and "ok" or "failed")
end)
app:post("/drop", function(req, res) res:send(200, records:drop(req.args.k) and "ok" or "failed") end)
app:get("/healed", function(_, res) res:send(200, table.concat(healed, ",") .. " failed=" .. failed) end)
return app
]]

describe("relay.reannounce.records", function()
  local rig, port, host
  setup(function()
    rig = helpers.redis_rig(SCRIPT, "records.lua")
    port, host = rig.port, rig.host
  end)
  teardown(function() rig.stop() end)

  local function post(path) return host:request { method = "POST", path = path, body = "" }.body end
  local function get(k) return select(2, rc.command(port, "HGET rec:" .. k .. " v")) end

  it("writes held records, removes dropped ones, and writes them all again when one is missing", function()
    assert.equal("ok", post("/hold?k=a&v=1"))
    assert.equal("ok", post("/hold?k=b&v=2"))
    assert.equal("ok", post("/hold?k=c&v=3"))
    assert.same({ "1", "2", "3" }, { get("a"), get("b"), get("c") })
    assert.equal("ok", post("/drop?k=c"))
    assert.is_nil(get("c"))
    rc.command(port, "FLUSHALL")
    helpers.wait_until(function() return get("a") == "1" and get("b") == "2" end, 5,
                       "the records written again")
    assert.is_nil(get("c"))
    assert.equal("a record was missing failed=0", host:get("/healed").body)
  end)

  -- A key of another type makes HSET fail (WRONGTYPE) while every record looked for is there:
  -- only the failed write tells that one is missing.
  it("after a write Redis refused, writes every record again once Redis takes them", function()
    rc.command(port, "SET rec:w string")
    assert.equal("failed", post("/hold?k=w&v=5"))
    socket.sleep(0.5)
    rc.command(port, "DEL rec:w")
    helpers.wait_until(function() return get("w") == "5" end, 5, "the record written again")
    -- healed(why) comes after every record is written: w may be the first of them
    helpers.wait_until(function() return host:get("/healed").body:find("redis was failing", 1, true) end, 5, "the heal")
    assert.matches("^a record was missing,redis was failing failed=%d+$", host:get("/healed").body)
  end)

  it("after failed writes, writes every record again as soon as Redis answers", function()
    rig.kill_redis()
    assert.equal("failed", post("/hold?k=d&v=4"))
    rig.start_redis()
    helpers.wait_until(function() return get("d") == "4" and get("a") == "1" and get("w") == "5" end, 10,
                       "the records written again")
    helpers.wait_until(function() return select(2, host:get("/healed").body:gsub("redis was failing", "")) == 2 end, 5,
                       "the heal")
    assert.matches("^a record was missing,redis was failing,redis was failing failed=%d+$",
                   host:get("/healed").body)
  end)
end)
