-- The workspace relay's bus consumer (relay.workspace.backplane): a frame whose delivery raises
-- is counted and logged as a bus error, and the turn goes on to the next frame; a turn that
-- raises is counted the same way and the consumer keeps running. Both paths once called a method
-- that no longer existed (count_error), so the error handler itself raised and the consumer task
-- ended for good. Driven in a real host with the turn's collaborators given by the script (the
-- loop itself is relay.poll's, spec/core/poll_spec.lua, run by relay.fleet; here: the backplane's
-- wiring to them).
local helpers = require "helpers"
local cjson = require "cjson"

local SCRIPT = [=[
local relay = require "relay"
local backplane = require "relay.workspace.backplane"
local observe = require "relay.observe"
local app = relay.new { name = "bus-errors" }

-- The real backplane (server mode, so that no transport is dialled), its transport's pull
-- replaced by the spec's.
local function consumer(pull)
  local delivered = {}
  local bp = backplane.new({ backplane = "server", relay_bus_poll_interval_ms = 10, relay_presence_sync_interval_ms = 60000,
                             relay_redis_presence_ttl_ms = 45000, relay_bus_hmac_key = "k", relay_bus_signature_max_skew_ms = 1 },
                           { conns = { n = 1 } }, observe.new { max_logs = 10 })
  bp.fleet.transport = { pull = pull }
  bp.deliver = function(_, raw)
    if raw == "bad" then error("no such owner") end
    delivered[#delivered + 1] = raw
  end
  return bp, delivered
end

app:get("/delivery", function(_, res)
  local pulled = false
  local bp, delivered = consumer(function()
    if pulled then return {}, 0 end
    pulled = true
    return { "bad", "good" }, 0
  end)
  relay.after(0, function() bp:run() end)
  relay.sleep(0.2)
  res:json(200, { errors = bp.obs.counters.relay_bus_errors_total, delivered = delivered })
end)

app:get("/turn", function(_, res)
  local turns = 0
  local bp = consumer(function()
    turns = turns + 1
    if turns == 1 then error("pull broke") end
    return {}, 0
  end)
  local task_ended = false
  relay.after(0, function() bp:run() task_ended = true end)
  relay.sleep(0.2)
  res:json(200, { errors = bp.obs.counters.relay_bus_errors_total, turns = turns, ended = task_ended })
end)
return app
]=]

describe("workspace relay bus consumer", function()
  local host
  setup(function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/bus.lua", SCRIPT)
    host = helpers.start(dir .. "/bus.lua")
  end)
  teardown(function() host:stop() end)

  it("counts a delivery that raises and delivers the next frame", function()
    local r = host:get("/delivery")
    assert.equal(200, r.status, r.body)
    assert.same({ errors = 1, delivered = { "good" } }, cjson.decode(r.body))
    assert.matches('"event":"bus_error"[^\n]*no such owner', host:log())
  end)

  it("counts a turn that raises and keeps consuming", function()
    local got = cjson.decode(host:get("/turn").body)
    assert.equal(1, got.errors)
    assert.is_true(got.turns > 2, "the consumer stopped after the error: " .. tostring(got.turns))
    assert.is_false(got.ended)
  end)
end)
