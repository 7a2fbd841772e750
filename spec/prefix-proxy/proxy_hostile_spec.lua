-- Hostile input through the prefix proxy (issue 14): request framing, paths under a mount,
-- upstream lengths and heads, interim and 101 answers, a close-delimited body, a client that
-- leaves mid-body, a slow reader. The origin (spec/fixtures/raw_origin.lua) records every byte
-- it receives, so each case asserts what reached it: nothing of a refused request, and never a
-- second request formed from one client request's bytes.
local helpers = require "helpers"
local socket = require "socket"

-- ---- the recording origin ----

local start_origin = require("raw_origin").start

-- The requests an HTTP/1.1 server would read from bytes (RFC 9112 framing); `rest` holds
-- bytes that do not start a request.
local function parse_requests(bytes)
  local out, pos = {}, 1
  while pos <= #bytes do
    local e = bytes:find("\r\n\r\n", pos, true)
    local head = e and bytes:sub(pos, e + 3)
    local method, target = (head or ""):match("^(%u+) (%S+) HTTP/1%.%d\r\n")
    if not method then out.rest = bytes:sub(pos); break end
    local req, lower = { method = method, target = target, head = head, complete = true }, head:lower()
    pos = e + 4
    local cl = lower:match("\r\ncontent%-length:%s*(%d+)\r\n")
    if lower:find("\r\ntransfer%-encoding:%s*chunked\r\n") then
      local body = {}
      while true do
        local le = bytes:find("\r\n", pos, true)
        local size = le and tonumber(bytes:sub(pos, le - 1):match("^%x+"), 16)
        if not size then req.complete = false; break end
        pos = le + 2
        if size == 0 then req.complete = bytes:sub(pos, pos + 1) == "\r\n"; pos = pos + 2; break end
        body[#body + 1] = bytes:sub(pos, pos + size - 1)
        pos = pos + size + 2
        if pos - 1 > #bytes then req.complete = false; break end
      end
      req.body = table.concat(body)
    else
      req.body = bytes:sub(pos, pos + (tonumber(cl) or 0) - 1)
      pos = pos + (tonumber(cl) or 0)
      req.complete = pos - 1 <= #bytes
    end
    out[#out + 1] = req
  end
  return out
end

-- Every request the origin saw since the last take.
local function requests(origin, settle)
  local all = {}
  for _, conn in ipairs(origin:take(settle)) do
    local reqs = parse_requests(conn)
    for _, r in ipairs(reqs) do all[#all + 1] = r end
    if reqs.rest and #reqs.rest > 0 then all[#all + 1] = { garbage = reqs.rest } end
  end
  return all
end

-- Stops both; the host's exit status carries LeakSanitizer's verdict in the ASan build.
local function stop_both(host, origin)
  if origin then origin:stop() end -- first: a host that failed to start leaves no origin behind
  if not host then return end
  local rc = host:stop()
  assert.equal(0, rc, host:log():sub(-3000))
end

-- Sends raw bytes on a fresh connection and reads one answer (nil when none came).
local function exchange(host, raw, timeout)
  local c = host:client(timeout or 5)
  c:send(raw)
  local res, err = c:read_response()
  c:close()
  return res, err
end

describe("prefix proxy under hostile input", function()
  local origin, proxy

  setup(function()
    origin = start_origin()
    proxy = helpers.start("prefix-proxy", { flags = { "--mount", "/api=http://127.0.0.1:" .. origin.port .. "/v1",
                                                      "--timeout", "3" } })
  end)

  teardown(function() stop_both(proxy, origin) end)
  -- what an earlier (failed) test left on its way is not this test's
  before_each(function() origin:take(0.1) end)

  describe("request framing (14.1)", function()
    local smuggled = "GET /admin HTTP/1.1\r\nHost: origin\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n"
    local cases = {
      { "Content-Length at UINT64_MAX", "POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n" .. smuggled, 400 },
      { "Content-Length past UINT64_MAX", "POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n" .. smuggled, 400 },
      { "Content-Length and Transfer-Encoding", "POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" .. smuggled, 400 },
      { "two Content-Lengths", "POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 70\r\n\r\nabcd" .. smuggled, 400 },
      { "chunked not last", "POST /api/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n" .. smuggled, 400 },
      { "a negative Content-Length", "POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n" .. smuggled, 400 },
      { "a Content-Length with a sign", "POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd" .. smuggled, 400 },
      { "a space before the colon", "POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length : 4\r\n\r\nabcd" .. smuggled, 400 },
      { "a coding that is not chunked", "POST /api/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n" .. smuggled, 400 },
      { "a chunk size past 64 bits", "POST /api/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" ..
        "10000000000000000\r\nabc\r\n0\r\n\r\n" .. smuggled, 400 },
      { "a NUL in a header", "POST /api/x HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\nContent-Length: 4\r\n\r\nabcd" .. smuggled, 400 },
    }
    for _, case in ipairs(cases) do
      it("refuses " .. case[1] .. " and forwards nothing", function()
        local res = exchange(proxy, case[2])
        assert.equal(case[3], res and res.status)
        -- the head of a streamed body may have gone up before the body failed: never whole
        local whole = {}
        for _, r in ipairs(requests(origin)) do
          if r.garbage or r.complete then whole[#whole + 1] = r end
        end
        assert.same({}, whole, case[1] .. ": reached the origin")
      end)
    end

    local ok_cases = {
      { "a body with Content-Length", "POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", "hello" },
      { "a chunked body", "POST /api/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "hello" },
      { "an empty chunked body", "POST /api/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "" },
      { "Content-Length: 0", "DELETE /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", "" },
      { "no body", "GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n", "" },
    }
    for _, case in ipairs(ok_cases) do
      it("forwards " .. case[1] .. " as exactly one framed request", function()
        local res = exchange(proxy, case[2])
        assert.equal(200, res and res.status)
        local seen = requests(origin)
        assert.equal(1, #seen)
        assert.is_true(seen[1].complete)
        assert.equal(case[3], seen[1].body)
        assert.equal("/v1/x", seen[1].target)
      end)
    end
  end)

  describe("paths under the mount (14.5)", function()
    local forwarded = {
      { "/api/a/../b", "/v1/b" },
      { "/api/a/%2e%2e/b", "/v1/b" },
      { "/api/a/%2E%2E/b", "/v1/b" },
      { "/api/a/.%2e/b", "/v1/b" },
      { "/api/a/./b/.", "/v1/a/b/" },
      { "/api//a///b", "/v1/a/b" },
      { "/api/a%2fb", "/v1/a%2fb" },
      { "/api/x?q=/../../etc", "/v1/x?q=/../../etc" },
      { "/api", "/v1/" },
      { "/api/", "/v1/" },
    }
    for _, case in ipairs(forwarded) do
      it("sends " .. case[1] .. " up normalised as " .. case[2], function()
        local res = exchange(proxy, "GET " .. case[1] .. " HTTP/1.1\r\nHost: a\r\n\r\n")
        assert.equal(200, res and res.status)
        local seen = requests(origin)
        assert.equal(1, #seen)
        assert.equal(case[2], seen[1].target)
      end)
    end

    local refused = {
      { "/api/%2e%2e/admin", "climbs above" },
      { "/api/%2E%2E/admin", "climbs above" },
      { "/api/.%2e/admin", "climbs above" },
      { "/api/%2e./admin", "climbs above" },
      { "/api/../admin", "climbs above" },
      { "/api/a/../../admin", "climbs above" },
      { "/api/..%2fadmin", "encoded slash" },
      { "/api/a%2f..%2f..%2fadmin", "encoded slash" },
      { "/api/..%5cadmin", "encoded slash" },
      { "/api/a\\..\\..\\admin", "encoded slash" },
    }
    for _, case in ipairs(refused) do
      it("refuses " .. case[1] .. " with 400 naming why, forwarding nothing", function()
        local res = exchange(proxy, "GET " .. case[1] .. " HTTP/1.1\r\nHost: a\r\n\r\n")
        assert.equal(400, res and res.status)
        assert.matches(case[2], res.body, 1, true)
        assert.same({}, requests(origin))
      end)
    end

    for _, path in ipairs { "/api%2fx", "/API/x", "/apix", "/ap", "/%61pi/x" } do
      it("does not take " .. path .. " for the mount /api", function()
        local res = exchange(proxy, "GET " .. path .. " HTTP/1.1\r\nHost: a\r\n\r\n")
        assert.equal(404, res and res.status)
        assert.same({}, requests(origin))
      end)
    end
  end)

  describe("lengths from the upstream (14.1)", function()
    for _, name in ipairs { "max-length", "huge-length", "over-length", "neg-length", "two-lengths",
                            "length-and-chunked", "chunk-overflow", "huge-head" } do
      it("answers 502 to a response with " .. name .. ", and serves on", function()
        local res = exchange(proxy, "GET /api/" .. name .. " HTTP/1.1\r\nHost: a\r\n\r\n")
        assert.equal(502, res and res.status)
        requests(origin)
        assert.equal("ok", proxy:get("/api/x").body)
        requests(origin)
      end)
    end
  end)

  describe("upstream heads are rebuilt, never copied", function()
    for _, name in ipairs { "bad-status", "bad-value", "bad-name" } do
      it("answers 502 to an upstream head with " .. name, function()
        local c = proxy:client()
        c:send("GET /api/" .. name .. " HTTP/1.1\r\nHost: a\r\n\r\n")
        local res = c:read_response()
        assert.equal(502, res and res.status)
        -- the client's connection is still good for another request
        c:send("GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n")
        assert.equal("ok", c:read_response().body)
        c:close()
        requests(origin)
      end)
    end
  end)

  describe("interim and 101 answers (14.9)", function()
    it("skips 100, 102 and 103 and passes the final answer", function()
      local res = exchange(proxy, "GET /api/interim HTTP/1.1\r\nHost: a\r\n\r\n")
      assert.equal(200, res.status)
      assert.equal("ok", res.body)
      requests(origin)
    end)

    it("answers 502 to more than 16 interim answers", function()
      local res = exchange(proxy, "GET /api/many-interim HTTP/1.1\r\nHost: a\r\n\r\n")
      assert.equal(502, res and res.status)
      assert.matches("interim", res.body)
      requests(origin)
    end)

    for _, name in ipairs { "bare-101", "upgrade-101" } do
      it("answers 502 to a " .. name .. " for a request that did not ask to upgrade", function()
        local c = proxy:client()
        c:send("GET /api/" .. name .. " HTTP/1.1\r\nHost: a\r\n\r\n")
        local res = c:read_response()
        assert.equal(502, res and res.status)
        assert.not_matches("forged", res.body or "")
        -- what followed the 101 never reaches the client, which is still read as HTTP/1.1
        c:send("GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n")
        local next_res = c:read_response()
        assert.equal(200, next_res.status)
        assert.equal("ok", next_res.body)
        c:close()
        requests(origin)
      end)
    end
  end)

  it("gives up a WebSocket handshake whose answer's head passes 64 KiB", function()
    local c = proxy:client()
    c:send("GET /api/huge-101 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    c:read_response() -- the client's side opens and closes with 1011, as for any upstream failure
    c:close()
    helpers.wait_until(function() return proxy:log():find('"event":"websocket_error"[^\n]*over 64 KiB') end, 5,
      "the handshake to be given up")
    requests(origin)
  end)

  it("completes a close-delimited response with the final chunk (14.7)", function()
    local before = proxy:count("client_aborted")
    local res, err = exchange(proxy, "GET /api/close-delimited HTTP/1.1\r\nHost: a\r\n\r\n")
    assert.is_not_nil(res, err)
    assert.equal(200, res.status)
    assert.equal("hello, until the close", res.body)
    assert.equal("chunked", res.headers["transfer-encoding"])
    requests(origin)
    helpers.wait_until(function() return proxy:log():find('"event":"access"[^\n]*close%-delimited[^\n]*"status":200') end, 3)
    assert.equal(before, proxy:count("client_aborted"))
  end)

  it("leaks nothing when clients leave mid-body with a slow origin (14.10)", function()
    -- the host's exit status (teardown) carries LeakSanitizer's verdict in the ASan build
    for i = 1, 60 do
      local c = proxy:client()
      c:send("POST /api/slow HTTP/1.1\r\nHost: a\r\nContent-Length: 200\r\n\r\n" .. ("b"):rep(40 + i))
      if i % 3 == 0 then helpers.sleep(0.01) end
      c:close()
    end
    helpers.sleep(0.6)
    requests(origin, 0.5)
    assert.equal("ok", proxy:get("/api/x").body)
    requests(origin)
  end)
end)

describe("prefix proxy hooks that write bad heads", function()
  local origin, proxy

  setup(function()
    origin = start_origin()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/hooks.lua", ([[
local relay = require "relay"
local app = relay.new { name = "bad-hooks" }
local up = "http://127.0.0.1:%d"
app:mount("/header", relay.proxy { target_base_url = up,
  on_request = function(head) head.headers["x-evil"] = "a\r\nInjected: 1" end })
app:mount("/path", relay.proxy { target_base_url = up,
  on_request = function(head) head.path = "/x HTTP/1.1\r\nInjected: 1\r\nX-Pad: /" end })
app:mount("/method", relay.proxy { target_base_url = up,
  on_request = function(head) head.method = "GET /smuggled HTTP/1.1\r\n\r\nGET" end })
app:mount("/status", relay.proxy { target_base_url = up,
  on_response = function(head) head.status = 100 end })
return app
]]):format(origin.port))
    proxy = helpers.start(dir .. "/hooks.lua")
  end)

  teardown(function() stop_both(proxy, origin) end)

  it("a header with CR LF from on_request is an error and never goes up", function()
    local res = proxy:get("/header/x")
    assert.equal(200, res.status)
    local seen = requests(origin)
    assert.equal(1, #seen)
    assert.not_matches("Injected", seen[1].head)
    assert.matches('"event":"proxy_hook_error"', proxy:log())
  end)

  for _, which in ipairs { "path", "method" } do
    it("a " .. which .. " from on_request that is not one gets 500 and never goes up", function()
      local res = proxy:get("/" .. which .. "/x")
      assert.equal(500, res.status)
      assert.same({}, requests(origin))
    end)
  end

  it("a status from on_response that is not a final one gets 500", function()
    local res = proxy:get("/status/x")
    assert.equal(500, res.status)
    requests(origin)
  end)
end)

describe("prefix proxy with a slow reader", function()
  it("holds a 256 MB response read at 1 KB/s to a memory bound, answering others", function()
    local origin = start_origin()
    local proxy = helpers.start("prefix-proxy", { flags = { "--mount", "/api=http://127.0.0.1:" .. origin.port,
                                                            "--timeout", "30" } })
    local c = proxy:client(30)
    c.sock:setoption("tcp-nodelay", true)
    c:send("GET /api/big HTTP/1.1\r\nHost: a\r\n\r\n")
    local got, next_read = 0, 0
    local peak = helpers.flood(proxy, {
      seconds = 4,
      bound_kb = 32 * 1024,
      step = function()
        local now = socket.gettime()
        if now >= next_read then
          local data, _, partial = c.sock:receive(1024)
          got = got + #(data or partial or "")
          next_read = now + 1
        end
        socket.sleep(0.05)
      end,
    })
    assert.is_true(got > 0)
    c:close()
    stop_both(proxy, origin)
    print(("slow reader: RSS rose at most %d kB"):format(peak))
  end)
end)
