-- A raw git tunnel peer for specs: the frame codec of docs/git-tunnel-protocol.md and just
-- enough WebSocket (RFC 6455) to speak it from either end, so a spec can play a hostile
-- relay-client against the server or a hostile relay-server against the client, byte by byte.
local socket = require "socket"
local bit = require "bit"

local M = { HEAD = 1, DATA = 2, END = 3, RESET = 4, WINDOW = 5, PING = 6, PONG = 7 }

local function u16(n) return string.char(bit.band(bit.rshift(n, 8), 255), bit.band(n, 255)) end
local function u32(n)
  return string.char(bit.band(bit.rshift(n, 24), 255), bit.band(bit.rshift(n, 16), 255),
                     bit.band(bit.rshift(n, 8), 255), bit.band(n, 255))
end
local function get16(s, i) return s:byte(i) * 256 + s:byte(i + 1) end
local function get32(s, i) return ((s:byte(i) * 256 + s:byte(i + 1)) * 256 + s:byte(i + 2)) * 256 + s:byte(i + 3) end

-- ---- frames ----

function M.frame(type, stream, payload) return string.char(type) .. u32(stream) .. (payload or "") end

-- HEAD: a, b (method and target, or status and reason), then fields { {name, value}, … }.
function M.head(stream, a, b, fields)
  local parts = { u16(2 + 2 * #fields), u16(#a), a, u16(#b), b }
  for _, f in ipairs(fields) do
    parts[#parts + 1] = u16(#f[1]) .. f[1] .. u16(#f[2]) .. f[2]
  end
  return M.frame(M.HEAD, stream, table.concat(parts))
end

function M.u32_frame(type, stream, v, reason) return M.frame(type, stream, u32(v) .. (reason or "")) end

-- { type, stream, payload, value (RESET/WINDOW), a, b, fields (HEAD) }
function M.decode(msg)
  local f = { type = msg:byte(1), stream = get32(msg, 2), payload = msg:sub(6) }
  if f.type == M.RESET or f.type == M.WINDOW then
    f.value, f.payload = get32(f.payload, 1), f.payload:sub(5)
  elseif f.type == M.HEAD then
    local p, i, list = f.payload, 3, {}
    for _ = 1, get16(f.payload, 1) do
      local l = get16(p, i)
      list[#list + 1] = p:sub(i + 2, i + 1 + l)
      i = i + 2 + l
    end
    f.a, f.b, f.fields = list[1], list[2], {}
    for k = 3, #list, 2 do f.fields[#f.fields + 1] = { list[k], list[k + 1] } end
  end
  return f
end

-- ---- WebSocket ----

local Peer = {}
Peer.__index = Peer

local function mask(data, key)
  local out, k = {}, { key:byte(1, 4) }
  for i = 1, #data, 4096 do
    local piece = { data:byte(i, math.min(i + 4095, #data)) }
    for j = 1, #piece do piece[j] = bit.bxor(piece[j], k[(i + j - 2) % 4 + 1]) end
    out[#out + 1] = string.char(unpack(piece))
  end
  return table.concat(out)
end

-- One WebSocket message (opcode 2 binary unless given), masked from a client.
function Peer:send(msg, opcode) return self.sock:send(self:ws_frame(msg, opcode)) end

-- Many messages in one write (a flood).
function Peer:send_many(msgs)
  local out = {}
  for i, m in ipairs(msgs) do out[i] = self:ws_frame(m) end
  return self.sock:send(table.concat(out))
end

function Peer:ws_frame(msg, opcode)
  local n, len = #msg
  if n < 126 then len = string.char(n) elseif n < 65536 then len = string.char(126) .. u16(n)
  else len = string.char(127) .. u32(0) .. u32(n) end
  local head = string.char(128 + (opcode or 2))
  if self.client and self.zero_mask then -- legal, and masking is then a copy: for floods
    head = head .. string.char(len:byte(1) + 128) .. len:sub(2) .. "\0\0\0\0"
  elseif self.client then
    local key = string.char(math.random(0, 255), math.random(0, 255), math.random(0, 255), math.random(0, 255))
    head = head .. string.char(len:byte(1) + 128) .. len:sub(2) .. key
    msg = mask(msg, key)
  else
    head = head .. len
  end
  return head .. msg
end

function Peer:send_frame(frame) return self:send(frame) end

-- The next tunnel message (binary), answering WebSocket pings on the way. nil, err on timeout
-- or close.
function Peer:recv(timeout)
  self.sock:settimeout(timeout or 5)
  while true do
    local h, err = self.sock:receive(2)
    if not h then return nil, err end
    local op, n = h:byte(1) % 16, h:byte(2) % 128
    local masked = h:byte(2) >= 128
    if n == 126 then n = get16(self.sock:receive(2), 1)
    elseif n == 127 then local b = self.sock:receive(8) n = get32(b, 5) end
    local key = masked and self.sock:receive(4)
    local data = n > 0 and self.sock:receive(n) or ""
    if key then data = mask(data, key) end
    if op == 8 then return nil, "closed " .. (#data >= 2 and get16(data, 1) or "") .. " " .. data:sub(3) end
    if op == 9 then self:send(data, 10)
    elseif op == 2 then return M.decode(data) end
  end
end

-- Frames until one of type (and stream, if given) comes.
function Peer:expect(type, stream, timeout)
  local deadline = socket.gettime() + (timeout or 5)
  while socket.gettime() < deadline do
    local f, err = self:recv(deadline - socket.gettime())
    if not f then return nil, err end
    if f.type == type and (not stream or f.stream == stream) then return f end
  end
  return nil, "timeout"
end

function Peer:close() self.sock:close() end

local function read_head(sock)
  local lines = {}
  while true do
    local l, err = sock:receive("*l")
    if not l then return nil, err end
    if l == "" then return lines end
    lines[#lines + 1] = l
  end
end

-- A relay-client's registration at the server on port: a Peer, or nil and the refusal's status line.
function M.register(port, token, key)
  local sock = assert(socket.connect("127.0.0.1", port))
  sock:settimeout(5)
  sock:send(("GET /v1/relay/register HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nX-Relay-Client-Key: %s\r\n" ..
             "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" ..
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: relayhost-tunnel.v1\r\n\r\n"):format(token, key))
  local lines = assert(read_head(sock))
  if not lines[1]:match("^HTTP/1.1 101") then
    sock:close()
    return nil, lines[1]
  end
  return setmetatable({ sock = sock, client = true }, Peer)
end

-- A relay-server of our own: listens on a free port; :accept() takes one relay-client.
function M.listen()
  local srv = assert(socket.bind("127.0.0.1", 0))
  local _, port = srv:getsockname()
  return { port = tonumber(port), srv = srv, accept = function(self, timeout)
    self.srv:settimeout(timeout or 10)
    local sock = assert(self.srv:accept())
    sock:settimeout(5)
    local lines = assert(read_head(sock))
    local key
    for _, l in ipairs(lines) do key = key or l:match("^[Ss]ec%-[Ww]eb[Ss]ocket%-[Kk]ey:%s*(%S+)") end
    local p = io.popen(("printf '%%s' '%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11' | openssl sha1 -binary | base64"):format(key))
    local accept = p:read("*l")
    p:close()
    sock:send("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
              "Sec-WebSocket-Accept: " .. accept .. "\r\nSec-WebSocket-Protocol: relayhost-tunnel.v1\r\n" ..
              "X-Relay-Client-Id: 00000000-0000-0000-0000-000000000000\r\n\r\n")
    return setmetatable({ sock = sock, client = false }, Peer)
  end }
end

return M
