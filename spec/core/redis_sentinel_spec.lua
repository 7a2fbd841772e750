-- relay.redis through Redis Sentinel (redis-sentinel://host:port,host:port/mastername): a primary,
-- a replica and three sentinels (down-after-milliseconds 1 s). Commands, a blocking BLPOP on a
-- connection of its own, a subscription; then the primary is killed (SIGKILL), the sentinels
-- promote the replica, and the client, which only ever got the sentinels' addresses, carries on.
local helpers = require "helpers"
local cjson = require "cjson"
local socket = require "socket"
local rs = require "redis_sentinel_support"

local escape = helpers.url_escape

describe("relay.redis through Redis Sentinel", function()
  local dir, setup_, host

  setup(function()
    dir = helpers.tmpdir()
    setup_ = rs.start()
    -- An ACL user on both (the sentinels keep the default user), for a URL with a login.
    for _, p in ipairs({ setup_.primary.port, setup_.replica.port }) do
      assert.equal("OK", (rs.cli(p, "ACL SETUSER app on '>s3cret' '~*' '&*' +@all"):gsub("%s", "")))
    end
    local sentinels = setup_.url:match("^redis%-sentinel://([^/]+)/")
    local urls = cjson.encode({
      main = setup_.url,
      unknown = "redis-sentinel://" .. sentinels .. "/nosuch",
      app = "redis-sentinel://app:s3cret@" .. sentinels .. "/mymaster",
      wrong = "redis-sentinel://app:nope@" .. sentinels .. "/mymaster",
      dead_first = "redis-sentinel://127.0.0.1:1," .. sentinels .. "/mymaster",
    })
    helpers.write_file(dir .. "/r.lua", ([[
local relay = require "relay"
local cjson = require "cjson"
local app = relay.new { name = "redis-sentinel" }
local clients = {}
for name, url in pairs(cjson.decode([=[URLS]=])) do clients[name] = relay.redis(url) end
local r = clients.main
local got = {}
r:subscribe("news", function(msg) got[#got + 1] = msg end)
local early = {} -- a call made before the sentinels can have answered
relay.after(0, function() early.v, early.err = r:call("SET", "early", "1") end)
app:get("/early", function(req, res) res:json(200, early) end)
app:get("/call", function(req, res)
  local v, err = clients[req.args.c or "main"]:call(unpack(cjson.decode(req.args.a)))
  res:json(200, { v = v, err = err })
end)
app:get("/got", function(req, res) res:json(200, { got = got, n = #got }) end)
app:get("/open", function(req, res)
  local ok, err = pcall(relay.redis, req.args.url)
  res:json(200, { ok = ok, err = not ok and tostring(err) or nil })
end)
return app
]]):gsub("URLS", function() return urls end))
    host = helpers.start(dir .. "/r.lua")
  end)

  teardown(function()
    if host then assert.equal(0, host:stop()) end
    if setup_ then setup_:stop() end
  end)

  local function call(args, client)
    return cjson.decode(host:get(("/call?c=%s&a=%s"):format(client or "main", escape(cjson.encode(args)))).body)
  end

  it("finds the primary: commands, a blocking BLPOP beside them, a subscription", function()
    -- The first call waited for the first answer instead of failing.
    local early = helpers.wait_until(function()
      local e = cjson.decode(host:get("/early").body)
      return (e.v or e.err) and e
    end, 5, "the early call answered")
    assert.same({ v = "OK" }, early)
    helpers.wait_until(function() return call({ "SET", "foo", "bar" }).v == "OK" end, 10, "the primary found")
    assert.same({ v = "bar" }, call({ "GET", "foo" }))
    assert.equal("bar", (rs.cli(setup_.primary.port, "GET foo"):gsub("%s", ""))) -- on the primary itself
    -- A BLPOP waits on a connection of its own: other commands are answered meanwhile.
    local c = host:client(10)
    c:send(("GET /call?a=%s HTTP/1.1\r\nHost: x\r\n\r\n"):format(escape(cjson.encode({ "BLPOP", "q", "5" }))))
    socket.sleep(0.2)
    assert.same({ v = "bar" }, call({ "GET", "foo" }))
    assert.same({ v = 1 }, call({ "RPUSH", "q", "item" }))
    assert.same({ v = { "q", "item" } }, cjson.decode(c:read_response().body))
    c:close()
    -- The subscription (made before the primary was found) hears what is published.
    helpers.wait_until(function()
      call({ "PUBLISH", "news", "hello" })
      return cjson.decode(host:get("/got").body).n > 0
    end, 5, "the subscription to hear a message")
    assert.equal("hello", cjson.decode(host:get("/got").body).got[1])
  end)

  it("holds blocking commands to 64 connections of their own, refusing more by name", function()
    helpers.wait_until(function() return call({ "SET", "foo", "bar" }).v == "OK" end, 10, "the primary found")
    local waiting, answers = {}, {}
    for i = 1, 72 do
      waiting[i] = host:client(10)
      waiting[i]:send(("GET /call?a=%s HTTP/1.1\r\nHost: x\r\n\r\n"):format(escape(cjson.encode({ "BLPOP", "never", "2" }))))
    end
    socket.sleep(0.5)
    local seen = 0 -- clients Redis has blocked in a command (flags b)
    for flags in rs.cli(setup_.primary.port, "CLIENT LIST"):gmatch("flags=(%S+)") do
      seen = seen + (flags:find("b", 1, true) and 1 or 0)
    end
    for i = 1, 72 do answers[i] = cjson.decode(waiting[i]:read_response().body).err or "" end
    for i = 1, 72 do waiting[i]:close() end
    assert.truthy(seen <= 64, seen .. " BLPOPs held a connection each")
    local refused = 0
    for _, e in ipairs(answers) do
      if e:find("too many blocking commands", 1, true) then refused = refused + 1 end
    end
    assert.equal(8, refused)
    assert.same({ v = "bar" }, call({ "GET", "foo" }))
  end)

  it("logs in to the primary with the URL's user and password, and passes over a dead sentinel", function()
    helpers.wait_until(function() return call({ "SET", "who", "app" }, "app").v == "OK" end, 10, "the ACL user's SET")
    assert.same({ v = "app" }, call({ "ACL", "WHOAMI" }, "app"))
    local r
    helpers.wait_until(function()
      r = call({ "GET", "who" }, "wrong")
      return (r.err or ""):find("WRONGPASS", 1, true)
    end, 5, "the wrong password named")
    assert.truthy(r.err:find("redis-sentinel: no primary for 'mymaster' (127.0.0.1:", 1, true), r.err)
    -- The first sentinel of the list refuses connections: the next is asked.
    helpers.wait_until(function() return call({ "GET", "who" }, "dead_first").v == "app" end, 5, "the second sentinel asked")
  end)

  it("follows a failover: the replica is promoted and the client carries on", function()
    helpers.wait_until(function() return call({ "SET", "foo", "before" }).v == "OK" end, 10, "the primary found")
    assert.equal(1, helpers.redis_set_replicated(setup_.primary.port, "foo", "before")) -- the replica has it
    local n0 = cjson.decode(host:get("/got").body).n
    -- SET, again and again, from the kill until a write has failed and one works again.
    local t0 = setup_:kill_primary()
    local first_fail, last_fail, errors, last_err = nil, nil, 0, nil
    helpers.wait_until(function()
      local r = call({ "SET", "counter", tostring(errors) })
      if r.err then
        first_fail, last_fail, errors, last_err = first_fail or socket.gettime(), socket.gettime(), errors + 1, r.err
      end
      return first_fail ~= nil and r.v == "OK"
    end, 30, "writes to work again after the kill")
    local after = socket.gettime()
    helpers.wait_until(function() return setup_:promoted() end, 30, "every sentinel to name the replica")
    assert.truthy(last_err:find("redis", 1, true), last_err)
    assert.same({ v = "before" }, call({ "GET", "foo" }))
    assert.same({ v = "OK" }, call({ "SET", "foo", "after" }))
    assert.equal("after", (rs.cli(setup_.primary.port, "GET foo"):gsub("%s", ""))) -- the new primary has it
    -- A blocking command and the subscription work on the new primary.
    assert.same({ v = 1 }, call({ "RPUSH", "q2", "x" }))
    assert.same({ v = { "q2", "x" } }, call({ "BLPOP", "q2", "1" }))
    helpers.wait_until(function()
      call({ "PUBLISH", "news", "again" })
      return cjson.decode(host:get("/got").body).n > n0
    end, 5, "the subscription to hear a message from the new primary")
    print(("\nsentinel failover: a SET every 20 ms failed from %.2f s to %.2f s after the kill (%d errors, " ..
      "the last: %s); the first that worked again: %.2f s after it"):format(first_fail - t0, last_fail - t0, errors,
      last_err, after - t0))
  end)

  it("says what is wrong with a bad URL or an unknown master", function()
    local sentinels = setup_.url:match("^redis%-sentinel://([^/]+)/")
    local r = cjson.decode(host:get("/open?url=" .. escape("redis-sentinel://" .. sentinels)).body)
    assert.is_false(r.ok)
    assert.truthy(r.err:find("redis-sentinel: bad URL: no master name", 1, true), r.err)
    r = cjson.decode(host:get("/open?url=" .. escape("redis-sentinel://127.0.0.1:99999/m")).body)
    assert.truthy(r.err:find("redis-sentinel: bad URL: port out of range", 1, true), r.err)
    helpers.wait_until(function()
      r = call({ "GET", "foo" }, "unknown")
      return (r.err or ""):find("no sentinel knows master 'nosuch'", 1, true)
    end, 5, "no sentinel knows master 'nosuch'")
    assert.equal("redis-sentinel: no primary for 'nosuch' (no sentinel knows master 'nosuch')", r.err)
  end)
end)
