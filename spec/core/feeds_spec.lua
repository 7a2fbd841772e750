-- relay.feeds (lua/relay/feeds.lua): keyed upstream event streams with a sync fallback, in a
-- host following another host's real event streams (relay.sse.hold, a channel per key): the
-- first sync, then a stream per key; events of one read refresh their key once; a lost stream
-- is reported and syncs run every tick until it is back, then one more; a key followed later is
-- refreshed once its stream opens; syncs asked for during one run once more after it; stop()
-- ends the streams and the syncs.
local helpers = require "helpers"
local cjson = require "cjson"

local SOURCE = [[
local relay = require "relay"
local app = relay.new {}
app:get("/events", function(req, res) relay.sse.hold(res, req.args.key, { first = ":\n\n" }) end)
app:post("/publish", function(req, res) relay.sse.publish(req.args.key, req:body()); res:send(200, "") end)
app:post("/drop", function(req, res) relay.sse.close(req.args.key); res:send(200, "") end)
app:get("/off", function(_, res) res:send(404, "") end)
return app
]]

local FOLLOWER = [[
local relay = require "relay"
local feeds = require "relay.feeds"
local app = relay.new { flags = { source = { default = "" } } }
local seen = { syncs = 0, refreshes = {}, events = {}, ups = {}, lost = {} }
local keys, path, raise = { "a", "b" }, "/events", false
local f
f = feeds.new { every = 0.3, backoff_min = 0.1, backoff_max = 0.2,
  sync = function()
    seen.syncs = seen.syncs + 1
    relay.sleep(0.05) -- a sync yields, as a fetch does
    if raise then raise = false; error("sync raised") end
    return true
  end,
  failed = function(why) seen.failed = why end,
  keys = function() return keys end,
  request = function(key) return { url = app.flags.source .. path .. "?key=" .. key, timeout = 30 } end,
  event = function(key, ev)
    seen.events[#seen.events + 1] = key .. "=" .. ev.data
    f:refresh(key)
  end,
  refresh = function(key) seen.refreshes[#seen.refreshes + 1] = key end,
  up = function(key, after_loss) seen.ups[#seen.ups + 1] = ("%s:%s:%d"):format(key, tostring(after_loss), seen.syncs) end,
  lost = function(key, why, was_open) seen.lost[#seen.lost + 1] = ("%s:%s:%s"):format(key, why, tostring(was_open)) end }
app:on_init(function() f:start() end)
app:get("/seen", function(_, res) seen.up = f.up == true; res:json(200, seen) end)
app:post("/add", function(_, res) keys = { "a", "b", "c" }; f:follow(); res:send(200, "") end)
app:post("/sync3", function(_, res)
  for _ = 1, 3 do relay.after(0, function() f:sync() end) end
  res:send(200, "")
end)
app:post("/raise", function(_, res) raise = true; f:sync(); res:send(200, "") end)
app:post("/break", function(_, res) path = "/off"; res:send(200, "") end)
app:post("/fix", function(_, res) path = "/events"; res:send(200, "") end)
app:post("/stop", function(_, res) f:stop(); res:send(200, "") end)
return app
]]

describe("relay.feeds", function()
  local dir, source, follower
  before_each(function()
    dir = helpers.tmpdir()
    helpers.write_file(dir .. "/source.lua", SOURCE)
    helpers.write_file(dir .. "/follower.lua", FOLLOWER)
    source = helpers.start(dir .. "/source.lua")
    follower = helpers.start(dir .. "/follower.lua", { flags = { source = source:url("") } })
  end)
  after_each(function()
    if follower then follower:stop() end
    if source then source:stop() end
  end)

  local function seen() return cjson.decode(follower:get("/seen").body) end
  local function post(host, path, body) host:request { method = "POST", path = path, body = body or "" } end

  it("syncs first, then follows a stream per key; the events of one read refresh their key once", function()
    helpers.wait_until(function() return seen().up end, 5, "both streams open")
    local s = seen()
    assert.equal(1, #s.ups) -- once every stream is open, not per stream
    -- no stream was lost before; the first sync ran before (a tick may have run one more, on a
    -- slow machine, before both streams were open)
    assert.truthy(s.ups[1]:find(":false:[12]$"), s.ups[1])
    post(source, "/publish?key=b", "data: 1\n\ndata: 2\n\ndata: 3\n\n")
    helpers.wait_until(function() return #seen().refreshes == 1 end, 5, "the refresh")
    helpers.sleep(0.2)
    s = seen()
    assert.same({ "b=1", "b=2", "b=3" }, s.events)
    assert.same({ "b" }, s.refreshes)
  end)

  it("reports a lost stream, syncs every tick while it is down, and once more when it is back", function()
    helpers.wait_until(function() return seen().up end, 5, "both streams open")
    post(follower, "/break") -- reconnects now get 404
    post(source, "/drop?key=a")
    helpers.wait_until(function() return seen().syncs >= 3 end, 5, "syncs while down")
    local s = seen()
    assert.is_false(s.up)
    assert.equal("a:closed:true", s.lost[1])
    assert.equal("a:status 404:false", s.lost[2]) -- a reconnect that never opened
    assert.is_nil(s.failed)
    -- back: the next reconnect opens; every stream open after a loss -> up(after_loss) and a sync
    post(follower, "/fix")
    helpers.wait_until(function() return seen().up end, 5, "open again")
    helpers.sleep(0.2)
    s = seen()
    local key, n = s.ups[2]:match("^(%a):true:(%d+)$")
    assert.equal("a", key, s.ups[2])
    assert.equal(tonumber(n) + 1, s.syncs) -- the sync after the loss
    helpers.sleep(0.7) -- two ticks: no sync while every stream is open
    assert.equal(tonumber(n) + 1, seen().syncs)
  end)

  it("reports a sync that raises as failed, and syncs again after it", function()
    helpers.wait_until(function() return seen().up end, 5, "both streams open")
    local before = seen().syncs
    post(follower, "/raise")
    helpers.wait_until(function() return seen().failed end, 5, "the failure reported")
    assert.matches("sync raised", seen().failed)
    post(follower, "/sync3")
    helpers.wait_until(function() return seen().syncs >= before + 2 end, 5, "a sync after the raise")
  end)

  it("syncs once more after a run for the calls made during it; refreshes a key followed later", function()
    helpers.wait_until(function() return seen().up end, 5, "both streams open")
    local before = seen().syncs
    post(follower, "/sync3")
    helpers.wait_until(function() return seen().syncs == before + 2 end, 5, "the run and one more")
    helpers.sleep(0.2)
    assert.equal(before + 2, seen().syncs) -- 1 for the first call, 1 for the two made during it
    post(follower, "/add")
    helpers.wait_until(function() return #seen().refreshes == 1 end, 5, "c refreshed once its stream opened")
    local s = seen()
    assert.same({ "c" }, s.refreshes)
    assert.equal(2, #s.ups)
    post(follower, "/stop")
    local n = seen().syncs
    post(source, "/drop?key=a")
    helpers.sleep(0.7) -- two ticks
    s = seen()
    assert.equal(n, s.syncs)
    assert.equal(0, #s.lost) -- a stopped feed reports nothing
  end)
end)
