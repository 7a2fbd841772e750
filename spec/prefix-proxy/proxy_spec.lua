-- The native proxy engine with relay.proxy mounts, against a real upstream (a relayhost
-- started by the spec that reports what it received).
local helpers = require "helpers"
local cjson = require "cjson"

describe("prefix proxy", function()
  local upstream, proxy

  setup(function()
    upstream = helpers.start(helpers.fixture("upstream.lua"))
    proxy = helpers.start(helpers.fixture("proxy.lua"), { flags = { "--upstream", "http://127.0.0.1:" .. upstream.port, "--log-level", "debug" } })
  end)

  teardown(function()
    assert.equal(0, proxy:stop())
    assert.equal(0, upstream:stop())
  end)

  local function seen(res)
    assert.equal(200, res.status)
    return cjson.decode(res.body)
  end

  describe("paths", function()
    it("strips the mount and forwards path and raw query byte-exact", function()
      local got = seen(proxy:get("/plain/a/b%2Fc?x=1&y=%20z;w"))
      assert.equal("/a/b%2Fc?x=1&y=%20z;w", got.target)
      assert.equal("GET", got.method)
    end)

    it("joins the base path and upstream_prefix with normalised slashes", function()
      assert.equal("/v1/api/login", seen(proxy:get("/based/login")).target)
      assert.equal("/v1/api/login/", seen(proxy:get("/based//login/")).target)
      assert.equal("/v1/api/", seen(proxy:get("/based")).target)
    end)

    it("refuses dot segments that climb above the mount, and sends the others up resolved", function()
      local res = proxy:get("/based/x/../../admin")
      assert.equal(400, res.status)
      assert.equal("/v1/api/y", seen(proxy:get("/based/x/../y")).target)
    end)

    it("leaves other routes to Lua and answers 404 outside every mount", function()
      assert.equal("served by Lua", proxy:get("/local").body)
      assert.equal(404, proxy:get("/elsewhere").status)
    end)
  end)

  describe("headers", function()
    it("sets Host to the upstream and X-Forwarded-*; the client's Host with preserve_host", function()
      local got = seen(proxy:get("/plain/x", { Host = "client.example", ["X-Forwarded-For"] = "9.9.9.9" }))
      assert.same({ "127.0.0.1:" .. upstream.port }, got.headers.host)
      assert.same({ "9.9.9.9, 127.0.0.1" }, got.headers["x-forwarded-for"])
      assert.same({ "http" }, got.headers["x-forwarded-proto"])
      assert.same({ "client.example" }, got.headers["x-forwarded-host"])
      local kept = seen(proxy:get("/preserve/x", { Host = "client.example" }))
      assert.same({ "client.example" }, kept.headers.host)
    end)

    it("never forwards hop-by-hop headers, nor those Connection names, either way", function()
      local got = seen(proxy:get("/plain/x", { Connection = "keep-alive, X-Secret-Hop", ["X-Secret-Hop"] = "1",
        ["Keep-Alive"] = "timeout=5", TE = "trailers", ["Proxy-Authorization"] = "Basic abc", Upgrade = "foo",
        ["X-Normal"] = "yes" }))
      for _, h in ipairs { "x-secret-hop", "keep-alive", "te", "proxy-authorization", "upgrade" } do
        assert.is_nil(got.headers[h], h)
      end
      assert.same({ "yes" }, got.headers["x-normal"])
      local res = proxy:get("/plain/hop")
      assert.equal(200, res.status)
      -- (a relayhost upstream cannot send Connection-named fields: the host owns Connection)
      assert.is_nil(res.headers["keep-alive"])
      assert.is_nil(res.headers["proxy-authenticate"])
      assert.equal("yes", res.headers["x-resp-keep"])
    end)

    it("keeps repeated request headers in order", function()
      local got = seen(proxy:get("/plain/x", { ["X-Multi"] = { "1", "2", "3" } }))
      assert.same({ "1", "2", "3" }, got.headers["x-multi"])
    end)

    it("keeps repeated request headers in order through an on_request hook that leaves them", function()
      local got = seen(proxy:get("/policy/x", { ["X-Multi"] = { "1", "2", "3" } }))
      assert.same({ "1", "2", "3" }, got.headers["x-multi"])
      assert.same({ "GET /x" }, got.headers["x-from-hook"])
    end)

    it("applies extra, drop and hook policies", function()
      local c = proxy:client()
      local res = c:get("/policy/x", { ["X-Internal-Token"] = "t", ["X-Override"] = "client" })
      local got = seen(res)
      assert.same({ "main-app" }, got.headers["x-service"])
      assert.same({ "proxy" }, got.headers["x-override"])
      assert.is_nil(got.headers["x-internal-token"])
      assert.same({ "GET /x" }, got.headers["x-from-hook"])
      assert.equal("200", res.headers["x-hooked-status"])
      local hop = c:get("/policy/hop")
      assert.is_nil(hop.headers["x-debug-info"])
      c:close()
    end)

    it("forwards only allowed headers (plus the computed ones) when allow lists are given", function()
      local got = seen(proxy:get("/allow/x", { ["X-Keep"] = "1", ["X-Other"] = "2" }))
      assert.same({ "1" }, got.headers["x-keep"])
      assert.is_nil(got.headers["x-other"])
      assert.is_not_nil(got.headers["x-forwarded-for"])
      local res = proxy:get("/allow/hop")
      assert.equal("yes", res.headers["x-resp-keep"])
      assert.is_nil(res.headers["x-resp-drop"])
    end)

    it("keeps Set-Cookie lines separate and rewrites their Domain through the hook", function()
      local c = proxy:client()
      c:send("GET /cookies/cookies HTTP/1.1\r\nHost: x\r\n\r\n")
      local res = c:read_response()
      c:close()
      local cookies = {}
      for _, h in ipairs(res.raw_headers) do
        if h[1]:lower() == "set-cookie" then cookies[#cookies + 1] = h[2] end
      end
      assert.same({ "a=1; Path=/", "b=2; Path=/; Domain=proxy.example", "c=3; domain=x.y" }, cookies)
    end)

    it("passes redirects through verbatim", function()
      local res = proxy:get("/plain/redirect")
      assert.equal(302, res.status)
      assert.equal("http://elsewhere.example/x", res.headers.location)
    end)

    it("follow_redirects follows 3xx that stay on the upstream, and passes on the rest", function()
      local got = seen(proxy:get("/follow/hop1"))
      assert.equal("/final?from=1", got.target)
      assert.equal(302, proxy:get("/follow/redirect").status) -- elsewhere: the client decides
      local loop = proxy:get("/follow/loop")
      assert.equal(302, loop.status) -- gives up after 5
      assert.matches('"event":"upstream_redirect_followed"', proxy:log())
    end)
  end)

  describe("bodies", function()
    it("streams a request body up, Content-Length and chunked", function()
      local body = ("x"):rep(3 * 1024 * 1024)
      assert.equal(#body, seen(proxy:request { method = "POST", path = "/plain/up", body = body }).body_length)
      local c = proxy:client()
      c:send("POST /plain/up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
      local got = seen(c:read_response())
      c:close()
      assert.equal("hello world", got.body)
      assert.same({ "chunked" }, got.headers["transfer-encoding"])
    end)

    it("streams a large response down", function()
      local res = proxy:get("/plain/bytes?n=5000000")
      assert.equal(200, res.status)
      assert.equal(5000000, #res.body)
    end)

    it("keeps memory flat while 200 MB stream down and 60 MB up", function()
      local function rss_kb(pid, field)
        return tonumber(helpers.read_file("/proc/" .. pid .. "/status"):match(field .. ":%s+(%d+)"))
      end
      local before = rss_kb(proxy.pid, "VmRSS")
      local c = proxy:client(30)
      c:send("GET /plain/bytes?n=200000000 HTTP/1.1\r\nHost: x\r\n\r\n")
      local res = c:read_response()
      assert.equal(200000000, #res.body)
      -- and up, in pieces (the upstream fixture buffers bodies, so it takes less)
      c:send("POST /plain/up HTTP/1.1\r\nHost: x\r\nContent-Length: 60000000\r\n\r\n")
      local piece = ("u"):rep(1000000)
      for _ = 1, 60 do c:send(piece) end
      assert.equal(60000000, seen(c:read_response()).body_length)
      c:close()
      -- ASan keeps freed memory in quarantine, so RSS says nothing there: checked in the plain build
      local asan = io.popen("ldd " .. helpers.bin() .. " 2>/dev/null"):read("*a"):find("libasan", 1, true)
      if not asan then
        local peak = rss_kb(proxy.pid, "VmHWM")
        assert.is_true(peak - before < 20 * 1024, ("peak RSS grew by %d kB"):format(peak - before))
      end
    end)

    it("reads past the rest of a body the upstream answered early, without holding it", function()
      local c = proxy:client(30)
      local res = c:request { method = "POST", path = "/plain/early", body = ("e"):rep(20 * 1000 * 1000) }
      assert.equal(200, res.status)
      assert.equal("answered before reading\n", res.body)
      assert.equal(200, c:get("/plain/x").status) -- the same connection carries on
      c:close()
    end)

    it("reuses upstream connections across requests", function()
      local before = proxy:count("upstream_connect")
      local c = proxy:client()
      for _ = 1, 20 do assert.equal(200, c:get("/plain/x").status) end
      c:close()
      assert.is_true(proxy:count("upstream_connect") - before <= 1)
    end)

    it("honours the mount's max_body with 413", function()
      local res = proxy:request { method = "POST", path = "/limited/x", body = ("y"):rep(2000) }
      assert.equal(413, res.status)
      assert.equal(200, proxy:request { method = "POST", path = "/limited/x", body = ("y"):rep(500) }.status)
    end)
  end)

  describe("errors", function()
    it("502 with the reason when the upstream refuses, after the retries", function()
      local res = proxy:get("/dead/x")
      assert.equal(502, res.status)
      assert.equal("text/plain; charset=utf-8", res.headers["content-type"])
      assert.matches("^Upstream error: connect 127.0.0.1:1: connection refused", res.body)
      assert.matches('"event":"upstream_retryable_error"[^\n]*"mount":"/dead"', proxy:log())
      assert.matches('"event":"upstream_error"[^\n]*"mount":"/dead"', proxy:log())
    end)

    it("504 when the upstream does not answer in time", function()
      local res = proxy:get("/timeout/slow?s=2")
      assert.equal(504, res.status)
      assert.equal("Gateway Timeout: read timeout", res.body)
      assert.matches('"event":"upstream_timeout"', proxy:log())
    end)

    it("retries 502/503/504 and returns the last response as it was", function()
      local res = proxy:get("/retry/status/503")
      assert.equal(503, res.status)
      assert.equal("status body 503", res.body)
      assert.equal("3", res.headers["x-hits"]) -- 1 + max_retries
      assert.matches('"event":"upstream_retryable_status"', proxy:log())
      local custom = proxy:get("/retry500/status/500")
      assert.equal("2", custom.headers["x-hits"]) -- retry_statuses = { 500 }, max_retries = 1
      assert.equal("1", proxy:get("/retry500/status/504").headers["x-hits"]) -- 504 not listed there
      local once = proxy:get("/noretry/status/502")
      assert.equal(502, once.status)
      assert.equal("1", once.headers["x-hits"])
    end)

    it("cuts the client's response when the upstream dies mid-body", function()
      local c = proxy:client()
      c:send("GET /plain/cut HTTP/1.1\r\nHost: x\r\n\r\n")
      local res, err = c:read_response()
      c:close()
      assert.is_nil(res)
      assert.truthy(err)
      assert.equal(200, proxy:get("/plain/x").status)
    end)

    it("a client that goes away while its response streams does not disturb the others", function()
      for _ = 1, 5 do
        local c = proxy:client()
        c:send("GET /plain/bytes?n=50000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        c.sock:receive(100000)
        c:close()
      end
      helpers.sleep(0.1)
      assert.equal(200, proxy:get("/plain/x").status)
    end)

    it("a client that disconnects mid-upload does not disturb the others", function()
      local c = proxy:client()
      c:send("POST /plain/up HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" .. ("z"):rep(1000))
      helpers.sleep(0.05)
      c:close()
      helpers.sleep(0.05)
      assert.equal(200, proxy:get("/plain/x").status)
    end)

    it("a hook may answer without contacting the upstream", function()
      local res = proxy:get("/deny/x")
      assert.equal(403, res.status)
      assert.equal("denied\n", res.body)
      assert.equal(200, proxy:get("/deny/x", { ["X-Token"] = "ok" }).status)
    end)
  end)
end)
