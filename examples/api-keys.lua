-- API keys in Redis with a per-key rate limit that every worker shares. A key is a field of
-- the hash `apikeys`: its value is the client's name, or {"name": ..., "limit": N} for a limit
-- of its own. Each key counts in a fixed window in Redis (INCR + EXPIRE in one EVAL), so
-- `--workers 4` still lets --limit requests per window through, not four times that.
--
--   redis-cli HSET apikeys k-123 alice k-456 '{"name":"bob","limit":1000}'
--   relayhost examples/api-keys.lua --upstream http://127.0.0.1:9001 --redis redis://127.0.0.1:6379 --workers 4
local relay = require "relay"

local app = relay.new {
  name = "api-keys",
  description = "a prefix proxy that admits API keys kept in Redis, each rate-limited across workers",
  flags = {
    upstream = { type = "url", required = true, help = "where admitted requests go" },
    prefix = { default = "/", help = "the mount prefix" },
    redis = { type = "url", schemes = { "redis", "rediss" }, default = "redis://127.0.0.1:6379", help = "the Redis holding the apikeys hash and the counters" },
    header = { default = "x-api-key", help = "the request header carrying the key (not sent upstream)" },
    limit = { default = 100, type = "integer", min = 1, help = "requests per key per window, unless the key has its own" },
    window = { default = 60, type = "integer", min = 1, help = "the window in seconds" },
  },
}
local flags = app.flags
local redis = relay.redis(flags.redis)

-- one round trip: the count in this window, and the seconds left of it
local COUNT = [[
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return { n, redis.call('TTL', KEYS[1]) }]]

local function lookup(key)
  local found, err = redis:call("HGET", "apikeys", key)
  if not found then return nil, err end -- nil and no err: no such key
  local ok, doc = pcall(relay.json.decode, found)
  if ok and type(doc) == "table" then return { name = doc.name, limit = tonumber(doc.limit) } end
  return { name = found }
end

local function access(req)
  local key = req.headers[flags.header]
  if not key or key == "" then return 401, "missing " .. flags.header .. "\n" end
  local client, err = lookup(key)
  if err then relay.log.error("apikeys_redis", { id = req.id, err = err }); return 503, "try again\n" end
  if not client then return 401, "unknown API key\n" end
  local counted, cerr = redis:call("EVAL", COUNT, "1", "ratelimit:" .. key, tostring(flags.window))
  if not counted then relay.log.error("apikeys_redis", { id = req.id, err = cerr }); return 503, "try again\n" end
  local limit = client.limit or flags.limit
  if counted[1] > limit then
    return 429, "rate limit exceeded\n", { ["retry-after"] = tostring(math.max(counted[2], 1)) }
  end
  req.headers["x-api-client"] = client.name -- set over whatever the client sent
end

app:mount(flags.prefix, relay.proxy { target_base_url = flags.upstream, access = access,
  drop_request_headers = { flags.header } })

return app
