-- relay.inbox (lua/relay/inbox.lua): an inbox per server in a real redis-server: pushed by name,
-- pulled in batches bounded in count and bytes, trimmed to its newest max_len, and a message too
-- long to take dropped inside Redis.
local helpers = require "helpers"
local cjson = require "cjson"
local rc = require "redis_cluster_support" -- command(): one line to one redis

local SCRIPT = [[
local relay = require "relay"
local inbox = require "relay.inbox"
local app = relay.new { name = "inbox-user", flags = { redis = { default = "" } } }
local r = relay.redis(app.flags.redis)
local mine = inbox.new { redis = r, prefix = "box:", name = "me", max_len = 5, limit = 3, max_bytes = 10 }
app:post("/push", function(req, res)
  res:send(200, mine:push(req.args.to, req.args.m) and "ok" or "failed")
end)
app:post("/pull", function(_, res)
  local got, dropped = mine:pull()
  res:json(200, got and { got = relay.json.array(got), dropped = dropped } or { err = dropped })
end)
return app
]]

describe("relay.inbox", function()
  local rig, port, host
  setup(function()
    rig = helpers.redis_rig(SCRIPT, "inbox.lua")
    port, host = rig.port, rig.host
  end)
  teardown(function() rig.stop() end)

  local function post(path) return host:request { method = "POST", path = path, body = "" }.body end
  local function push(to, m) return post(("/push?to=%s&m=%s"):format(to, m)) end
  local function pull() return cjson.decode(post("/pull")) end

  it("pulls its own messages in order, at most limit at a time, and trims to the newest max_len", function()
    for i = 1, 7 do assert.equal("ok", push("me", "m" .. i)) end
    assert.equal("ok", push("other", "x"))
    assert.equal(":5", rc.command(port, "LLEN box:me"))
    assert.same({ got = { "m3", "m4", "m5" }, dropped = 0 }, pull())
    assert.same({ got = { "m6", "m7" }, dropped = 0 }, pull())
    assert.same({ got = {}, dropped = 0 }, pull())
    assert.equal(":1", rc.command(port, "LLEN box:other")) -- not ours
  end)

  it("stops a batch at max_bytes past the first, drops a message longer than max_bytes in Redis", function()
    push("me", "aaaaaa")
    push("me", "bbbbbb") -- 12 bytes with the first: next batch
    push("me", "0123456789X") -- 11: never taken
    push("me", "c")
    assert.same({ got = { "aaaaaa" }, dropped = 0 }, pull())
    assert.same({ got = { "bbbbbb", "c" }, dropped = 1 }, pull())
    assert.equal(":0", rc.command(port, "LLEN box:me"))
  end)

  it("says why when Redis does not answer", function()
    rig.kill_redis()
    assert.equal("failed", push("me", "m"))
    assert.matches("redis", pull().err)
  end)
end)
