-- relay.batch (lua/relay/batch.lua): texts gathered per key and sent in one call per key, bounded
-- in bytes (waiting plus in flight), flushed at flush_at bytes or every `every` seconds, one
-- flush at a time; a send that raises is logged and the next flush still runs. In a real host:
-- the timers are the generation's.
local helpers = require "helpers"
local cjson = require "cjson"

local SCRIPT = [=[
local relay = require "relay"
local batch = require "relay.batch"
local app = relay.new { name = "batch" }
local sent, release = {}, nil
local b = batch.new { max_bytes = 10, flush_at = 8, every = tonumber(os.getenv("EVERY")) or 3600,
  send = function(key, parts)
    if key == "boom" then error("the receiver broke") end
    if key == "slow" then while not release do relay.sleep(0.01) end end
    sent[#sent + 1] = { key = key, a = parts.a, b = parts.b }
  end }
app:on_init(function() if os.getenv("EVERY") then b:start() end end)
app:get("/add", function(req, res)
  local ok = b:add(req.args.key, { a = req.args.a or "", b = req.args.b or "" })
  res:json(200, { ok = ok, dropped = b.dropped, bytes = b.bytes })
end)
app:get("/flush", function(_, res) b:flush(); res:json(200, { bytes = b.bytes }) end)
app:get("/bytes", function(_, res) res:json(200, { bytes = b.bytes }) end)
app:get("/release", function(_, res) release = true; res:send(200, "ok") end)
app:get("/sent", function(_, res) res:json(200, sent) end)
return app
]=]

local function start(env)
  local dir = helpers.tmpdir()
  helpers.write_file(dir .. "/batch.lua", SCRIPT)
  return helpers.start(dir .. "/batch.lua", { env = env })
end

local function get(host, path) return cjson.decode(host:get(path).body) end

describe("relay.batch", function()
  local host
  after_each(function() if host then host:stop() end end)

  it("merges per key and field in order, refuses past max_bytes, and sends one call per key", function()
    host = start()
    assert.same({ ok = true, dropped = 0, bytes = 3 }, get(host, "/add?key=x&a=12&b=3"))
    assert.same({ ok = true, dropped = 0, bytes = 4 }, get(host, "/add?key=x&a=4"))
    assert.same({ ok = true, dropped = 0, bytes = 6 }, get(host, "/add?key=y&b=56"))
    assert.same({ ok = false, dropped = 1, bytes = 6 }, get(host, "/add?key=z&a=12345")) -- 11 > 10
    assert.same({ ok = false, dropped = 2, bytes = 6 }, get(host, "/add?key=x&a=12345"))
    assert.same({ bytes = 0 }, get(host, "/flush"))
    local sent = get(host, "/sent")
    table.sort(sent, function(p, q) return p.key < q.key end)
    assert.same({ { key = "x", a = { "12", "4" }, b = { "3" } }, { key = "y", a = {}, b = { "56" } } }, sent)
    assert.same({ ok = true, dropped = 0, bytes = 5 }, get(host, "/add?key=z&a=12345")) -- room again
  end)

  it("flushes by itself at flush_at bytes, counts what is in flight, one flush at a time", function()
    host = start()
    get(host, "/add?key=slow&a=1234")
    get(host, "/add?key=slow&a=5678") -- 8 bytes: a flush starts, and waits in send
    helpers.wait_until(function() return get(host, "/bytes").bytes == 0 end, 5, "the flush to start")
    assert.same({ ok = false, dropped = 1, bytes = 0 }, get(host, "/add?key=q&a=123")) -- 8 in flight + 3 > 10
    assert.same({ ok = true, dropped = 1, bytes = 2 }, get(host, "/add?key=q&a=12"))
    assert.same({ bytes = 2 }, get(host, "/flush")) -- the first is still running
    host:get("/release")
    helpers.wait_until(function() return #get(host, "/sent") == 1 end, 5, "the slow send")
    assert.same({ key = "slow", a = { "1234", "5678" }, b = {} }, get(host, "/sent")[1])
    assert.same({ bytes = 0 }, get(host, "/flush"))
    assert.equal("q", get(host, "/sent")[2].key)
  end)

  it("logs a send that raises and still sends the other keys, then flushes again", function()
    host = start()
    get(host, "/add?key=boom&a=1")
    get(host, "/add?key=ok&a=2")
    get(host, "/flush")
    assert.matches('"event":"batch_send_failed"[^\n]*"batch":"boom"', host:log())
    assert.matches("the receiver broke", host:log())
    assert.same({ { key = "ok", a = { "2" }, b = {} } }, get(host, "/sent"))
    get(host, "/add?key=ok&a=3")
    get(host, "/flush")
    assert.equal(2, #get(host, "/sent"))
  end)

  it("start() flushes every `every` seconds", function()
    host = start { EVERY = "0.2" }
    get(host, "/add?key=t&a=1")
    helpers.wait_until(function() return #get(host, "/sent") == 1 end, 5, "the timer's flush")
  end)
end)
