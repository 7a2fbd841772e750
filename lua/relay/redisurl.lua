-- Redis settings given apart, as ff-proxy's variables and the git tunnel's flags give them (an
-- address, a user, a password, a database, TLS files), made into the one URL relay.redis reads:
-- redis[s]://[user:password@]host:port[,host:port][/db][?socket_timeout=…&ssl_ca_certs=…&…].
local M = {}

-- Percent-encoded for userinfo and query values: '@', ':', '%', '&' in them stay themselves.
local function enc(s) return (s:gsub("[^%w%-._~]", function(c) return ("%%%02X"):format(c:byte()) end)) end

-- The query parameter each TLS setting becomes (core/redis/redis.h, rh_redis_url_tls).
local PARAMS = { { "ca", "ssl_ca_certs" }, { "cert", "ssl_certfile" }, { "key", "ssl_keyfile" },
  { "server_name", "ssl_server_name" } }

-- address: host:port, a comma list of them (a Cluster), or a redis[s]:// URL. o: username,
-- password (replaces any userinfo in the address), db (0: as the address says), tls (true:
-- redis:// becomes rediss://), ca, cert, key, server_name, insecure, socket_timeout (seconds Redis
-- may owe an answer; nil: as the address says, else relay.redis's default). names: what the operator
-- calls each of o's fields (REDIS_TLS_CA_CERT, --redis-tls-ca-cert), for the messages.
-- -> url | nil, problems (a list of messages, each naming the setting)
function M.build(address, o, names)
  local problems = {}
  local function bad(k, msg) problems[#problems + 1] = (names[k] or k) .. ": " .. msg end
  local url = address:match("^[%a][%w+.-]*://") and address or "redis://" .. address -- redis-sentinel:// too
  if o.tls then url = url:gsub("^redis://", "rediss://") end
  local scheme, auth, rest = url:match("^([%a][%w+.-]*://)([^/?#]*@)(.*)$")
  if not scheme then scheme, rest = url:match("^([%a][%w+.-]*://)(.*)$") end
  auth = auth or ""
  if (o.password or "") ~= "" then
    auth = ((o.username or "") ~= "" and enc(o.username) or "") .. ":" .. enc(o.password) .. "@"
  elseif (o.username or "") ~= "" then
    bad("username", ("needs %s (a Redis ACL user logs in with its password)"):format(names.password or "password"))
  end
  local base, query = rest:match("^([^?#]*)(.*)$")
  if (o.db or 0) ~= 0 and not base:match("/%d+$") then base = base .. "/" .. o.db end
  local params, set = {}, {}
  for _, p in ipairs(PARAMS) do
    local v = o[p[1]] or ""
    if v ~= "" then params[#params + 1], set[#set + 1] = p[2] .. "=" .. enc(v), names[p[1]] or p[1] end
    if v ~= "" and p[1] ~= "server_name" then
      local f, err = io.open(v, "r")
      if f then f:close() else bad(p[1], err) end
    end
  end
  if o.insecure then params[#params + 1], set[#set + 1] = "ssl_cert_reqs=none", names.insecure or "insecure" end
  if #params > 0 and scheme ~= "rediss://" then
    problems[#problems + 1] = ("%s set but TLS is not on: set %s=true or use rediss://")
      :format(table.concat(set, ", "), names.tls or "tls")
  end
  if (o.key or "") ~= "" and (o.cert or "") == "" then bad("key", "needs " .. (names.cert or "cert")) end
  if #problems > 0 then return nil, problems end
  if o.socket_timeout and not query:match("[?&]socket_timeout=") then -- the address's own wins
    params[#params + 1] = "socket_timeout=" .. o.socket_timeout
  end
  if #params > 0 then query = (query == "" and "?" or query .. "&") .. table.concat(params, "&") end
  return scheme .. auth .. base .. query
end

-- The settings besides the address, as flags, for a personality that takes them apart (the flag
-- proxy, the git tunnel): { build's field, flag key after "redis_", default, help }. The flag is
-- --redis-tls-ca-cert, its env var REDIS_TLS_CA_CERT.
local SETTINGS = {
  { "username", "username", "", "Redis ACL user (needs the Redis password)" },
  { "password", "password", "", "Redis password (replaces one in the address)" },
  { "tls", "tls_enabled", false, "TLS to Redis (a redis:// address becomes rediss://)" },
  { "ca", "tls_ca_cert", "", "PEM CA file that verifies Redis (default: the system store)" },
  { "cert", "tls_client_cert", "", "PEM client certificate for Redis (--tls-auth-clients)" },
  { "key", "tls_client_key", "", "PEM key of the client certificate" },
  { "insecure", "tls_insecure_skip_verify", false, "do not verify Redis's certificate (testing only)" },
  { "server_name", "tls_server_name", "",
    "name Redis's certificate is verified against (default: the host)" },
}
-- build's field -> the flag key that gives it; db and socket_timeout where a personality declares them
local FROM = { db = "redis_db", socket_timeout = "redis_read_timeout_seconds" }
M.flags = {}
for i, s in ipairs(SETTINGS) do
  FROM[s[1]] = "redis_" .. s[2]
  M.flags[i] = { key = "redis_" .. s[2], name = ("redis-" .. s[2]):gsub("_", "-"),
                 default = s[3], help = s[4] }
end

-- build(address, the flags f give); the messages name each setting by its env var (by_env: where
-- operators set env vars, as the flag proxy's do) or else by its flag.
function M.from_flags(address, f, by_env)
  local o, names = {}, {}
  for field, key in pairs(FROM) do
    o[field], names[field] = f[key], by_env and key:upper() or "--" .. key:gsub("_", "-")
  end
  return M.build(address, o, names)
end

return M
