-- relay.observe (lua/relay/observe.lua): counters rendered as plain Prometheus text and a ring of
-- recent log entries with secret-looking keys redacted, in a real host: a script counts and logs
-- what it is asked to, and serves both.
local helpers = require "helpers"
local cjson = require "cjson"

local SCRIPT = [[
local relay = require "relay"
local observe = require "relay.observe"
local app = relay.new { name = "observe-user", flags = { words = { default = "" } } }
local words = app.flags.words ~= "" and { app.flags.words } or nil
local obs = observe.new { max_logs = 3, secret_words = words }
app:post("/inc", function(req, res) obs:inc(req.args.name, tonumber(req.args.by)); res:send(204) end)
app:post("/log", function(req, res)
  obs:log("info", req.args.event, { apiToken = "t0ps3cret", Payload = "body", note = "kept", who = "me" })
  res:send(204)
end)
app:get("/logs", function(req, res) res:json(200, obs:recent(req.args.verbose == "1")) end)
app:get("/metrics", function(_, res)
  res:send(200, obs:render({ { "conns", 2 } }, { from_c = 5, hits_total = 1 }))
end)
return app
]]

describe("relay.observe", function()
  local dir, host
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() if host then host:stop() end; host = nil end)

  local function start(flags)
    helpers.write_file(dir .. "/obs.lua", SCRIPT)
    host = helpers.start(dir .. "/obs.lua", { flags = flags })
  end
  local function post(path)
    assert.equal(204, host:request { method = "POST", path = path, body = "" }.status)
  end

  it("renders counters sorted by name, with the ones kept elsewhere added, then the gauges", function()
    start()
    post("/inc?name=hits_total")
    post("/inc?name=hits_total&by=2")
    post("/inc?name=a_total")
    assert.equal("# TYPE a_total counter\na_total 1\n# TYPE from_c counter\nfrom_c 5\n" ..
                 "# TYPE hits_total counter\nhits_total 4\n# TYPE conns gauge\nconns 2\n",
                 host:get("/metrics").body)
  end)

  it("keeps the last max_logs entries, oldest first, secret and payload keys redacted, also logged", function()
    start()
    for i = 1, 4 do post("/log?event=e" .. i) end
    local logs = cjson.decode(host:get("/logs?verbose=1").body)
    assert.same({ "e2", "e3", "e4" }, { logs[1].event, logs[2].event, logs[3].event })
    assert.same({ apiToken = "[redacted]", Payload = "[redacted]", note = "kept", who = "me" },
                logs[3].details)
    assert.is_nil(cjson.decode(host:get("/logs").body)[1].details) -- not verbose: no details
    assert.matches('"event":"e4"', host:log())
    assert.is_nil(host:log():find("t0ps3cret", 1, true))
  end)

  it("takes a script's own secret words", function()
    start { "--words=who" }
    post("/log?event=e1")
    local d = cjson.decode(host:get("/logs?verbose=1").body)[1].details
    assert.same({ apiToken = "t0ps3cret", Payload = "body", note = "kept", who = "[redacted]" }, d)
  end)
end)
