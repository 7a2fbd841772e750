-- Waiting functions where a handler cannot wait, and zero-time waits (issue 15, defects 1 and 7).
--
-- LuaJIT cannot yield across a C call: inside a table.sort comparator, a string.gsub callback
-- or a metamethod that a C function calls (here __tostring under string.format). A waiting
-- function called there must fail with an error naming it, and what it had started must not
-- resume the task later: that used to resume a freed task (heap-use-after-free, exit 139).
-- Each wait is tried in each context twice: the error left to end the handler (a 500), and the
-- error caught by pcall, after which the handler sleeps past the moment the abandoned wait would
-- have completed (so a stray resume would land in that sleep) and answers with the message.
--
-- A zero-time wait (relay.sleep(0), relay.after(0) re-armed from its own callback) goes behind
-- what else is ready: a 0 ms timer armed from a timer callback ran in the same pass over the
-- timers, and a loop of them kept every other client waiting until it ended.
local helpers = require "helpers"
local socket = require "socket"

local UPSTREAM = [[
local relay = require "relay"
local app = relay.new { name = "waits-upstream" }
app:get("/late", function(_, res) relay.sleep(0.3) res:send(200, "late") end)
app:get("/drip", function(_, res)
  res:start(200, { ["content-type"] = "text/plain" })
  res:write("a")
  relay.sleep(0.3)
  res:write("b")
  res:finish()
end)
app:websocket("/ws", function(ws)
  relay.sleep(0.3)
  ws:send("hi")
  while ws:recv() do end
end)
return app
]]

local SCRIPT = [[
local relay = require "relay"
local app = relay.new { name = "waits" }
local UP, WS = "http://127.0.0.1:%d", "ws://127.0.0.1:%d"
local r = relay.redis("redis://127.0.0.1:%d")

-- where LuaJIT cannot yield
local contexts = {
  sort = function(fn) table.sort({ 3, 1, 2 }, function(a, b) fn() return a < b end) end,
  gsub = function(fn) string.gsub("ab", ".", function() fn() end) end,
  meta = function(fn) string.format("%%s", setmetatable({}, { __tostring = function() fn() return "x" end })) end,
}

-- each wait; prepare runs first, where waiting is fine
local waits = {
  sleep = { wait = function() relay.sleep(0.3) end },
  request = { wait = function() relay.http.request { url = UP .. "/late", timeout = 2 } end },
  stream = { wait = function() relay.http.stream { url = UP .. "/late", timeout = 2 } end },
  read = {
    prepare = function(c)
      c.s = assert(relay.http.stream { url = UP .. "/drip", timeout = 2 })
      assert(c.s:read())
    end,
    wait = function(c) c.s:read() end,
  },
  body = { wait = function(c) c.req:body() end },
  ws_connect = { wait = function() relay.ws.connect(WS .. "/ws", { timeout = 2 }) end },
  ws_recv = {
    prepare = function(c) c.ws = assert(relay.ws.connect(WS .. "/ws", { timeout = 2 })) end,
    wait = function(c) c.ws:recv() end,
  },
  redis = { wait = function() r:call("PING") end },
  tunnel = { -- the upstream's text message ends the tunnel, which wakes its waiter
    prepare = function(c)
      c.ws = assert(relay.ws.connect(WS .. "/ws", { timeout = 2 }))
      c.tun = relay.tunnel.attach(c.ws, { role = "client", base_url = UP })
    end,
    wait = function(c) c.tun:wait() end,
  },
}

local function handle(req, res)
  local w, ctx = waits[req.params.wait], contexts[req.params.ctx]
  local c = { req = req }
  if w.prepare then w.prepare(c) end
  local function attempt() ctx(function() w.wait(c) end) end
  if req.params.mode == "raise" then attempt() end
  local ok, err = pcall(attempt)
  relay.sleep(0.6) -- past the abandoned wait's completion
  res:send(ok and 500 or 200, tostring(err))
end
app:get("/w/:wait/:ctx/:mode", handle)
app:post("/w/:wait/:ctx/:mode", handle)

app:get("/", function(_, res) res:send(200, "ok") end)

-- where waiting works: the VM's own metamethods and pcall
app:get("/yieldable", function(_, res)
  local t = setmetatable({}, { __index = function(_, k) relay.sleep(0.01) return k end })
  local ok, v = pcall(function() relay.sleep(0.01) return t.x end)
  res:send(200, tostring(ok) .. " " .. tostring(v))
end)

app:get("/busy", function(req, res)
  local t_end = relay.time() + tonumber(req.args.s)
  local slices = 0
  while relay.time() < t_end do
    local slice_end = math.min(relay.time() + 0.05, t_end)
    while relay.time() < slice_end do end
    slices = slices + 1
    relay.sleep(0)
  end
  res:send(200, tostring(slices))
end)

-- the same slices, each a relay.after(0) timer that arms the next
app:get("/chain", function(req, res)
  local t_end, slices = relay.time() + tonumber(req.args.s), 0
  local function slice()
    local slice_end = math.min(relay.time() + 0.05, t_end)
    while relay.time() < slice_end do end
    slices = slices + 1
    if relay.time() < t_end then relay.after(0, slice) end
  end
  relay.after(0, slice)
  relay.sleep(tonumber(req.args.s) + 0.2)
  res:send(200, tostring(slices))
end)
return app
]]

