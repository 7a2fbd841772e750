-- relay.eventsource: following another server's text/event-stream (SSE) as a client, as a
-- browser's EventSource does: the events parsed by the WHATWG rules, and a connection that is
-- opened again with backoff whenever it fails or ends. The parser is pure Lua (usable without a
-- host); follow() needs the host (relay.http.stream, relay.sleep).
local backoff = require "relay.backoff"

local M = {}

-- An event's bytes, at most: all that was fed since the end of the last blank line (comments
-- and other fields too), counted after each feed (a feed that never ends an event must not grow
-- what the parser holds for ever).
M.MAX_EVENT = 1024 * 1024

local BOM, CR, LF = "\239\187\191", 13, 10

-- parser(fn) -> feed(bytes): calls fn(event) for every complete event in what was fed so far;
-- event = { event (default "message"), data (its data lines joined by "\n"), id (the last id
-- seen on the stream, as the spec keeps it across events; nil before any) }. The WHATWG rules
-- ("Interpreting an event stream"): one leading UTF-8 BOM skipped; lines end in "\r\n", "\n"
-- or a lone "\r"; "field: value" (one space after the colon dropped), ":" a comment; `event:`
-- with no value is "message"; an id holding a NUL is ignored; retry and unknown fields too; a
-- blank line dispatches when the event had a data line (`data:` alone: data ""). Bytes are
-- handed on as they came (no UTF-8 decoding). feed returns nil and why once more than
-- M.MAX_EVENT bytes were fed since the last blank line, else true; after that the parser holds
-- nothing and refuses whatever it is fed (the stream is to be closed).
--
-- Linear in the bytes fed: each chunk is searched once for line ends, and a line that spans
-- chunks is kept in pieces joined once at its end (not the held bytes copied on every feed).
function M.parser(fn)
  local parts, nparts = {}, 0 -- the pieces of the line not ended yet
  local data, event, id = nil, "", nil -- the event being read (data: its lines); the last id
  local fed, mark = 0, 0 -- bytes fed; where the event being read began (after a blank line)
  local head = "" -- the stream's first bytes, until they show whether it begins with a BOM
  local after_cr = false -- the last line ended in "\r": an "\n" next is that line end's
  local refused

  local function line(l)
    if l == "" then
      if data then
        fn { event = event ~= "" and event or "message", data = table.concat(data, "\n"), id = id }
      end
      data, event = nil, ""
      return true
    end
    local colon = l:find(":", 1, true)
    if colon == 1 then return end -- a comment
    local name, value = l, ""
    if colon then
      name = l:sub(1, colon - 1)
      value = l:sub(l:byte(colon + 1) == 32 and colon + 2 or colon + 1)
    end
    if name == "data" then
      data = data or {}
      data[#data + 1] = value -- joined once at the end: a line at a time is quadratic
    elseif name == "event" then event = value
    elseif name == "id" and not value:find("\0", 1, true) then id = value end
  end

  local function lines(bytes)
    local pos, n = 1, #bytes
    if after_cr and n > 0 then
      after_cr = false
      if bytes:byte(1) == LF then
        pos = 2
        if mark == fed then mark = fed + 1 end -- the blank line's "\r\n" ends here
      end
    end
    while true do
      local e = bytes:find("[\r\n]", pos)
      if not e then break end
      local l = bytes:sub(pos, e - 1)
      if nparts > 0 then
        parts[nparts + 1] = l
        l = table.concat(parts, "", 1, nparts + 1)
        parts, nparts = {}, 0
      end
      pos = e + 1
      if bytes:byte(e) == CR then
        if e == n then after_cr = true
        elseif bytes:byte(e + 1) == LF then pos = e + 2 end
      end
      if line(l) then mark = fed + pos - 1 end
    end
    if pos <= n then
      nparts = nparts + 1
      parts[nparts] = bytes:sub(pos)
    end
  end

  return function(bytes)
    if refused then return nil, refused end
    if head then -- the first bytes: a BOM is skipped once it is whole; anything else is kept
      bytes = head .. bytes
      if #bytes < 3 and BOM:sub(1, #bytes) == bytes then
        head, bytes = bytes, "" -- counted below as bytes of the first event
      else
        head = nil
        if bytes:sub(1, 3) == BOM then bytes, fed = bytes:sub(4), 3 end
      end
    end
    lines(bytes)
    fed = fed + #bytes
    if fed + #(head or "") - mark > M.MAX_EVENT then
      refused = ("an event over %d bytes"):format(M.MAX_EVENT)
      parts, nparts, data, event, id, head = {}, 0, nil, "", nil, nil
      return nil, refused
    end
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
