-- Bytes of C heap per held WebSocket (issue 17): N node `ws` clients held open on routes that
-- upgrade at once (app:websocket, and req:websocket before the handler has waited) and on one
-- that upgrades after a wait, with glibc's in-use bytes read inside the host (mallinfo2 through
-- the FFI) before and after. In the plain build only: under ASan mallinfo2 sees nothing, and
-- the spec checks that every client was held.
local helpers = require "helpers"
local cjson = require "cjson"

local N = 200

describe("a held WebSocket", function()
  local host

  setup(function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/held.lua", [[
local relay = require "relay"
local ffi = require "ffi"
ffi.cdef [=[struct rh_mi2 { size_t arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks, fordblks, keepcost; };
struct rh_mi2 mallinfo2(void);]=]
local app = relay.new { name = "held" }
local held = 0
local function hold(ws)
  held = held + 1
  while ws:recv() do end
  held = held - 1
end
app:websocket("/route", function(ws) hold(ws) end)
app:get("/now", function(req) hold(req:websocket()) end)
app:get("/later", function(req)
  relay.sleep(0.01)
  hold(req:websocket())
end)
app:get("/mem", function(_, res)
  res:json(200, { inuse = tonumber(ffi.C.mallinfo2().uordblks), held = held })
end)
return app
]])
    host = helpers.start(dir .. "/held.lua")
  end)

  teardown(function() assert.equal(0, host:stop()) end)

  local function mem()
    local res = host:get("/mem")
    assert.equal(200, res.status)
    return cjson.decode(res.body)
  end

  -- Holds N clients on path until the host counts them all; -> C heap bytes per connection.
  local function per_connection(path)
    local before = mem()
    local p = io.popen(("NODE_PATH=%s/spec/js/node_modules node %s/bench/js/ws-bench.js hold ws://127.0.0.1:%d%s %d 1 3")
      :format(helpers.root, helpers.root, host.port, path, N))
    assert.matches("ready " .. N, p:read("*l") or "", 1, true)
    local after = helpers.wait_until(function() local m = mem() return m.held == before.held + N and m end, 10,
                                     "the host holding every client")
    p:close() -- the clients leave after their 3 s
    helpers.wait_until(function() return mem().held == before.held end, 10, "the clients gone")
    return (after.inuse - before.inuse) / N
  end

  -- The first N held once grow what the host keeps for good (its lists, glibc's caches): not theirs.
  it("holds clients", function() per_connection("/later") end)

  -- The connection, the request (its target cut to the path), the session, its ws engine and
  -- task: 1,392-1,402 B, where 1,502-1,510 before the session, engine and request lost their
  -- padding and the query went (issue 17); the parse state and its read buffer (550 B more) went
  -- only when the upgrade came after a wait.
  for _, path in ipairs { "/route", "/now", "/later" } do
    it("on " .. path .. " keeps no parse state or read buffer", function()
      local bytes = per_connection(path)
      if helpers.asan() then return end
      assert(bytes < 1450, ("%s: %d bytes of C heap per held connection"):format(path, bytes))
    end)
  end
end)
