-- The server frames a streamed answer to the Content-Length it was given: a handler (or anything
-- else above the server) that writes more cannot spill bytes the client would read as a second
-- response on the same connection, one that writes less gets the connection closed instead of
-- leaving the client waiting for bytes that belong to the next answer, and a Content-Length
-- that is not a number is refused at res:start.
local helpers = require "helpers"

local SCRIPT = [[
local relay = require "relay"
local app = relay.new { name = "framing" }
local said = relay.shared("said")
app:get("/long", function(_, res)
  res:start(200, { ["content-length"] = "5" })
  local ok, err = res:write("hello" .. "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged")
  said:set("long", tostring(ok) .. " " .. tostring(err))
  res:finish()
end)
app:get("/short", function(_, res)
  res:start(200, { ["content-length"] = "10" })
  res:write("abc")
  res:finish()
end)
app:get("/nan", function(_, res)
  local ok, err = pcall(res.start, res, 200, { ["content-length"] = "5x" })
  said:set("nan", tostring(ok) .. " " .. tostring(err))
  res:send(200, "fine")
end)
app:get("/next", function(_, res) res:send(200, "next") end)
app:get("/said/:k", function(req, res) res:send(200, said:get(req.params.k) or "") end)
return app
]]

describe("a streamed answer is held to its Content-Length", function()
  local host
  setup(function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/framing.lua", SCRIPT)
    host = helpers.start(dir .. "/framing.lua")
  end)
  teardown(function() if host then host:stop() end end)

  it("cuts a body longer than it: the next answer on the connection is the real one", function()
    local c = host:client(3)
    local first = c:get("/long")
    assert.equal(200, first.status)
    assert.equal("hello", first.body)
    local second = c:get("/next")
    assert.equal(200, second.status)
    assert.equal("next", second.body) -- not "forged"
    c:close()
    assert.matches("^nil body longer than its content%-length", host:get("/said/long").body)
  end)

  it("closes the connection after a body shorter than it", function()
    local c = host:client(3)
    c:send("GET /short HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    local all = c.sock:receive("*a") -- returns once the server closes
    c:close()
    assert.matches("Content%-Length: 10\r\n", all)
    assert.matches("abc$", all)
    assert.not_matches("next", all)
    assert.matches('"event":"response_short"', host:log())
  end)

  it("refuses a Content-Length that is not a number of bytes", function()
    local res = host:get("/nan")
    assert.equal(200, res.status)
    assert.matches("content%-length must be a number of bytes", host:get("/said/nan").body)
  end)
end)
