-- relay.eventsource (lua/relay/eventsource.lua): the SSE client. The parser on its own (pure
-- Lua: events split anywhere, CRLF, lone CR, a BOM, multi-line data, comments, ids, an event
-- that never ends; fuzz/fuzz_eventsource_lua.c checks it against a WHATWG reference),
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

  -- What fuzz/fuzz_eventsource_lua.c found against its WHATWG reference (its reproducers are in
  -- fuzz/regressions/fuzz_eventsource_lua/): a stream the browsers' EventSource and the SDK
  -- clients read was read otherwise, or not at all.
  it("ends lines at a lone CR too, and a CRLF split between reads is still one line end", function()
    local text = "data: a\rdata: b\r\rid: 3\revent: e\r\n\r\ndata: c\r\ndata: d\r\n\r\n"
    for split = 0, #text do
      local got = parse { text:sub(1, split), text:sub(split + 1) }
      assert.same({
        { event = "message", data = "a\nb" },
        { event = "message", data = "c\nd", id = "3" }, -- the block of id and event alone sent nothing
      }, got, "split at " .. split)
    end
  end)

  it("skips one UTF-8 BOM at the start of the stream, split anywhere", function()
    local text = "\239\187\191data: a\n\n\239\187\191data: b\n\n"
    for split = 0, #text do
      assert.same({ { event = "message", data = "a" } }, parse { text:sub(1, split), text:sub(split + 1) },
        "split at " .. split) -- the second BOM is part of a field name: no such field
    end
    assert.same({}, parse { "\239\187\191\239\187\191data: a\n\n" }) -- one BOM only
  end)

  it("takes `event:` with no value as the default type again", function()
    assert.same({ { event = "message", data = "a" }, { event = "message", data = "b" } },
      parse { "event: x\nevent:\ndata: a\n\nevent: y\nevent\ndata: b\n\n" })
  end)

  it("counts every byte since the last blank line against MAX_EVENT, and takes nothing once it refused", function()
    local max = eventsource.MAX_EVENT
    eventsource.MAX_EVENT = 16
    local ok, err = pcall(function()
      local got = {}
      local feed = eventsource.parser(function(ev) got[#got + 1] = ev end)
      assert.is_true(feed("data: 0123456789\n\ndata: 01234567\n")) -- 15 bytes of the second event
      assert.equal(1, #got)
      assert.same({ nil, "an event over 16 bytes" }, { feed(":\n") }) -- a comment counts too
      assert.same({ nil, "an event over 16 bytes" }, { feed("\n") }) -- refused: no event after that
      assert.equal(1, #got)
    end)
    eventsource.MAX_EVENT = max
    assert(ok, err)
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

  -- A peer that sends one long event a few bytes per read: the parser once joined what it held
  -- with each read (half a MiB in 32-byte reads: 4 GB copied, seconds of CPU); now the pieces of
  -- a line are joined once, when it ends.
  it("parses half a MiB of one event fed 32 bytes at a time in linear time", function()
    local text = "data: " .. ("x"):rep(512 * 1024 - 8) .. "\n\n"
    local last, t0 = nil, os.clock()
    local feed = eventsource.parser(function(ev) last = ev end)
    for i = 1, #text, 32 do assert(feed(text:sub(i, i + 31))) end
    assert.equal(512 * 1024 - 8, #last.data)
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
