-- The connection cap per upstream (issue 18, "Upstream selection"): Lilya's
-- limits.max_connections is HAProxy's maxconn. Requests past it wait in the upstream's FIFO
-- queue (at most max_queue of them) for timeout.pool seconds, then get 504 as Lilya answers
-- httpx's PoolTimeout; a full queue answers 503 at once. The origin is a relayhost whose slow
-- route records how many requests it holds at once and in which order they came.
local helpers = require "helpers"
local socket = require "socket"

local ORIGIN = [[
local relay = require "relay"
local app = relay.new { name = "slow-origin" }
local inflight, peak, order = 0, 0, {}
app:get("/base/hold/:n", function(req, res)
  inflight = inflight + 1
  if inflight > peak then peak = inflight end
  order[#order + 1] = req.params.n
  relay.sleep(tonumber(req.args.s) or 0.4)
  inflight = inflight - 1
  res:send(200, req.params.n)
end)
app:get("/stats", function(_, res) res:send(200, ("%d %d %s"):format(peak, inflight, table.concat(order, ","))) end)
app:get("/reset", function(_, res) peak, order = inflight, {}; res:send(200, "ok") end)
return app
]]

local PROXY = [[
local relay = require "relay"
local app = relay.new { name = "capped" }
local up = "http://127.0.0.1:%d/base"
app:mount("/cap", relay.proxy { target_base_url = up, limits = { max_connections = 2 }, timeout = { pool = 5 } })
app:mount("/short", relay.proxy { target_base_url = up, limits = { max_connections = 2 }, timeout = { pool = 0.3 } })
app:mount("/one", relay.proxy { target_base_url = up, limits = { max_connections = 1, max_keepalive_connections = 4,
  keepalive_expiry = 30 }, max_queue = 2, timeout = { connect = 5, read = 10, write = 10, pool = 5 } })
app:get("/metrics", relay.metrics.handler)
return app
]]

-- Sends GET path on a connection of its own, without waiting for the answer.
local function send(host, path)
  local c = host:client(15)
  assert(c:send("GET " .. path .. " HTTP/1.1\r\nHost: a\r\n\r\n"))
  return c
end

local function answer(c)
  local res, err = c:read_response()
  c:close()
  return assert(res, err)
end

-- peak concurrency, requests in flight, arrival order ("1,2,3")
local function stats(origin)
  local peak, inflight, order = origin:get("/stats").body:match("^(%d+) (%d+) ?(.*)$")
  return tonumber(peak), tonumber(inflight), order
end

local function queued(proxy, origin)
  local body = proxy:get("/metrics").body
  return tonumber(body:match('relayhost_proxy_upstream_queued{upstream="127%.0%.0%.1:' .. origin.port .. '"} (%d+)'))
end

describe("prefix proxy connection cap", function()
  local origin, proxy

  setup(function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/origin.lua", ORIGIN)
    origin = helpers.start(dir .. "/origin.lua")
    helpers.write_file(dir .. "/capped.lua", PROXY:format(origin.port))
    proxy = helpers.start(dir .. "/capped.lua")
  end)

  teardown(function()
    if proxy then assert.equal(0, proxy:stop(), proxy:log():sub(-3000)) end
    if origin then assert.equal(0, origin:stop(), origin:log():sub(-3000)) end
  end)

  before_each(function()
    helpers.wait_until(function() return select(2, stats(origin)) == 0 end, 10, "the origin to be idle")
    origin:get("/reset")
  end)

  it("lets 2 of 5 requests reach the upstream at once and serves the queued ones in order", function()
    local t0, conns = socket.gettime(), {}
    for i = 1, 5 do
      conns[i] = send(proxy, "/cap/hold/" .. i .. "?s=0.4")
      helpers.sleep(0.05) -- in this order
    end
    assert.equal(3, queued(proxy, origin))
    for i = 1, 5 do
      local res = answer(conns[i])
      assert.equal(200, res.status, res.body)
      assert.equal(tostring(i), res.body)
    end
    local peak, _, order = stats(origin)
    assert.equal(2, peak)
    assert.equal("1,2,3,4,5", order)
    assert.is_true(socket.gettime() - t0 >= 1.2) -- three rounds of 0.4 s: they did wait
    assert.equal(0, queued(proxy, origin))
  end)

  it("answers 504 to a request still queued after timeout.pool, naming the cap", function()
    local a, b = send(proxy, "/short/hold/1?s=1.5"), send(proxy, "/short/hold/2?s=1.5")
    helpers.sleep(0.1)
    local t0 = socket.gettime()
    local res = answer(send(proxy, "/short/hold/3?s=1.5"))
    local waited = socket.gettime() - t0
    assert.equal(504, res.status)
    assert.matches("^Gateway Timeout: pool timeout: no connection to 127%.0%.0%.1:%d+ free within 0%.3 s %(max_connections 2%)",
      res.body)
    assert.is_true(waited >= 0.3 and waited < 1.4, "waited " .. waited)
    assert.equal(200, answer(a).status)
    assert.equal(200, answer(b).status)
    local _, _, order = stats(origin)
    assert.equal("1,2", order) -- the third never reached it
    assert.matches('"event":"upstream_timeout"[^\n]*pool timeout', proxy:log())
  end)

  it("frees the place of a queued client that disconnects", function()
    local t0 = socket.gettime()
    local first = send(proxy, "/one/hold/1?s=1")
    helpers.sleep(0.1)
    local gone = send(proxy, "/one/hold/2?s=1")
    helpers.sleep(0.05)
    local third = send(proxy, "/one/hold/3?s=0.1")
    helpers.sleep(0.1)
    assert.equal(2, queued(proxy, origin))
    gone.sock:setoption("linger", { on = true, timeout = 0 }) -- a reset: the client is gone
    gone:close()
    helpers.wait_until(function() return queued(proxy, origin) == 1 end, 5, "the queue to lose the client")
    assert.equal(200, answer(first).status)
    local res = answer(third)
    assert.equal(200, res.status)
    assert.equal("3", res.body)
    -- it went as soon as the first was done, not after a second request's hold of 1 s
    assert.is_true(socket.gettime() - t0 < 1.9, "took " .. (socket.gettime() - t0))
    local _, _, order = stats(origin)
    assert.equal("1,3", order)
  end)

  it("keeps the queue bounded: past max_queue a request gets 503 at once", function()
    local first = send(proxy, "/one/hold/1?s=1")
    helpers.sleep(0.1)
    local q1, q2 = send(proxy, "/one/hold/2?s=0.05"), send(proxy, "/one/hold/3?s=0.05")
    helpers.sleep(0.1)
    local t0 = socket.gettime()
    local res = answer(send(proxy, "/one/hold/4"))
    assert.equal(503, res.status)
    assert.is_true(socket.gettime() - t0 < 0.5)
    assert.matches("^Service Unavailable: queue full: 2 requests already wait for a connection to " ..
      "127%.0%.0%.1:%d+ %(max_connections 1%)", res.body)
    for _, c in ipairs { first, q1, q2 } do assert.equal(200, answer(c).status) end
    local _, _, order = stats(origin)
    assert.equal("1,2,3", order)
    assert.matches('"event":"upstream_queue_full"', proxy:log())
  end)

  it("the bundled prefix-proxy takes --max-connections and --pool-timeout", function()
    local pp = helpers.start("prefix-proxy", { flags = { "--mount", ("/api=http://127.0.0.1:%d/base"):format(origin.port),
      "--max-connections", "1", "--pool-timeout", "0.3" } })
    local first = send(pp, "/api/hold/1?s=1")
    helpers.sleep(0.1)
    local res = answer(send(pp, "/api/hold/2"))
    assert.equal(504, res.status)
    assert.matches("max_connections 1", res.body, 1, true)
    assert.equal(200, answer(first).status)
    assert.equal(0, pp:stop(), pp:log():sub(-2000))
  end)
end)

describe("prefix proxy connection cap under a flood of bodies", function()
  it("keeps memory bounded: the queue stays at max_queue, each reading 64 KiB of its body at most", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/origin.lua", ORIGIN)
    local origin = helpers.start(dir .. "/origin.lua", { flags = { "--drain-timeout", "0.5" } }) -- its hold ends at stop
    helpers.write_file(dir .. "/capped.lua", ([[
local relay = require "relay"
local app = relay.new { name = "capped" }
app:mount("/q", relay.proxy { target_base_url = "http://127.0.0.1:%d/base", limits = { max_connections = 1 },
  max_queue = 50, timeout = { pool = 30 } })
app:get("/metrics", relay.metrics.handler)
return app
]]):format(origin.port))
    local proxy = helpers.start(dir .. "/capped.lua")
    local first = send(proxy, "/q/hold/1?s=30")
    local conns, chunk = {}, ("f"):rep(65536)
    helpers.flood(proxy, {
      -- 100 requests of 16 MiB: 50 queued at 64 KiB of body each, the rest 503 (13 MiB measured,
      -- with the connections' own buffers); queued bodies read on to the 256 KiB high water
      -- took 24 MiB, and an unbounded queue would hold all 100
      seconds = 3, bound_kb = 18 * 1024,
      step = function()
        for _ = 1, 10 do
          if #conns < 100 then
            local c = proxy:client(5)
            c:send("POST /q/hold/x HTTP/1.1\r\nHost: a\r\nContent-Length: " .. 16 * 1024 * 1024 .. "\r\n\r\n")
            c:settimeout(0)
            conns[#conns + 1] = c
          end
        end
        for _, c in ipairs(conns) do c.sock:send(chunk) end
        socket.sleep(0.005)
      end,
    })
    assert.equal(50, queued(proxy, origin))
    for _, c in ipairs(conns) do c:close() end
    first:close()
    assert.equal(0, proxy:stop(), proxy:log():sub(-3000))
    assert.equal(0, origin:stop(), origin:log():sub(-3000))
  end)
end)
