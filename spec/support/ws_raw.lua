-- A raw WebSocket client over luasocket for hostile tests: it writes frames of any shape (masked,
-- as a client must; the mask is zero so payloads go as they are), never blocks on a peer that
-- stopped reading, and reads only when told to.
--   local c = ws_raw.open(port, "/path", { authorization = "Bearer …" })
--   c:push(ws_raw.frame(ws_raw.PING, ("x"):rep(125)))   -- as much as the socket takes now
--   local op, payload = c:read_frame(2)
local socket = require "socket"

local M = { TEXT = 1, BINARY = 2, CLOSE = 8, PING = 9, PONG = 10, CONT = 0 }

local Conn = {}
Conn.__index = Conn

local function be(n, bytes)
  local t = {}
  for i = bytes, 1, -1 do
    t[i] = string.char(n % 256)
    n = math.floor(n / 256)
  end
  return table.concat(t)
end

-- One frame as a client sends it. fin defaults to true.
function M.frame(opcode, payload, fin)
  payload = payload or ""
  local n, len = #payload, nil
  if n < 126 then len = string.char(0x80 + n)
  elseif n < 65536 then len = string.char(0x80 + 126) .. be(n, 2)
  else len = string.char(0x80 + 127) .. be(n, 8) end
  return string.char((fin == false and 0 or 0x80) + opcode) .. len .. "\0\0\0\0" .. payload
end

-- The upgrade; the connection, or nil and the status line that refused it.
function M.open(port, path, headers)
  local sock = assert(socket.tcp())
  sock:settimeout(5)
  assert(sock:connect("127.0.0.1", port))
  local head = { "GET " .. path .. " HTTP/1.1", "Host: 127.0.0.1:" .. port, "Upgrade: websocket",
                 "Connection: Upgrade", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==" }
  for k, v in pairs(headers or {}) do head[#head + 1] = k .. ": " .. v end
  assert(sock:send(table.concat(head, "\r\n") .. "\r\n\r\n"))
  local status = sock:receive("*l")
  repeat local line = sock:receive("*l") until not line or line == ""
  if not (status or ""):match("^HTTP/1%.1 101") then
    sock:close()
    return nil, status or "no answer"
  end
  return setmetatable({ sock = sock, pending = "", inbuf = "", sent = 0 }, Conn)
end

-- Queues bytes and writes what the socket takes without waiting. Returns the bytes written
-- now, and "closed" once the peer is gone. Nothing more is queued while a lot still waits.
function Conn:push(bytes)
  if bytes and #self.pending < 1024 * 1024 then self.pending = self.pending .. bytes end
  self.sock:settimeout(0)
  local i, err, part = self.sock:send(self.pending)
  local n = i or part or 0
  self.pending = self.pending:sub(n + 1)
  self.sent = self.sent + n
  return n, err ~= "timeout" and err or nil
end

-- Bytes that can be read within `seconds` (appended to the input), or nil, "closed".
function Conn:fill(seconds)
  socket.select({ self.sock }, nil, seconds)
  self.sock:settimeout(0)
  local data, err, part = self.sock:receive(65536)
  data = data or part
  if data and #data > 0 then self.inbuf = self.inbuf .. data end
  return err ~= "closed" or (data and #data > 0), err
end

-- One frame from the server (unmasked): opcode, payload, fin; nil, err on timeout or close.
-- The input is read from a position, not cut, so a long backlog reads in linear time.
function Conn:read_frame(seconds)
  local deadline = socket.gettime() + (seconds or 5)
  while true do
    local b, at = self.inbuf, self.at or 1
    local avail = #b - at + 1
    if avail >= 2 then
      local b1, b2 = b:byte(at, at + 1)
      local n, hl = b2 % 128, 2
      if n == 126 then hl = 4 elseif n == 127 then hl = 10 end
      if avail >= hl then
        if n == 126 then n = b:byte(at + 2) * 256 + b:byte(at + 3)
        elseif n == 127 then
          n = 0
          for i = at + 2, at + 9 do n = n * 256 + b:byte(i) end
        end
        if avail >= hl + n then
          self.at = at + hl + n
          if self.at > 65536 then self.inbuf, self.at = b:sub(self.at), 1 end
          return b1 % 16, b:sub(at + hl, at + hl + n - 1), b1 >= 128
        end
      end
    end
    local left = deadline - socket.gettime()
    if left <= 0 then return nil, "timeout" end
    local ok, err = self:fill(math.min(left, 0.5))
    if not ok then return nil, err end
  end
end

-- Frames until one for which want(opcode, payload) is true; that frame, or nil, err.
function Conn:read_until(want, seconds)
  local deadline = socket.gettime() + (seconds or 5)
  while true do
    local op, payload = self:read_frame(deadline - socket.gettime())
    if not op then return nil, payload end
    if want(op, payload) then return op, payload end
  end
end

-- The close frame's code and reason (reading past everything else), or nil, err.
function Conn:read_close(seconds)
  local op, payload = self:read_until(function(op) return op == M.CLOSE end, seconds)
  if not op then return nil, payload end
  if #payload < 2 then return 1005, "" end
  return payload:byte(1) * 256 + payload:byte(2), payload:sub(3)
end

-- Whether the server stops reading within `seconds`: pushing `bytes` on, a whole `window`
-- goes by in which nothing more of ours goes out (what waits then is only what the kernel
-- buffers took). Also returns the bytes that went out after the first window.
function Conn:stalls(seconds, window, bytes)
  local deadline, moved, window_end, window_moved = socket.gettime() + seconds, 0, nil, 0
  window_end = socket.gettime() + window
  while socket.gettime() < deadline do
    local n = self:push(bytes)
    window_moved = window_moved + n
    if socket.gettime() >= window_end then
      if window_moved == 0 then return true, moved end
      moved, window_moved, window_end = moved + window_moved, 0, socket.gettime() + window
    end
    socket.sleep(0.02)
  end
  return false, moved
end

function Conn:close() self.sock:close() end

return M
