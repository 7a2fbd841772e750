-- git-tunnel/server: the relay-server of Styra DAS's git relay. relay-clients register at
-- /v1/relay/register over a WebSocket (bearer token, client key); any request to
-- /v1/relay/<client-key>/<path> is relayed through a randomly chosen client of that key, which
-- executes it against its base-url. Wire protocol: docs/git-tunnel-protocol.md.
--
--   relayhost git-tunnel/server --listen 0.0.0.0:8080 --tokens "$STYRA_TOKEN"
local relay = require "relay"
local gt = require "relay.gittunnel"
local redisurl = require "relay.redisurl"

local tokens -- read below, counted in the 'serving' line

-- Tokens ("bearers": a field named token is redacted), how many are bound to keys (and to how
-- many keys), where the relay path is served.
local function summary(a)
  local bound, keys = 0, 0
  for _, t in ipairs(tokens or {}) do
    if t.bound then bound = bound + 1 end
    for _ in pairs(t.keys or {}) do keys = keys + 1 end
  end
  return { bearers = #(tokens or {}), bearers_bound = bound, bound_keys = keys,
           relay_listen = a.flags.relay_listen ~= "" and a.flags.relay_listen or "main",
           redis = a.flags.redis_address ~= "" and "on" or "off" }
end

local flags = {
    tokens = { default = "", env = "RELAY_TOKENS", help = "bearer tokens for /v1/relay/register and /v1/relay/clients, comma-separated" },
    tokens_file = { default = "", help = "file with more tokens, one per line: `token key1,key2` binds it to the keys it may register, `token *` to any; a bare `token` may register any key (warned at start)" },
    relay_listen = { default = "", env = "RELAY_PATH_LISTEN", help = "HOST:PORT: serve /v1/relay/<key>/… there only (default: on --listen, beside registration)" },
    relay_tokens = { default = "", env = "RELAY_PATH_TOKENS", help = "when set, /v1/relay/<key>/… needs one of these (comma-separated) in X-Relay-Token" },
    register_rate = { default = 60, help = "registrations per minute from one address (429 above)" },
    head_timeout = { default = 60, help = "seconds a client gets to answer a relayed request's head (504 after)" },
    ping_interval = { default = 5, help = "seconds between heartbeats; a tunnel silent for 3 is dropped" },
    stall_timeout = { default = 60, help = "seconds a stream may wait for its reader before it is reset" },
    redis_address = { default = "", help = "redis://host:port (or host:port,host:port for a Redis Cluster, or redis-sentinel://host:port,host:port/mastername): share which keys this server holds, forward the others (several servers)" },
    advertise_url = { default = "", help = "http://host:port other servers reach this one at (with --redis-address)" },
    presence_ttl = { default = 30, help = "seconds a key's presence in Redis lives without a refresh" },
}
for _, d in ipairs(redisurl.flags) do flags[d.key] = d end -- --redis-username, --redis-tls-*...

local app = relay.new {
  name = "git-tunnel/server",
  description = "relay-server: relay-clients register over a WebSocket; /v1/relay/<key>/… goes through them",
  flags = flags,
  -- a tunnel lives in the process that accepted it, and workers share one advertised address
  single_process = "a tunnel lives in the process that accepted it; run several servers (each its own --advertise-url) with --redis-address instead",
  summary = summary,
}

local f = app.flags
tokens = gt.tokens(f.tokens, f.tokens_file)
local relay_tokens = gt.list(f.relay_tokens)
if #tokens == 0 then error("git-tunnel/server: give --tokens or --tokens-file (clients need a bearer token)", 0) end
local unbound = gt.unbound(tokens)
if #unbound > 0 then
  relay.log.warn("relay_tokens_unbound", { given_at = table.concat(unbound, ", "),
    message = "these tokens may register any client key; bind them in --tokens-file as `token key1,key2` (or `token *`)" })
end

