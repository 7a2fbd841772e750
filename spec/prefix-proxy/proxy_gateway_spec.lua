-- The gateway options of relay.proxy (issue 18): X-Forwarded-Prefix, Location/Content-Location
-- and Set-Cookie Path rewriting into the mount, retry_methods and Retry-After. Each is off by
-- default (the Lilya drop-in: /plain shows nothing changes). The origin (spec/fixtures/
-- raw_origin.lua) records what it received, and answers /…/reply?r=… with the bytes in r.
local helpers = require "helpers"
local socket = require "socket"
local raw_origin = require "raw_origin"
local start_origin = raw_origin.start

-- The path that makes the origin answer with this status and these fields.
local function reply(mount, status, fields) return raw_origin.reply(mount, fields, status) end

-- A script whose one mount has the options opts (Lua source): the host's exit status and output.
local function refused(opts)
  local script = helpers.tmpdir() .. "/bad.lua"
  helpers.write_file(script, ([[
local relay = require "relay"
local app = relay.new { name = "bad" }
app:mount("/x", relay.proxy { target_base_url = "http://127.0.0.1:9", %s })
return app
]]):format(opts))
  local rc, out, err = helpers.run { script, "--listen=127.0.0.1:0" }
  return rc, out .. err
end

local fields_named = raw_origin.fields_named

