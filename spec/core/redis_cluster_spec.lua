-- relay.redis against a real Redis Cluster (3 primaries, spec/support/redis_cluster_support.lua): keys
-- spread over every node, a slot moved by hand mid-test (ASK while it migrates, MOVED after),
-- hash-tagged keys in one multi-key command, and the clear errors for what cannot be routed.
local helpers = require "helpers"
local cjson = require "cjson"
local rc = require "redis_cluster_support"

local escape = helpers.url_escape

describe("relay.redis on a Redis Cluster", function()
  local dir, cluster, host

  setup(function()
    dir = helpers.tmpdir()
    cluster = rc.start()
    helpers.write_file(dir .. "/r.lua", ([[
local relay = require "relay"
local cjson = require "cjson"
local app = relay.new { name = "redis-cluster" }
local clients = {
  cluster = relay.redis("SEEDS"),
  url = relay.redis("redis://SEEDS"),
  one = relay.redis("redis://127.0.0.1:FIRST"),
  flagged = relay.redis("127.0.0.1:FIRST", { cluster = true }),
}
app:get("/call", function(req, res)
  local v, err = clients[req.args.c or "cluster"]:call(unpack(cjson.decode(req.args.a)))
  res:json(200, { v = v, err = err })
end)
app:get("/scan", function(req, res) -- as the flag proxy's Redis cache reads every environment
  local keys, cursor, calls = {}, "0", 0
  repeat
    local reply, err = clients.cluster:call("SCAN", cursor, "MATCH", req.args.match, "COUNT", "10")
    if not reply then return res:json(200, { err = err }) end
    cursor, calls = reply[1], calls + 1
    for _, k in ipairs(reply[2]) do keys[#keys + 1] = k end
  until cursor == "0"
  res:json(200, { keys = keys, calls = calls })
end)
app:get("/bad", function(req, res)
  local ok, err = pcall(relay.redis, req.args.url)
  res:send(200, ok and "accepted" or err)
end)
return app
]]):gsub("SEEDS", cluster.seeds):gsub("FIRST", tostring(cluster.ports[1])))
    host = helpers.start(dir .. "/r.lua")
  end)

  teardown(function()
    if host then assert.equal(0, host:stop()) end
    if cluster then cluster:stop() end
  end)

  local function call(args, c)
    return cjson.decode(host:get("/call?c=" .. (c or "cluster") .. "&a=" .. escape(cjson.encode(args))).body)
  end

  it("sends each key to the node that holds its slot, on all three nodes", function()
    helpers.wait_until(function() return call({ "SET", "probe", "1" }).v == "OK" end, 10, "the cluster answers")
    for i = 1, 60 do assert.same({ v = "OK" }, call({ "SET", "k" .. i, "v" .. i })) end
    for i = 1, 60 do assert.same({ v = "v" .. i }, call({ "GET", "k" .. i })) end
    for _, p in ipairs(cluster.ports) do
      assert.truthy(tonumber(rc.command(p, "DBSIZE"):sub(2)) > 5, "keys on the node at " .. p)
    end
    assert.same({ v = "PONG" }, call({ "PING" }))
    assert.same({ v = "v7" }, call({ "GET", "k7" }, "url"))
  end)

  it("finds the whole cluster from one seed", function()
    for i = 1, 30 do assert.same({ v = "v" .. i }, call({ "GET", "k" .. i }, "flagged")) end
  end)

  it("follows ASK while a slot migrates and MOVED once it has moved", function()
    assert.same({ v = "OK" }, call({ "SET", "foo", "bar" }))
    local slot = 12182 -- "foo"
    local from = cluster:owner(slot)
    local to = cluster.ports[1] == from and cluster.ports[2] or cluster.ports[1]
    local from_id, to_id = cluster:id(from), cluster:id(to)
    assert.equal("+OK", rc.command(to, ("CLUSTER SETSLOT %d IMPORTING %s"):format(slot, from_id)))
    assert.equal("+OK", rc.command(from, ("CLUSTER SETSLOT %d MIGRATING %s"):format(slot, to_id)))
    assert.equal("+OK", rc.command(from, ("MIGRATE 127.0.0.1 %d foo 0 5000"):format(to)))
    assert.equal("-ASK", rc.command(from, "GET foo"):sub(1, 4))
    assert.same({ v = "bar" }, call({ "GET", "foo" })) -- ASKING, then GET, on the importing node
    for _, p in ipairs(cluster.ports) do
      assert.equal("+OK", rc.command(p, ("CLUSTER SETSLOT %d NODE %s"):format(slot, to_id)))
    end
    assert.equal(to, cluster:owner(slot))
    assert.same({ v = "bar" }, call({ "GET", "foo" })) -- MOVED, followed
    assert.same({ v = "OK" }, call({ "SET", "foo", "baz" }))
    assert.equal("$3", (rc.command(to, "GET foo")))
    assert.same({ v = "baz" }, call({ "GET", "foo" }))
  end)

  it("runs a multi-key command on hash-tagged keys, and refuses keys in different slots", function()
    assert.same({ v = "OK" }, call({ "MSET", "{user1000}.following", "a", "{user1000}.followers", "b" }))
    assert.same({ v = { "a", "b" } }, call({ "MGET", "{user1000}.following", "{user1000}.followers" }))
    assert.same({ v = 1 }, call({ "RPUSH", "{q}.list", "x" }))
    assert.same({ v = { "{q}.list", "x" } }, call({ "BLPOP", "{q}.list", "{q}.other", "1" }))
    assert.same({ v = 2 }, call({ "EVAL", "return redis.call('DEL', KEYS[1], KEYS[2])", 2,
      "{user1000}.following", "{user1000}.followers" }))
    local r = call({ "DEL", "foo", "bar" })
    assert.is_nil(r.v)
    assert.matches("CROSSSLOT keys 'foo' and 'bar' are in different slots", r.err, 1, true)
  end)

  it("runs SCAN on every primary, one after the other, with a cursor that ends at 0", function()
    local want = {}
    for i = 1, 40 do
      assert.same({ v = "OK" }, call({ "SET", "scan:" .. i, "x" }))
      want[#want + 1] = "scan:" .. i
    end
    local got = cjson.decode(host:get("/scan?match=" .. escape("scan:*")).body)
    assert.is_nil(got.err)
    table.sort(got.keys)
    table.sort(want)
    assert.same(want, got.keys)
    assert.truthy(got.calls >= 3, "one SCAN at least per primary")
    assert.matches("bad SCAN cursor", call({ "SCAN", "7-x" }).err, 1, true)
    assert.matches("bad SCAN cursor", call({ "SCAN", "9-0" }).err, 1, true)
  end)

  it("gives a blocking reader a connection of its own, so its node's other commands do not wait", function()
    local socket = require "socket"
    local waiting = {}
    for i = 1, 2 do -- two readers at once on one node: each has its own connection
      waiting[i] = host:client()
      waiting[i]:send("GET /call?a=" .. escape(cjson.encode({ "BLPOP", "{b}.q" .. i, "5" })) .. " HTTP/1.1\r\nHost: x\r\n\r\n")
    end
    socket.sleep(0.3)
    local t0 = socket.gettime()
    assert.same({ v = "OK" }, call({ "SET", "{b}.other", "1" })) -- the same slot, so the same node
    assert.same({ v = 1 }, call({ "RPUSH", "{b}.q2", "two" }))
    assert.truthy(socket.gettime() - t0 < 1, "answered while BLPOP waits")
    assert.same({ v = { "{b}.q2", "two" } }, cjson.decode(waiting[2]:read_response().body))
    assert.same({ v = 1 }, call({ "RPUSH", "{b}.q1", "one" }))
    assert.same({ v = { "{b}.q1", "one" } }, cjson.decode(waiting[1]:read_response().body))
    assert.truthy(socket.gettime() - t0 < 2, "BLPOP answered when its list was pushed to")
    for i = 1, 2 do waiting[i]:close() end
  end)

  it("holds blocking readers to 64 connections of their own per node, refusing more by name", function()
    local socket = require "socket"
    local function blocked() -- clients blocked in a command (flags b), on every node
      local n = 0
      for _, p in ipairs(cluster.ports) do
        local _, list = rc.command(p, "CLIENT LIST")
        for flags in (list or ""):gmatch("flags=(%S+)") do n = n + (flags:find("b", 1, true) and 1 or 0) end
      end
      return n
    end
    local waiting, answers = {}, {}
    for i = 1, 72 do
      waiting[i] = host:client()
      waiting[i]:send("GET /call?a=" .. escape(cjson.encode({ "BLPOP", "{f}.never", "2" })) .. " HTTP/1.1\r\nHost: x\r\n\r\n")
    end
    socket.sleep(0.5)
    local seen = blocked()
    for i = 1, 72 do answers[#answers + 1] = cjson.decode(waiting[i]:read_response().body).err or "" end
    for i = 1, 72 do waiting[i]:close() end
    assert.truthy(seen <= 64, seen .. " BLPOPs held a connection each")
    local refused = 0
    for _, e in ipairs(answers) do
      if e:find("too many blocking commands", 1, true) then refused = refused + 1 end
    end
    assert.equal(8, refused)
    assert.same({ v = "OK" }, call({ "SET", "{f}.after", "1" }))
  end)

  it("closes a blocking reader's own connection when the host stops with it in flight", function()
    helpers.write_file(dir .. "/b.lua", ([[
local relay = require "relay"
local app = relay.new { name = "redis-cluster-blocked" }
local r = relay.redis("SEEDS")
app:get("/b", function(_, res) res:send(200, tostring(select(2, r:call("BLPOP", "{b}.never", "0")))) end)
app:get("/g", function(_, res) res:send(200, tostring((r:call("SET", "{b}.x", "1")))) end)
return app
]]):gsub("SEEDS", cluster.seeds))
    local h = helpers.start(dir .. "/b.lua", { flags = { "--drain-timeout=1" } })
    helpers.wait_until(function() return h:get("/g").body == "OK" end, 5, "the cluster answers")
    local waiting = h:client()
    waiting:send("GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    require("socket").sleep(0.3)
    assert.equal(0, h:stop()) -- under ASan: nothing leaked, nothing used after it was freed
    waiting:close()
  end)

  it("refuses a command whose key it cannot find, naming it", function()
    local r = call({ "NOSUCHCOMMAND", "x" })
    assert.is_nil(r.v)
    assert.equal("redis cluster: unknown command 'NOSUCHCOMMAND' (which argument is its key is not known here)", r.err)
    assert.matches("wrong arguments for 'XREAD'", call({ "XREAD", "STREAMS", "s" }).err, 1, true)
  end)

  it("says so when a single-node client talks to a Cluster node", function()
    local slot_owner = cluster:owner(12182)
    local key = slot_owner == cluster.ports[1] and "bar" or "foo" -- a key the first node does not hold
    if cluster:owner(5061) == cluster.ports[1] and key == "bar" then key = "k1" end
    local r = helpers.wait_until(function()
      local got = call({ "GET", key }, "one")
      return got.err and got.err:find("MOVED", 1, true) and got
    end, 5, "a MOVED reply")
    assert.matches("this Redis is a Cluster node: give relay.redis the cluster's seeds", r.err, 1, true)
  end)

  it("refuses a bad seed list, naming what was wrong and not the password", function()
    assert.matches("bad redis cluster seed: ", host:get("/bad?url=" .. escape("127.0.0.1:1,:2")).body, 1, true)
    local body = host:get("/bad?url=" .. escape("redis://u:secret@127.0.0.1:1,127.0.0.1:2/3")).body
    assert.matches("a cluster has only database 0", body, 1, true)
    assert.falsy(body:find("secret", 1, true))
  end)
end)
