-- relay.snapshot: what one process holds, kept in Redis as groups of keys for other processes to
-- load, and written whole again as soon as Redis is found without it.
--
-- Redis can lose it without any call failing: a restart without persistence, a restart from a
-- snapshot older than the last write, a failover to a replica that missed writes, FLUSHALL. So a
-- mark (a key written last, once Redis holds the whole snapshot) is read every `mark_every`
-- seconds, and at once when Redis answers again after a reconnect; after each reconnect and every
-- `audit_every` seconds every key written is looked for (EXISTS; GET for keys matching
-- `compare`, whose value must still be the one written: an old copy has the keys, not the values).
-- The connection's state is looked at every `tick` (no I/O), so a reconnect is seen at once.
-- Writes run one at a time, in order: a change and a whole write never interleave.
local relay = require "relay"
local json = require "relay.json"
local backoff = require "relay.backoff"

local M = {}
local Snap = {}
Snap.__index = Snap

-- opts: url (relay.redis); mark (the mark's key); inventory (format of a group's inventory key,
-- "%s" the group: it lists the group's keys, so that keys gone from it are deleted); compare (a
-- pattern); expect (keys always looked for: written by whoever owns them); groups() -> the groups
-- held now; writes(group) -> { [key] = value }, shared (keys other groups may write too: never
-- deleted), or nil when the group is gone; before_mark() -> ok | nil, err (anything else a whole
-- write writes); lost(why) when Redis was found without it; what (its name in messages);
-- audit_every (30), mark_every (0.25), tick (0.05), stall (1: seconds Redis may owe an answer
-- before problem() says so, ahead of relay.redis's reply timeout).
function M.new(opts)
  -- commands on one connection; a reader's blocking XREAD on a second one
  return setmetatable({ o = opts, r = relay.redis(opts.url), feed = relay.redis(opts.url),
    written = {}, pending = {}, jobs = {},
    what = opts.what or "the snapshot", tick = opts.tick or 0.05, stall = opts.stall or 1,
    mark_ticks = math.max(1, math.floor((opts.mark_every or 0.25) / (opts.tick or 0.05) + 0.5)),
    audit_every = opts.audit_every or 30 }, Snap)
end

-- Seconds Redis has owed an answer, once over `stall`; else nil.
function Snap:stalled()
  local waited = self.r:stalled()
  if waited and waited > self.stall then return waited end
end

function Snap:healthy() return self.r:ready() and not self:stalled() end

-- Why Redis does not hold the whole snapshot right now, or nil.
function Snap:problem()
  local stalled = self:stalled()
  if stalled then return ("Redis has not answered for %d s"):format(stalled) end
  if not self.r:ready() then return "not connected to Redis" end
  if self.down then return "reconnected to Redis: checking that it still holds " .. self.what end
  return self.why or self.mark_error
end

-- check(up) runs every `mark_every` seconds, at once after a kick, and at once when Redis
-- answers again after it did not (then reconnected() is true until a check takes it).
function Snap:watch(check)
  relay.after(0, function()
    local ticks = 0
    while not self.stopped do
      local up = self:healthy()
      if not up then self.down = true end
      if self.kick or up and self.down or ticks % self.mark_ticks == 0 then
        self.kick = false
        check(up)
      end
      ticks = ticks + 1
      relay.sleep(self.tick)
    end
  end)
end

-- Whether Redis answered again since the last call (once).
function Snap:reconnected()
  local was = self.down
  self.down = false
  return was
end

-- The mark's value, nil when there is none, or nil and Redis's error (a Redis that does not
-- answer it, say a Cluster node down while the others are up, is not whole either).
function Snap:mark()
  local v, err = self.r:call("GET", self.o.mark)
  self.mark_error = v == nil and err and ("reading " .. self.o.mark .. " failed: " .. tostring(err)) or nil
  if v == nil and err then return nil, err end
  return v
end

-- SETs every key of a { [key] = value } table. true, or nil and Redis's error.
local function set_all(r, writes)
  for key, value in pairs(writes or {}) do
    local ok, err = r:call("SET", key, value)
    if not ok then return nil, err end
  end
  return true
end

-- Writes one group now and deletes its keys written before and gone since. true, or nil, err.
function Snap:write(group)
  local writes, shared = self.o.writes(group)
  if not writes then return true end -- gone meanwhile
  local r, inv_key, inv = self.r, self.o.inventory:format(group), {}
  local ok, err = set_all(r, shared)
  if ok then ok, err = set_all(r, writes) end
  if not ok then return nil, err end
  local old = r:call("GET", inv_key)
  for key in pairs(type(old) == "string" and json.decode_table(old) or {}) do
    if not writes[key] then r:call("DEL", key) end
  end
  for key in pairs(writes) do inv[key] = "" end
  ok, err = r:call("SET", inv_key, json.encode(inv))
  if not ok then return nil, err end
  for key, value in pairs(shared or {}) do writes[key] = value end
  writes[inv_key], self.written[group] = true, writes
  return true
end

-- Whether Redis still holds what was written for every group held and the expected keys: false;
-- or the first key found gone or stale; or nil and Redis's error.
function Snap:missing()
  local want = {}
  for _, g in ipairs(self.o.groups()) do
    if not self.written[g] then return g .. " (not written yet)" end
    for key, value in pairs(self.written[g]) do want[key] = value end
  end
  for _, key in ipairs(self.o.expect or {}) do want[key] = want[key] or true end
  for key, value in pairs(want) do
    local cmd = self.o.compare and key:find(self.o.compare) and "GET" or "EXISTS"
    local v, err = self.r:call(cmd, key)
    if v == nil and err then return nil, err end
    if v ~= (cmd == "GET" and value or 1) then return key end
  end
  return false
end

-- ---- the writer ----

-- Groups that changed are written at once (or, while a write runs, at the next tick), and job()
-- after them; with Redis hanging nothing queues: all is written whole once it answers.
function Snap:put(groups, job)
  if not self.audit_at then
    self.audit_at = relay.time() + self.audit_every
    self:watch(function(up) self:run_jobs(up) end) -- the check only while Redis answers
  end
  if self:stalled() then self.dirty = true; return end
  for _, g in ipairs(groups) do self.pending[g] = true end
  self:run(job)
end

-- job() (nil: none) runs after the groups pending, one write at a time.
function Snap:run(job)
  self.jobs[#self.jobs + 1] = job
  relay.after(0, function() self:run_jobs(false) end)
end

-- One run at a time; one asked for meanwhile runs at the next tick.
function Snap:run_jobs(check)
  if self.busy then self.kick = true; return end
  self.busy = true
  local ok, err = pcall(self.drain, self, check)
  self.busy = false
  if not ok then relay.log.warn("redis_job_failed", { error = tostring(err) }) end
end

-- The groups pending, the jobs, then (check: the watcher's, while Redis answers) the check. A
-- write that fails marks the snapshot dirty: the check writes all of it again (a Cluster node
-- that failed over mid-write may hold any mix of old and new keys).
function Snap:drain(check)
  local groups, jobs = self.pending, self.jobs
  self.pending, self.jobs = {}, {}
  for g in pairs(groups) do
    local ok, err = self:write(g)
    if not ok then
      self.dirty, self.kick, self.why = true, true, "a write to Redis failed: " .. tostring(err)
      relay.log.warn("redis_write_failed", { group = g, error = err })
    end
  end
  for _, job in ipairs(jobs) do job() end
  if check then self:check() end
end

-- Every group, before_mark, then a new mark (last: a reader that sees it reads a whole
-- snapshot). Whole once that worked, else dirty (tried again at the next check).
function Snap:rewrite(reason)
  local t0, ok, err = relay.time(), true, nil
  for _, g in ipairs(self.o.groups()) do
    if ok then ok, err = self:write(g) end
  end
  if ok and self.o.before_mark then ok, err = self.o.before_mark() end
  if ok then
    local mark = { seed = relay.uuid(), since = math.floor(relay.time() * 1000) }
    ok, err = self.r:call("SET", self.o.mark, json.encode(mark))
  end
  if not ok then
    self.dirty, self.why = true, "writing " .. self.what .. " to Redis failed: " .. tostring(err)
    return relay.log.warn("redis_rewrite_failed", { reason = reason, error = err })
  end
  self.seeded, self.dirty, self.why = true, false, nil
  relay.log.info("redis_cache_written", { reason = reason, seconds = relay.time() - t0 })
end

function Snap:lost(what)
  self.why = "Redis lost " .. self.what .. " (" .. what .. "): writing it again"
  if self.o.lost then self.o.lost(self.why) end
  self:rewrite("lost")
end

-- One check: the mark gone, or (after a reconnect, and every audit_every seconds) a key gone or
-- stale, means Redis lost it; a failed write means it may have.
function Snap:check()
  local now = relay.time()
  if now >= self.audit_at then self.audit_at, self.audit_due = now + self.audit_every, true end
  local mark, err = self:mark()
  if mark == nil and err then self.audit_due = true; return end
  if self:reconnected() then -- why says the rest until this check is done
    self.audit_due, self.why = true, "reconnected to Redis: checking that it still holds " .. self.what
  end
  if mark == nil then
    if self.seeded then return self:lost(self.o.mark .. " is gone") end
    return self:rewrite("first start")
  end
  self.seeded = true
  if self.dirty then return self:rewrite("a write had failed") end
  if not self.audit_due then return end
  local missing = self:missing()
  if missing == nil then return end -- Redis went away mid-check: audit_due stays
  self.audit_due = false
  if missing then return self:lost(missing .. " is gone or stale") end
  self.why = nil
end

-- ---- streams of JSON events beside it (the writer's change events, say) ----

-- Calls fn(value) for the JSON field `event` of every entry added to a Redis stream after
-- last_id (nil: from now on), with XREAD BLOCK on its own connection; returns the last id and
-- why when Redis fails (or "stopped" after stop()).
function Snap:follow(name, fn, last_id)
  if not last_id then -- "$" in every XREAD would miss what comes between two calls
    local err
    last_id, err = self:top(name)
    if not last_id then return nil, err end
  end
  while not self.stopped do
    local reply, err = self.feed:call("XREAD", "BLOCK", "5000", "STREAMS", name, last_id)
    if reply == nil and err then return last_id, err end
    for _, stream in ipairs(type(reply) == "table" and reply or {}) do
      for _, entry in ipairs(stream[2] or {}) do
        last_id = entry[1]
        local fields = entry[2]
        for i = 1, #fields, 2 do
          if fields[i] == "event" then
            local v = json.decode_table(fields[i + 1])
            if v then fn(v) end
          end
        end
      end
    end
  end
  return last_id, "stopped"
end

-- follow() for the generation's life, in a task of its own: after a failure, failed(why), and
-- followed again from the last entry taken, 0.5 s doubling to 5 s later; ends at stop().
function Snap:follow_always(name, fn, failed)
  relay.after(0, function()
    local last, wait = nil, backoff.new { min = 0.5, max = 5 }
    while true do
      local err
      last, err = self:follow(name, fn, last)
      if self.stopped then return end -- a read failing after stop() is no failure to tell
      failed(err)
      relay.sleep(wait:next())
    end
  end)
end

-- The id of a stream's newest entry, "0-0" when it has none, or nil and why (on the follow
-- connection: a cheap read on the stream's own slot).
function Snap:top(name)
  local top, err = self.feed:call("XREVRANGE", name, "+", "-", "COUNT", "1")
  if type(top) ~= "table" then return nil, err or "XREVRANGE failed" end
  return top[1] and top[1][1] or "0-0"
end

-- ---- the reader: loads it whole, follows the writer's changes, and loads again at a new mark ----

-- opts: load(mark, known) -> data or nil, why (reads everything; mark: the mark read before,
-- nil when there is none; known: a mark was seen before); apply(data) -> ok | nil, why (serves
-- it); stream and event(value): the writer's change events, followed from the newest entry
-- before each load (so none after it is missed); lost(why) once the mark is gone (the last load
-- stays); reloaded() after a load a new mark caused; failed(why, retry_in) after a load that
-- failed (tried again after 0.5 s doubling to 5 s) or a feed that failed (retry_in nil: loaded
-- again, then followed, once Redis answers).
function Snap:read(opts)
  self.reader = { o = opts, need = true, retry_at = 0, wait = backoff.new { min = 0.5, max = 5 } }
  self:watch(function(up) self:read_check(up) end)
  relay.after(0, function() self:read_feed() end)
end

-- One load: the mark read before (mark) and after must be the same, or the writer was writing.
function Snap:load(mark)
  local rd = self.reader
  local top, err = self:top(rd.o.stream)
  if not top then return nil, err end
  local data, e1 = rd.o.load(mark, rd.seen ~= nil)
  if not data then return nil, e1 end
  local again, e2 = self:mark()
  if again == nil and e2 then return nil, e2 end
  if again ~= mark then return nil, "it was being written while it was read: reading it again" end
  local ok, why = rd.o.apply(data)
  if not ok then return nil, why end
  rd.seen, rd.lost, rd.need, rd.from, self.why = mark, false, false, top, nil
  return true
end

-- The mark gone: lost. A new one: everything is read again at once, without waiting for the
-- feed. A load the feed needs (at start, after it failed): retried with backoff, at once after
-- a reconnect.
function Snap:read_check(up)
  local rd = self.reader
  local due = rd.need and relay.time() >= rd.retry_at
  if not (up or due) then return end
  if up and self:reconnected() then due = rd.need end
  local mark, err = self:mark()
  if mark == nil and err then
    if due then self:read_failed(err) end
    return
  end
  if mark == nil and rd.seen and not rd.lost then
    rd.lost = true
    self.why = ("Redis lost %s: serving from memory until it is written again"):format(self.what)
    return rd.o.lost(self.why)
  end
  local fresh = mark ~= nil and mark ~= rd.seen
  if not (fresh or due) then return end
  local ok, loaded, why = pcall(self.load, self, mark)
  if not (ok and loaded) then return self:read_failed(ok and why or tostring(loaded)) end
  rd.wait:reset()
  if fresh and rd.loaded then rd.o.reloaded() end
  rd.loaded = true
end

function Snap:read_failed(why)
  local rd = self.reader
  local retry = rd.wait:next()
  rd.retry_at = relay.time() + retry
  rd.o.failed(why, retry)
end

-- The feed: the change events from where the last load began. One that fails (Redis down, or
-- its node down or failing over) is followed again as soon as that node answers, after a load
-- (events may have been missed meanwhile).
function Snap:read_feed()
  local rd, quick = self.reader, backoff.new { min = 0.5, max = 5 } -- one failing at once is not hammered
  while not self.stopped do
    if not rd.need then
      local started = relay.time()
      local _, err = self:follow(rd.o.stream, rd.o.event, rd.from)
      if self.stopped then return end
      rd.o.failed(err)
      self.why = self.why or ("reading Redis failed: " .. tostring(err))
      if relay.time() - started < 1 then relay.sleep(quick:next()) else quick:reset() end
      while not self.stopped and not self:top(rd.o.stream) do relay.sleep(self.tick * self.mark_ticks) end
      rd.need, rd.retry_at = true, 0
    end
    relay.sleep(self.tick)
  end
end

-- A reload replaced this generation: its loops end.
function Snap:stop() self.stopped = true end

return M
