-- Waiting functions where a handler cannot wait (issue 15, defect 1).
--
-- LuaJIT cannot yield across a C call: inside a table.sort comparator, a string.gsub callback
-- or a metamethod that a C function calls (here __tostring under string.format). A waiting
-- function called there must fail with an error naming it, and what it had started must not
-- resume the task later: that used to resume a freed task (heap-use-after-free, exit 139).
-- Each wait is tried in each context twice: the error left to end the handler (a 500), and the
-- error caught by pcall, after which the handler sleeps past the moment the abandoned wait would
-- have completed (so a stray resume would land in that sleep) and answers with the message.
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

return app
]]

-- The name each wait's error gives.
local NAMES = {
  sleep = "relay.sleep", request = "relay.http.request", stream = "relay.http.stream",
  read = "'read'", body = "'body'", ws_connect = "relay.ws.connect", ws_recv = "'recv'", redis = "'call'",
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

  for _, wait in ipairs { "sleep", "request", "stream", "read", "body", "ws_connect", "ws_recv", "redis" } do
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
