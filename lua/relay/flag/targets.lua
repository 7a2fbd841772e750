-- Targets seen at /client/auth (spec §1.1: later evaluations of that identifier use them).
-- Client SDK keys are public, so anyone may post targets: the store is an LRU bounded by count
-- (TARGET_STORE_MAX_LEN) and bytes (TARGET_STORE_MAX_BYTES). Targets are held as their JSON
-- text, so the bytes counted are the bytes held; the least recently used go first.
local relay = require "relay"

local M = {}
local Store = {}
Store.__index = Store

local size_gauge = relay.metrics.gauge("ff_proxy_target_store_targets", "targets held from /client/auth")
local bytes_gauge = relay.metrics.gauge("ff_proxy_target_store_bytes", "bytes of the targets held from /client/auth")
local evicted = relay.metrics.counter("ff_proxy_target_store_evictions_total",
  "targets dropped from the store to stay within TARGET_STORE_MAX_LEN / TARGET_STORE_MAX_BYTES")

-- opts: { max_len = count, max_bytes = bytes }
function M.new(opts)
  local head = {} -- sentinel of the recency ring: head.next is the newest, head.prev the oldest
  head.next, head.prev = head, head
  size_gauge:set(0)
  bytes_gauge:set(0)
  return setmetatable({ max_len = opts.max_len, max_bytes = opts.max_bytes, head = head, map = {},
                        n = 0, bytes = 0 }, Store)
end

local function unlink(e) e.prev.next, e.next.prev = e.next, e.prev end

local function link_front(head, e)
  e.next, e.prev = head.next, head
  head.next.prev = e
  head.next = e
end

local function cost(e) return #e.key + #e.text end

function Store:_remove(e)
  unlink(e)
  self.map[e.key] = nil
  self.n, self.bytes = self.n - 1, self.bytes - cost(e)
end

function Store:_publish()
  size_gauge:set(self.n)
  bytes_gauge:set(self.bytes)
end

-- Stores (or replaces) one target's JSON text; the oldest go while over a limit. A target that
-- alone exceeds the byte limit is not kept.
function Store:put(env_id, id, text)
  local key = env_id .. "\0" .. id
  local old = self.map[key]
  if old then self:_remove(old) end
  local e = { key = key, text = text }
  if self.max_len < 1 or cost(e) > self.max_bytes then return self:_publish() end
  link_front(self.head, e)
  self.map[key] = e
  self.n, self.bytes = self.n + 1, self.bytes + cost(e)
  local dropped = 0
  while self.n > self.max_len or self.bytes > self.max_bytes do
    self:_remove(self.head.prev)
    dropped = dropped + 1
  end
  if dropped > 0 then evicted:inc(dropped) end
  self:_publish()
end

-- The JSON text of a target seen at auth (now the most recently used), or nil.
function Store:get(env_id, id)
  local e = self.map[env_id .. "\0" .. id]
  if not e then return nil end
  unlink(e)
  link_front(self.head, e)
  return e.text
end

return M
