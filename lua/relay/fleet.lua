-- relay.fleet: the servers of a fleet finding one another through a shared store (a Redis, or an
-- HTTP API of the same shape): which server holds an item (a record per held item, written again
-- before it expires and as soon as the store is found without it: relay.reannounce), looked up
-- through a bounded cache, and messages passed between servers (an inbox each, consumed by a
-- relay.poll loop). What a record says and what a message means are the owner's.
local relay = require "relay"
local check = require "relay.check"
local inbox = require "relay.inbox"
local lru = require "relay.lru"
local poll = require "relay.poll"
local reannounce = require "relay.reannounce"
local records = require "relay.records"

local M = {}
local Fleet = {}
Fleet.__index = Fleet

-- The transport over one Redis: records (relay.records) under records_prefix .. key(item), and
-- this server's inbox (relay.inbox) under inbox_prefix .. name.
local REDIS = { "redis", "key", "records_prefix", "ttl_ms", "max_record_bytes", "inbox_prefix", "name",
                "max_len", "limit", "max_bytes" }
function M.redis(o)
  check.options(o, REDIS, "relay.fleet.redis")
  local store = records.new { redis = o.redis, prefix = o.records_prefix, ttl_ms = o.ttl_ms,
                              max_bytes = o.max_record_bytes }
  local box = inbox.new { redis = o.redis, prefix = o.inbox_prefix, name = o.name, max_len = o.max_len,
                          limit = o.limit, max_bytes = o.max_bytes }
  return { upsert = function(_, item, record) return store:put(o.key(item), record) end,
           resolve = function(_, item) return store:get(o.key(item)) end,
           present = function(_, item) return store:exists(o.key(item)) end,
           publish = function(_, name, message) return box:push(name, message) end,
           pull = function() return box:pull() end }
end

local NEW = { "transport", "key", "record", "valid", "every", "each", "max_age", "max_cached", "failed",
              "healed" }
function M.new(o)
  check.options(o, NEW, "relay.fleet.new")
  local self = setmetatable({ o = o, transport = o.transport }, Fleet)
  self.cache = lru.new { max_items = o.max_cached }
  self.records = reannounce.records {
    every = o.every, each = o.each,
    write = function(item, value) return self:write(item, value) end,
    failed = function(err) o.failed("records", err) end,
    present = function(item)
      local there, err = self.transport:present(item)
      if there == nil then o.failed("records", err) end
      return there
    end,
    healed = function(why)
      self.cache = lru.new { max_items = o.max_cached } -- what was looked up may be gone with the store
      o.healed(why)
    end,
  }
  return self
end

-- Writes item's record (value nil: removes it); a record(item, value) of nil: item is no longer
-- held, and is forgotten rather than written. -> ok | nil, err
function Fleet:write(item, value)
  local record = value ~= nil and self.o.record(item, value)
  if record == nil then
    self.records.held[item] = nil
    return true
  end
  return self.transport:upsert(item, record or nil)
end

-- Holds item (value: what record() is given) -> whether the store took its record.
function Fleet:hold(item, value) return self.records:hold(item, value) end

function Fleet:drop(item) self.records:drop(item) end

-- A call to the store failed: it may come back without the records (they are written again).
-- raised: the failure was ours (a message's delivery raised), not the store's.
function Fleet:failed(what, err, raised)
  if not raised then self.records.watch:failed() end
  self.o.failed(what, err, raised)
end

-- The record of the server holding item, looked up at most every max_age seconds: the record,
-- false when there is none (a record not taken or not valid() is none, and told to failed), or
-- nil when the lookup failed; and true when the store was asked (not the cache).
function Fleet:lookup(item)
  local t, key = relay.now(), self.o.key(item)
  local c = self.cache:get(key)
  if not c or t - c.at > self.o.max_age then
    local rec, why = self.transport:resolve(item)
    if rec == nil then self:failed("records", why); return nil end
    if why then self:failed("records", why) end
    local ok, bad = true, nil
    if rec and self.o.valid then ok, bad = self.o.valid(rec) end
    if not ok then rec = false; self:failed("records", bad) end
    c = { at = t, rec = rec }
    self.cache:set(key, c)
    return rec, true
  end
  return c.rec, false
end

-- Sends message to the server called name -> ok | nil, err
function Fleet:send(name, message) return self.transport:publish(name, message) end

-- The consumer (relay.poll: opts every, retry, idle, deliver(message)): for the generation's life,
-- pull this server's messages and deliver each. A pull the store answers heals the records
-- first; messages the store dropped as too long go to dropped(n). Does not return.
function Fleet:run(opts)
  poll.run { every = opts.every, retry = opts.retry, idle = opts.idle, deliver = opts.deliver,
    pull = function()
      local batch, dropped = self.transport:pull()
      if not batch then return nil, dropped end
      self.records.watch:heal(false)
      if (tonumber(dropped) or 0) > 0 then opts.dropped(tonumber(dropped)) end
      return batch
    end,
    failed = function(why, raised) self:failed("messages", why, raised) end }
end

return M
