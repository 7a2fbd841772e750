-- The order a prefix-proxy mount runs its parts in (issue 18, README "Prefix proxy"): on_request
-- sees the client's head, then the mount's header policy applies to what it left; an early
-- answer carries its fields; on_response sees the upstream's head, then the response policy
-- applies. Every 500 names its request id. The origin (spec/fixtures/raw_origin.lua) records
-- the bytes it received, so each case asserts what reached it.
local helpers = require "helpers"
local start_origin = require("raw_origin").start

local function heads(origin, settle) return origin:heads(settle) end

describe("prefix proxy phases", function()
  local origin, proxy

  setup(function()
    origin = start_origin()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/phases.lua", ([[
local relay = require "relay"
local app = relay.new { name = "phases" }
local up = "http://127.0.0.1:%d"
app:mount("/drop", relay.proxy { target_base_url = up, drop_request_headers = { "x-api-key" },
  extra_request_headers = { ["x-extra"] = "mount" },
  on_request = function(head)
    head.headers["x-key-seen"] = head.headers["x-api-key"] or "none"
    head.headers["x-extra"] = "hook" -- the policy comes after: the mount's value wins
  end })
app:mount("/early", relay.proxy { target_base_url = up,
  on_request = function() return 429, "slow down\n", { ["retry-after"] = "1", ["x-why"] = "quota" } end })
app:mount("/raise", relay.proxy { target_base_url = up,
  on_request = function() error("boom in on_request") end })
app:mount("/resp", relay.proxy { target_base_url = up, drop_response_headers = { "content-type", "x-internal" },
  on_response = function(head)
    head.headers["x-type-seen"] = head.headers["content-type"] or "none"
    head.headers["x-internal"] = "secret" -- dropped by the policy that runs after
  end })
app:mount("/resp-raise", relay.proxy { target_base_url = up,
  on_response = function() error("boom in on_response") end })
return app
]]):format(origin.port))
    proxy = helpers.start(dir .. "/phases.lua")
  end)

  teardown(function()
    origin:stop()
    if proxy then assert.equal(0, proxy:stop(), proxy:log():sub(-3000)) end
  end)
  before_each(function() origin:take(0.05) end)

  it("on_request reads a header the mount drops; the drop and extra headers apply after it", function()
    local res = proxy:get("/drop/x", { ["x-api-key"] = "k-123" })
    assert.equal(200, res.status)
    local seen = heads(origin)
    assert.equal(1, #seen)
    assert.matches("\r\n[Xx]%-[Kk]ey%-[Ss]een: k%-123\r\n", seen[1])
    assert.not_matches("k-123\r\n.*[Xx]-[Aa]pi-[Kk]ey", seen[1])
    assert.is_nil(seen[1]:lower():find("x-api-key:", 1, true))
    assert.matches("\r\n[Xx]%-[Ee]xtra: mount\r\n", seen[1])
    assert.is_nil(seen[1]:find("hook", 1, true))
  end)

  it("an early answer from on_request carries its headers and nothing goes up", function()
    local res = proxy:get("/early/x")
    assert.equal(429, res.status)
    assert.equal("slow down\n", res.body)
    assert.equal("1", res.headers["retry-after"])
    assert.equal("quota", res.headers["x-why"])
    assert.same({}, heads(origin))
  end)

  it("a raising on_request answers 500 with the request id, and nothing goes up", function()
    local res = proxy:get("/raise/x")
    assert.equal(500, res.status)
    local id = res.headers["x-request-id"]
    assert.is_string(id)
    assert.matches("request id " .. id, res.body, 1, true)
    assert.matches('"request_id":"' .. id .. '"', proxy:log(), 1, true)
    assert.same({}, heads(origin))
  end)

  it("on_response reads a header the mount drops; the response policy applies after it", function()
    local res = proxy:get("/resp/close-delimited")
    assert.equal(200, res.status)
    assert.equal("text/plain", res.headers["x-type-seen"])
    assert.is_nil(res.headers["content-type"])
    assert.is_nil(res.headers["x-internal"])
  end)

  it("a raising on_response answers 500 with the request id instead of the unhooked head", function()
    local res = proxy:get("/resp-raise/x")
    assert.equal(500, res.status)
    local id = res.headers["x-request-id"]
    assert.is_string(id)
    assert.matches("request id " .. id, res.body, 1, true)
  end)
end)
