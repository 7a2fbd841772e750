-- relay.serial (lua/relay/serial.lua): functions run one at a time, in the order queued, in a
-- task of their own; one that raises is logged and the next runs; wait() yields until its
-- function has run behind the others; stop() runs nothing more. In a real host (its tasks).
local helpers = require "helpers"
local cjson = require "cjson"

local SCRIPT = [=[
local relay = require "relay"
local serial = require "relay.serial"
local app = relay.new { name = "serial" }

app:get("/order", function(_, res)
  local s, got, busy = serial.new { log_event = "spec_job_failed" }, {}, false
  local function job(name, seconds)
    return function()
      assert(not busy, "two jobs at once")
      busy = true
      relay.sleep(seconds)
      got[#got + 1] = name
      busy = false
    end
  end
  s:push(job("slow", 0.2))
  s:push(function() error("job two broke") end)
  s:push(job("quick", 0))
  got[#got + 1] = "queued" -- push does not wait
  s:wait(job("waited", 0.05))
  got[#got + 1] = "returned"
  res:json(200, got)
end)

app:get("/stop", function(_, res)
  local s, got = serial.new(), {}
  s:push(function() relay.sleep(0.2); got[#got + 1] = "running" end)
  s:push(function() got[#got + 1] = "after stop" end)
  relay.after(0.05, function() s:stop() end)
  s:wait(function() got[#got + 1] = "waited" end) -- returns once stopped
  got[#got + 1] = "returned"
  relay.sleep(0.3)
  s:push(function() got[#got + 1] = "pushed after stop" end)
  relay.sleep(0.1)
  res:json(200, got)
end)
return app
]=]

describe("relay.serial", function()
  local host
  setup(function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/serial.lua", SCRIPT)
    host = helpers.start(dir .. "/serial.lua")
  end)
  teardown(function() host:stop() end)

  it("runs one at a time in order, logs one that raises, and wait() returns once its function ran", function()
    assert.same({ "queued", "slow", "quick", "waited", "returned" }, cjson.decode(host:get("/order").body))
    assert.matches('"event":"spec_job_failed"[^\n]*job two broke', host:log())
  end)

  it("runs nothing more once stopped, and a wait returns", function()
    assert.same({ "returned", "running" }, cjson.decode(host:get("/stop").body))
  end)
end)
