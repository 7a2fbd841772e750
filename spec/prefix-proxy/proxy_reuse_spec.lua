-- The proxy keeps finished exchanges (their timer, buffers and header lists) for the next
-- requests (issue 17). What that must not change: pipelined requests, timeouts of an exchange
-- that follows quick ones on other mounts, big heads and bodies, and answers given before any
-- upstream was asked, each followed by ordinary requests.
local helpers = require "helpers"
local cjson = require "cjson"
local socket = require "socket"

describe("prefix proxy, exchanges one after another", function()
  local upstream, proxy

  setup(function()
    upstream = helpers.start(helpers.fixture("upstream.lua"))
    proxy = helpers.start(helpers.fixture("proxy.lua"), { flags = { "--upstream", "http://127.0.0.1:" .. upstream.port } })
  end)

  teardown(function()
    assert.equal(0, proxy:stop())
    assert.equal(0, upstream:stop())
  end)

  local function target_of(res)
    assert.equal(200, res.status)
    return cjson.decode(res.body).target
  end

  it("answers requests pipelined through a mount in order", function()
    local c = proxy:client()
    local parts = {}
    for i = 1, 20 do
      parts[#parts + 1] = ("GET /plain/p%d HTTP/1.1\r\nHost: x\r\n\r\n"):format(i)
      if i == 10 then parts[#parts + 1] = "POST /plain/body HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" end
    end
    c:send(table.concat(parts))
    for i = 1, 20 do
      assert.equal("/p" .. i, target_of(c:read_response()))
      if i == 10 then
        local got = cjson.decode(c:read_response().body)
        assert.equal("POST", got.method)
        assert.equal("hello", got.body)
      end
    end
    c:close()
  end)

  -- /plain's read timeout is the default (10 s), /timeout's 0.3 s: the slow exchange may get a
  -- kept exchange whose timer is still armed for a later deadline than its own.
  it("times a slow upstream out on time after quick exchanges with a longer timeout", function()
    for i = 1, 50 do assert.equal("/q" .. i, target_of(proxy:get("/plain/q" .. i))) end
    local t0 = socket.gettime()
    local res = proxy:get("/timeout/slow?s=2")
    local took = socket.gettime() - t0
    assert.equal(504, res.status) -- not the upstream's 200 after 2 s
    assert.equal("Gateway Timeout: read timeout", res.body)
    assert.is_true(took >= 0.25, "took " .. took .. " s")
    for i = 1, 20 do assert.equal("/after" .. i, target_of(proxy:get("/plain/after" .. i))) end
  end)

  it("passes a big head, a big body up and a big body down between small exchanges", function()
    local c = proxy:client()
    local big = ("v"):rep(6000)
    local got = cjson.decode(c:get("/plain/big", { ["X-Big"] = big }).body)
    assert.same({ big }, got.headers["x-big"])
    assert.equal("/small1", target_of(c:get("/plain/small1")))
    local body = ("b"):rep(3 * 1024 * 1024)
    assert.equal(#body, cjson.decode(c:post("/plain/up", body).body).body_length)
    assert.equal("/small2", target_of(c:get("/plain/small2")))
    local down = c:get("/plain/bytes?n=" .. 8 * 1024 * 1024)
    assert.equal(200, down.status)
    assert.equal(8 * 1024 * 1024, #down.body)
    assert.equal("/small3", target_of(c:get("/plain/small3")))
    c:close()
  end)

  it("follows answers given before any upstream was asked with ordinary exchanges", function()
    local c = proxy:client()
    for i = 1, 10 do
      local denied = c:get("/deny/x" .. i)
      assert.equal(403, denied.status)
      assert.equal("denied\n", denied.body)
      assert.equal("/ok" .. i, target_of(c:get("/plain/ok" .. i)))
    end
    c:close()
  end)
end)
