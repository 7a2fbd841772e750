-- A mount's access phase (issue 18, README "Prefix proxy"): `access = function(req)` runs as a
-- task of the generation that routed the request and may wait (here on an auth service that
-- is a route of the same host, through relay.http.request). It answers, or changes the head
-- and lets it go on; nothing reaches the upstream (spec/fixtures/raw_origin.lua, which
-- records every byte) before it returns, and the client's body is held at the server's buffer.
local helpers = require "helpers"
local socket = require "socket"
local start_origin = require("raw_origin").start

local function heads(origin, settle) return origin:heads(settle) end

local SCRIPT = [[
local relay = require "relay"
local app = relay.new { name = "access" }
local up = "http://127.0.0.1:%d"
local counts = relay.shared("access-spec")

-- The auth service: answers after 100 ms, and not before the 100 requests of the test that
-- wait for it have gone through the other mount (10 s at most), saying how many did.
app:get("/auth-service", function(req, res)
  relay.sleep(0.1)
  for _ = 1, 1000 do
    if (counts:get("fast") or 0) >= 100 then break end
    relay.sleep(0.01)
  end
  if req.headers["authorization"] ~= "Bearer good" then return res:send(401, "no") end
  res:send(200, "alice", { ["x-fast-seen"] = tostring(counts:get("fast") or 0) })
end)

app:mount("/slow", relay.proxy { target_base_url = up, drop_request_headers = { "authorization" },
  access = function(req)
    local r = assert(relay.http.request { url = "http://" .. req.headers["host"] .. "/auth-service",
      headers = { authorization = req.headers["authorization"] }, timeout = 15 })
    if r.status ~= 200 then return 401, "who are you\n", { ["www-authenticate"] = "Bearer" } end
    req.headers["x-user"] = r.body
    req.headers["x-fast-seen"] = r.headers["x-fast-seen"]
  end })

app:mount("/fast", relay.proxy { target_base_url = up,
  access = function() counts:incr("fast", 1, 0) end })

app:mount("/rewrite", relay.proxy { target_base_url = up, drop_request_headers = { "x-api-key" },
  access = function(req)
    req.method = "PUT"
    req.upstream_path = "/elsewhere?from=" .. req.path
    req.headers["x-key-was"] = req.headers["x-api-key"]
  end,
  on_request = function(head) head.headers["x-on-request-saw"] = head.path end })

local other = relay.proxy { target_base_url = up .. "/other-base" }
app:mount("/choose", relay.proxy { target_base_url = up .. "/default-base",
  access = function(req)
    if req.headers["x-tenant"] == "b" then req.upstream = other end
    if req.headers["x-tenant"] == "bad" then req.upstream = "http://nowhere" end
  end })

-- the request's readers, as a handler's req has them
app:mount("/readers", relay.proxy { target_base_url = up,
  access = function(req)
    if req:bearer() ~= "t0k" then return 401, "bearer " .. tostring(req:bearer()) .. "\n" end
    return 200, req:header("x-a") .. " " .. req.args.q .. "\n"
  end })

app:mount("/raise", relay.proxy { target_base_url = up,
  access = function() relay.sleep(0.01); error("access boom") end })

app:mount("/bad-status", relay.proxy { target_base_url = up, access = function() return -1, "x" end })

app:mount("/spin", relay.proxy { target_base_url = up,
  access = function() local t0 = os.clock(); while os.clock() - t0 < 100 do end end })

app:mount("/raise-now", relay.proxy { target_base_url = up,
  access = function() error("access boom, no wait") end })

app:mount("/hold", relay.proxy { target_base_url = up,
  access = function(req)
    relay.sleep(tonumber(req.headers["x-hold"]) or 30)
    return 200, "held\n"
  end })
return app
]]

