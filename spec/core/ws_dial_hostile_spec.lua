-- Hostile parts in relay.ws.connect's handshake head (issue 14, "Heads that cross a hop are
-- rebuilt, never copied"): CR LF in the subprotocols, a header, the url's path, query or port
-- must never reach the server as a second line or a second request. The server is the raw
-- recording origin (spec/fixtures/raw_origin.lua): every byte each connection sent it is kept,
-- so each case asserts what arrived: nothing, or exactly one well-formed head.
local helpers = require "helpers"
local cjson = require "cjson"
local raw_origin = require "raw_origin"

-- Why bytes are not exactly one well-formed handshake head (nil when they are).
local function not_one_head(bytes)
  local e = bytes:find("\r\n\r\n", 1, true)
  if not e then return "no complete head" end
  if e + 3 ~= #bytes then return "bytes after the head: " .. bytes:sub(e + 4, e + 80) end
  local lines = {}
  for line in bytes:sub(1, e + 1):gmatch("(.-)\r\n") do lines[#lines + 1] = line end
  if not lines[1]:match("^GET /[!-~]* HTTP/1%.1$") then return "bad request line: " .. lines[1] end
  for i = 2, #lines do
    if not lines[i]:match("^[!#$%%&'*+.^_`|~%w-]+: [^%c]*$") then return "bad field line: " .. lines[i] end
  end
  if bytes:find("X-Injected", 1, true) then return "an injected field" end
  return nil
end

local script = [[
local relay = require "relay"
local app = relay.new { name = "ws-dial-hostile" }
local base = "ws://127.0.0.1:%d"
local inject = "\r\nX-Injected: 1\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\nX-Injected: 2"
local cases = {
  fine = function() return base .. "/fine?x=1", { protocols = { "v1", "v2" }, headers = { ["X-Test"] = "1" } } end,
  protocols = function() return base .. "/p", { protocols = "v1" .. inject } end,
  protocol_list = function() return base .. "/p", { protocols = { "v1", "v2" .. inject } } end,
  header = function() return base .. "/h", { headers = { ["X-Test"] = "a" .. inject } } end,
  path = function() return base .. "/a" .. inject, {} end,
  query = function() return base .. "/q?a=" .. inject, {} end,
  port = function() return base .. inject .. "/x", {} end,
  space = function() return base .. "/a b", {} end,
}
app:get("/dial", function(req, res)
  local url, opts = cases[req.args.case]()
  opts.timeout = 2
  local ok, ws, err = pcall(relay.ws.connect, url, opts)
  res:json(200, { raised = not ok, connected = ok and ws ~= nil or false, err = ok and err or tostring(ws) })
end)
return app
]]

describe("relay.ws.connect with hostile head parts", function()
  local origin, host

  setup(function()
    origin = raw_origin.start()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/dial.lua", script:format(origin.port))
    host = helpers.start(dir .. "/dial.lua")
  end)

  teardown(function()
    if origin then origin:stop() end
    if host then assert.equal(0, host:stop(), host:log():sub(-3000)) end
  end)

  local function dial(case)
    local res = host:get("/dial?case=" .. case)
    assert.equal(200, res.status, res.body)
    return cjson.decode(res.body), origin:take(0.3)
  end

  it("sends a well-formed head with every part (the control: the origin records it)", function()
    local r, conns = dial("fine")
    assert.is_false(r.raised)
    assert.matches("answered 200 instead of 101", r.err) -- the raw origin is no WebSocket server
    assert.equal(1, #conns)
    assert.is_nil(not_one_head(conns[1]))
    assert.matches("^GET /fine%?x=1 HTTP/1%.1\r\n", conns[1])
    assert.matches("\r\nSec%-WebSocket%-Protocol: v1, v2\r\n", conns[1])
    assert.matches("\r\nX%-Test: 1\r\n", conns[1])
    assert.matches("\r\nHost: 127%.0%.0%.1:%d+\r\n", conns[1])
  end)

  local cases = {
    { "protocols", "CR LF in a string of protocols", "invalid header value in protocols" },
    { "protocol_list", "CR LF in a protocol in the list", "invalid token in protocols" },
    { "header", "CR LF in a header value", "header 'X%-Test'" },
    { "path", "CR LF in the url's path", "invalid character in the URL" },
    { "query", "CR LF in the url's query", "invalid character in the URL" },
    { "port", "CR LF in the url's port", "invalid character in the URL" },
    { "space", "a space in the url's path", "invalid character in the URL" },
  }
  for _, case in ipairs(cases) do
    it("refuses " .. case[2] .. ": nil and the part named, nothing sent", function()
      local r, conns = dial(case[1])
      for _, bytes in ipairs(conns) do assert.is_nil(not_one_head(bytes)) end
      assert.same({}, conns)
      assert.is_false(r.raised, r.err)
      assert.is_false(r.connected)
      assert.matches(case[3], r.err)
    end)
  end
end)
