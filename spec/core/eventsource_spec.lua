-- relay.eventsource (lua/relay/eventsource.lua): the SSE client. The parser on its own (pure
-- Lua: events split anywhere, CRLF, multi-line data, comments, ids, an event that never ends),
-- then follow() in a host against another host's real event stream (relay.sse.hold): events
-- arrive, a closed stream and a refused one are reported and opened again with backoff, and
-- stop() ends it.
local helpers = require "helpers"
local eventsource = require "relay.eventsource"
local cjson = require "cjson"

local function parse(chunks)
  local got = {}
  local feed = eventsource.parser(function(ev) got[#got + 1] = ev end)
  for _, c in ipairs(chunks) do assert(feed(c)) end
  return got
end

describe("relay.eventsource.parser", function()
  it("parses events split anywhere, with LF or CRLF, as the WHATWG rules say", function()
    local text = ": a comment\n\nevent: put\ndata: {\"a\":1}\nid: 7\n\ndata:two\r\ndata:  lines\r\n\r\nretry: 5\n\n"
    for split = 1, #text do -- every place a chunk may end
      local got = parse { text:sub(1, split), text:sub(split + 1) }
      assert.equal(2, #got, "split at " .. split)
      assert.same({ event = "put", data = '{"a":1}', id = "7" }, got[1])
      assert.same({ event = "message", data = "two\n lines", id = "7" }, got[2]) -- the id is kept
    end
  end)

  it("keeps nothing of a block without data, and waits for the blank line", function()
    assert.same({}, parse { "event: x\nid: 1\n\n", "data: not ended yet\n" })
  end)

  it("refuses an event that grows over MAX_EVENT bytes", function()
    local feed = eventsource.parser(function() end)
    assert(feed("data: " .. ("x"):rep(eventsource.MAX_EVENT / 2)))
    local ok, err = feed(("x"):rep(eventsource.MAX_EVENT / 2))
    assert.is_nil(ok)
    assert.equal("an event over 1048576 bytes", err)
  end)

  -- A peer that sends many tiny events in one read, or one event of many data lines, costs time
  -- in proportion to its bytes: the parser once copied the rest of its buffer after every event,
  -- and the event's data after every line (seconds of CPU for half a MiB).
  it("parses half a MiB of tiny events in one piece, and an event of 100000 data lines, in linear time", function()
    local n, t0 = 0, os.clock()
    local feed = eventsource.parser(function() n = n + 1 end)
    assert(feed(("data:x\n\n"):rep(65536)))
    assert.equal(65536, n)
    local last
    feed = eventsource.parser(function(ev) last = ev end)
    assert(feed(("data:\n"):rep(100000) .. "\n"))
    assert.equal(99999, #last.data)
    assert.is_true(os.clock() - t0 < 1, "took " .. (os.clock() - t0) .. " s")
  end)
end)

local SOURCE = [[
local relay = require "relay"
local app = relay.new {}
app:get("/events", function(_, res) relay.sse.hold(res, "c", { first = ":\n\n" }) end)
app:post("/publish", function(req, res) relay.sse.publish("c", req:body()); res:send(200, "") end)
app:post("/drop", function(_, res) relay.sse.close("c"); res:send(200, "") end)
return app
]]

local FOLLOWER = [[
local relay = require "relay"
local eventsource = require "relay.eventsource"
local app = relay.new { flags = { source = { default = "" } } }
local seen = { opens = 0, events = {}, lost = {} }
local feed
app:on_init(function()
  feed = eventsource.follow {
    request = function() return { url = app.flags.source, timeout = 30 } end,
    on_open = function() seen.opens = seen.opens + 1 end,
    on_event = function(ev) seen.events[#seen.events + 1] = ev.event .. "=" .. ev.data end,
    on_lost = function(why) seen.lost[#seen.lost + 1] = tostring(why) end,
    backoff_min = 0.1, backoff_max = 0.2,
  }
end)
app:get("/seen", function(_, res) res:json(200, seen) end)
app:post("/stop", function(_, res) feed:stop(); res:send(200, "") end)
return app
]]

describe("relay.eventsource.follow", function()
  local dir, source, follower
  before_each(function()
    dir = helpers.tmpdir()
    helpers.write_file(dir .. "/source.lua", SOURCE)
    helpers.write_file(dir .. "/follower.lua", FOLLOWER)
    source = helpers.start(dir .. "/source.lua")
  end)
  after_each(function()
    if follower then follower:stop() end
    if source then source:stop() end
  end)

  local function seen()
    return cjson.decode(follower:get("/seen").body)
  end

  it("delivers events, and reopens a stream the server closed", function()
    follower = helpers.start(dir .. "/follower.lua", { flags = { source = source:url("/events") } })
    helpers.wait_until(function() return seen().opens == 1 end, 5, "the stream to open")
    source:request { method = "POST", path = "/publish", body = "event: put\ndata: one\n\n" }
    helpers.wait_until(function() return #seen().events == 1 end, 5, "the event")
    assert.same({ "put=one" }, seen().events)
    source:request { method = "POST", path = "/drop" }
    helpers.wait_until(function() return seen().opens == 2 end, 5, "the stream to reopen")
    assert.equal(1, #seen().lost)
    source:request { method = "POST", path = "/publish", body = "data: two\n\n" }
    helpers.wait_until(function() return #seen().events == 2 end, 5, "the event after the reopen")
    assert.equal("message=two", seen().events[2])
  end)

  it("reports a refused stream and tries again with backoff; stop() ends it", function()
    follower = helpers.start(dir .. "/follower.lua", { flags = { source = source:url("/nowhere") } })
    helpers.wait_until(function() return #seen().lost >= 3 end, 5, "three tries")
    assert.equal("status 404", seen().lost[1])
    assert.equal(0, seen().opens)
    follower:request { method = "POST", path = "/stop" }
    local n = #seen().lost
    helpers.sleep(0.5) -- more than two backoffs
    assert.is_true(#seen().lost <= n + 1, "tried again after stop()") -- one may have been under way
  end)
end)
