-- relay.lru: a string cache bounded by count and bytes, least recently used first out. Pure Lua.
local lru = require "relay.lru"

describe("relay.lru", function()
  it("drops the least recently used once over max_items, and get makes an entry recent", function()
    local c = lru.new { max_items = 2, max_bytes = 1000 }
    assert.equal(0, c:set("a", "1"))
    assert.equal(0, c:set("b", "2"))
    assert.equal("1", c:get("a")) -- a is now newer than b
    assert.equal(1, c:set("c", "3"))
    assert.is_nil(c:get("b"))
    assert.same({ "1", "3" }, { c:get("a"), c:get("c") })
    assert.same({ 2, 4 }, { c.count, c.bytes })
  end)

  it("counts key and value bytes, drops the oldest until under max_bytes, keeps no value too big alone", function()
    local c = lru.new { max_items = 100, max_bytes = 10 }
    c:set("k1", "abc") -- 5 bytes
    c:set("k2", "abc") -- 10
    assert.equal(1, c:set("k3", "a")) -- 13 > 10: k1 goes
    assert.same({ 2, 8 }, { c.count, c.bytes })
    assert.equal(0, c:set("big", "0123456789"))
    assert.is_nil(c:get("big"))
    assert.same({ 2, 8 }, { c.count, c.bytes })
  end)

  it("replaces a key in place of adding it, and deletes", function()
    local c = lru.new { max_items = 2, max_bytes = 100 }
    c:set("a", "1")
    c:set("a", "22")
    assert.same({ 1, 3, "22" }, { c.count, c.bytes, c:get("a") })
    c:delete("a")
    c:delete("missing")
    assert.same({ 0, 0 }, { c.count, c.bytes })
    assert.is_nil(c:get("a"))
  end)

  it("keeps nothing with max_items below 1, and refuses non-string values", function()
    local c = lru.new { max_items = 0, max_bytes = 100 }
    c:set("a", "1")
    assert.same({ 0, nil }, { c.count, c:get("a") })
    assert.has_error(function() c:set("a", {}) end)
  end)

  it("without max_bytes holds any value, bounded by count, and tells on_evict what it drops", function()
    local dropped = {}
    local c = lru.new { max_items = 2, on_evict = function(k, v) dropped[#dropped + 1] = { k, v } end }
    local t1, t2, t3 = {}, {}, {}
    c:set("a", t1)
    c:set("b", t2)
    assert.equal(t1, c:get("a")) -- a is now newer than b
    assert.equal(1, c:set("c", t3))
    assert.same({ { "b", t2 } }, dropped)
    assert.equal(2, c.count)
    c:delete("a") -- a delete is not an eviction
    assert.equal(1, #dropped)
  end)

  it("take gives the value and forgets it", function()
    local c = lru.new { max_items = 2 }
    c:set("a", 1)
    assert.equal(1, c:take("a"))
    assert.same({ 0, nil, nil }, { c.count, c:take("a"), c:get("a") })
  end)
end)
