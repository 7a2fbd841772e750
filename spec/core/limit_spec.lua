-- relay.limit: fixed windows and token buckets keyed by strings, with a bound on the keys they
-- track. Pure Lua: time is passed in, so no host is needed.
local limit = require "relay.limit"

local function allowed(l, key, now, times)
  local n = 0
  for _ = 1, times do if l:allow(key, now) then n = n + 1 end end
  return n
end

describe("relay.limit.window", function()
  it("allows n events per key per window, opened at the key's first event", function()
    local l = limit.window(3, 60, 100)
    assert.equal(3, allowed(l, "a", 10, 5))
    assert.equal(3, allowed(l, "b", 10, 5)) -- keys are counted apart
    assert.is_false(l:allow("a", 69.9))
    assert.is_true(l:allow("a", 70)) -- the window that opened at 10 is over
  end)

  it("tracks at most max_keys keys, forgetting finished windows first", function()
    local l = limit.window(1, 60, 3)
    for i = 1, 3 do assert.is_true(l:allow("old" .. i, i == 1 and 0 or 50)) end
    assert.is_true(l:allow("new", 61)) -- "old1"'s window is over: it makes room
    assert.equal(3, l.n)
    assert.is_false(l:allow("old2", 61)) -- still counted
    for i = 1, 1000 do l:allow("flood" .. i, 62) end
    assert.equal(3, l.n)
  end)

  it("a flood of new keys costs little each, not a pass over every key tracked", function()
    local l = limit.window(5, 60, 20000)
    local t0 = os.clock()
    for i = 1, 60000 do l:allow("k" .. i, 1) end
    -- a pass per key was 40,000 passes over 20,000 keys: about 5 s of CPU here; now under 0.1 s
    assert.is_true(os.clock() - t0 < 1, ("%.2f s of CPU"):format(os.clock() - t0))
    assert.is_true(l.n <= 20000)
  end)

  it("sweep forgets keys whose window is over", function()
    local l = limit.window(1, 60, 10)
    l:allow("a", 0)
    l:allow("b", 30)
    l:sweep(60)
    assert.equal(1, l.n)
    assert.is_false(l:allow("b", 60))
  end)
end)

describe("relay.limit.bucket", function()
  it("holds n tokens and refills n per period", function()
    local l = limit.bucket(60, 60, 100) -- one a second
    assert.equal(60, allowed(l, "a", 0, 100))
    assert.is_false(l:allow("a", 0.5))
    assert.is_true(l:allow("a", 1.6))
    assert.equal(10, allowed(l, "a", 11.6, 20)) -- ten seconds: ten tokens, no more
    assert.equal(60, allowed(l, "a", 1000, 100)) -- never more than n
  end)

  it("tracks at most max_keys keys; sweep forgets full buckets", function()
    local l = limit.bucket(2, 1, 2)
    l:allow("a", 0)
    l:allow("b", 0)
    l:allow("c", 0)
    assert.equal(2, l.n)
    l:sweep(0.1)
    assert.equal(2, l.n) -- not refilled yet
    l:sweep(1)
    assert.equal(0, l.n)
  end)
end)
