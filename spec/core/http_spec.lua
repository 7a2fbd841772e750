-- The HTTP/1.1 server as clients meet it: framing, keep-alive, limits and every smuggling
-- shape, against the built binary on an ephemeral port.
local helpers = require "helpers"

describe("HTTP/1.1 server", function()
  local host

  setup(function()
    host = helpers.start(helpers.fixture("basic.lua"), { flags = { "--head-timeout=0.5" } })
  end)

  teardown(function()
    assert.equal(0, host:stop())
  end)

  -- Sends raw bytes on a new connection and reads one response.
  local function raw(bytes, opts)
    local c = host:client()
    c:send(bytes)
    local res, err = c:read_response(opts)
    c:close()
    return res, err
  end

  -- After a rejected request, the connection must be closed by the server.
  local function closed_after(c)
    local res = c:read_response()
    return res == nil
  end

  it("answers a GET and a HEAD with the same length", function()
    local res = host:get("/")
    assert.equal(200, res.status)
    assert.equal("hello\n", res.body)
    assert.equal("6", res.headers["content-length"])
    local head = host:request { method = "HEAD", path = "/" }
    assert.equal(200, head.status)
    assert.equal("6", head.headers["content-length"])
    assert.equal("", head.body)
  end)

  it("keeps a connection alive across requests", function()
    local c = host:client()
    for i = 1, 5 do
      local res = c:post("/echo", "body " .. i)
      assert.equal(200, res.status)
      assert.equal("body " .. i, res.body)
    end
    c:close()
  end)

  it("answers pipelined requests in order", function()
    local c = host:client()
    local req = "GET /users/%d HTTP/1.1\r\nHost: x\r\n\r\n"
    c:send(req:format(1) .. req:format(2) .. "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" .. req:format(3))
    assert.equal("user 1", c:read_response().body)
    assert.equal("user 2", c:read_response().body)
    assert.equal("abc", c:read_response().body)
    assert.equal("user 3", c:read_response().body)
    c:close()
  end)

  it("reads chunked request bodies", function()
    local res = raw("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert.equal(200, res.status)
    assert.equal("hello world", res.body)
  end)

  it("sends 100 Continue when the handler reads the body", function()
    local c = host:client()
    c:send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    local line = c.sock:receive("*l")
    assert.equal("HTTP/1.1 100 Continue", line)
    assert.equal("", c.sock:receive("*l"))
    c:send("ping")
    local res = c:read_response()
    assert.equal(200, res.status)
    assert.equal("ping", res.body)
    c:close()
  end)

  it("closes after Connection: close and after HTTP/1.0", function()
    local c = host:client()
    c:send("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    local res = c:read_response()
    assert.equal(200, res.status)
    assert.equal("close", res.headers.connection)
    assert.is_true(closed_after(c))
    c:close()
    c = host:client()
    c:send("GET / HTTP/1.0\r\n\r\n")
    assert.equal(200, c:read_response().status)
    assert.is_true(closed_after(c))
    c:close()
  end)

  it("routes exact, parameter and prefix patterns; 404 and 405 otherwise", function()
    assert.equal("user 42", host:get("/users/42").body)
    assert.equal("file a/b.txt", host:get("/files/a/b.txt").body)
    assert.equal(404, host:get("/nope").status)
    assert.equal(404, host:get("/users/").status)
    assert.equal(405, host:request { method = "DELETE", path = "/" }.status)
  end)

  it("gives handlers case-insensitive headers with repeated values in order, and query args", function()
    local res = host:get("/headers?a=1&b=x%20y;a=2", { ["X-Multi"] = { "one", "two", "three" } })
    local body = require("cjson").decode(res.body)
    assert.same({ "one", "two", "three" }, body.all)
    assert.equal("one", body.first)
    assert.equal("a=1&b=x%20y;a=2", body.query)
    assert.same({ "1", "2" }, body.args.a)
    assert.equal("x y", body.args.b)
    assert.equal("127.0.0.1", body.peer)
    assert.matches("^%x+$", body.id)
  end)

  describe("limits", function()
    it("413 for a declared body over the route's limit", function()
      local res = raw("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n" .. ("x"):rep(2000))
      assert.equal(413, res.status)
      assert.matches("over the limit", res.body)
    end)

    it("413 for a chunked body that grows over the limit", function()
      local chunk = ("%x\r\n%s\r\n"):format(600, ("y"):rep(600))
      local res = raw("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" .. chunk .. chunk .. "0\r\n\r\n")
      assert.equal(413, res.status)
    end)

    it("a route may raise its own body limit", function()
      local body = ("z"):rep(2 * 1024 * 1024)
      local res = host:request { method = "POST", path = "/big", body = body }
      assert.equal(200, res.status)
      assert.equal(tostring(#body), res.body)
    end)

    it("431 for a head over 16 KiB", function()
      local res = raw("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " .. ("a"):rep(17000) .. "\r\n\r\n")
      assert.equal(431, res.status)
    end)

    it("400 and close for a malformed request line", function()
      local c = host:client()
      c:send("BLAH\r\n\r\n")
      local res = c:read_response()
      assert.equal(400, res.status)
      assert.is_true(closed_after(c))
      c:close()
    end)

    it("408 for a slow head while another client is served", function()
      local slow = host:client()
      slow:send("GET / HTTP/1.1\r\nHost: x\r\n")
      -- the other client is served normally meanwhile
      for _ = 1, 3 do assert.equal(200, host:get("/").status) end
      local res = slow:read_response()
      assert.equal(408, res.status)
      slow:close()
    end)
  end)

  describe("request smuggling shapes are refused with 400", function()
    local cases = {
      ["Content-Length with Transfer-Encoding"] =
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      ["repeated Content-Length (same value)"] =
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
      ["repeated Content-Length (different values)"] =
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
      ["bad chunk size"] =
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
      ["bare LF in the head"] = "GET / HTTP/1.1\nHost: x\n\n",
      ["bare LF after one header"] = "GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",
      ["obs-fold"] = "GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n",
      ["missing Host on HTTP/1.1"] = "GET / HTTP/1.1\r\n\r\n",
      ["repeated Host"] = "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
      ["space before colon"] = "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
      ["space inside a header name"] = "GET / HTTP/1.1\r\nHost: x\r\nX Foo: bar\r\n\r\n",
      ["empty header name"] = "GET / HTTP/1.1\r\n: x\r\nHost: x\r\n\r\n",
      ["Transfer-Encoding without chunked last"] =
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    }
    for name, bytes in pairs(cases) do
      it(name, function()
        local c = host:client()
        c:send(bytes)
        local res = c:read_response()
        assert.equal(400, res.status)
        assert.is_true(closed_after(c))
        c:close()
      end)
    end

    it("CONNECT gets 501 (this is no forward proxy)", function()
      local c = host:client()
      c:send("CONNECT a:1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: a\r\n\r\n")
      assert.equal(501, c:read_response().status)
      assert.is_true(closed_after(c))
      c:close()
    end)

    it("logs each refusal and keeps serving", function()
      assert.is_true(host:count("http_rejected") >= 8)
      assert.equal(200, host:get("/").status)
    end)
  end)

  describe("handlers", function()
    it("an error answers 500 with the request id and the process serves on", function()
      local res = host:get("/boom")
      assert.equal(500, res.status)
      assert.matches("request id %x+", res.body)
      assert.equal(res.headers["x-request-id"], res.body:match("request id (%x+)"))
      assert.matches('"event":"handler_error"[^\n]*kaboom', host:log())
      assert.matches('basic%.lua:%d+', host:log())
      assert.equal(200, host:get("/").status)
    end)

    it("a handler that returns without answering gets 500", function()
      assert.equal(500, host:get("/nothing").status)
    end)

    it("streams to an HTTP/1.0 client without chunks, ending with the connection", function()
      local c = host:client()
      c:send("GET /stream?n=2 HTTP/1.0\r\n\r\n")
      local res = c:read_response()
      c:close()
      assert.is_nil(res.headers["transfer-encoding"])
      assert.equal("close", res.headers.connection)
      assert.equal("chunk 1\nchunk 2\n", res.body)
    end)

    it("streams chunked responses", function()
      local res = host:get("/stream?n=4")
      assert.equal("chunked", res.headers["transfer-encoding"])
      assert.equal("chunk 1\nchunk 2\nchunk 3\nchunk 4\n", res.body)
    end)

    it("assigning a global is an error naming file:line", function()
      local res = host:get("/global")
      assert.equal(500, res.status)
      assert.matches("basic%.lua:%d+: assignment to undeclared global 'leaked_global'", host:log())
    end)

    it("secrets are redacted from log lines", function()
      assert.equal(200, host:get("/log").status)
      local line = host:log():match('[^\n]*"event":"custom_event"[^\n]*')
      assert.matches('"authorization":"%[redacted%]"', line)
      assert.not_matches("secret%-token", host:log())
      assert.matches('"note":"visible"', line)
    end)
  end)
end)
