-- relay.gittunnel: what the git tunnel's server and client scripts share (the protocol name,
-- key and token rules, backoff). The streams themselves are C: relay.tunnel.
local relay = require "relay"

local M = { protocol = "relayhost-tunnel.v1" }

-- "a, b,,c" -> { "a", "b", "c" }
function M.list(s)
  local out = {}
  for item in tostring(s or ""):gmatch("[^,%s]+") do out[#out + 1] = item end
  return out
end

-- Tokens from a comma list and/or a file (one per line, # comments).
function M.tokens(list, file)
  local out = M.list(list)
  if file and file ~= "" then
    local f, err = io.open(file, "r")
    if not f then error("cannot read tokens file: " .. err, 0) end
    for line in f:lines() do
      local t = line:match("^%s*([^#%s]+)")
      if t then out[#out + 1] = t end
    end
    f:close()
  end
  return out
end

-- Constant-time comparison against every configured token (no early exit on a match).
function M.token_ok(tokens, given)
  if not given or given == "" then return false end
  local ok = false
  for _, t in ipairs(tokens) do
    if relay.crypto.constant_time_equal(t, given) then ok = true end
  end
  return ok
end

function M.bearer(header)
  return header and header:match("^[Bb]earer%s+(%S+)%s*$") or nil
end

-- The docs: "letters, numbers, underscore and hyphen".
function M.key_ok(key)
  return type(key) == "string" and #key > 0 and #key <= 128 and key:match("^[%w_%-]+$") ~= nil
end

-- Exponential backoff with jitter: attempt n (1, 2, …) waits between half and all of
-- min(cap, base * 2^(n-1)), so replicas that lost the server together do not return together.
function M.backoff(n, base, cap)
  local d = math.min(cap, base * 2 ^ (n - 1))
  return d / 2 + math.random() * d / 2
end

return M
