-- relay.lru: a cache of strings in one Lua state, bounded by count and by bytes; the least
-- recently used go first. Values are held as strings so that the bytes counted (key plus value)
-- are the bytes held: a cache fed by anyone on the network (targets a public SDK key posts,
-- say) stays within its bounds. Without a byte bound the values may be anything (a table kept
-- per request id, say) and the count alone bounds it. Pure Lua: usable and testable without a host.
local M = {}
local Lru = {}
Lru.__index = Lru

-- opts: { max_items = count, max_bytes = bytes (optional), on_evict = fn(key, value) (optional:
-- told of each entry dropped to stay within the bounds, so that what mirrors the cache can forget
-- it too) }. cache.count and cache.bytes say what is held.
function M.new(opts)
  local head = {} -- sentinel of the recency ring: head.next is the newest, head.prev the oldest
  head.next, head.prev = head, head
  return setmetatable({ max_items = opts.max_items, max_bytes = opts.max_bytes or math.huge,
                        strings = opts.max_bytes ~= nil, on_evict = opts.on_evict, head = head, map = {},
                        count = 0, bytes = 0 }, Lru)
end

local function unlink(e) e.prev.next, e.next.prev = e.next, e.prev end

local function link_front(head, e)
  e.next, e.prev = head.next, head
  head.next.prev = e
  head.next = e
end

local function cost(e) return #e.key + (type(e.value) == "string" and #e.value or 0) end

function Lru:delete(key)
  local e = self.map[key]
  if not e then return end
  unlink(e)
  self.map[key] = nil
  self.count, self.bytes = self.count - 1, self.bytes - cost(e)
end

-- Stores (or replaces) value under key, then drops the oldest while over a bound. A value that
-- alone exceeds max_bytes is not kept. Returns how many other entries were dropped.
function Lru:set(key, value)
  assert(type(key) == "string" and (type(value) == "string" or not self.strings),
         "relay.lru: keys are strings, and so are values under max_bytes")
  self:delete(key)
  local e = { key = key, value = value }
  if self.max_items < 1 or cost(e) > self.max_bytes then return 0 end
  link_front(self.head, e)
  self.map[key] = e
  self.count, self.bytes = self.count + 1, self.bytes + cost(e)
  local dropped = 0
  while self.count > self.max_items or self.bytes > self.max_bytes do
    local old = self.head.prev
    self:delete(old.key)
    dropped = dropped + 1
    if self.on_evict then self.on_evict(old.key, old.value) end
  end
  return dropped
end

-- The value under key (now the most recently used), or nil.
function Lru:get(key)
  local e = self.map[key]
  if not e then return nil end
  unlink(e)
  link_front(self.head, e)
  return e.value
end

-- The value under key, removed; or nil.
function Lru:take(key)
  local e = self.map[key]
  if e then self:delete(key) end
  return e and e.value
end

return M
