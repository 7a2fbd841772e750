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
-- proxy, the git tunnel): --redis-tls-ca-cert, and as env var REDIS_TLS_CA_CERT.
M.flags = {
  { key = "redis_username", name = "redis-username", default = "", help = "Redis ACL user (needs the Redis password)" },
  { key = "redis_password", name = "redis-password", default = "", help = "Redis password (replaces one in the address)" },
  { key = "redis_tls_enabled", name = "redis-tls-enabled", default = false, help = "TLS to Redis (a redis:// address becomes rediss://)" },
  { key = "redis_tls_ca_cert", name = "redis-tls-ca-cert", default = "", help = "PEM CA file that verifies Redis (default: the system store)" },
  { key = "redis_tls_client_cert", name = "redis-tls-client-cert", default = "", help = "PEM client certificate for Redis (--tls-auth-clients)" },
  { key = "redis_tls_client_key", name = "redis-tls-client-key", default = "", help = "PEM key of the client certificate" },
  { key = "redis_tls_insecure_skip_verify", name = "redis-tls-insecure-skip-verify", default = false, help = "do not verify Redis's certificate (testing only)" },
  { key = "redis_tls_server_name", name = "redis-tls-server-name", default = "", help = "name Redis's certificate is verified against (default: the host)" },
}

-- build's fields, each from the flag (M.flags, and redis_db and redis_read_timeout_seconds where a
-- personality declares them) that gives it.
local FROM = { username = "redis_username", password = "redis_password", tls = "redis_tls_enabled",
  ca = "redis_tls_ca_cert", cert = "redis_tls_client_cert", key = "redis_tls_client_key",
  insecure = "redis_tls_insecure_skip_verify", server_name = "redis_tls_server_name", db = "redis_db",
  socket_timeout = "redis_read_timeout_seconds" }

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
