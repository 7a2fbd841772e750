-- relay.gittunnel: what the git tunnel's server and client scripts share (the protocol name,
-- key and token rules). The streams themselves are C: relay.tunnel.
local relay = require "relay"
local reannounce = require "relay.reannounce"

local M = { protocol = "relayhost-tunnel.v1" }

-- What a tunnel's WebSocket may owe its peer before the host stops reading it (max_queued). The
-- tunnel keeps its own, tighter bound (a window per open stream: core/tunnel) and closes a
-- tunnel over it with 1008; the WebSocket's default 1 MiB would stop reading first, and two ends
-- busy both ways could each wait on the other until the heartbeat gave up.
M.max_queued = 64 * 1024 * 1024

-- "a, b,,c" -> { "a", "b", "c" }
function M.list(s)
  local out = {}
  for item in tostring(s or ""):gmatch("[^,%s]+") do out[#out + 1] = item end
  return out
end

-- The bearer tokens clients register with, from a comma list and/or a file (one per line, #
-- comments). A file line may bind its token to the keys it may register: `token key1,key2`, or
-- `token *` for any key. A token without keys (every --tokens entry, and a bare file line: the
-- format before binding) may register any key too, and is listed by M.unbound so the server can
-- warn. Returns entries { token, keys (a set, or nil for any key), bound, where }.
function M.tokens(list, file)
  local out = {}
  for _, t in ipairs(M.list(list)) do out[#out + 1] = { token = t, where = "--tokens" } end
  if file and file ~= "" then
    local f, err = io.open(file, "r")
    if not f then error("cannot read tokens file: " .. err, 0) end
    local n = 0
    for line in f:lines() do
      n = n + 1
      local t, keys = line:match("^%s*([^#%s]+)[ \t]*([^#]*)")
      if t then out[#out + 1] = M.token_entry(t, keys, ("%s:%d"):format(file, n)) end
    end
    f:close()
  end
  return out
end

-- One tokens-file entry: keys is "", "*" or a comma list of client keys.
function M.token_entry(token, keys, where)
  local e = { token = token, where = where }
  keys = keys:gsub("%s+$", "")
  if keys == "" then return e end
  e.bound = true
  if keys == "*" then return e end
  e.keys = {}
  for _, k in ipairs(M.list(keys)) do
    if not M.key_ok(k) then error(("%s: bad client key '%s' (letters, digits, '_', '-')"):format(where, k), 0) end
    e.keys[k] = true
  end
  return e
end

-- Where the tokens that are bound to no key were given ("--tokens", "file:line"), for a warning.
function M.unbound(entries)
  local out = {}
  for _, e in ipairs(entries) do
    if not e.bound then out[#out + 1] = e.where end
  end
  return out
end

-- Whether the token entry may register key.
function M.may_register(entry, key) return entry.keys == nil or entry.keys[key] == true end

-- The docs: "letters, numbers, underscore and hyphen".
function M.key_ok(key)
  return type(key) == "string" and #key > 0 and #key <= 128 and key:match("^[%w_%-]+$") ~= nil
end

-- ---- several servers: which keys a server holds, in Redis ----
-- Each key with local clients is a member (this server's URL) of the sorted set
-- relay:git-tunnel:clients:<key>, scored with the time it expires; refreshed every ttl/3, so a
-- server that dies leaves the set within ttl. A request for a key held elsewhere is forwarded to
-- one of those servers through a forwarder (relay.tunnel.forwarder), one per server.
local Presence = {}
Presence.__index = Presence

local function zkey(key) return "relay:git-tunnel:clients:" .. key end

-- opts: redis (a relay.redis), url (how other servers reach this one), ttl (seconds)
function M.presence(opts)
  local self = setmetatable({ r = opts.redis, url = opts.url, ttl = opts.ttl, fwd = {} }, Presence)
  -- Redis back without our entries: written again at once (relay.reannounce), not ttl/3 later.
  self.records = reannounce.records {
    every = math.max(1, opts.ttl / 3), each = math.min(1, opts.ttl / 3),
    write = function(key, held) return self:write(key, held) end,
    present = function(key)
      local score, err = self.r:call("ZSCORE", zkey(key), self.url)
      if err then return nil end
      return score ~= nil
    end,
    healed = function(why) relay.log.info("presence_reannounced", { reason = why }) end,
  }
  return self
end

-- The key's entry written (held) or removed. -> whether Redis took it (if not, written again once
-- it answers)
function Presence:write(key, held)
  if not held then return self.r:call("ZREM", zkey(key), self.url) end
  return self.r:call("ZADD", zkey(key), relay.time() + self.ttl, self.url)
    and self.r:call("EXPIRE", zkey(key), math.ceil(self.ttl * 2))
end

function Presence:hold(key) self.records:hold(key) end
function Presence:drop(key) self.records:drop(key) end

-- { tun = a forwarder to a server holding key, forwarded = true }, or { err = why there is none }
function Presence:forwarder(key)
  local urls, err = self.r:call("ZRANGEBYSCORE", zkey(key), relay.time(), "+inf")
  if not urls then
    self.records.watch:failed()
    return { err = ("Redis is unreachable to find another server (%s)"):format(err) }
  end
  local others = {}
  for _, u in ipairs(urls) do
    if u ~= self.url then others[#others + 1] = u end
  end
  if #others == 0 then return { err = "no other server holds it either" } end
  local url = others[math.random(#others)]
  self.fwd[url] = self.fwd[url] or relay.tunnel.forwarder { base_url = url }
  return { tun = self.fwd[url], forwarded = true }
end

return M
