-- relay.admin (lua/relay/admin.lua) in a script the host runs: operator endpoints behind a switch
-- and bearer tokens, with the default refusals and a script's own.
local helpers = require "helpers"
local cjson = require "cjson"

local SCRIPT = [[
local relay = require "relay"
local admin = require "relay.admin"
local app = relay.new { name = "admin-user" }
local refused = 0
local open = admin.new { tokens = { "s3cret-one", "", "s3cret-two" }, header = "x-admin-token" }
local own = admin.new { tokens = { "s3cret-one" },
  unauthorized = function(_, res) refused = refused + 1; res:json(401, { reason = "NO", refused = refused }) end }
local off = admin.new { enabled = false, tokens = { "s3cret-one" } }
local off_own = admin.new { enabled = false, disabled = function(_, res) res:json(404, { reason = "OFF" }) end }
local function state(_, res) res:send(200, "state") end
app:get("/open", open(state))
app:get("/own", own(state))
app:get("/off", off(state))
app:get("/off-own", off_own(state))
local none = admin.new() -- no tokens: nothing is admitted
app:get("/none", none(state))
app:get("/typo", function(_, res)
  local ok, err = pcall(admin.new, { token = { "x" } })
  res:send(200, tostring(ok) .. " " .. err)
end)
return app
]]

describe("relay.admin", function()
  local host
  setup(function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/admin.lua", SCRIPT)
    host = helpers.start(dir .. "/admin.lua")
  end)
  teardown(function() assert.equal(0, host:stop()) end)

  local function get(path, headers)
    local r = host:get(path, headers)
    return { r.status, r.body }
  end

  it("admits a request with one of the tokens, as a bearer token or in the script's header", function()
    assert.same({ 200, "state" }, get("/open", { authorization = "Bearer s3cret-one" }))
    assert.same({ 200, "state" }, get("/open", { authorization = "bearer s3cret-two" }))
    assert.same({ 200, "state" }, get("/open", { ["x-admin-token"] = "s3cret-two" }))
  end)

  it("refuses a missing, wrong or empty token with a bare 401, and the header only where named", function()
    assert.same({ 401, "" }, get("/open"))
    assert.same({ 401, "" }, get("/open", { authorization = "Bearer s3cret-on" }))
    assert.same({ 401, "" }, get("/open", { authorization = "Bearer s3cret-one-more" }))
    assert.same({ 401, "" }, get("/open", { ["x-admin-token"] = "" }))
    assert.same({ 401, "" }, get("/open", { authorization = "Basic s3cret-one" }))
    assert.equal(401, get("/own", { ["x-admin-token"] = "s3cret-one" })[1]) -- no header named
    assert.same({ 200, "state" }, get("/own", { authorization = "Bearer s3cret-one" }))
    assert.same({ 401, "" }, get("/none", { authorization = "Bearer s3cret-one" }))
  end)

  it("answers with the script's own refusals", function()
    local first = get("/own")
    assert.equal(401, first[1])
    local n = cjson.decode(first[2]).refused
    local second = get("/own", { authorization = "Bearer nope-nope" })
    assert.same({ 401, { reason = "NO", refused = n + 1 } }, { second[1], cjson.decode(second[2]) })
  end)

  it("switched off, answers 404 whatever the token, as if nothing were there", function()
    assert.same({ 404, "" }, get("/off", { authorization = "Bearer s3cret-one" }))
    local r = get("/off-own")
    assert.same({ 404, { reason = "OFF" } }, { r[1], cjson.decode(r[2]) })
  end)

  it("refuses an unknown option at the author's line", function()
    local r = get("/typo")
    assert.equal(200, r[1])
    assert.matches("^false .*admin%.lua:%d+: .*token", r[2])
  end)
end)
