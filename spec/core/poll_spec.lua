-- relay.poll (lua/relay/poll.lua): a polling consumer in a real host. Each turn's wait (empty,
-- full, failed, idle); a delivery that raises is reported and the next message delivered; a
-- turn that raises is reported and the task keeps polling.
local helpers = require "helpers"
local cjson = require "cjson"

local SCRIPT = [=[
local relay = require "relay"
local poll = require "relay.poll"
local app = relay.new { name = "poll-user" }

-- A consumer over the batches given in turn (a string: that pull fails with it; "raise": it raises).
local function consumer(batches, idle)
  local got, failures, n = {}, {}, 0
  local o = { every = 0.02, retry = 0.05, idle = idle,
    pull = function()
      n = n + 1
      local b = batches[n] or {}
      if b == "raise" then error("pull broke") end
      if type(b) == "string" then return nil, b end
      return b
    end,
    deliver = function(m)
      if m == "bad" then error("no such owner", 0) end
      got[#got + 1] = m
    end,
    failed = function(why, raised) failures[#failures + 1] = { why = why, raised = raised } end }
  return o, got, failures, function() return n end
end

app:get("/turns", function(_, res)
  local o, got, failures = consumer { { "a", "bad", "b" }, {}, "refused" }
  local waits = { poll.turn(o), poll.turn(o), poll.turn(o) }
  local idle = consumer({ { "x" } }, function() return true end)
  waits[4] = poll.turn(idle)
  res:json(200, { waits = waits, got = got, failures = failures })
end)

app:get("/run", function(_, res)
  local o, got, failures, pulls = consumer { "raise", { "a" } }
  local ended = false
  relay.after(0, function() poll.run(o) ended = true end)
  relay.sleep(0.3)
  res:json(200, { got = got, failures = failures, pulls = pulls(), ended = ended })
end)
app:get("/misuse", function(_, res)
  local _, typo = pcall(poll.run, { evry = 1 })
  local _, none = pcall(poll.run, {})
  res:json(200, { typo = typo, none = none })
end)
return app
]=]

describe("relay.poll", function()
  local host
  setup(function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/poll_user.lua", SCRIPT)
    host = helpers.start(dir .. "/poll_user.lua")
  end)
  teardown(function() host:stop() end)

  local function get(path)
    local r = host:get(path)
    assert.equal(200, r.status, r.body)
    return cjson.decode(r.body)
  end

  it("waits 0 after a batch, every after an empty pull, retry after a failed one; idle: skipped", function()
    local r = get("/turns")
    assert.same({ 0, 0.02, 0.05, 0.02 }, r.waits)
    assert.same({ "a", "b" }, r.got) -- the message after the one that raised is delivered
    assert.same({ { why = "delivery: no such owner", raised = true }, { why = "refused", raised = false } },
                r.failures)
  end)

  it("refuses options it does not know, and a missing every, at the caller's line", function()
    local r = get("/misuse")
    assert.matches("poll_user%.lua:%d+: unknown option 'evry' in relay%.poll%.run %(did you mean 'every'%?%)",
                   r.typo)
    assert.matches("poll_user%.lua:%d+: relay%.poll%.run: every must be a number", r.none)
  end)

  it("reports a turn that raises and keeps polling", function()
    local r = get("/run")
    assert.matches("^consumer: .*pull broke", r.failures[1].why)
    assert.is_true(r.failures[1].raised)
    assert.same({ "a" }, r.got)
    assert.is_true(r.pulls > 5, "the task stopped polling: " .. r.pulls .. " pulls")
    assert.is_false(r.ended)
  end)
end)
