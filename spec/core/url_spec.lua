-- relay.url.parse: the core's URL parser (core/net/url) for scripts. The parsing runs inside the
-- host (`relayhost check` of a script that writes its results as JSON); the spec reads them.
local helpers = require "helpers"
local cjson = require "cjson"

local SCRIPT = [[
local relay = require "relay"
local cjson = require "cjson"
local cases = cjson.decode(os.getenv("URL_CASES"))
local out = {}
for i, c in ipairs(cases) do
  local t, err = relay.url.parse(c[1], c[2])
  out[i] = { t = t or cjson.null, err = err or cjson.null }
end
local f = assert(io.open(os.getenv("URL_OUT"), "w"))
f:write(cjson.encode(out))
f:close()
return relay.new { name = "url" }
]]

-- parse(s, schemes?) for each of list, in the host: {t, err} each.
local function parse_all(list)
  local dir = helpers.tmpdir()
  helpers.write_file(dir .. "/u.lua", SCRIPT)
  local rc, _, err = helpers.run({ "check", dir .. "/u.lua" },
    { URL_CASES = cjson.encode(list), URL_OUT = dir .. "/out.json" })
  assert.equal(0, rc, err)
  local got = cjson.decode(helpers.read_file(dir .. "/out.json"))
  for _, r in ipairs(got) do
    if r.t == cjson.null then r.t = nil end
    if r.err == cjson.null then r.err = nil end
  end
  return got
end

local function parse(s, schemes) return parse_all({ { s, schemes } })[1] end

describe("relay.url.parse", function()
  it("gives every part, userinfo percent-decoded", function()
    assert.same({ t = { scheme = "redis", user = "al", password = "p@ss%w:", host = "db.local", port = 6380,
                        path = "/2", query = "a=1&b", fragment = "f" } },
                parse("REDIS://al:p%40ss%25w%3A@db.local:6380/2?a=1&b#f"))
  end)

  it("fills the scheme's default port and path; absent parts are nil", function()
    local got = parse_all({ { "http://h" }, { "https://h" }, { "ws://h" }, { "wss://h" }, { "redis://h" },
                            { "rediss://h" }, { "git+ssh://h" } })
    local ports = {}
    for i, r in ipairs(got) do ports[i] = r.t.port or false end
    assert.same({ 80, 443, 80, 443, 6379, 6379, false }, ports)
    assert.same({ scheme = "http", host = "h", port = 80, path = "/" }, got[1].t)
  end)

  it("reads IPv6 literals without their brackets", function()
    assert.same({ scheme = "ws", host = "::1", port = 9, path = "/x" }, parse("ws://[::1]:9/x").t)
    assert.same({ scheme = "https", host = "2001:db8::1", port = 443, path = "/" }, parse("https://[2001:db8::1]").t)
  end)

  it("refuses what is wrong, naming it", function()
    local cases = {
      { "http://[::1:80/", "IPv6 literal not closed" },
      { "http://h:0/", "port out of range" },
      { "http://h:65536/", "port out of range" },
      { "http://h:99999/", "port out of range" },
      { "http://h:7x/", "port '7x' is not a number" },
      { "http://h:/", "missing port after ':'" },
      { "http://u:%zz@h/", "bad percent-encoding in userinfo" },
      { "http://fe80::1/", "must be in brackets" },
      { "h:80", "missing scheme" },
      { "http://h/a b", "invalid character" },
      { "http://" .. ("a"):rep(300) .. "/", "host too long" },
      { "http://h/" .. ("a"):rep(9000), "URL too long" },
    }
    local list = {}
    for i, c in ipairs(cases) do list[i] = { c[1] } end
    for i, r in ipairs(parse_all(list)) do
      assert.is_nil(r.t, cases[i][1])
      assert.matches(cases[i][2], r.err, 1, true)
    end
  end)

  it("refuses schemes the caller does not take, as a list or a string", function()
    assert.matches("unsupported scheme 'ftp' (want ws wss)", parse("ftp://h", { "ws", "wss" }).err, 1, true)
    assert.matches("unsupported scheme 'http'", parse("http://h", "https").err, 1, true)
    assert.equal("wss", parse("WSS://h", { "ws", "wss" }).t.scheme)
  end)
end)