local function redis_url()
  local url, why = redisurl.from_flags(f.redis_address, f)
  return url or error("git-tunnel/server: " .. table.concat(why, "; "), 0)
end

local presence = f.redis_address ~= "" and gt.presence {
  redis = relay.redis(redis_url()),
  url = f.advertise_url ~= "" and f.advertise_url or error("git-tunnel/server: --redis-address needs --advertise-url", 0),
  ttl = f.presence_ttl,
} or nil

local registrations = relay.shared("git_tunnel_registrations")
local m_clients = relay.metrics.gauge("relay_server_clients", "registered relay clients")
local m_relayed = relay.metrics.counter("relay_server_requests_total", "relayed requests by outcome", { "outcome" })
local m_refused = relay.metrics.counter("relay_server_registrations_refused_total",
  "registrations refused for their key (key_not_bound: the token is bound to other keys; key_conflict: another token holds it)", { "reason" })

-- key -> array of { tun, client_key, client_id, remote_address, token (the entry it registered with) }
local clients = {}

local function add(c)
  local list = clients[c.client_key] or {}
  clients[c.client_key] = list
  list[#list + 1] = c
  m_clients:inc()
  if #list == 1 and presence then presence:hold(c.client_key) end
end

local function remove(c)
  local list = clients[c.client_key] or {}
  for i, x in ipairs(list) do
    if x == c then table.remove(list, i); m_clients:dec(); break end
  end
  if #list == 0 then
    clients[c.client_key] = nil
    if presence then presence:drop(c.client_key) end
  end
end

local function text(res, status, msg, headers)
  headers = headers or {}
  headers["content-type"] = "text/plain; charset=utf-8"
  return res:send(status, msg .. "\n", headers)
end

local function authorized(req) return relay.auth.match(tokens, req:bearer()) ~= nil end

-- Why token may not register key now (its binding, or the key is held under another token), or nil.
local function key_refused(token, key)
  if not gt.may_register(token, key) then return 403, "this token may not register client key '" .. key .. "'" end
  local held = clients[key] and clients[key][1]
  if held and held.token ~= token then return 409, "client key '" .. key .. "' is registered with another token" end
end

app:get("/v1/relay/register", function(req, res)
  local token = relay.auth.match(tokens, req:bearer())
  if not token then return text(res, 401, "unauthorized: missing or unknown bearer token") end
  local key = req.headers["x-relay-client-key"] or req.args.client_key
  if not gt.key_ok(key) then
    return text(res, 400, "bad client key: send X-Relay-Client-Key with 1-128 letters, digits, '_' or '-'")
  end
  if registrations:incr(req.peer, 1, 0, 60) > f.register_rate then
    return text(res, 429, "too many registrations from this address, retry later", { ["retry-after"] = 60 })
  end
  local status, why = key_refused(token, key)
  if status then
    relay.log.warn("relay_register_refused", { client_key = key, remote_address = req.peer, reason = why })
    m_refused:inc(1, { status == 403 and "key_not_bound" or "key_conflict" })
    return text(res, status, why)
  end
  local c = { client_key = key, client_id = relay.uuid(), remote_address = req.peer, token = token }
  -- going_away: at SIGTERM the tunnel is closed with 1001 at once, so its streams end (the
  -- requests in flight answered 502) and the client reconnects elsewhere, instead of the
  -- tunnel holding the process until --drain-timeout.
  local ws = relay.ws.accept(gt.protocol, { headers = { ["X-Relay-Client-Id"] = c.client_id },
                                                max_queued = gt.max_queued, going_away = "relay-server shutting down" })
  if not ws then return end -- not an upgrade: answered already
  c.tun = relay.tunnel.attach(ws, { role = "server", ping_interval = f.ping_interval,
                                    stall_timeout = f.stall_timeout, head_timeout = f.head_timeout })
  status, why = key_refused(token, key) -- another token took the key while the upgrade went out
  if status then
    relay.log.warn("relay_register_refused", { client_key = key, remote_address = req.peer, reason = why })
    m_refused:inc(1, { "key_conflict" })
    c.tun:close(1008, why)
    return
  end
  add(c)
  relay.log.info("relay_client_registered", { client_key = key, client_id = c.client_id, remote_address = c.remote_address })
  local why = c.tun:wait()
  remove(c)
  relay.log.info("relay_client_gone", { client_key = key, client_id = c.client_id, reason = why })
end)

app:get("/v1/relay/clients", function(req, res)
  if not authorized(req) then return text(res, 401, "unauthorized: missing or unknown bearer token") end
  local out = relay.json.array()
  for _, list in pairs(clients) do
    for _, c in ipairs(list) do
      out[#out + 1] = { client_key = c.client_key, client_id = c.client_id, remote_address = c.remote_address }
    end
  end
  res:send(200, relay.json.encode({ result = out }), { ["content-type"] = "application/json" })
end)

-- A random client of the key that is not in `tried`.
local function pick(key, tried)
  local open = {}
  for _, c in ipairs(clients[key] or {}) do
    if not tried[c] then open[#open + 1] = c end
  end
  return open[math.random(#open)] -- nil when empty
end

local function relay_request(req, res)
  if #relay_tokens > 0 and not relay.auth.match(relay_tokens, req.headers["x-relay-token"]) then
    return text(res, 401, "unauthorized: the relay path needs a valid X-Relay-Token")
  end
  local key = req.params.key
  local target = req.path:sub(#"/v1/relay/" + #key + 1) .. (req.query ~= "" and ("?" .. req.query) or "")
  local tried = {}
  while true do
    local c = pick(key, tried)
    if not c and presence and not req.headers["x-relay-forwarded"] then
      c = presence:forwarder(key) -- another server holds the key: relay through it
      if c.err then
        m_relayed:inc(1, { "no_client" })
        return text(res, 502, ("Bad Gateway: no relay client for key '%s' on this server, and %s"):format(key, c.err))
      end
      if tried[c.tun] then c = nil end
    end
    if not c then
      m_relayed:inc(1, { "no_client" })
      return text(res, 502, ("Bad Gateway: no relay client is registered for key '%s'"):format(key))
    end
    local status, err
    if c.forwarded then
      status, err = c.tun:relay("/v1/relay/" .. key .. target, { ["x-relay-forwarded"] = "1" })
    else
      status, err = c.tun:relay(target)
    end
    if status then
      m_relayed:inc(1, { err and "failed" or (c.forwarded and "forwarded" or "ok") })
      if err then -- the git user going away is theirs to know; anything else is the relay's
        local log = err:match("^client ") and relay.log.info or relay.log.warn
        log("relay_failed", { client_key = key, client_id = c.client_id, status = status, error = err })
      end
      return
    end
    tried[c] = true -- the tunnel closed under us before the request went out: try another
    tried[c.tun] = true
  end
end

math.randomseed(relay.pid() + relay.time())
-- With --relay-listen the relay path lives on that listener alone (404 on --listen), and the
-- listener serves nothing else: registration and the client list stay on --listen.
local relay_path = { max_body = 2 ^ 53 }
if f.relay_listen ~= "" then
  app:listener("relay", f.relay_listen, "relay-listen")
  relay_path.listener = "relay"
end
app:any("/v1/relay/:key", relay_request, relay_path)
app:any("/v1/relay/:key/*", relay_request, relay_path)
app:get("/metrics", relay.metrics.handler)
-- The admin status page's panel: counts only (client keys and tokens are secrets).
relay.status(function()
  local keys = 0
  for _ in pairs(clients) do keys = keys + 1 end
  return { title = "git tunnel server", clients = m_clients:value(), client_keys = keys,
           tokens = #tokens, presence = presence and "redis" or "off",
           relayed = { ok = m_relayed:value { "ok" }, forwarded = m_relayed:value { "forwarded" },
                       failed = m_relayed:value { "failed" }, no_client = m_relayed:value { "no_client" } } }
end)

return app
