-- A WebSocket upstream that dies while relayhost has stopped reading it (backpressure: it owes
-- the server more than its bound, see ws_flood_spec) must still be noticed at once: nothing
-- reads the paused connection, so only the failed write can tell (core/net/upconn). The
-- server (spec/js/ws-ping-flood-server.js) floods pings and never reads the pongs until
-- relayhost pauses; then it is killed, and the session must end within a second.
local helpers = require "helpers"
local socket = require "socket"
local raw = require "ws_raw"

local js = helpers.root .. "/spec/js/"

-- The flooding server: its pid, port, and how many bytes it has written so far.
local function start_flooder(dir)
  local out, pid_file = dir .. "/flood.out", dir .. "/flood.pid"
  os.execute(("node %sws-ping-flood-server.js > %s 2>&1 & echo $! > %s"):format(js, out, pid_file))
  local pid = helpers.wait_until(function() return helpers.read_file(pid_file) end):gsub("%s", "")
  local port = tonumber(helpers.wait_until(function()
    return (helpers.read_file(out) or ""):match('"port":(%d+)')
  end, 10, "the flooding server's port"))
  local function written()
    local n = 0
    for w in (helpers.read_file(out) or ""):gmatch('"written":(%d+)') do n = tonumber(w) end
    return n
  end
  return { pid = pid, port = port, written = written }
end

-- Until a whole second goes by in which the server writes nothing more: relayhost stopped
-- reading it.
local function wait_paused(flooder)
  helpers.wait_until(function() return flooder.written() > 0 end, 5, "the flood to start")
  local last, still = flooder.written(), 0
  helpers.wait_until(function()
    socket.sleep(0.25)
    local now = flooder.written()
    still = now == last and still + 1 or 0
    last = now
    return still >= 4
  end, 15, "relayhost to stop reading the flooding server")
end

local function kill(flooder) os.execute("kill -9 " .. flooder.pid .. " 2>/dev/null") end

describe("a paused WebSocket upstream that dies", function()
  local dir, flooder, host

  before_each(function()
    dir = helpers.tmpdir()
    flooder = start_flooder(dir)
  end)

  after_each(function()
    kill(flooder)
    if host then assert.equal(0, host:stop(), host:log():sub(-3000)) end
    host = nil
  end)

  it("ends a relay.ws.connect session within a second", function()
    helpers.write_file(dir .. "/client.lua", ([[
local relay = require "relay"
local app = relay.new { name = "ws-upstream-gone" }
app:get("/dial", function(req, res)
  local ws, err = relay.ws.connect("ws://127.0.0.1:%d/")
  if not ws then return res:send(502, err) end
  local data, _, code = ws:recv()
  while data do data, _, code = ws:recv() end
  res:send(200, "closed " .. tostring(code))
end)
return app
]]):format(flooder.port))
    host = helpers.start(dir .. "/client.lua")
    local dialer = host:client()
    dialer:send("GET /dial HTTP/1.1\r\nHost: x\r\n\r\n") -- answered when the session ends
    wait_paused(flooder)
    kill(flooder)
    dialer:settimeout(1)
    local res, err = dialer:read_response()
    dialer:close()
    assert(res, "the session did not end within a second of its server dying: " .. tostring(err))
    assert.equal("closed 1006", res.body)
  end)

  it("closes the proxy's pass-through to its client within a second", function()
    host = helpers.start("prefix-proxy", { flags = { "--mount", "/ws=http://127.0.0.1:" .. flooder.port } })
    local c = assert(raw.open(host.port, "/ws/"))
    wait_paused(flooder)
    kill(flooder)
    local op, payload = c:read_frame(1)
    c:close()
    assert.equal(raw.CLOSE, op, "no close within a second of the upstream dying: " .. tostring(payload))
  end)
end)
