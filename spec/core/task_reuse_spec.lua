-- A task's coroutine is reused by the generation's next task once it has ended (issue 18: a new
-- thread per request was a good part of the access phase's cost). Nothing of one request may
-- reach the next through it: a closure over a local of a handler that raised keeps its own
-- value (its upvalue is closed, not left pointing into a stack the next request writes), the
-- thread's environment (setfenv(0, ...)) goes back to the globals, and an access phase's
-- request table and headers are the new request's alone. Each check runs many requests in a
-- row, so that they land on one reused coroutine.
local helpers = require "helpers"

local SCRIPT = [[
local relay = require "relay"
local app = relay.new { name = "task-reuse" }
local saved = {}

-- the first request keeps a closure over its local and raises; the later ones set that local
-- (the same stack slot of a reused coroutine) to their own value and answer what it sees
app:get("/upvalue", function(req, res)
  local mine = req.query
  if not saved.upvalue then
    saved.upvalue = function() return mine end
    error("the first request raises")
  end
  res:send(200, mine .. " " .. saved.upvalue())
end)

-- the same after a normal end that waited first (a parked, then resumed coroutine)
app:get("/waited", function(req, res)
  local mine = req.query
  relay.sleep(0)
  if not saved.waited then saved.waited = function() return mine end end
  res:send(200, mine .. " " .. saved.waited())
end)

app:get("/setfenv", function(req, res)
  if req.query == "set" then
    setfenv(0, { leaked = "from an earlier request" })
    return res:send(200, "set")
  end
  res:send(200, tostring(loadstring("return leaked")()))
end)

local function echo(req, res)
  local names = {}
  for _, k in ipairs({ "x-first-only", "x-saw" }) do
    if req.headers[k] then names[#names + 1] = k .. "=" .. req.headers[k] end
  end
  res:send(200, table.concat(names, ","))
end
app:get("/echo", echo)
app:get("/echo/", echo)

local phase_saved
app:mount("/phase", relay.proxy { target_base_url = "http://127.0.0.1:" .. app.flags.port .. "/echo",
  access = function(req)
    local mine = req.query
    if mine == "first" then
      req.headers["x-first-only"] = "1"
      req.kept = "first"
      phase_saved = function() return mine end
      return
    end
    if mine == "raise" then error("the phase raises") end
    req.headers["x-saw"] = tostring(req.kept) .. "/" .. phase_saved()
  end })

return app
]]

local function get(host, path)
  local res = host:get(path)
  return res.status, res.body
end

describe("a reused task coroutine", function()
  local host

  setup(function()
    local dir = helpers.tmpdir()
    local port = helpers.free_port()
    helpers.write_file(dir .. "/reuse.lua", SCRIPT:gsub('app.flags.port', tostring(port)))
    host = helpers.start(dir .. "/reuse.lua", { listen = "127.0.0.1:" .. port })
  end)

  teardown(function() assert.equal(0, host:stop()) end)

  it("does not let a raised handler's closure see the next request's locals", function()
    assert.equal(500, (get(host, "/upvalue?one")))
    for i = 1, 20 do
      local status, body = get(host, "/upvalue?r" .. i)
      assert.equal(200, status)
      assert.equal("r" .. i .. " one", body)
    end
  end)

  it("does not let a closure of a task that waited see the next request's locals", function()
    for i = 1, 20 do
      local status, body = get(host, "/waited?w" .. i)
      assert.equal(200, status)
      assert.equal("w" .. i .. " w1", body)
    end
  end)

  it("gives every task the globals back after one set its thread's environment", function()
    assert.same({ 200, "set" }, { get(host, "/setfenv?set") })
    for _ = 1, 20 do assert.same({ 200, "nil" }, { get(host, "/setfenv?read") }) end
  end)

  it("gives an access phase a request table and headers of its own", function()
    assert.same({ 200, "x-first-only=1" }, { get(host, "/phase?first") })
    for i = 1, 20 do
      assert.same({ 200, "x-saw=nil/first" }, { get(host, "/phase?later" .. i) })
      if i % 5 == 0 then assert.equal(500, (get(host, "/phase?raise"))) end
    end
  end)
end)
