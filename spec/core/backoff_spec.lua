-- relay.backoff (lua/relay/backoff.lua): the wait before trying again. Pure Lua.
local backoff = require "relay.backoff"

describe("relay.backoff", function()
  it("waits min, doubles after each failure up to max, and starts over at min after reset", function()
    local b = backoff.new { min = 0.5, max = 5 }
    local got = {}
    for i = 1, 6 do got[i] = b:next() end
    assert.same({ 0.5, 1, 2, 4, 5, 5 }, got)
    assert.equal(5, b.wait)
    b:reset()
    assert.equal(0.5, b.wait)
    assert.same({ 0.5, 1 }, { b:next(), b:next() })
  end)

  it("with jitter waits between half and all of each step, and not always the same", function()
    local b = backoff.new { min = 1, max = 8, jitter = true }
    local steps, seen = { 1, 2, 4, 8, 8 }, {}
    for _, d in ipairs(steps) do
      local w = b:next()
      assert.is_true(w >= d / 2 and w <= d, ("%s not within [%s, %s]"):format(w, d / 2, d))
    end
    for _ = 1, 20 do
      b:reset()
      seen[b:next()] = true
    end
    assert.is_true(next(seen, next(seen)) ~= nil, "twenty equal waits")
  end)

  it("never waits more than max, the first wait and after reset either", function()
    local b = backoff.new { min = 0.5, max = 0.01 }
    assert.same({ 0.01, 0.01 }, { b:next(), b:next() })
    b:reset()
    assert.equal(0.01, b:next())
    local j = backoff.new { min = 0.5, max = 0.01, jitter = true }
    for _ = 1, 5 do
      local w = j:next()
      assert.is_true(w >= 0.005 and w <= 0.01, ("%s not within [0.005, 0.01]"):format(w))
    end
  end)
end)