-- The name each wait's error gives.
local NAMES = {
  sleep = "relay.sleep", request = "relay.http.request", stream = "relay.http.stream",
  read = "'read'", body = "'body'", ws_connect = "relay.ws.connect", ws_recv = "'recv'", redis = "'call'",
  tunnel = "'wait'",
}

describe("waiting where LuaJIT cannot yield", function()
  local dir, upstream, host, redis_pid

  setup(function()
    dir = helpers.tmpdir()
    local redis_port
    redis_port, redis_pid = helpers.start_redis(dir)
    helpers.write_file(dir .. "/upstream.lua", UPSTREAM)
    upstream = helpers.start(dir .. "/upstream.lua")
    helpers.write_file(dir .. "/waits.lua", SCRIPT:format(upstream.port, upstream.port, redis_port))
    host = helpers.start(dir .. "/waits.lua")
  end)

  teardown(function()
    assert.equal(0, host:stop())
    assert.equal(0, upstream:stop())
    os.execute("kill " .. redis_pid)
  end)

  local function alive()
    assert.is_falsy(host:exited(), "the host died:\n" .. host:log():sub(-3000))
    local res = host:get("/yieldable")
    assert.equal(200, res.status)
    assert.equal("true x", res.body)
  end

  for _, wait in ipairs { "sleep", "request", "stream", "read", "body", "ws_connect", "ws_recv", "redis", "tunnel" } do
    it(wait .. " fails with its name and is never resumed later", function()
      local clients = {}
      for _, ctx in ipairs { "sort", "gsub", "meta" } do
        for _, mode in ipairs { "raise", "catch" } do
          local c = host:client(5)
          local path = ("/w/%s/%s/%s"):format(wait, ctx, mode)
          if wait == "body" then -- the body comes after the handler has started waiting for it
            c:send("POST " .. path .. " HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n")
          else
            c:send("GET " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n")
          end
          clients[#clients + 1] = { c = c, mode = mode, ctx = ctx }
        end
      end
      if wait == "body" then
        socket.sleep(0.2)
        for _, e in ipairs(clients) do e.c:send("body") end
      end
      for _, e in ipairs(clients) do
        local res = e.c:read_response()
        e.c:close()
        local what = wait .. " in " .. e.ctx .. " (" .. e.mode .. ")"
        assert.is_table(res, what .. ": no answer; log:\n" .. host:log():sub(-3000))
        if e.mode == "raise" then
          assert.equal(500, res.status, what)
        else
          assert.equal(200, res.status, what .. ": " .. tostring(res.body))
          assert.matches(NAMES[wait] .. " cannot wait here: called across a C boundary", res.body, 1, true)
        end
      end
      -- the raised ones are logged with the same message
      assert.matches(NAMES[wait] .. " cannot wait here", host:log(), 1, true)
      socket.sleep(0.8) -- past every abandoned wait
      alive()
    end)
  end
end)

describe("zero-time waits", function()
  local dir, host

  setup(function()
    dir = helpers.tmpdir()
    helpers.write_file(dir .. "/waits.lua", SCRIPT:format(1, 1, 1))
    host = helpers.start(dir .. "/waits.lua")
  end)

  teardown(function() assert.equal(0, host:stop()) end)

  local function slowest_get_during(path, what)
    local busy = host:client(10)
    busy:send("GET " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n")
    socket.sleep(0.3) -- the loop is running
    local worst = 0
    for _ = 1, 5 do
      local t0 = socket.gettime()
      local res = host:get("/")
      worst = math.max(worst, socket.gettime() - t0)
      assert.equal(200, res.status)
    end
    local res = busy:read_response()
    busy:close()
    assert.equal(200, res.status)
    print(("\n%s: slowest of 5 GETs during a 2.5 s loop: %.3f s (%s slices)"):format(what, worst, res.body))
    assert.is_true(worst < 0.3, ("a GET waited %.3f s behind the loop"):format(worst))
  end

  it("relay.sleep(0) lets other clients in between a long loop's slices", function()
    slowest_get_during("/busy?s=2.5", "relay.sleep(0)")
  end)

  it("relay.after(0), re-armed from its own callback, lets them in too", function()
    slowest_get_during("/chain?s=2.5", "relay.after(0) chain")
  end)
end)
