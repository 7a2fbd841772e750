-- The Lua runtime as scripts meet it: waiting primitives, the HTTP client against a real
-- upstream (a second relayhost), shared dictionaries, metrics, timers and the watchdog.
local helpers = require "helpers"
local cjson = require "cjson"

describe("Lua runtime", function()
  local upstream, host

  setup(function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/upstream.lua", [[
local relay = require "relay"
local app = relay.new { name = "upstream" }
app:get("/hello", function(_, res) res:send(200, "from upstream", { ["content-type"] = "text/x-up" }) end)
app:get("/slow", function(_, res) relay.sleep(2) res:send(200, "late") end)
return app
]])
    upstream = helpers.start(dir .. "/upstream.lua")
    host = helpers.start(helpers.fixture("basic.lua"), {
      flags = { "--upstream", "http://127.0.0.1:" .. upstream.port, "--watchdog", "0.3" } })
  end)

  teardown(function()
    assert.equal(0, host:stop())
    assert.equal(0, upstream:stop())
  end)

  it("relay.sleep yields: slow handlers overlap instead of queueing", function()
    local clients = {}
    for i = 1, 5 do
      clients[i] = host:client()
      clients[i]:send("GET /sleep?s=0.4 HTTP/1.1\r\nHost: x\r\n\r\n")
    end
    local t0 = require("socket").gettime()
    for i = 1, 5 do
      assert.equal("slept\n", clients[i]:read_response().body)
      clients[i]:close()
    end
    assert.is_true(require("socket").gettime() - t0 < 1.2)
  end)

  it("relay.http.request reaches a real upstream without blocking", function()
    local res = host:get("/fetch?path=/hello")
    assert.equal(200, res.status)
    assert.equal("from upstream", res.body)
    assert.equal("text/x-up", res.headers["x-upstream-type"])
  end)

  it("relay.http.request times out with an error the handler sees", function()
    local res = host:get("/fetch?path=/slow&t=0.2")
    assert.equal(502, res.status)
    assert.equal("upstream: timeout", res.body)
  end)

  it("relay.http.request reports a refused connection", function()
    local dir = helpers.tmpdir()
    local other = helpers.start(helpers.fixture("basic.lua"), { flags = { "--upstream", "http://127.0.0.1:1" } })
    local res = other:get("/fetch?path=/")
    assert.equal(502, res.status)
    assert.matches("upstream: connect 127.0.0.1:1: connection refused", res.body)
    assert.equal(0, other:stop())
    assert.truthy(dir)
  end)

  it("shared dictionaries count", function()
    local a = tonumber(host:get("/count").body)
    local b = tonumber(host:get("/count").body)
    assert.equal(a + 1, b)
  end)

  it("script metrics are exported as Prometheus text next to the host's", function()
    host:get("/hit")
    host:get("/hit")
    local body = host:get("/metrics").body
    assert.matches('basic_hits_total{route="hit"} 2', body, 1, true)
    assert.matches("# TYPE relayhost_http_requests_total counter", body, 1, true)
    assert.matches('relayhost_http_requests_total{code="200"}', body, 1, true)
  end)

  it("relay.every runs a timer in the generation", function()
    local first = tonumber(host:get("/ticks").body)
    helpers.sleep(0.3)
    assert.is_true(tonumber(host:get("/ticks").body) > first)
  end)

  it("the watchdog fails a handler that never yields, and the process serves on", function()
    local res = host:get("/spin")
    assert.equal(500, res.status)
    assert.matches("watchdog: handler ran over", host:log())
    assert.matches('basic%.lua:%d+: watchdog', host:log())
    assert.equal(200, host:get("/").status)
  end)

  it("JSON responses", function()
    local res = host:get("/headers")
    assert.equal("application/json", res.headers["content-type"])
    assert.is_table(cjson.decode(res.body))
  end)
end)

describe("the watchdog's last resort", function()
  it("exits 70 when a compiled loop cannot be interrupted", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/spin.lua", [[
local relay = require "relay"
local app = relay.new { name = "spin" }
app:get("/", function(_, res)
  local i = 0
  while true do i = i + 1 end
end)
return app
]])
    local host = helpers.start(dir .. "/spin.lua", { flags = { "--watchdog=0.2" } })
    local c = host:client()
    c:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    helpers.wait_until(function() return host:exited() end, 5, "the process to exit")
    assert.equal(70, host:exited())
    assert.matches('"event":"watchdog_exit"', host:log())
    c:close()
  end)
end)
