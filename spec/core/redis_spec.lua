-- relay.redis against a real redis-server started here: commands, pipelining from many
-- handlers at once, error replies, and Redis going away and coming back.
local helpers = require "helpers"
local socket = require "socket"
local cjson = require "cjson"

describe("relay.redis", function()
  local dir, port, redis_pid, host

  -- A redis-server of our own (spec/helpers.lua).
  local function start_redis(fixed_port)
    port, redis_pid = helpers.start_redis(dir, fixed_port)
  end

  setup(function()
    dir = helpers.tmpdir()
    start_redis()
    helpers.write_file(dir .. "/r.lua", ([[
local relay = require "relay"
local app = relay.new { name = "redis" }
local r = relay.redis("redis://127.0.0.1:%d/2")
app:get("/set", function(req, res)
  local ok, err = r:call("SET", req.args.k, req.args.v)
  res:json(200, { ok = ok, err = err })
end)
app:get("/get", function(req, res)
  local v, err = r:call("GET", req.args.k)
  res:json(200, { v = v, err = err })
end)
local sub = relay.redis("redis://127.0.0.1:%d")
local news = relay.shared("news")
sub:subscribe("news", function(msg, channel) news:set("last", channel .. ":" .. msg); news:incr("n", 1, 0) end)
app:get("/news", function(_, res) res:json(200, { last = news:get("last"), n = news:get("n") }) end)
app:get("/call-on-sub", function(_, res)
  local ok, err = pcall(sub.call, sub, "GET", "x")
  res:send(200, tostring(err))
end)
app:get("/incr", function(req, res) res:send(200, tostring((r:call("INCR", "counter")))) end)
app:get("/list", function(req, res)
  r:call("DEL", "l")
  r:call("RPUSH", "l", "a", "b", "c")
  res:json(200, { l = r:call("LRANGE", "l", 0, -1), bad = select(2, r:call("NOSUCHCOMMAND")) })
end)
return app
]]):format(port, port))
    host = helpers.start(dir .. "/r.lua")
  end)

  teardown(function()
    assert.equal(0, host:stop())
    os.execute("kill " .. redis_pid)
  end)

  it("sets and gets in the database the url names", function()
    helpers.wait_until(function() return cjson.decode(host:get("/set?k=a&v=1").body).ok == "OK" end, 5)
    assert.equal("1", cjson.decode(host:get("/get?k=a").body).v)
    assert.is_nil(cjson.decode(host:get("/get?k=missing").body).v)
    local c = helpers.connect(port)
    c:send("SELECT 2\r\nGET a\r\n")
    assert.equal("+OK", c.sock:receive("*l"))
    assert.equal("$1", c.sock:receive("*l"))
    c:close()
  end)

  it("many handlers share one pipelined connection", function()
    local clients = {}
    for i = 1, 50 do
      clients[i] = host:client()
      clients[i]:send("GET /incr HTTP/1.1\r\nHost: x\r\n\r\n")
    end
    local seen = {}
    for i = 1, 50 do
      local n = tonumber(clients[i]:read_response().body)
      assert.is_nil(seen[n])
      seen[n] = true
      clients[i]:close()
    end
  end)

  it("arrays come back as tables and error replies as nil, err", function()
    local r = cjson.decode(host:get("/list").body)
    assert.same({ "a", "b", "c" }, r.l)
    assert.matches("unknown command", r.bad)
  end)

  it("delivers published messages to a subscription's function", function()
    local function publish(text)
      local c = helpers.connect(port)
      c:send(("PUBLISH news %s\r\n"):format(text))
      local n = c.sock:receive("*l")
      c:close()
      return n
    end
    helpers.wait_until(function() return publish("hello") == ":1" end, 5, "the subscription")
    helpers.wait_until(function() return cjson.decode(host:get("/news").body).last == "news:hello" end, 5)
    publish("again")
    helpers.wait_until(function() return cjson.decode(host:get("/news").body).last == "news:again" end, 5)
    assert.matches("this connection subscribes", host:get("/call-on-sub").body)
  end)

  it("Redis down: calls fail at once with a reason; back up: they work again", function()
    os.execute("kill " .. redis_pid)
    helpers.wait_until(function()
      local r = cjson.decode(host:get("/get?k=a").body)
      return r.err and (r.err:find("not connected") or r.err:find("connection lost"))
    end, 5, "calls to fail")
    local t0 = socket.gettime()
    assert.is_string(cjson.decode(host:get("/get?k=a").body).err)
    assert.is_true(socket.gettime() - t0 < 1) -- no waiting on a dead Redis
    assert.matches('"event":"redis_down"', host:log())
    start_redis(port) -- the same port: the client dials it again
    helpers.wait_until(function() return cjson.decode(host:get("/set?k=b&v=2").body).ok == "OK" end, 10,
      "the client to reconnect")
    assert.equal("2", cjson.decode(host:get("/get?k=b").body).v)
    -- and the subscription is back too
    helpers.wait_until(function()
      local c = helpers.connect(port)
      c:send("PUBLISH news back\r\n")
      c.sock:receive("*l")
      c:close()
      return cjson.decode(host:get("/news").body).last == "news:back"
    end, 10, "the subscription to come back")
  end)
end)
