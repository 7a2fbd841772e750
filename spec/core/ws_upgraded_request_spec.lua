-- A handler's request after its WebSocket upgrade (issue 17): the server frees the request's
-- header copies and cuts its target to the path once the 101 is out (rh_http_tunnel), so a held
-- socket carries neither. The script's req is its own copy, made before the 101 on an
-- app:websocket route too: path, query, target, args and headers still read as they came,
-- after the upgrade and after the socket has been waited on, and the access line written when
-- the socket ends still names the path.
local helpers = require "helpers"
local cjson = require "cjson"

describe("a request after its WebSocket upgrade", function()
  local host

  setup(function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/upgraded.lua", [[
local relay = require "relay"
local app = relay.new { name = "upgraded" }
local function answer(ws, req)
  local data = ws:recv() -- the client speaks first: the request is read well after the 101
  ws:send(table.concat({ data, req.path, req.query, req.target, req.args.who, req.headers["sec-websocket-version"] }, " "))
  ws:recv()
end
app:get("/held/path", function(req) answer(req:websocket(), req) end)
app:websocket("/route/path", answer)
return app
]])
    host = helpers.start(dir .. "/upgraded.lua")
  end)

  teardown(function() assert.equal(0, host:stop()) end)

  for _, path in ipairs { "/held/path", "/route/path" } do
    it(path .. " keeps the script's path, query, target, args and headers, and logs the path when it ends", function()
      local url = ("ws://127.0.0.1:%d%s?who=ann&pad=%s"):format(host.port, path, ("x"):rep(200))
      local p = io.popen(("node %s/spec/js/ws-client.js '%s' '%s'"):format(helpers.root, url,
        cjson.encode { send = { { text = "hi", wait = true }, { close = { 1000, "done" } } } }))
      local r = cjson.decode(p:read("*a"))
      p:close()
      assert.equal(cjson.null, r.error)
      local query = "who=ann&pad=" .. ("x"):rep(200)
      assert.equal(("hi %s %s %s?%s ann 13"):format(path, query, path, query), r.messages[1].text)
      assert.equal(1000, r.close.code)
      helpers.wait_until(function()
        return host:log():find('"event":"access"[^\n]*"path":"' .. path .. '"[^\n]*"status":101')
      end, 5, "the socket's access line")
    end)
  end

end)
