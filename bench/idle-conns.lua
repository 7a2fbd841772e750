-- Opens N keep-alive connections to PORT, sends one request on each (so the server has served
-- it and holds an idle keep-alive connection), then holds them all open for HOLD seconds.
--   luajit bench/idle-conns.lua PORT N HOLD
local socket = require "socket"
local port, n, hold = tonumber(arg[1]), tonumber(arg[2]), tonumber(arg[3] or 5)
local conns = {}
for i = 1, n do
  local s = socket.tcp()
  s:settimeout(5)
  assert(s:connect("127.0.0.1", port))
  s:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
  conns[i] = s
end
for i = 1, n do -- read each response head and body ("hello\n")
  local s = conns[i]
  local len
  while true do
    local line = assert(s:receive("*l"))
    if line == "" then break end
    len = tonumber(line:match("^[Cc]ontent%-[Ll]ength: (%d+)")) or len
  end
  s:receive(len)
end
io.write("ready\n")
io.flush()
socket.sleep(hold)
