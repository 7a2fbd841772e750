-- The workspace relay's settings: the original's env names (Viewport services/relay config.ts)
-- declared as flags, so each one is also --name and listed by --help; then the derived config
-- (modes inferred the way the original infers them).
local flags = require "relay.flags"

local M = {}

-- { env, default, help, what it must be }. Every value is checked at start (relay.flags), and
-- every problem is reported at once. Numbers are counts, sizes, rates and durations: whole and
-- at least 1. A boolean without a default is nil when unset, so that unset can mean "infer".
local URL, BOOL = { type = "url" }, { type = "boolean" }
local decls = {
  { "HOST", "127.0.0.1", "address to listen on" },
  { "PORT", 7781, "port to listen on (RELAY_LISTEN_PORT: the docs' name; PORT wins when both are set)",
    { type = "port", env = { "PORT", "RELAY_LISTEN_PORT" }, aliases = { "relay-listen-port" } } },
  { "RELAY_MODE", "dev", "dev, staging or prod (dev: ?token= accepted, verbose /health and /state)",
    { choices = { "dev", "staging", "prod" } } },
  { "SERVER_URL", "https://getviewport.test", "platform base URL: admission POSTs to $SERVER_URL/api/runtime/internal/relay/validate", URL },
  { "RELAY_VALIDATE_URL", "", "the full admission URL (the docs' name; overrides SERVER_URL for admission)", URL },
  { "RELAY_INTERNAL_KEY", "", "shared secret sent as x-relay-internal-key to the platform" },
  { "RELAY_ADMISSION", nil, "validate, jwks, or jwks,validate (default: validate; jwks when only RELAY_JWKS_URL is set)",
    { repeatable = true, choices = { "validate", "jwks" } } },
  { "RELAY_JWKS_URL", "", "JWKS document for local JWT verification (RS256, ES256, EdDSA)", URL },
  { "RELAY_JWT_ISSUER", "", "required iss of locally verified tokens (empty: not checked)" },
  { "RELAY_JWT_AUDIENCE", "", "required aud of locally verified tokens (empty: not checked)" },
  { "RELAY_JWKS_REFRESH_MS", 300000, "how long fetched keys are trusted before a refetch" },
  { "RELAY_ADMISSION_TIMEOUT_MS", 2000, "admission call timeout" },
  { "RELAY_ADMISSION_MAX_RESPONSE_BYTES", 262144, "largest admission answer accepted" },
  { "MAX_LOGS", 400, "entries kept in the /logs ring" },
  { "RELAY_ADMIN_TOKEN", "", "bearer token for /state, /logs, /metrics" },
  { "RELAY_ENABLE_ADMIN_HTTP", false, "1 to serve /state, /logs, /metrics (default off: 404)" },
  { "RELAY_HEALTH_VERBOSE", nil, "extra /health and /state fields (default: on in dev mode)", BOOL },
  { "RELAY_STATE_INCLUDE_CLIENT_IDS", nil, "clientIds in /state (default: on in dev mode)", BOOL },
  { "RELAY_MAX_TOTAL_CONNECTIONS", 2000, "open WebSockets, all together (503 above)" },
  { "RELAY_MAX_CONNECTIONS_PER_IP", 50, "open WebSockets per client address (429 above)" },
  { "RELAY_MAX_CLIENTS_PER_WORKSPACE", 100, "clients per workspace scope (429 above)" },
  { "RELAY_MAX_FRAME_BYTES", 1048576, "largest message (close 1009 above)" },
  { "RELAY_MAX_PENDING_BYTES", 4194304, "bytes queued to a slow consumer before close 4008 buffer overflow" },
  { "RELAY_UPGRADE_RATE_PER_MINUTE", 120, "upgrades per client address per minute (429 above)" },
  { "RELAY_UPGRADE_BUCKET_MAX", 50000, "addresses the upgrade limiter tracks" },
  { "RELAY_KEX_INIT_RATE_PER_MINUTE", 60, "key-exchange inits per client connection per minute" },
  { "RELAY_KEX_RATE_LIMITER_MAX_KEYS", 20000, "keys the key-exchange limiter tracks" },
  { "RELAY_PAIRING_RATE_PER_MINUTE", 30, "pairing frames per client connection per minute" },
  { "RELAY_PAIRING_RATE_LIMITER_MAX_KEYS", 20000, "keys the pairing limiter tracks" },
  { "RELAY_RUNTIME_RATE_PER_MINUTE", 240, "client E2EE frames per clientId per minute (token bucket)" },
  { "RELAY_RUNTIME_RATE_LIMITER_MAX_KEYS", 20000, "keys the runtime limiter tracks" },
  { "RELAY_RUNTIME_RATE_PER_MINUTE_WORKSPACE", 1200, "client E2EE frames per workspace per minute (token bucket)" },
  { "RELAY_RUNTIME_WORKSPACE_RATE_LIMITER_MAX_KEYS", 10000, "keys the workspace runtime limiter tracks" },
  { "RELAY_DAEMON_RUNTIME_RATE_PER_MINUTE", 2400, "daemon frames per workspace per minute (token bucket)" },
  { "RELAY_DAEMON_RATE_LIMITER_MAX_KEYS", 10000, "accepted for compatibility: the daemon bucket is per scope and goes with it" },
  { "RELAY_PAIRING_REQUEST_TRACK_MAX", 2048, "pairing requests remembered per scope" },
  { "RELAY_SESSION_OWNER_TRACK_MAX", 4096, "session owners and key-exchange requests remembered per scope" },
  { "RELAY_PING_INTERVAL_MS", 30000, "ping every connection this often" },
  { "RELAY_PONG_TIMEOUT_MS", 10000, "no pong this long after a ping: terminate" },
  { "RELAY_IDLE_TIMEOUT_MS", 300000, "nothing received this long: terminate" },
  { "RELAY_EMPTY_WORKSPACE_TTL_MS", 120000, "empty scopes are forgotten after this" },
  { "RELAY_CLEANUP_INTERVAL_MS", 30000, "how often empty scopes are looked for" },
  { "RELAY_ID", "", "this relay's id (default HOST:PORT:<12 hex>)" },
  { "RELAY_TLS_HOST", "getviewport.test", "host name in the default public WebSocket URL" },
  { "RELAY_PUBLIC_WS_BASE_URL", "", "this relay's public WebSocket URL (default ws://RELAY_TLS_HOST:PORT/ws)",
    { type = "url", schemes = { "ws", "wss" } } },
  { "RELAY_BACKPLANE_MODE", nil, "single, server or redis (default: server if RELAY_INTERNAL_KEY, bus or presence sync is set, else single)",
    { choices = { "single", "server", "redis" } } },
  { "RELAY_REDIS_URL", "", "Redis for RELAY_BACKPLANE_MODE=redis", { type = "url", schemes = { "redis", "rediss", "redis-sentinel" } } },
  { "RELAY_BACKPLANE_URL", "", "the seed document's name for RELAY_REDIS_URL", { type = "url", schemes = { "redis", "rediss", "redis-sentinel" } } },
  { "RELAY_REDIS_KEY_PREFIX", "viewport:relay", "prefix of every Redis key" },
  { "RELAY_REDIS_PRESENCE_TTL_MS", 45000, "lifetime of a presence key" },
  { "RELAY_REDIS_QUEUE_MAX", 10000, "per-relay queue length bound (LTRIM)" },
  { "RELAY_PRESENCE_SYNC_ENABLED", nil, "publish and look up daemon presence (default: on unless single)", BOOL },
  { "RELAY_PRESENCE_SYNC_INTERVAL_MS", 20000, "presence refresh period" },
  { "RELAY_BUS_ENABLED", false, "carry frames between relays (default off)" },
  { "RELAY_BUS_HMAC_KEY", "", "key that signs bus envelopes (required with the bus)" },
  { "RELAY_BUS_POLL_INTERVAL_MS", 250, "bus poll period" },
  { "RELAY_BUS_PULL_LIMIT", 200, "envelopes taken per pull" },
  { "RELAY_BUS_PULL_WAIT_MS", 1000, "how long a server-mode bus/pull may wait (at most 2000)" },
  { "RELAY_BUS_SIGNATURE_MAX_SKEW_MS", 15000, "envelopes older or newer than this are rejected" },
  { "RELAY_CLIENT_REDIRECT_ENABLED", nil, "tell clients to reconnect to the relay holding their daemon (default: on unless single)", BOOL },
  { "RELAY_REDIRECT_ALLOWED_HOSTS", {}, "hosts a redirect may name (comma list)", { repeatable = true } },
}

