-- relay.http.json (lua/relay/http.lua): one call to a JSON API. A host calls its own routes: a
-- table body goes as JSON with its content-type (unless one is given), a 200's object or array
-- comes back decoded, anything else is nil and why (with the response), and no answer at all is
-- relay.http.request's error. With any_status, every status comes back, with the body decoded.
local helpers = require "helpers"
local cjson = require "cjson"

local SCRIPT = [=[
local relay = require "relay"
local app = relay.new { name = "json" }
app:get("/obj", function(_, res) res:send(200, '{"a":[1,2]}') end)
app:get("/text", function(_, res) res:send(200, "hello") end)
app:get("/num", function(_, res) res:send(200, "5") end)
app:get("/gone", function(_, res) res:send(404, '{"a":1}') end)
app:get("/teapot", function(_, res) res:send(418, "short and stout") end)
app:post("/echo", function(req, res)
  res:json(200, { type = req.headers["content-type"], body = req:body(), method = req.method })
end)
app:get("/call", function(req, res)
  local opts = { url = req.args.url or ("http://" .. req.headers.host .. req.args.path), timeout = 2 }
  if req.args.post then opts.method, opts.body = "POST", { apiKey = "k", list = relay.json.array() } end
  if req.args.text then opts.method, opts.body = "POST", req.args.text end
  if req.args.ctype then opts.headers = { ["Content-Type"] = req.args.ctype } end
  local null = relay.json.null
  if req.args.any then -- any_status: status, value, response | nil, err
    opts.any_status = true
    local status, v, r = relay.http.json(opts)
    if not status then return res:json(200, { err = v }) end
    return res:json(200, { status = status, value = v or null, same = r.status == status, raw = r.body })
  end
  local v, err, r = relay.http.json(opts)
  res:json(200, { value = v or null, err = err or null, status = r and r.status or null })
end)
return app
]=]

describe("relay.http.json", function()
  local host
  setup(function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/json.lua", SCRIPT)
    host = helpers.start(dir .. "/json.lua")
  end)
  teardown(function() host:stop() end)

  local function call(q)
    local r = cjson.decode(host:get("/call?" .. q).body)
    for k, v in pairs(r) do if v == cjson.null then r[k] = nil end end
    return r
  end

  it("decodes a 200's object or array", function()
    assert.same({ a = { 1, 2 } }, call("path=/obj").value)
  end)

  it("sends a table body as JSON with its content-type, unless the caller names one", function()
    local got = call("path=/echo&post=1").value
    assert.equal("POST", got.method)
    assert.equal("application/json", got.type)
    assert.same({ apiKey = "k", list = {} }, cjson.decode(got.body))
    assert.matches('"list":%[%]', got.body)
    got = call("path=/echo&post=1&ctype=application/vnd.x%2Bjson").value
    assert.equal("application/vnd.x+json", got.type)
    got = call("path=/echo&text=raw").value -- text goes as it is
    assert.same({ "raw" }, { got.body })
  end)

  it("says why otherwise, with the response when there was one", function()
    assert.same({ err = "status 404", status = 404 }, call("path=/gone"))
    assert.same({ err = "not JSON", status = 200 }, call("path=/text"))
    assert.same({ err = "not JSON", status = 200 }, call("path=/num"))
    local port = helpers.free_port()
    local r = call("url=http://127.0.0.1:" .. port .. "/")
    assert.matches("refused", r.err)
    assert.is_nil(r.status)
  end)

  it("with any_status, answers every status: the body decoded (or nil) and the response", function()
    assert.same({ status = 404, value = { a = 1 }, same = true, raw = '{"a":1}' }, call("path=/gone&any=1"))
    assert.same({ status = 200, value = { a = { 1, 2 } }, same = true, raw = '{"a":[1,2]}' },
                call("path=/obj&any=1"))
    assert.same({ status = 418, same = true, raw = "short and stout" }, call("path=/teapot&any=1"))
    assert.same({ status = 200, same = true, raw = "5" }, call("path=/num&any=1"))
    local posted = call("path=/echo&post=1&any=1").value -- the body goes as JSON all the same
    assert.same({ "POST", "application/json" }, { posted.method, posted.type })
    local r = call("any=1&url=http://127.0.0.1:" .. helpers.free_port() .. "/")
    assert.matches("refused", r.err)
    assert.is_nil(r.status)
  end)
end)
