-- Drives spec/js/ws-peers.js (node `ws` clients plus an HTTP fixture server) from a spec:
--   local peers = require("ws_peers").start()
--   peers:open("d", url, { authorization = "Bearer …" })
--   local ev = peers:wait("d", "open")          -- or "message", "close", "unexpected", "error"
-- Events are kept until a wait takes them, so the order of waits does not have to match arrival.
local socket = require "socket"
local cjson = require "cjson"
local helpers = require "helpers"

local Peers = {}
Peers.__index = Peers

local M = {}

-- node runs in the background and exits when the control connection closes (also when this
-- process ends without stop()).
function M.start()
  local out = helpers.tmpdir() .. "/ws-peers.out"
  local p = assert(io.popen(("node %s/spec/js/ws-peers.js >%s 2>&1 & echo $!"):format(helpers.root, out)))
  local pid = p:read("*l")
  p:close()
  local line = helpers.wait_until(function() return (helpers.read_file(out) or ""):match("^[^\n]*\n") end, 10,
                                  "ws-peers.js to start")
  local ports = cjson.decode(line)
  local sock = assert(socket.tcp())
  assert(sock:connect("127.0.0.1", ports.control))
  sock:settimeout(0.05)
  return setmetatable({ pid = pid, sock = sock, http_port = ports.http, events = {}, partial = "" }, Peers)
end

function Peers:stop() self.sock:close() end

function Peers:cmd(c) assert(self.sock:send(cjson.encode(c) .. "\n")) end

function Peers:open(id, url, headers, protocols)
  self:cmd { op = "open", id = id, url = url, headers = headers or cjson.empty_array, protocols = protocols }
end

function Peers:send(id, frame)
  if type(frame) == "table" then self:cmd { op = "send", id = id, json = frame }
  else self:cmd { op = "send", id = id, text = frame } end
end

function Peers:pump()
  local data, err, part = self.sock:receive("*a")
  data = data or part
  if err and err ~= "timeout" then error("ws-peers control socket: " .. err) end
  if not data or data == "" then return end
  local buf = self.partial .. data
  for line in buf:gmatch("([^\n]*)\n") do self.events[#self.events + 1] = cjson.decode(line) end
  self.partial = buf:match("[^\n]*$")
end

local function matches(ev, id, kind) return ev.id == id and ev.ev == kind end

-- The first event of this kind for this peer (taken), or an error after seconds.
function Peers:wait(id, kind, seconds)
  local deadline = socket.gettime() + (seconds or 5)
  repeat
    for i, ev in ipairs(self.events) do
      if matches(ev, id, kind) then
        table.remove(self.events, i)
        return ev
      end
    end
    self:pump()
  until socket.gettime() > deadline
  local seen = {}
  for _, ev in ipairs(self.events) do if ev.id == id then seen[#seen + 1] = cjson.encode(ev) end end
  error(("peer %s: no %s event within %ss (pending: %s)"):format(id, kind, seconds or 5, table.concat(seen, " ")), 2)
end

-- The next message for this peer, decoded as JSON.
function Peers:message(id, seconds)
  return cjson.decode(self:wait(id, "message", seconds).text)
end

-- True if no event of this kind arrives for this peer within seconds (nothing is taken).
function Peers:quiet(id, kind, seconds)
  local deadline = socket.gettime() + seconds
  repeat
    self:pump()
    for _, ev in ipairs(self.events) do if matches(ev, id, kind) then return false, ev end end
  until socket.gettime() > deadline
  return true
end

-- The upgrade outcome: "open", or the HTTP status of a refusal, or the error message.
function Peers:outcome(id, seconds)
  local deadline = socket.gettime() + (seconds or 5)
  repeat
    self:pump()
    for i, ev in ipairs(self.events) do
      if ev.id == id and (ev.ev == "open" or ev.ev == "unexpected" or ev.ev == "error") then
        table.remove(self.events, i)
        return ev.ev == "open" and "open" or ev.status or ev.message
      end
    end
  until socket.gettime() > deadline
  error("peer " .. id .. ": no upgrade outcome", 2)
end

function Peers:fixture(f)
  f.op = "fixture"
  self:cmd(f)
  self:wait(nil, "fixture")
end

function Peers:requests()
  self:cmd { op = "requests" }
  return self:wait(nil, "requests").list
end

function Peers:sign(t)
  t.op = "sign"
  self:cmd(t)
  return self:wait(nil, "signed").token
end

function Peers:stats(id)
  self:cmd { op = "stats", id = id }
  return self:wait(id, "stats").count
end

return M
