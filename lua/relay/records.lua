-- relay.records: small JSON records in Redis, each under prefix .. key with a lifetime, for
-- servers that tell one another where things are (the workspace relay's daemon presence). A
-- record is read bounded (GETRANGE): one grown past max_bytes, by whoever else writes there,
-- never crosses into the process whole, and reads as no record.
local cjson = require "cjson"

local M = {}
local Records = {}
Records.__index = Records

-- opts: redis (a relay.redis), prefix, ttl_ms (each write's lifetime), max_bytes (4096)
function M.new(opts)
  return setmetatable({ redis = opts.redis, prefix = opts.prefix, ttl_ms = opts.ttl_ms,
                        max_bytes = opts.max_bytes or 4096 }, Records)
end

-- Writes value (a table, as JSON) under key for ttl_ms, or removes it (value nil). -> ok | nil, err
function Records:put(key, value)
  if value == nil then return self.redis:call("DEL", self.prefix .. key) end
  return self.redis:call("SET", self.prefix .. key, cjson.encode(value), "PX", self.ttl_ms)
end

-- -> the record | false [, why not taken] (absent, too long, not a JSON object) | nil, err
function Records:get(key)
  local v, err = self.redis:call("GETRANGE", self.prefix .. key, 0, self.max_bytes)
  if err then return nil, err end
  if #v > self.max_bytes then return false, "record over " .. self.max_bytes .. " bytes" end
  local ok, rec = pcall(cjson.decode, v ~= "" and v or "null")
  return ok and type(rec) == "table" and rec or false
end

-- -> whether the key is there | nil, err
function Records:exists(key)
  local n, err = self.redis:call("EXISTS", self.prefix .. key)
  if not n then return nil, err end
  return n == 1
end

return M
