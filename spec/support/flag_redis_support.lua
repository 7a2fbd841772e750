-- What the flag proxy's Redis specs share: /health read as a table, "whole" as those specs mean
-- it, and an SDK key's auth-key-<sha256> name in ff-proxy's layout.
local cjson = require "cjson"
local helpers = require "helpers"

local M = {}

-- The status and the decoded body ({} when it is not JSON).
function M.health(host)
  local res = host:get("/health")
  local ok, h = pcall(cjson.decode, res.body)
  return res.status, ok and type(h) == "table" and h or {}
end

-- 200 (synced) with the cache healthy and, when stream is set, upstream changes flowing.
function M.says_whole(host, stream)
  local status, h = M.health(host)
  return status == 200 and h.cacheStatus == "healthy" and (not stream or h.streamStatus.state == "CONNECTED")
end

-- One Redis command over RESP on a fresh connection: the first line of the reply and, for a
-- bulk reply, its body (nil, nothing, when Redis is not there).
function M.command(port, ...)
  local args = { ... }
  local c = helpers.connect(port, nil, 1)
  if not c then return nil end
  local parts = { "*" .. #args }
  for _, a in ipairs(args) do parts[#parts + 1] = "$" .. #a .. "\r\n" .. a end
  c:send(table.concat(parts, "\r\n") .. "\r\n")
  local line = c.sock:receive("*l")
  local n = tonumber((line or ""):match("^%$(%-?%d+)"))
  local v = n and n >= 0 and c.sock:receive(n) or nil
  c:close()
  return line, v
end

function M.auth_key(key)
  local p = io.popen("printf %s '" .. key:gsub("'", "'\\''") .. "' | sha256sum")
  local hash = p:read("*l"):match("^(%x+)")
  p:close()
  return "auth-key-" .. hash
end

return M