describe("prefix proxy access phase", function()
  local origin, proxy

  setup(function()
    origin = start_origin()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/access.lua", SCRIPT:format(origin.port))
    proxy = helpers.start(dir .. "/access.lua", { flags = { "--drain-timeout", "0.5", "--watchdog", "1" } })
  end)

  teardown(function()
    origin:stop()
    if proxy then assert.equal(0, proxy:stop(), proxy:log():sub(-3000)) end
  end)
  before_each(function() origin:take(0.05) end)

  it("waits 100 ms on an auth service while 100 other requests flow past it", function()
    local slow = proxy:client(20)
    local t0 = socket.gettime()
    assert(slow:send("GET /slow/x HTTP/1.1\r\nHost: 127.0.0.1:" .. proxy.port ..
      "\r\nAuthorization: Bearer good\r\n\r\n"))
    local c = proxy:client(10)
    for i = 1, 100 do
      local res = c:get("/fast/n" .. i)
      assert.equal(200, res.status, res.body)
    end
    c:close()
    local res = slow:read_response()
    slow:close()
    assert.equal(200, res.status, res.body)
    assert.is_true(socket.gettime() - t0 >= 0.1)
    local seen = heads(origin, 0.3)
    assert.equal(101, #seen)
    local up
    for _, h in ipairs(seen) do if h:find("alice", 1, true) then up = h end end
    assert.is_string(up, table.concat(seen, "\n"))
    assert.matches("\r\n[Xx]%-[Uu]ser: alice\r\n", up)
    -- the phase waited until all 100 went through: none was held behind it
    assert.matches("\r\n[Xx]%-[Ff]ast%-[Ss]een: 100\r\n", up)
    assert.is_nil(up:lower():find("authorization:", 1, true))
  end)

  it("answers 401 itself, with its headers, and nothing reaches the upstream", function()
    local res = proxy:get("/slow/x", { host = "127.0.0.1:" .. proxy.port, authorization = "Bearer bad" })
    assert.equal(401, res.status)
    assert.equal("who are you\n", res.body)
    assert.equal("Bearer", res.headers["www-authenticate"])
    assert.same({}, heads(origin))
  end)

  it("has the request's readers: req:bearer(), req:header(), req.args", function()
    local res = proxy:get("/readers/x?q=42", { authorization = "Bearer t0k", ["x-a"] = "A" })
    assert.equal(200, res.status, res.body)
    assert.equal("A 42\n", res.body)
    res = proxy:get("/readers/x", { authorization = "Basic t0k" })
    assert.equal("bearer nil\n", res.body)
    assert.same({}, heads(origin))
  end)

  it("changes method, upstream path and headers before on_request and the policy", function()
    local res = proxy:get("/rewrite/a/b?q=1", { ["x-api-key"] = "k-9" })
    assert.equal(200, res.status)
    local seen = heads(origin)
    assert.equal(1, #seen)
    assert.matches("^PUT /elsewhere%?from=/rewrite/a/b HTTP/1%.1\r\n", seen[1])
    assert.matches("\r\n[Xx]%-[Kk]ey%-[Ww]as: k%-9\r\n", seen[1])
    assert.matches("\r\n[Xx]%-[Oo]n%-[Rr]equest%-[Ss]aw: /elsewhere%?from=/rewrite/a/b\r\n", seen[1])
    assert.is_nil(seen[1]:lower():find("x-api-key:", 1, true))
  end)

  it("picks the upstream: another relay.proxy value, under this mount's prefix", function()
    assert.equal(200, proxy:get("/choose/p?q=1", { ["x-tenant"] = "a" }).status)
    assert.equal(200, proxy:get("/choose/p?q=1", { ["x-tenant"] = "b" }).status)
    local seen = heads(origin)
    assert.equal(2, #seen)
    table.sort(seen)
    assert.matches("^GET /default%-base/p%?q=1 HTTP/1%.1\r\n", seen[1])
    assert.matches("^GET /other%-base/p%?q=1 HTTP/1%.1\r\n", seen[2])
    local res = proxy:get("/choose/p", { ["x-tenant"] = "bad" })
    assert.equal(500, res.status)
    assert.matches("request id", res.body)
    assert.matches("req.upstream = 'http://nowhere' is not one of this mount's upstreams", proxy:log(), 1, true)
    assert.same({}, heads(origin))
  end)

  for _, path in ipairs { "/raise/x", "/raise-now/x" } do
    it("that raises answers 500 with the request id (" .. path .. ")", function()
      local res = proxy:get(path)
      assert.equal(500, res.status)
      local id = res.headers["x-request-id"]
      assert.is_string(id)
      assert.matches("request id " .. id, res.body, 1, true)
      assert.matches('"event":"handler_error"[^\n]*access boom', proxy:log())
      assert.same({}, heads(origin))
    end)
  end

  it("that never yields is stopped by the watchdog: 500, and the host serves on", function()
    local res = proxy:get("/spin/x")
    assert.equal(500, res.status)
    assert.matches("request id", res.body)
    assert.matches("watchdog: handler ran over", proxy:log())
    assert.same({}, heads(origin))
    assert.equal(200, proxy:get("/fast/after-spin").status)
    heads(origin)
  end)

  it("that answers with a status that is not one answers 500 with the request id", function()
    local res = proxy:get("/bad-status/x")
    assert.equal(500, res.status)
    assert.matches("request id " .. res.headers["x-request-id"], res.body, 1, true)
    assert.matches("relay.proxy access: status out of range", proxy:log(), 1, true)
    assert.same({}, heads(origin))
  end)

  it("holds the client's body at the server's buffer while it waits", function()
    local size = 48 * 1024 * 1024
    local c = proxy:client(10)
    assert(c:send("POST /hold/x HTTP/1.1\r\nHost: a\r\nX-Hold: 1.5\r\nContent-Length: " .. size .. "\r\n\r\n"))
    c:settimeout(0)
    local chunk, sent, deadline = ("b"):rep(65536), 0, socket.gettime() + 1
    while socket.gettime() < deadline and sent < size do
      local n, err, partial = c.sock:send(chunk)
      n = n or partial or 0
      sent = sent + n
      if err == "timeout" then socket.sleep(0.01) end
    end
    -- kernel buffers on both sides take a few MiB; a body being read would be taken whole
    assert.is_true(sent < size / 2, "sent " .. sent)
    c:settimeout(10)
    local res = c:read_response()
    c:close()
    assert.equal(200, res.status, res.body)
    assert.equal("held\n", res.body)
    assert.same({}, heads(origin))
  end)

  it("cancelled by a reload's drain answers 503, and nothing reaches the upstream", function()
    local c = proxy:client(10)
    assert(c:send("GET /hold/x HTTP/1.1\r\nHost: a\r\nX-Hold: 30\r\n\r\n"))
    helpers.sleep(0.2)
    local ok, why = proxy:reload()
    assert.is_true(ok, why)
    local res = c:read_response()
    c:close()
    assert.equal(503, res.status)
    assert.matches('"event":"task_cancelled"', proxy:log())
    assert.same({}, heads(origin))
    assert.equal(200, proxy:get("/fast/after").status)
    heads(origin)
  end)
end)

describe("prefix proxy access phase at shutdown", function()
  it("is cancelled when the drain ends: 503, nothing reaches the upstream, nothing leaks", function()
    local origin = start_origin()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/access.lua", SCRIPT:format(origin.port))
    local host = helpers.start(dir .. "/access.lua", { flags = { "--drain-timeout", "0.5" } })
    local c = host:client(10)
    assert(c:send("GET /hold/x HTTP/1.1\r\nHost: a\r\nX-Hold: 30\r\n\r\n"))
    helpers.sleep(0.2)
    host:signal("TERM")
    local res = c:read_response()
    c:close()
    assert.equal(503, res.status)
    assert.equal(0, host:stop(), host:log():sub(-3000))
    assert.matches('"event":"task_cancelled"', host:log())
    assert.same({}, heads(origin))
    origin:stop()
  end)
end)

describe("prefix proxy access phase with Redis", function()
  it("looks an API key up in Redis: a known key goes on with its tenant, an unknown one gets 401", function()
    local dir = helpers.tmpdir()
    local port, pid = helpers.start_redis(dir)
    local origin = start_origin()
    local ok, err = pcall(function()
      helpers.write_file(dir .. "/keys.lua", ([[
local relay = require "relay"
local app = relay.new { name = "keys" }
local r = relay.redis("redis://127.0.0.1:%d")
app:mount("/api", relay.proxy { target_base_url = "http://127.0.0.1:%d", drop_request_headers = { "x-api-key" },
  access = function(req)
    local tenant = r:call("GET", "key:" .. (req.headers["x-api-key"] or ""))
    if type(tenant) ~= "string" then return 401, "unknown key\n", { ["www-authenticate"] = "ApiKey" } end
    req.headers["x-tenant"] = tenant
  end })
app:get("/seed", function(_, res) r:call("SET", "key:k1", "acme"); res:send(200, "seeded") end)
return app
]]):format(port, origin.port))
      local host = helpers.start(dir .. "/keys.lua")
      assert.equal("seeded", host:get("/seed").body)
      assert.equal(200, host:get("/api/x", { ["x-api-key"] = "k1" }).status)
      local res = host:get("/api/x", { ["x-api-key"] = "nope" })
      assert.equal(401, res.status)
      assert.equal("ApiKey", res.headers["www-authenticate"])
      local seen = origin:heads(0.2)
      assert.equal(1, #seen)
      assert.matches("\r\n[Xx]%-[Tt]enant: acme\r\n", seen[1])
      assert.is_nil(seen[1]:lower():find("x-api-key", 1, true))
      assert.equal(0, host:stop(), host:log():sub(-3000))
    end)
    origin:stop()
    os.execute("kill " .. pid)
    assert(ok, err)
  end)
end)

describe("prefix proxy access phase under a flood of bodies", function()
  it("holds each body at the server's buffer: memory stays bounded while phases wait", function()
    local origin = start_origin()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/access.lua", SCRIPT:format(origin.port))
    local host = helpers.start(dir .. "/access.lua", { flags = { "--drain-timeout", "0.5" } })
    local conns, chunk = {}, ("f"):rep(65536)
    helpers.flood(host, {
      seconds = 3, bound_kb = 40 * 1024, -- 50 waiting requests of 16 MiB each: 800 MiB if read
      step = function()
        if #conns < 50 then
          local c = host:client(5)
          c:send("POST /hold/x HTTP/1.1\r\nHost: a\r\nX-Hold: 30\r\nContent-Length: " .. 16 * 1024 * 1024 .. "\r\n\r\n")
          c:settimeout(0)
          conns[#conns + 1] = c
        end
        for _, c in ipairs(conns) do c.sock:send(chunk) end
        socket.sleep(0.005)
      end,
    })
    for _, c in ipairs(conns) do c:close() end
    assert.equal(0, host:stop(), host:log():sub(-3000))
    assert.same({}, origin:heads(0.1))
    origin:stop()
  end)
end)
