-- examples/forward-auth.lua against real peers: an auth service and an upstream, both routes of
-- one relayhost script (PEERS) that count what reaches them. A 2xx from the auth service lets the
-- request through with the named headers copied up (and a client's own X-User never passes);
-- 401/403 are the client's answer with the service's WWW-Authenticate, and nothing goes up.
local helpers = require "helpers"
local json = require "cjson"

local PEERS = [[
local relay = require "relay"
local app = relay.new { name = "forward-auth-peers" }
local seen = { auth = 0, upstream = 0 }
app:get("/check", function(req, res)
  seen.auth = seen.auth + 1
  local who = req.headers["authorization"]
  if who == "Bearer good" then
    return res:send(200, "", { ["x-user"] = "alice", ["x-user-roles"] = "admin", ["x-secret"] = "not copied" })
  end
  if who == "Bearer anon" then return res:send(204, "") end -- allowed, names no user
  if who == "Bearer nobody" then return res:send(403, "not yours\n") end
  res:send(401, "who are you?\n", { ["www-authenticate"] = 'Bearer realm="peers"' })
end)
app:any("/app/*", function(req, res)
  seen.upstream = seen.upstream + 1
  res:json(200, { path = req.path, query = req.query, x_user = req.headers["x-user"] or false,
                  x_user_roles = req.headers["x-user-roles"] or false, x_secret = req.headers["x-secret"] or false,
                  authorization = req.headers["authorization"] or false })
end)
app:get("/seen", function(_, res) res:json(200, seen) end)
return app
]]

describe("examples/forward-auth.lua", function()
  local peers, proxy

  local function seen() return json.decode(peers:get("/seen").body) end

  setup(function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/peers.lua", PEERS)
    peers = helpers.start(dir .. "/peers.lua")
    proxy = helpers.start(helpers.root .. "/examples/forward-auth.lua", { flags = {
      "--upstream", peers:url("/app"), "--auth-url", peers:url("/check"), "--prefix", "/api",
      "--copy-headers", "x-user,x-user-roles" } })
  end)

  teardown(function()
    if proxy then assert.equal(0, proxy:stop(), proxy:log():sub(-3000)) end
    if peers then assert.equal(0, peers:stop()) end
  end)

  it("passes a request the auth service allows, with its named headers copied up", function()
    local before = seen()
    local res = proxy:get("/api/items?x=1", { authorization = "Bearer good", ["x-user"] = "mallory" })
    assert.equal(200, res.status, res.body)
    local up = json.decode(res.body)
    assert.equal("/app/items", up.path)
    assert.equal("x=1", up.query)
    assert.equal("alice", up.x_user)          -- the service's, not the client's
    assert.equal("admin", up.x_user_roles)
    assert.is_false(up.x_secret)              -- not named in --copy-headers
    assert.equal("Bearer good", up.authorization)
    local after = seen()
    assert.equal(before.auth + 1, after.auth)
    assert.equal(before.upstream + 1, after.upstream)
  end)

  it("never passes the client's own X-User, even when the service's 2xx names none", function()
    local res = proxy:get("/api/items", { authorization = "Bearer anon", ["x-user"] = "mallory", ["x-user-roles"] = "admin" })
    assert.equal(200, res.status, res.body)
    local up = json.decode(res.body)
    assert.is_false(up.x_user)
    assert.is_false(up.x_user_roles)
  end)

  it("answers 401 with the service's WWW-Authenticate, and nothing reaches the upstream", function()
    local before = seen()
    local res = proxy:get("/api/items", { authorization = "Bearer bad", ["x-user"] = "mallory" })
    assert.equal(401, res.status)
    assert.equal('Bearer realm="peers"', res.headers["www-authenticate"])
    assert.equal("who are you?\n", res.body)
    res = proxy:get("/api/items")
    assert.equal(401, res.status)
    local after = seen()
    assert.equal(before.auth + 2, after.auth)
    assert.equal(before.upstream, after.upstream)
  end)

  it("answers 403 as the service does, and nothing reaches the upstream", function()
    local before = seen()
    local res = proxy:get("/api/items", { authorization = "Bearer nobody" })
    assert.equal(403, res.status)
    assert.equal("not yours\n", res.body)
    assert.equal(before.upstream, seen().upstream)
  end)

  it("answers 503 when the auth service cannot be reached", function()
    local down = helpers.start(helpers.root .. "/examples/forward-auth.lua", { flags = {
      "--upstream", peers:url("/app"), "--auth-url", "http://127.0.0.1:" .. helpers.free_port() .. "/check" } })
    local before = seen()
    local res = down:get("/items", { authorization = "Bearer good" })
    assert.equal(0, down:stop())
    assert.equal(503, res.status)
    assert.equal(before.upstream, seen().upstream)
    assert.matches('"auth_unavailable"', down:log())
  end)

  it("shows its flags with help in --help", function()
    local rc, out = helpers.run { helpers.root .. "/examples/forward-auth.lua", "--help" }
    assert.equal(0, rc)
    for _, flag in ipairs { "--upstream", "--auth-url", "--copy-headers", "--prefix", "--auth-timeout" } do
      assert.matches(flag:gsub("%-", "%%-") .. " [^\n]*\n%s+%S", out)
    end
  end)

  it("is run in README with flags it has", function()
    local readme = helpers.read_file(helpers.root .. "/README.md")
    local cmd = assert(readme:match("`(relayhost examples/forward%-auth%.lua [^`]*)`"), "README has no command for it")
    local _, out = helpers.run { helpers.root .. "/examples/forward-auth.lua", "--help" }
    for flag in cmd:gmatch("%s(%-%-[%w-]+)") do assert.matches("\n  " .. flag:gsub("%-", "%%-") .. " ", out) end
  end)
end)
