-- relay.redis's URL, read by core/net/url: a password holding '@', ':' or '%' (percent-encoded
-- in the URL) reaches a real redis-server that requires it, an ACL user goes with AUTH, an IPv6
-- literal is dialled, and a bad URL is refused naming what was wrong.
local helpers = require "helpers"
local cjson = require "cjson"

local PASSWORD = "p@ss%25w" -- as redis-server has it: '@' and '%' are in the secret itself

describe("relay.redis URL userinfo", function()
  local dir, port, redis_pid, host

  setup(function()
    dir = helpers.tmpdir()
    port, redis_pid = helpers.start_redis(dir, nil,
      ("--requirepass '%s' --bind 127.0.0.1 -::1 --user al on '>a:l@%%x' '~*' '&*' '+@all'"):format(PASSWORD))
    local script = [[
local relay = require "relay"
local app = relay.new { name = "redis-auth" }
local P = PORT
local clients = {
  pw = relay.redis("redis://:p%40ss%2525w@127.0.0.1:" .. P .. "/1"),
  acl = relay.redis("redis://al:a%3Al%40%25x@127.0.0.1:" .. P),
  v6 = relay.redis("redis://:p%40ss%2525w@[::1]:" .. P),
  raw = relay.redis("redis://:p@ss%25w@127.0.0.1:" .. P), -- %25 decodes: "p@ss%w" is wrong
}
app:get("/call", function(req, res)
  local v, err = clients[req.args.c]:call("SET", "k", req.args.c)
  res:json(200, { v = v, err = err })
end)
app:get("/bad", function(req, res)
  local ok, err = pcall(relay.redis, req.args.url)
  res:send(200, ok and "accepted" or err)
end)
return app
]]
    helpers.write_file(dir .. "/r.lua", (script:gsub("PORT", tostring(port))))
    host = helpers.start(dir .. "/r.lua")
  end)

  teardown(function()
    if host then assert.equal(0, host:stop()) end
    if redis_pid then os.execute("kill " .. redis_pid) end
  end)

  local function call(c) return cjson.decode(host:get("/call?c=" .. c).body) end

  it("sends a percent-decoded password with '@' and '%' to AUTH", function()
    helpers.wait_until(function() return call("pw").v == "OK" end, 5, "SET through the password")
  end)

  it("sends an ACL user and its password (':' '@' '%' in it) to AUTH", function()
    helpers.wait_until(function() return call("acl").v == "OK" end, 5, "SET as user al")
  end)

  it("dials an IPv6 literal", function()
    helpers.wait_until(function() return call("v6").v == "OK" end, 5, "SET over [::1]")
  end)

  it("does not take the percent-encoded spelling as the password", function()
    helpers.wait_until(function() return call("pw").v == "OK" end, 5)
    local r = call("raw")
    assert.is_nil(r.v)
    assert.matches("redis", r.err)
  end)

  it("refuses a bad URL naming what was wrong", function()
    local function bad(url)
      return host:get("/bad?url=" .. url:gsub("[^%w]", function(c) return ("%%%02X"):format(c:byte()) end)).body
    end
    assert.matches("port out of range", bad("redis://127.0.0.1:99999"))
    assert.matches("IPv6 literal not closed", bad("redis://[::1:6379"))
    assert.matches("unsupported scheme 'http'", bad("http://127.0.0.1:6379"))
    assert.matches("bad database '/x'", bad("redis://127.0.0.1/x"))
    assert.not_matches("s3cret", bad("redis://:s3cret@127.0.0.1:0"))
  end)

  it("the flag proxy's REDIS_PASSWORD with '@' and '%' reaches redis (it was spliced in raw)", function()
    local F = dofile(helpers.fixture("flag_proxy.lua"))
    F.sh(("cp -r %s/examples/flag-proxy/config %s/config"):format(F.root, dir))
    local env = { AUTH_SECRET = "s", REDIS_ADDRESS = "127.0.0.1:" .. port, REDIS_PASSWORD = PASSWORD, PROXY_KEY = "k" }
    local primary = helpers.start(F.script, { flags = { "--offline", "--config-dir", dir .. "/config" }, env = env })
    local function written()
      local c = assert(helpers.connect(port))
      c:send(("*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n*2\r\n$6\r\nEXISTS\r\n$26\r\nffproxy_saas_stream_health\r\n")
        :format(#PASSWORD, PASSWORD))
      local auth, exists = c.sock:receive("*l"), c.sock:receive("*l")
      c:close()
      assert.equal("+OK", auth)
      return exists == ":1"
    end
    local ok = pcall(helpers.wait_until, written, 5)
    local log = primary:log()
    assert.equal(0, primary:stop())
    assert.is_true(ok, log:sub(-2000))
  end)
end)
