-- relay.feeds: a relay's copy of an upstream API that pushes changes as event streams, one
-- stream per key (an environment, an account): a full sync run one at a time, each key's
-- text/event-stream followed (relay.eventsource: reconnects with backoff), a key re-fetched
-- once however many of its events arrive together, and full syncs every `every` seconds while
-- any stream is down (or streams are off). Once every stream is open again after one was lost,
-- a full sync fetches what changed meanwhile.
local relay = require "relay"
local check = require "relay.check"
local eventsource = require "relay.eventsource"

local M = {}
local Feeds = {}
Feeds.__index = Feeds

-- opts: sync() -> true | nil, why (a full sync; raising counts as failing); failed(why) after a
-- sync failed; every (seconds between syncs while not up); stream (bool: follow streams after
-- the first sync; default true); keys() -> the keys to follow now (a list; read after the first
-- sync, at each tick and at f:follow()); request(key) -> relay.http.stream's options;
-- event(key, ev) (relay.eventsource's events); refresh(key) (re-fetch one key: f:refresh(key),
-- and a key followed after the first ones once its stream opens, as the last sync missed it);
-- up(key, after_loss) once every stream followed is open (key: the one that opened last);
-- lost(key, why, was_open) after a stream failed or ended; backoff_min, backoff_max
-- (relay.eventsource's). f.up: every stream open; f.next_sync: when the next tick is.
local KEYS = { "sync", "failed", "every", "stream", "keys", "request", "event", "refresh", "up", "lost",
               "backoff_min", "backoff_max" }
function M.new(opts)
  check.options(opts, KEYS, "relay.feeds.new")
  if type(opts.every) ~= "number" or opts.every <= 0 then check.fail("relay.feeds.new: every must be seconds above 0") end
  return setmetatable({ o = opts, feeds = {}, refreshing = {} }, Feeds)
end

-- One full sync at a time: one asked for while a sync runs runs once more after it (so what it
-- would have fetched is fetched), in the task that ran the first.
function Feeds:sync()
  if self.syncing then self.again = true; return end
  self.syncing = true
  repeat
    self.again = false
    local ran, ok, err = pcall(self.o.sync) -- a throw must not leave syncing set for good
    if not ran then self.o.failed(tostring(ok)) -- pcall's second value is then the error
    elseif not ok then self.o.failed(err) end
  until not self.again or self.stopped
  self.syncing = false
end

-- key is re-fetched in a task of its own: once for all the calls of this turn of the loop (the
-- events of one read).
function Feeds:refresh(key)
  if self.refreshing[key] then return end
  self.refreshing[key] = true
  relay.after(0, function() self.refreshing[key] = nil; self.o.refresh(key) end)
end

function Feeds:all_open()
  for _, f in pairs(self.feeds) do if not f.open then return false end end
  return true
end

-- late: followed after the first ones (refreshed once its stream opens).
function Feeds:open(key, late)
  local f, o = {}, self.o
  self.feeds[key] = f
  f.feed = eventsource.follow {
    request = function() return o.request(key) end,
    backoff_min = o.backoff_min, backoff_max = o.backoff_max,
    on_open = function()
      f.open = true
      if late then late = false; o.refresh(key) end
      if not self:all_open() then return end
      local after_loss = self.up == false
      self.up = true
      if o.up then o.up(key, after_loss) end
      if after_loss then self:sync() end -- what changed while a stream was down
    end,
    on_event = function(ev) o.event(key, ev) end,
    on_lost = function(why)
      local was_open = f.open == true
      f.open, self.up = false, false
      if o.lost then o.lost(key, why, was_open) end
    end,
  }
end

-- Follows the streams of keys() not followed yet (once streams are on).
function Feeds:follow()
  if not self.streaming or self.stopped then return end
  local keys = self.o.keys()
  for _, key in ipairs(keys) do
    if not self.feeds[key] then self:open(key, self.followed) end
  end
  self.followed = self.followed or #keys > 0
end

-- The first sync now (in a task of its own), then first() if given, then the streams; and a
-- tick every `every` seconds: a sync unless every stream is open, and keys() followed.
function Feeds:start(first)
  relay.after(0, function()
    self:sync()
    if first then first() end
    if self.o.stream == false or self.stopped then return end
    self.streaming = true
    self:follow()
  end)
  self.next_sync = relay.time() + self.o.every
  relay.every(self.o.every, function()
    if self.stopped then return end
    self.next_sync = relay.time() + self.o.every
    if not self.up then self:sync() end
    self:follow()
  end)
end

-- A reload replaced this generation: its streams close now, and no sync starts.
function Feeds:stop()
  self.stopped = true
  for _, f in pairs(self.feeds) do f.feed:stop() end
end

return M