describe("prefix proxy gateway options", function()
  local origin, proxy, up

  setup(function()
    origin = start_origin()
    up = "http://127.0.0.1:" .. origin.port
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/gateway.lua", ([[
local relay = require "relay"
local app = relay.new { name = "gateway" }
local up = "http://127.0.0.1:%d"
app:mount("/plain", relay.proxy { target_base_url = up .. "/base" })
app:mount("/gw", relay.proxy { target_base_url = up .. "/base", forwarded_prefix = true, rewrite_location = true,
  rewrite_cookie_path = true })
app:mount("/root", relay.proxy { target_base_url = up, rewrite_location = true, rewrite_cookie_path = true })
app:mount("/domain", relay.proxy { target_base_url = up .. "/base", rewrite_cookie_path = true,
  rewrite_set_cookie_domain = function() return "example.org" end })
app:mount("/retry", relay.proxy { target_base_url = up .. "/base", max_retries = 1, retry_backoff_factor = 0.01,
  retry_methods = { "GET", "PUT" } })
app:mount("/retry-all", relay.proxy { target_base_url = up .. "/base", max_retries = 1, retry_backoff_factor = 0.01 })
app:mount("/ra", relay.proxy { target_base_url = up .. "/base", max_retries = 1, retry_backoff_factor = 0.01,
  retry_after = true, timeout = 2.5 })
app:mount("/ra-off", relay.proxy { target_base_url = up .. "/base", max_retries = 1, retry_backoff_factor = 0.01,
  timeout = 2.5 })
return app
]]):format(origin.port))
    proxy = helpers.start(dir .. "/gateway.lua")
  end)

  teardown(function()
    origin:stop()
    if proxy then assert.equal(0, proxy:stop(), proxy:log():sub(-3000)) end
  end)
  before_each(function() origin:take(0.05) end)

  describe("forwarded_prefix", function()
    it("sends the mount as X-Forwarded-Prefix in place of the client's", function()
      assert.equal(200, proxy:get("/gw/x", { ["X-Forwarded-Prefix"] = "/evil" }).status)
      local seen = origin:heads()
      assert.equal(1, #seen)
      assert.matches("\r\nX%-Forwarded%-Prefix: /gw\r\n", seen[1])
      assert.is_nil(seen[1]:find("/evil", 1, true))
      local _, n = seen[1]:lower():gsub("x%-forwarded%-prefix:", "")
      assert.equal(1, n)
    end)

    it("is off by default: the client's passes as any header, none is added", function()
      assert.equal(200, proxy:get("/plain/x", { ["X-Forwarded-Prefix"] = "/evil" }).status)
      local seen = origin:heads()
      assert.matches("\r\nX%-Forwarded%-Prefix: /evil\r\n", seen[1])
      assert.is_nil(seen[1]:find("/plain", 1, true))
    end)
  end)

  describe("rewrite_location", function()
    it("moves Location and Content-Location at the upstream base into the mount", function()
      local res = proxy:get(reply("/gw", "302 Found", ("Location: %s/base/next?a=1\r\nContent-Location: %s/base\r\n"):format(up, up)))
      assert.equal(302, res.status)
      assert.equal("/gw/next?a=1", res.headers["location"])
      assert.equal("/gw", res.headers["content-location"])
    end)

    it("a root base maps its '/' to the mount's", function()
      local res = proxy:get(reply("/root", "302 Found", ("Location: %s/\r\nContent-Location: %s/x/y\r\n"):format(up, up)))
      assert.equal("/root/", res.headers["location"])
      assert.equal("/root/x/y", res.headers["content-location"])
    end)

    it("leaves alone a Location elsewhere: beside the base, another host, port or scheme", function()
      for _, loc in ipairs {
        up .. "/basement/x", "http://other.example/base/x", "http://127.0.0.1:" .. (origin.port + 1) .. "/base/x",
        "https://127.0.0.1:" .. origin.port .. "/base/x", "/base/x", "//127.0.0.1:" .. origin.port .. "/base/x",
      } do
        local res = proxy:get(reply("/gw", "302 Found", "Location: " .. loc .. "\r\n"))
        assert.equal(302, res.status)
        assert.equal(loc, res.headers["location"])
      end
    end)

    it("an over-long Location is rewritten whole and the head stays one head", function()
      local tail = ("a"):rep(60000)
      local c = proxy:client()
      local res = c:get("/gw/long-location")
      assert.equal(302, res.status)
      assert.equal("/gw/" .. tail, res.headers["location"])
      local again = c:get("/gw/x") -- the connection still frames answers
      assert.equal(200, again.status)
      c:close()
    end)

    it("is off by default", function()
      local res = proxy:get(reply("/plain", "302 Found", ("Location: %s/base/next\r\n"):format(up)))
      assert.equal(up .. "/base/next", res.headers["location"])
    end)
  end)

  describe("rewrite_cookie_path", function()
    local cookies = "Set-Cookie: a=1; Path=/base/x; HttpOnly\r\nSet-Cookie: b=2; path=/base\r\n" ..
      "Set-Cookie: c=3; Path=/other\r\nSet-Cookie: path=/base/y; Path=/basement\r\nSet-Cookie: d=4\r\n"

    it("moves a Path at the upstream base into the mount and leaves the rest alone", function()
      local res = proxy:get(reply("/gw", "200 OK", cookies))
      assert.same({ "a=1; Path=/gw/x; HttpOnly", "b=2; Path=/gw", "c=3; Path=/other",
                    "path=/base/y; Path=/basement", "d=4" }, fields_named(res, "set-cookie"))
    end)

    it("a root base's Path=/ becomes the mount's", function()
      local res = proxy:get(reply("/root", "200 OK", "Set-Cookie: s=1; Path=/\r\nSet-Cookie: t=2; Path=/app\r\n"))
      assert.same({ "s=1; Path=/root/", "t=2; Path=/root/app" }, fields_named(res, "set-cookie"))
    end)

    it("works beside the Domain rewrite", function()
      local res = proxy:get(reply("/domain", "200 OK", "Set-Cookie: a=1; Domain=up.internal; Path=/base/x\r\n"))
      assert.same({ "a=1; Domain=example.org; Path=/domain/x" }, fields_named(res, "set-cookie"))
    end)

    it("a cookie named path or domain is its name=value, not an attribute", function()
      local res = proxy:get(reply("/domain", "200 OK", "Set-Cookie: domain=v; Path=/base/x\r\nSet-Cookie: path=/base/y\r\n"))
      assert.same({ "domain=v; Path=/domain/x; Domain=example.org", "path=/base/y; Domain=example.org" },
                  fields_named(res, "set-cookie"))
    end)

    it("is off by default", function()
      local res = proxy:get(reply("/plain", "200 OK", cookies))
      assert.same({ "a=1; Path=/base/x; HttpOnly", "b=2; path=/base", "c=3; Path=/other",
                    "path=/base/y; Path=/basement", "d=4" }, fields_named(res, "set-cookie"))
    end)
  end)

  describe("retry_methods", function()
    local path = reply("/retry", "503 Service Unavailable")

    it("a method it does not name is not sent again", function()
      local res = proxy:request { method = "POST", path = path, body = "hello" }
      assert.equal(503, res.status)
      assert.equal(1, #origin:take())
    end)

    it("a method it names is sent again with its body replayed", function()
      local res = proxy:request { method = "PUT", path = path, body = "hello" }
      assert.equal(503, res.status)
      local seen = origin:take()
      assert.equal(2, #seen)
      for _, conn in ipairs(seen) do
        assert.matches("^PUT /base/reply%?", conn)
        assert.matches("\r\n\r\nhello$", conn)
      end
    end)

    it("is every method by default (the original's)", function()
      local res = proxy:request { method = "POST", path = reply("/retry-all", "503 Service Unavailable"), body = "hello" }
      assert.equal(503, res.status)
      local seen = origin:take()
      assert.equal(2, #seen)
      assert.matches("\r\n\r\nhello$", seen[2])
    end)

    it("refuses what is not a method name", function()
      local rc, out = refused('retry_methods = { "GET", "bad method" }')
      assert.is_not.equal(0, rc)
      assert.matches("retry_methods takes method names", out)
    end)
  end)

  it("a list option holding a non-string is refused by name (it used to crash the host)", function()
    for _, opt in ipairs { "drop_request_headers = { true }", "allow_response_headers = { {} }", "retry_on = { false }" } do
      local rc, out = refused(opt)
      assert.equal(1, rc, opt .. ": " .. out)
      assert.matches("must be a list of strings %(item 1 is a ", out)
    end
  end)

  describe("retry_after", function()
    local function timed(path)
      local t0 = socket.gettime()
      local res = proxy:get(path)
      return res, socket.gettime() - t0
    end

    it("waits the seconds a retried status names instead of the backoff", function()
      local res, took = timed(reply("/ra", "503 Service Unavailable", "Retry-After: 1\r\n"))
      assert.equal(503, res.status)
      assert.equal(2, #origin:take())
      assert.is_true(took >= 0.95, "took " .. took)
    end)

    it("reads an HTTP-date", function()
      local date = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 2)
      local res, took = timed(reply("/ra", "503 Service Unavailable", "Retry-After: " .. date .. "\r\n"))
      assert.equal(503, res.status)
      assert.equal(2, #origin:take())
      assert.is_true(took >= 0.9, "took " .. took)
    end)

    it("caps the wait at the timeout", function()
      local res, took = timed(reply("/ra", "503 Service Unavailable", "Retry-After: 3600\r\n"))
      assert.equal(503, res.status)
      assert.is_true(took >= 2.3 and took < 5, "took " .. took)
    end)

    it("a value that is neither keeps the backoff", function()
      local _, took = timed(reply("/ra", "503 Service Unavailable", "Retry-After: soon\r\n"))
      assert.is_true(took < 0.8, "took " .. took)
      assert.equal(2, #origin:take())
    end)

    it("is off by default", function()
      local _, took = timed(reply("/ra-off", "503 Service Unavailable", "Retry-After: 2\r\n"))
      assert.is_true(took < 0.8, "took " .. took)
      assert.equal(2, #origin:take())
    end)
  end)

  it("the bundled prefix-proxy turns each on by its flag", function()
    local pp = helpers.start("prefix-proxy", { flags = { "--mount", "/api=" .. up .. "/base", "--forwarded-prefix",
      "--rewrite-location", "--rewrite-cookie-path", "--retry-methods=GET, HEAD", "--retry-after", "--max-retries=1",
      "--timeout=2.5" } })
    local ok, err = pcall(function()
      local res = pp:get(reply("/api", "302 Found", ("Location: %s/base/x\r\nSet-Cookie: a=1; Path=/base/x\r\n"):format(up)))
      assert.equal("/api/x", res.headers["location"])
      assert.equal("a=1; Path=/api/x", res.headers["set-cookie"])
      assert.matches("\r\nX%-Forwarded%-Prefix: /api\r\n", origin:heads()[1])
      assert.equal(503, pp:request { method = "POST", path = reply("/api", "503 Service Unavailable"), body = "b" }.status)
      assert.equal(1, #origin:take())
      local t0 = socket.gettime()
      assert.equal(503, pp:get(reply("/api", "503 Service Unavailable", "Retry-After: 1\r\n")).status)
      assert.is_true(socket.gettime() - t0 >= 0.95)
      assert.equal(2, #origin:take())
    end)
    local rc = pp:stop()
    assert(ok, err)
    assert.equal(0, rc, pp:log():sub(-3000))
  end)
end)
