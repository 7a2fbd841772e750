-- relay.redis against a Redis that stops answering while its connection stays up (SIGSTOP, as a
-- hung server or a partition that drops packets would): a command waits at most the reply
-- timeout (3 s unless socket_timeout says otherwise), then fails naming the server, and the
-- connection is dialled again; a blocking command waits its own timeout on top of it.
local helpers = require "helpers"
local cjson = require "cjson"
local socket = require "socket"
local rc = require "redis_cluster_support"

local escape = helpers.url_escape

local APP = [[
local relay = require "relay"
local cjson = require "cjson"
local app = relay.new { name = "redis-timeout" }
local clients = {
  r = relay.redis("URL"),
  other = relay.redis("OTHER"),
  short = relay.redis("URL?socket_timeout=1"),
  opt = relay.redis("URL", { socket_timeout = 1.5 }),
}
local sub, heard = relay.redis("URL"), 0
sub:subscribe("news", function() heard = heard + 1 end)
app:get("/call", function(req, res)
  local c = clients[req.args.c or "r"]
  local v, err = c:call(unpack(cjson.decode(req.args.a)))
  res:json(200, { v = v, err = err, stalled = c:stalled() })
end)
app:get("/stalled", function(req, res) res:json(200, { s = clients[req.args.c or "r"]:stalled() or 0 }) end)
app:get("/busy", function(req, res) -- the loop held up, as a long synchronous job would
  local t = os.time() + tonumber(req.args.s) -- wall time: s - 1 to s seconds
  while os.time() < t do end
  res:send(200, "done")
end)
app:get("/heard", function(_, res) res:json(200, { n = heard, ready = sub:ready() }) end)
app:get("/bad", function(req, res)
  local ok, err = pcall(relay.redis, req.args.url, req.args.t and { socket_timeout = tonumber(req.args.t) or req.args.t })
  res:send(200, ok and "accepted" or err)
end)
return app
]]

-- Starts the request now; the response is read later (the handler waits on Redis meanwhile).
local function start_call(host, args, c)
  local client = host:client(15)
  client:send(("GET /call?c=%s&a=%s HTTP/1.1\r\nHost: x\r\n\r\n"):format(c or "r", escape(cjson.encode(args))))
  return { client = client, t0 = socket.gettime() }
end

-- The response of a started call, and how long it took.
local function finish_call(p)
  local res, err = p.client:read_response()
  p.client:close()
  assert(res, "no response: " .. tostring(err))
  return cjson.decode(res.body), socket.gettime() - p.t0
end

