-- relay.eventsource: following another server's text/event-stream (SSE) as a client, as a
-- browser's EventSource does: the events parsed by the WHATWG rules, and a connection that is
-- opened again with backoff whenever it fails or ends. The parser is pure Lua (usable without a
-- host); follow() needs the host (relay.http.stream, relay.sleep).
local backoff = require "relay.backoff"

local M = {}

-- An event's bytes before its blank line, at most (a feed that never ends an event must not
-- grow the buffer for ever).
M.MAX_EVENT = 1024 * 1024

-- One line of a block: "field: value" (one space after the colon dropped), "field" alone, or a
-- ":" comment (nil).
local function field(line)
  if line:sub(1, 1) == ":" then return nil end
  local name, value = line:match("^([^:]*):? ?(.*)$")
  return name, value
end

-- One block (the lines before a blank line) -> the event, or nil when it has no data. id is
-- the last one seen on the stream, as the spec keeps it across events.
local function event_of(block, state)
  local ev, data = { event = "message" }, {}
  for line in block:gsub("\r\n", "\n"):gmatch("[^\n]+") do
    local name, value = field(line)
    if name == "data" then data[#data + 1] = value -- joined once: a line at a time is quadratic
    elseif name == "event" and value ~= "" then ev.event = value
    elseif name == "id" and not value:find("\0", 1, true) then state.id = value end
  end
  if #data == 0 then return nil end
  ev.data, ev.id = table.concat(data, "\n"), state.id
  return ev
end

-- parser(fn) -> feed(bytes): calls fn(event) for every complete event in what was fed so far;
-- event = { event (default "message"), data (its data lines joined by "\n"), id }. Lines end in
-- "\n" or "\r\n". feed returns nil and why once an event grows over M.MAX_EVENT bytes, else true.
function M.parser(fn)
  local buf, state = "", {}
  return function(bytes)
    -- searched from where a blank line may begin (its first 3 bytes may be held already); the
    -- rest is cut off once, after the last event (not after each: quadratic in events per read)
    local from, pos = math.max(1, #buf - 2), 1
    buf = buf .. bytes
    while true do
      local i, j = buf:find("\r?\n\r?\n", math.max(from, pos))
      if not i then break end
      local ev = event_of(buf:sub(pos, i - 1), state)
      pos = j + 1
      if ev then fn(ev) end
    end
    buf = buf:sub(pos)
    if #buf > M.MAX_EVENT then return nil, ("an event over %d bytes"):format(M.MAX_EVENT) end
    return true
  end
end

local Feed = {}
Feed.__index = Feed

-- Reads one opened stream until it fails: -> why it ended.
local function read_all(s, feed)
  while true do
    local data, err = s:read()
    if not data then return err end
    local ok, why = feed(data)
    if not ok then return why end
  end
end

-- One connection: -> true once it was opened (and has ended since), or false; and why it ended.
function Feed:once()
  local relay = require "relay"
  local s, status = relay.http.stream(self.opts.request())
  if not s then return false, status end
  if status ~= 200 or self.stopped then
    s:close()
    return false, "status " .. tostring(status)
  end
  self.stream = s
  if self.opts.on_open then self.opts.on_open() end
  local why = read_all(s, M.parser(self.opts.on_event))
  s:close()
  self.stream = nil
  return true, why
end

function Feed:run()
  local relay = require "relay"
  local wait = backoff.new { min = self.opts.backoff_min or 1, max = self.opts.backoff_max or 60 }
  while not self.stopped do
    local opened, why = self:once()
    if self.stopped then return end
    if opened then wait:reset() end
    if self.opts.on_lost then self.opts.on_lost(why) end
    relay.sleep(wait:next())
  end
end

-- follow(opts) -> feed: follows a stream from a task of its own until feed:stop(). opts:
-- request() -> relay.http.stream's options, asked for each connection (credentials may have
-- changed); on_event(event) (the parser's); on_open() once a connection answers 200; on_lost(why)
-- after a connection failed or ended ("status 401", "closed", …), not after stop();
-- backoff_min (1 s), doubled after each failure up to backoff_max (60 s), back to backoff_min
-- once a connection opens.
function M.follow(opts)
  local relay = require "relay"
  local feed = setmetatable({ opts = opts, stopped = false }, Feed)
  relay.after(0, function() feed:run() end)
  return feed
end

-- The stream is closed now; a read parked on it ends with the generation's drain.
function Feed:stop()
  self.stopped = true
  if self.stream then self.stream:close(); self.stream = nil end
end

return M
