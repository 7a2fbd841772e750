-- Faults the host must survive with a clear answer, serving everyone else: a handler out of
-- memory, a stalled request body, running out of file descriptors.
local helpers = require "helpers"

describe("faults", function()
  local dir = helpers.tmpdir()
  helpers.write_file(dir .. "/faults.lua", [[
local relay = require "relay"
local app = relay.new { name = "faults" }
app:get("/", function(_, res) res:send(200, "fine") end)
app:get("/oom", function(_, res)
  local t = {}
  for i = 1, 64 do t[i] = ("x"):rep(2^26 + i) end -- 64 MiB each, soon past the address-space limit
  res:send(200, "unreachable")
end)
app:post("/upload", function(req, res)
  local body, err = req:body()
  res:send(200, body and #body or err)
end)
return app
]])

  -- ASan reserves terabytes of address space, so a limit cannot be set under it
  local asan = io.popen("ldd " .. helpers.bin() .. " 2>/dev/null"):read("*a"):find("libasan", 1, true)
  local oom_it = asan and pending or it

  oom_it("a handler out of memory gets 500 and the process serves on", function()
    local host = helpers.start(dir .. "/faults.lua", { vmem = 512 * 1024 })
    local c = host:client(30) -- filling memory takes a moment on a busy machine
    local res = c:get("/oom")
    c:close()
    assert.equal(500, res.status)
    assert.matches('"event":"handler_error"[^\n]*not enough memory', host:log())
    assert.equal("fine", host:get("/").body)
    assert.equal(0, host:stop())
  end)

  it("a request body that stalls gets 408 while others are served", function()
    local host = helpers.start(dir .. "/faults.lua", { flags = { "--body-timeout=0.5" } })
    local slow = host:client()
    slow:send("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
    assert.equal("fine", host:get("/").body)
    local res = slow:read_response()
    assert.equal(408, res.status)
    slow:close()
    assert.matches('"event":"http_timeout"[^\n]*"phase":"body"', host:log())
    assert.equal(0, host:stop())
  end)

  it("a body held back by a slow upstream is not a stalled client: no 408", function()
    -- an upstream that reads nothing for 2 s, then the whole body (luasocket, its own process)
    local port_file = dir .. "/slow.port"
    helpers.write_file(dir .. "/slow_upstream.lua", ([[
local socket = require "socket"
local s = assert(socket.bind("127.0.0.1", 0))
local f = io.open(%q, "w"); f:write(select(2, s:getsockname()), "\n"); f:close()
local c = s:accept()
local len = 0
repeat
  local line = c:receive("*l")
  len = tonumber(line:lower():match("^content%%-length:%%s*(%%d+)")) or len
until line == ""
socket.sleep(2)
local body = c:receive(len)
c:send("HTTP/1.1 200 OK\r\nContent-Length: " .. #tostring(#body) .. "\r\nConnection: close\r\n\r\n" .. #body)
c:close()
]]):format(port_file))
    os.execute(("luajit %q >%q 2>&1 &"):format(dir .. "/slow_upstream.lua", dir .. "/slow.out"))
    local port = tonumber(helpers.wait_until(function() return (helpers.read_file(port_file) or ""):match("%d+") end, 5))
    local proxy = helpers.start("prefix-proxy", { flags = { "--mount", "/up=http://127.0.0.1:" .. port,
                                                          "--body-timeout=0.5", "--timeout=30" } })
    local body = ("x"):rep(16 * 1024 * 1024) -- far more than the sockets between them hold
    local c = proxy:client(20)
    local res = c:request { method = "POST", path = "/up/x", body = body }
    c:close()
    assert.equal(200, res.status, res.body)
    assert.equal(tostring(#body), res.body)
    assert.equal(0, proxy:count("http_timeout"))
    assert.equal(0, proxy:stop())
  end)

  it("out of file descriptors: new connections are turned away, open ones are served", function()
    local host = helpers.start(dir .. "/faults.lua", { nofile = 40 })
    local held = {}
    for i = 1, 60 do held[i] = helpers.connect(host.port) end
    helpers.sleep(0.2)
    -- the first connections were accepted and still work
    assert.equal("fine", held[1]:get("/").body)
    -- those past the limit were closed by the host instead of hanging
    local turned_away = 0
    for i = 40, 60 do
      held[i]:settimeout(1)
      local res = held[i]:get("/")
      if not res then turned_away = turned_away + 1 end
    end
    assert.is_true(turned_away > 0)
    for i = 1, 60 do held[i]:close() end
    helpers.sleep(0.2)
    assert.equal("fine", host:get("/").body) -- and once they are gone, new ones are welcome
    assert.equal(0, host:stop())
  end)
end)