describe("relay.redis with a Redis that stops answering", function()
  local dir, port, pid, other_pid, host

  setup(function()
    dir = helpers.tmpdir()
    port, pid = helpers.start_redis(dir)
    local other_dir = helpers.tmpdir()
    local other_port
    other_port, other_pid = helpers.start_redis(other_dir)
    helpers.write_file(dir .. "/r.lua", (APP:gsub("OTHER", "redis://127.0.0.1:" .. other_port)
      :gsub("URL", "redis://127.0.0.1:" .. port)))
    host = helpers.start(dir .. "/r.lua")
  end)

  teardown(function()
    if pid then os.execute("kill -CONT " .. pid .. "; kill " .. pid) end
    if other_pid then os.execute("kill " .. other_pid) end
    if host then assert.equal(0, host:stop()) end
  end)

  local function call(args, c)
    return cjson.decode(host:get("/call?c=" .. (c or "r") .. "&a=" .. escape(cjson.encode(args))).body)
  end

  it("fails a GET within the timeout, naming the server, keeps serving, and works again once Redis does", function()
    helpers.wait_until(function() return call({ "SET", "k", "v" }).v == "OK" end, 5, "Redis answers")
    helpers.wait_until(function() return call({ "SET", "k", "v" }, "other").v == "OK" end, 5, "the other Redis answers")
    os.execute("kill -STOP " .. pid)
    local p = start_call(host, { "GET", "k" })
    socket.sleep(1.5)
    -- the process, and a connection to another Redis, are not held up meanwhile
    assert.same("v", call({ "GET", "k" }, "other").v)
    assert.is_true(cjson.decode(host:get("/stalled").body).s >= 1) -- the oldest command's wait, from C
    local got, took = finish_call(p)
    assert.is_nil(got.v)
    assert.equal(("redis 127.0.0.1:%d: no reply for 3 s"):format(port), got.err)
    assert.is_true(took >= 2.9 and took < 5, "took " .. took)
    -- while Redis stays stopped, calls keep failing (not hanging), and r:stalled() keeps counting
    got, took = finish_call(start_call(host, { "GET", "k" }))
    assert.is_nil(got.v)
    assert.is_true(took < 5, "took " .. took)
    assert.is_true(cjson.decode(host:get("/stalled").body).s >= 3)
    os.execute("kill -CONT " .. pid)
    helpers.wait_until(function() return call({ "GET", "k" }).v == "v" end, 10, "GET answered after SIGCONT")
    assert.equal(0, cjson.decode(host:get("/stalled").body).s)
  end)

  it("takes the timeout from the URL's socket_timeout and from the option", function()
    helpers.wait_until(function() return call({ "PING" }, "short").v == "PONG" and call({ "PING" }, "opt").v == "PONG" end,
      5, "both answer")
    os.execute("kill -STOP " .. pid)
    local a, b = start_call(host, { "GET", "k" }, "short"), start_call(host, { "GET", "k" }, "opt")
    local got, took = finish_call(a)
    assert.equal(("redis 127.0.0.1:%d: no reply for 1 s"):format(port), got.err)
    assert.is_true(took >= 0.9 and took < 2.5, "took " .. took)
    got, took = finish_call(b)
    assert.equal(("redis 127.0.0.1:%d: no reply for 1.5 s"):format(port), got.err)
    assert.is_true(took >= 1.4 and took < 3, "took " .. took)
    os.execute("kill -CONT " .. pid)
    helpers.wait_until(function() return call({ "PING" }, "short").v == "PONG" end, 10, "answered after SIGCONT")
  end)

  it("refuses a socket_timeout that is not a number of seconds", function()
    local function bad(url, t) return host:get("/bad?url=" .. escape(url) .. (t and "&t=" .. t or "")).body end
    assert.matches("socket_timeout: 'soon' %(want seconds", bad("redis://127.0.0.1:1?socket_timeout=soon"))
    assert.matches("socket_timeout: '%-1' %(want seconds", bad("redis://127.0.0.1:1?socket_timeout=-1"))
    assert.matches("socket_timeout", bad("redis://127.0.0.1:1", "soon"))
    assert.equal("accepted", bad("redis://127.0.0.1:1?socket_timeout=0.25"))
    assert.equal("accepted", bad("redis://127.0.0.1:1?socket_timeout=0")) -- no timeout
  end)

  it("does not cut a BLPOP short: its own timeout comes first", function()
    helpers.wait_until(function() return call({ "PING" }).v == "PONG" end, 10, "Redis answers")
    local got, took = finish_call(start_call(host, { "BLPOP", "empty-list", "5" }))
    assert.is_nil(got.err)
    assert.is_true(took >= 4.9, "took " .. took)
  end)

  -- libuv runs timers before it polls: an answer that came while the loop was busy must be read
  -- before the deadline is judged, not taken for no answer.
  it("does not fail a command whose answer came while the loop was busy", function()
    helpers.wait_until(function() return call({ "PING" }).v == "PONG" end, 10, "Redis answers")
    local p = start_call(host, { "BLPOP", "empty-list", "1" }) -- answered (nil) after 1 s, due by 4 s
    socket.sleep(0.3)
    local busy = host:client(20)
    busy:send("GET /busy?s=5 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.equal("done", busy:read_response().body)
    busy:close()
    local got = finish_call(p)
    assert.is_nil(got.err)
  end)

  it("a subscriber finds out too, and subscribes again once Redis answers", function()
    local function heard() return cjson.decode(host:get("/heard").body) end
    helpers.wait_until(function() call({ "PUBLISH", "news", "x" }); return heard().n > 0 end, 10, "a message")
    os.execute("kill -STOP " .. pid)
    helpers.wait_until(function() return not heard().ready end, 8, "the subscriber no longer ready")
    os.execute("kill -CONT " .. pid)
    helpers.wait_until(function() return heard().ready end, 10, "the subscriber ready again")
    local n = heard().n
    helpers.wait_until(function() call({ "PUBLISH", "news", "y" }); return heard().n > n end, 10, "a message after")
  end)
end)

describe("relay.redis on a Redis Cluster whose node stops answering", function()
  local dir, cluster, host, stopped

  setup(function()
    dir = helpers.tmpdir()
    cluster = rc.start { replicas = 1 }
    helpers.write_file(dir .. "/r.lua", (APP:gsub("OTHER", cluster.seeds):gsub("URL", cluster.seeds)))
    host = helpers.start(dir .. "/r.lua")
  end)

  teardown(function()
    if host then assert.equal(0, host:stop()) end
    if stopped then os.execute("kill -CONT " .. stopped) end
    if cluster then cluster:stop() end
  end)

  local function call(args, c)
    return cjson.decode(host:get("/call?c=" .. (c or "r") .. "&a=" .. escape(cjson.encode(args))).body)
  end

  it("does not cut a BLPOP short on a node", function()
    helpers.wait_until(function() return call({ "SET", "foo", "before" }).v == "OK" end, 10, "the cluster answers")
    local got, took = finish_call(start_call(host, { "BLPOP", "empty-list", "5" }))
    assert.is_nil(got.err)
    assert.is_true(took >= 4.9, "took " .. took)
  end)

  it("fails a command to a stopped node within the timeout, serves the others, and follows the failover", function()
    helpers.wait_until(function() return call({ "SET", "foo", "before" }).v == "OK" end, 10, "the cluster answers")
    local primary = cluster:owner(12182) -- foo's slot
    assert.equal(1, helpers.redis_set_replicated(primary, "foo", "before")) -- the replica has it
    for i, p in ipairs(cluster.ports) do if p == primary then stopped = cluster.pids[i] end end
    os.execute("kill -STOP " .. stopped)
    local p = start_call(host, { "GET", "foo" })
    socket.sleep(1)
    assert.equal("OK", call({ "SET", "bar", "1" }).v) -- slot 5061: another primary
    local got, took = finish_call(p)
    assert.is_nil(got.v)
    assert.equal(("redis 127.0.0.1:%d: no reply for 3 s"):format(primary), got.err)
    assert.is_true(took >= 2.9 and took < 5, "took " .. took)
    helpers.wait_until(function() return call({ "GET", "foo" }).v == "before" end, 20,
      "GET foo answered by the promoted replica")
    os.execute("kill -CONT " .. stopped)
    stopped = nil
  end)
end)

describe("relay.redis through Sentinel whose primary stops answering", function()
  local rs = require "redis_sentinel_support"
  local dir, setup_, host, stopped

  setup(function()
    dir = helpers.tmpdir()
    setup_ = rs.start()
    helpers.write_file(dir .. "/s.lua", ([[
local relay = require "relay"
local cjson = require "cjson"
local app = relay.new { name = "redis-sentinel-timeout" }
local r = relay.redis("URL")
app:get("/call", function(req, res)
  local v, err = r:call(unpack(cjson.decode(req.args.a)))
  res:json(200, { v = v, err = err })
end)
app:get("/bad", function(req, res)
  local ok, err = pcall(relay.redis, req.args.url)
  res:send(200, ok and "accepted" or err)
end)
return app
]]):gsub("URL", setup_.url))
    host = helpers.start(dir .. "/s.lua")
  end)

  teardown(function()
    if stopped then os.execute("kill -CONT " .. stopped) end
    if host then assert.equal(0, host:stop()) end
    if setup_ then setup_:stop() end
  end)

  local function call(args)
    return cjson.decode(host:get("/call?a=" .. escape(cjson.encode(args))).body)
  end

  -- The replica is stopped too: the sentinels have nothing to promote (no +switch-master comes to
  -- the rescue), as when only the relay's path to Redis is cut.
  it("fails a command to the stopped primary within the timeout, and works again once it answers", function()
    helpers.wait_until(function() return call({ "SET", "foo", "before" }).v == "OK" end, 10, "the primary found")
    stopped = setup_.primary.pid .. " " .. setup_.replica.pid
    os.execute("kill -STOP " .. stopped)
    local got, took = finish_call(start_call(host, { "GET", "foo" }))
    assert.is_nil(got.v)
    assert.equal(("redis 127.0.0.1:%d: no reply for 3 s"):format(setup_.primary.port), got.err)
    assert.is_true(took >= 2.9 and took < 5, "took " .. took)
    got, took = finish_call(start_call(host, { "GET", "foo" })) -- the sentinels asked: still no answer
    assert.is_nil(got.v)
    assert.is_true(took < 5, "took " .. took)
    os.execute("kill -CONT " .. stopped)
    stopped = nil
    helpers.wait_until(function() return call({ "GET", "foo" }).v == "before" end, 30, "GET foo answered again")
  end)

  it("takes socket_timeout in the URL, and refuses ssl_… there", function()
    local function bad(url) return host:get("/bad?url=" .. escape(url)).body end
    assert.equal("accepted", bad(setup_.url .. "?socket_timeout=2"))
    assert.matches("ssl_%* parameters are for rediss://", bad(setup_.url .. "?ssl_ca_certs=x"))
    assert.matches("unknown parameter 'x'", bad(setup_.url .. "?x=1"))
  end)
end)
