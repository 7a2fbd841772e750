-- relay.snapshot (lua/relay/snapshot.lua): groups of keys a process keeps in a real redis-server,
-- with a mark written last; keys gone from a group are deleted; a FLUSHALL no call noticed (the
-- mark gone), a key restored with an old value (the audit) and a restart that made writes fail
-- are each found, told to lost(), and the whole snapshot written again with a new mark.
local helpers = require "helpers"
local rc = require "redis_cluster_support" -- command(): one line to one redis

local SCRIPT = [[
local relay = require "relay"
local snapshot = require "relay.snapshot"
local app = relay.new { name = "snapshot-user", flags = { redis = { default = "" } } }
local groups, lost, jobs, snap = {}, {}, 0, nil
snap = snapshot.new { url = app.flags.redis, mark = "snap:mark", inventory = "snap:%s:inv",
  compare = "%-v$", expect = { "snap:always" }, what = "the test snapshot", audit_every = 0.5,
  groups = function()
    local ids = {}
    for g in pairs(groups) do ids[#ids + 1] = g end
    return ids
  end,
  writes = function(g)
    local w = {}
    for k, v in pairs(groups[g] or {}) do w["snap:" .. g .. ":" .. k] = v end
    if groups[g] then return w, { ["snap:owner:" .. g] = g } end
  end,
  before_mark = function() return snap.r:call("SET", "snap:always", "1") end,
  lost = function(why) lost[#lost + 1] = why end }
-- /put?g=a&k=x-v&v=1 sets one key of a group (v empty: removes it) and writes the group
app:post("/put", function(req, res)
  local g = req.args.g
  groups[g] = groups[g] or {}
  groups[g][req.args.k] = req.args.v ~= "" and req.args.v or nil
  snap:put({ g }, function() jobs = jobs + 1 end)
  res:send(200, "ok")
end)
app:get("/state", function(_, res)
  local problem = tostring(snap:problem())
  res:send(200, ("jobs=%d problem=%s lost=%s"):format(jobs, problem, table.concat(lost, "|")))
end)
return app
]]

describe("relay.snapshot", function()
  local rig, port, host
  setup(function()
    rig = helpers.redis_rig(SCRIPT, "snap.lua")
    port, host = rig.port, rig.host
  end)
  teardown(function() rig.stop() end)

  local function put(q)
    assert.equal("ok", host:request { method = "POST", path = "/put?" .. q, body = "" }.body)
  end
  local function get(k) return select(2, rc.command(port, "GET " .. k)) end
  local function state() return host:get("/state").body end

  it("writes a group's keys, then the mark; deletes a key gone from the group, not a shared one", function()
    put("g=a&k=x-v&v=1")
    put("g=a&k=y&v=2")
    -- the mark may come with the first put's whole write, before the second put's write
    helpers.wait_until(function() return get("snap:mark") ~= nil and get("snap:a:y") == "2" end, 5, "the mark")
    assert.same({ "1", "2", "a", "1" },
                { get("snap:a:x-v"), get("snap:a:y"), get("snap:owner:a"), get("snap:always") })
    assert.matches('"seed":', get("snap:mark"))
    put("g=a&k=y&v=")
    helpers.wait_until(function() return get("snap:a:y") == nil end, 5, "snap:a:y deleted")
    assert.equal("1", get("snap:a:x-v"))
    assert.equal("a", get("snap:owner:a"))
    assert.matches("^jobs=3 problem=nil lost=$", state())
  end)

  it("finds a FLUSHALL by the mark, tells lost() and writes everything again with a new mark", function()
    local mark = get("snap:mark")
    rc.command(port, "FLUSHALL")
    helpers.wait_until(function() return get("snap:mark") ~= nil end, 5, "a new mark")
    assert.not_equal(mark, get("snap:mark"))
    assert.same({ "1", "a", "1" }, { get("snap:a:x-v"), get("snap:owner:a"), get("snap:always") })
    assert.matches("lost=Redis lost the test snapshot %(snap:mark is gone%): writing it again$", state())
  end)

  -- a restart from an old copy: the mark is there, a compared key holds an older value
  it("finds a stale value by the audit and writes everything again", function()
    local mark = get("snap:mark")
    rc.command(port, "SET snap:a:x-v 0")
    helpers.wait_until(function() return get("snap:a:x-v") == "1" end, 5, "the value written again")
    assert.not_equal(mark, get("snap:mark"))
    assert.matches("%(snap:a:x%-v is gone or stale%): writing it again$", state())
  end)

  it("says Redis is gone while it is, and writes everything again once it is back empty", function()
    rig.kill_redis()
    helpers.wait_until(function() return state():find("problem=not connected to Redis", 1, true) end, 5,
                       "problem: not connected")
    put("g=b&k=z&v=3") -- fails (or is left for the whole write): b is written once Redis answers
    rig.start_redis()
    helpers.wait_until(function() return get("snap:b:z") == "3" and get("snap:a:x-v") == "1" end, 10,
                       "everything written again")
    helpers.wait_until(function() return state():find("problem=nil", 1, true) end, 5, "no problem left")
    assert.is_not_nil(get("snap:mark"))
  end)
end)

-- The reader, against keys this spec writes itself (so each step is certain): a load only with a
-- mark, the change events followed, a mark gone told once, a new mark loaded again.
local READER = [[
local relay = require "relay"
local snapshot = require "relay.snapshot"
local app = relay.new { name = "snapshot-reader", flags = { redis = { default = "" } } }
local held, events, lost, reloads, fails, snap = "none", 0, {}, 0, 0, nil
snap = snapshot.new { url = app.flags.redis, mark = "r:mark", inventory = "r:%s:inv",
  what = "the test snapshot",
  groups = function() return {} end, writes = function() end }
snap:read { stream = "r:events",
  load = function(mark)
    if mark == nil then return nil, "no mark yet" end
    return { x = snap.r:call("GET", "r:x") }
  end,
  apply = function(data) held = data.x; return true end,
  event = function(ev) events = events + 1; held = ev.x end,
  lost = function(why) lost[#lost + 1] = why end,
  reloaded = function() reloads = reloads + 1 end,
  failed = function() fails = fails + 1 end }
app:get("/state", function(_, res)
  res:send(200, ("held=%s events=%d reloads=%d fails=%s lost=%s problem=%s"):format(held, events, reloads,
    fails > 0 and "some" or "none", table.concat(lost, "|"), tostring(snap:problem())))
end)
return app
]]

describe("relay.snapshot reader", function()
  local rig, port, host
  setup(function()
    rig = helpers.redis_rig(READER, "reader.lua")
    port, host = rig.port, rig.host
  end)
  teardown(function() rig.stop() end)

  local function state() return host:get("/state").body end
  local function wait_state(pattern, what)
    helpers.wait_until(function() return state():find(pattern) end, 5, what)
  end

  it("loads once marked, follows the events, tells a lost mark once, loads again at a new one", function()
    wait_state("fails=some", "a load refused: no mark yet")
    assert.matches("^held=none events=0", state())
    rc.command(port, "SET r:x 1")
    rc.command(port, "SET r:mark m1")
    wait_state("^held=1 events=0 reloads=0", "the first load")
    rc.command(port, [[XADD r:events * event '{"x":"2"}']])
    wait_state("^held=2 events=1 ", "the event followed")
    rc.command(port, "DEL r:mark")
    wait_state("lost=Redis lost the test snapshot: serving from memory until it is written again"
               .. " problem=Redis lost",
               "the loss told")
    assert.matches("^held=2 ", state()) -- the last load stays
    rc.command(port, "SET r:x 5")
    rc.command(port, "SET r:mark m2")
    wait_state("^held=5 events=1 reloads=1 .* problem=nil$", "loaded again at the new mark")
    assert.equal(1, select(2, state():gsub("Redis lost", ""))) -- told once; problem cleared
  end)
end)

-- follow_always: a stream followed for the generation's life; Redis gone is told to failed() and
-- the stream followed again once it is back; after stop() nothing more is told.
local FOLLOWER = [[
local relay = require "relay"
local snapshot = require "relay.snapshot"
local app = relay.new { name = "snapshot-follower", flags = { redis = { default = "" } } }
local got, fails = {}, 0
local snap = snapshot.new { url = app.flags.redis, mark = "f:mark", inventory = "f:%s:inv",
  what = "the test snapshot", groups = function() return {} end, writes = function() end }
app:on_init(function()
  snap:follow_always("f:events", function(v) got[#got + 1] = v.x end, function() fails = fails + 1 end)
end)
app:get("/state", function(_, res) res:send(200, ("got=%s fails=%d"):format(table.concat(got, ","), fails)) end)
app:post("/stop", function(_, res) snap:stop(); res:send(200, "ok") end)
return app
]]

describe("relay.snapshot follow_always", function()
  local rig
  setup(function() rig = helpers.redis_rig(FOLLOWER, "follower.lua") end)
  teardown(function() rig.stop() end)

  local function state() return rig.host:get("/state").body end

  it("follows a stream across a Redis restart, telling the failure; stop() ends it", function()
    helpers.sleep(1) -- following from the newest entry: what is added before it began is not read
    rc.command(rig.port, [[XADD f:events * event '{"x":"1"}']])
    helpers.wait_until(function() return state() == "got=1 fails=0" end, 5, "the first entry")
    rig.kill_redis()
    helpers.wait_until(function() return not state():find("fails=0", 1, true) end, 5, "the failure told")
    rig.start_redis()
    helpers.wait_until(function()
      rc.command(rig.port, [[XADD f:events * event '{"x":"2"}']])
      helpers.sleep(0.3)
      return state():find("^got=1,2")
    end, 10, "an entry after the restart")
    rig.host:request { method = "POST", path = "/stop", body = "" }
    local fails = state():match("fails=(%d+)")
    rig.kill_redis()
    helpers.sleep(1.5) -- three retries' worth
    assert.equal(fails, state():match("fails=(%d+)"))
  end)
end)