M.flags = flags.from_env(decls, { type = "integer", min = 1 })

function M.listen(f) return f.host .. ":" .. f.port end

local function default(v, d) if v == nil then return d end return v end

local VALIDATE = "/api/runtime/internal/relay/validate"

-- The config the relay runs with: the settings that depend on each other, as the original infers
-- them. Refuses (as the original does) combinations that cannot work, all of them in one message.
function M.resolve(f, random_hex)
  local c = {}
  for k, v in pairs(f) do c[k] = v end
  local dev = c.relay_mode == "dev"
  c.server_url = f.server_url:gsub("/+$", "")
  -- Only the docs' RELAY_VALIDATE_URL given (the seed's docker line): the platform's base for the
  -- other internal calls (presence, bus, workers) is that URL without its path.
  local only_validate = f.server_url == "https://getviewport.test"
  if only_validate and f.relay_validate_url:sub(-#VALIDATE) == VALIDATE then
    c.server_url = f.relay_validate_url:sub(1, -#VALIDATE - 1)
  end
  c.validate_url = f.relay_validate_url ~= "" and f.relay_validate_url or c.server_url .. VALIDATE
  c.admission = f.relay_admission
    or { f.relay_jwks_url ~= "" and f.relay_validate_url == "" and only_validate and "jwks" or "validate" }
  c.health_verbose = default(f.relay_health_verbose, dev)
  c.include_client_ids = default(f.relay_state_include_client_ids, dev)
  c.internal_key = f.relay_internal_key:match("^%s*(.-)%s*$")
  c.relay_id = f.relay_id ~= "" and f.relay_id or ("%s:%d:%s"):format(f.host, c.port, random_hex)
  c.public_ws_base_url = f.relay_public_ws_base_url ~= "" and f.relay_public_ws_base_url
    or ("ws://%s:%d/ws"):format(f.relay_tls_host, c.port)
  c.backplane = f.relay_backplane_mode
    or ((c.internal_key ~= "" or f.relay_bus_enabled or f.relay_presence_sync_enabled) and "server" or "single")
  local multi = c.backplane ~= "single"
  c.presence_enabled = multi and default(f.relay_presence_sync_enabled, true)
  c.bus_enabled = multi and f.relay_bus_enabled
  c.redirect_enabled = multi and default(f.relay_client_redirect_enabled, true)
  local problems = {}
  local function need(ok, why) if not ok then problems[#problems + 1] = why end end
  for _, a in ipairs(c.admission) do
    need(a ~= "jwks" or f.relay_jwks_url ~= "", "RELAY_ADMISSION=jwks needs RELAY_JWKS_URL")
  end
  need(c.backplane == "single" or c.internal_key ~= "", "RELAY_INTERNAL_KEY is required when RELAY_BACKPLANE_MODE=" .. c.backplane)
  -- the alias: one URL, whichever name gives it (the message leaves the URLs out: passwords)
  need(f.relay_backplane_url == "" or f.relay_redis_url == "" or f.relay_backplane_url == f.relay_redis_url,
    "RELAY_BACKPLANE_URL and RELAY_REDIS_URL name different Redis URLs: set one (RELAY_BACKPLANE_URL is another name for RELAY_REDIS_URL)")
  if c.relay_redis_url == "" then c.relay_redis_url = f.relay_backplane_url end
  need(c.backplane ~= "redis" or c.relay_redis_url ~= "", "RELAY_REDIS_URL is required when RELAY_BACKPLANE_MODE=redis")
  need(not c.bus_enabled or f.relay_bus_hmac_key ~= "", "RELAY_BUS_HMAC_KEY is required when the bus is enabled")
  if #problems > 0 then error(table.concat(problems, "; "), 0) end
  return c
end

return M
