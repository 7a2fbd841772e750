-- relay.wsconns (lua/relay/wsconns.lua): the WebSocket connections a script holds, in a real host
-- with raw WebSocket clients: counted in all and per address, a consumer that stops reading cut
-- off 4008 without the sender waiting, pings sent, and the silent and the unanswering terminated.
local helpers = require "helpers"
local cjson = require "cjson"
local socket = require "socket"
local ws_raw = require "ws_raw"

local SCRIPT = [[
local relay = require "relay"
local wsconns = require "relay.wsconns"
local app = relay.new { name = "wsconns-user" }
local events, pings = {}, 0
local conns = wsconns.new {
  max_pending = 64 * 1024, idle_timeout = 1.5, pong_timeout = 0.5, ping_interval = 0.5,
  on_overflow = function(c) events[#events + 1] = "overflow " .. c.name end,
  on_terminate = function(c, why) events[#events + 1] = why .. " " .. c.name end,
  on_ping = function() pings = pings + 1 end }
app:get("/ws", function(req)
  local conn = { ip = req.peer, name = req.args.name, ws = assert(req:websocket("*", {})) }
  conns:add(conn)
  while not conn.closing do
    local data = conn.ws:recv()
    if not data then break end
    if data == "flood" then
      local sent = 0
      while conns:send(conn, ("x"):rep(1024)) do sent = sent + 1 end
      events[#events + 1] = "sent " .. sent
    else
      conns:send(conn, "echo " .. data)
    end
  end
  conns:remove(conn)
  wsconns.linger(conn, 1)
end)
-- Connections for the sweep test: a second set, never pinged by its timer; /sweep runs a ping
-- and a reap over them while a task counts the turns of the loop it gets meanwhile.
local held = wsconns.new { max_pending = 64 * 1024, idle_timeout = 3600, pong_timeout = 3600, ping_interval = 3600 }
app:get("/held", function(req)
  local conn = { ip = req.peer, ws = assert(req:websocket("*", {})) }
  held:add(conn)
  while conn.ws:recv() do end
  held:remove(conn)
end)
app:get("/sweep", function(_, res)
  local turns, spinning = 0, true
  relay.after(0, function() while spinning do relay.sleep(0); turns = turns + 1 end end)
  relay.sleep(0)
  local t0 = turns
  held:ping(relay.now())
  local t1 = turns
  held:reap()
  spinning = false
  res:json(200, { n = held.n, during_ping = t1 - t0, during_reap = turns - t1 })
end)
app:get("/stats", function(req, res)
  res:json(200, { n = conns.n, mine = conns:count(req.peer), events = events, pings = pings })
end)
return app
]]

describe("relay.wsconns", function()
  local host
  setup(function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/conns.lua", SCRIPT)
    host = helpers.start(dir .. "/conns.lua")
  end)
  teardown(function() host:stop() end)

  local function stats() return cjson.decode(host:get("/stats").body) end
  local function has(event) for _, e in ipairs(stats().events) do if e == event then return true end end end

  it("counts connections in all and per address, and sends", function()
    local a = assert(ws_raw.open(host.port, "/ws?name=a"))
    local b = assert(ws_raw.open(host.port, "/ws?name=b"))
    a:push(ws_raw.frame(ws_raw.TEXT, "hi"))
    local op, payload = a:read_frame(2)
    assert.same({ ws_raw.TEXT, "echo hi" }, { op, payload })
    assert.same({ 2, 2 }, { stats().n, stats().mine })
    b:close()
    helpers.wait_until(function() return stats().n == 1 end, 3, "b no longer counted")
    a:close()
  end)

  it("cuts off a consumer that stops reading: the sender goes on, the peer gets 4008", function()
    local c = assert(ws_raw.open(host.port, "/ws?name=c"))
    c:push(ws_raw.frame(ws_raw.TEXT, "flood"))
    helpers.wait_until(function() return has("overflow c") end, 5, "the overflow")
    local code, reason = c:read_close(5)
    assert.is_true((code == 4008 and reason == "buffer overflow") or code == nil, tostring(code))
    helpers.wait_until(function() return stats().n == 0 end, 3, "c no longer counted")
  end)

  it("pings, terminates a peer that answers no ping, and one that sends no message", function()
    local d = assert(ws_raw.open(host.port, "/ws?name=d")) -- never answers
    local e = assert(ws_raw.open(host.port, "/ws?name=e")) -- answers, but says nothing
    local t0, pings0 = socket.gettime(), stats().pings
    while socket.gettime() - t0 < 4 and not has("idle e") do
      e:push(ws_raw.frame(ws_raw.PONG, ""))
      socket.sleep(0.2)
    end
    assert.is_true(has("stale d"))
    assert.is_true(has("idle e"))
    assert.is_nil(has("stale e"))
    assert.is_true(stats().pings > pings0)
    local op = d:read_frame(1)
    assert.equal(ws_raw.PING, op) -- it was pinged
    d:close()
    e:close()
  end)

  it("sweeps many connections a slice at a time: other tasks run between the pings, and the reaps", function()
    -- in one go, pinging 10,000 held connections held every other frame back ~135 ms
    local peers = {}
    for i = 1, 300 do peers[i] = assert(ws_raw.open(host.port, "/held")) end
    helpers.wait_until(function() return cjson.decode(host:get("/sweep").body).n == 300 end, 5, "300 held")
    local r = cjson.decode(host:get("/sweep").body)
    assert.is_true(r.during_ping >= 3, "turns during the ping sweep: " .. r.during_ping)
    assert.is_true(r.during_reap >= 3, "turns during the reap sweep: " .. r.during_reap)
    for _, p in ipairs(peers) do assert.equal(ws_raw.PING, (p:read_frame(2))) end -- each was pinged
    for _, p in ipairs(peers) do p:close() end
  end)

  it("terminates a peer that answers no ping only once it was pinged, whenever it connected", function()
    -- the time of the last ping is kept once for all: one that connected after it is not stale
    for i = 1, 6 do -- opened at different points of the 0.5 s ping period
      local f = assert(ws_raw.open(host.port, "/ws?name=f" .. i))
      assert.equal(ws_raw.PING, (f:read_frame(2)), "f" .. i .. " was cut off before any ping")
      f:close()
      socket.sleep(0.13)
    end
  end)
end)
