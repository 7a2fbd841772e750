-- The flag proxy's settings: the original's flags and env vars (v1 names, plus the v2 ones a
-- v2-style deployment uses). relay.flags checks each value against its type and bounds, and each
-- declaration's check refuses what is missing or contradicts another setting, naming the env
-- vars operators set (every problem at once); resolve() derives the rest.
local redisurl = require "relay.redisurl"

local M = {}

-- Each key once (API_KEYS="a,a" authenticates a once), none empty.
local function distinct(list)
  local out, seen = {}, {}
  for _, v in ipairs(list or {}) do if v ~= "" and not seen[v] then seen[v] = true; out[#out + 1] = v end end
  return out
end

-- Array form keeps --help in this order. aliases: the original's other names of a setting.
M.flags = {
  -- checked here, not type = "port": a problem from relay.flags names --port, and operators set PORT
  { key = "port", name = "port", env = "PORT", default = 7000, help = "port the SDKs connect to",
    check = function(p)
      if p < 1 or p > 65535 or p % 1 ~= 0 then return ("PORT: %s is not a port number"):format(p) end
    end },
  { key = "api_keys", name = "api-keys", aliases = { "apiKey" }, env = "API_KEYS", repeatable = true,
    help = "SDK keys of the environments to serve (comma list)" },
  { key = "account_identifier", name = "account-identifier", env = "ACCOUNT_IDENTIFIER", default = "", help = "account to load config for (admin service; informational here)" },
  { key = "org_identifier", name = "org-identifier", env = "ORG_IDENTIFIER", default = "", help = "organisation to load config for (admin service; informational here)" },
  { key = "admin_service", name = "admin-service", env = "ADMIN_SERVICE", default = "https://harness.io/gateway/cf", help = "URL of the ff admin service" },
  { key = "admin_service_token", name = "admin-service-token", aliases = { "service-token" },
    env = { "ADMIN_SERVICE_TOKEN", "SERVICE_TOKEN" }, default = "", help = "token for the admin service" },
  { key = "auth_secret", name = "auth-secret", env = "AUTH_SECRET", default = "secret", help = "HS256 secret the SDK tokens are signed with (keep it stable across restarts and replicas)",
    check = function(v) if v == "" then return "AUTH_SECRET: must not be empty" end end },
  { key = "legacy_secrets", name = "legacy-secrets", env = "LEGACY_SECRETS", repeatable = true, help = "older secrets still accepted when verifying tokens (comma list)" },
  { key = "base_url", name = "sdkBaseUrl", aliases = { "sdk-base-url", "client-service" },
    env = { "SDK_BASE_URL", "CLIENT_SERVICE" }, default = "https://config.ff.harness.io/api/1.0",
    help = "upstream client API (CLIENT_SERVICE: the v2 name)",
    -- not type = "url": the problem names SDK_BASE_URL, which operators set
    check = function(u)
      if not u:match("^https?://") then return ("SDK_BASE_URL: '%s' is not an http(s) URL"):format(u) end
    end },
  { key = "events_url", name = "sdkEventsUrl", aliases = { "sdk-events-url" }, env = "SDK_EVENTS_URL",
    default = "https://events.ff.harness.io/api/1.0", help = "where SDK metrics are forwarded" },
  { key = "target_poll_duration", name = "target-poll-duration", env = "TARGET_POLL_DURATION", default = 0, help = "accepted for compatibility; targets are kept from /client/auth and the config (no admin-service polling)" },
  { key = "redis_address", name = "redis-address", env = "REDIS_ADDRESS", default = "", help = "Redis host:port (or redis:// URL): cache and change notifications go through it",
    check = function(a, f)
      if a ~= "" then return select(2, redisurl.from_flags(a, f, true)) end
      if f.read_replica then return "READ_REPLICA needs REDIS_ADDRESS: a replica serves what the primary writes to Redis" end
    end },
  { key = "redis_db", name = "redis-db", env = "REDIS_DB", default = 0, help = "Redis database number" },
  { key = "redis_read_timeout_seconds", name = "redis-read-timeout-seconds", env = "REDIS_READ_TIMEOUT_SECONDS", default = 3, type = "integer", min = 0, help = "seconds Redis may owe an answer before the connection is given up and redialled (0: no limit)" },
  { key = "flag_stream_enabled", name = "flag-stream-enabled", env = "FLAG_STREAM_ENABLED", default = true, help = "follow the upstream's /stream for changes" },
  { key = "flag_poll_interval", name = "flag-poll-interval", env = "FLAG_POLL_INTERVAL", default = 1, help = "minutes between full polls of the upstream (fallback when the stream is off or down)",
    check = function(m) if m <= 0 then return "FLAG_POLL_INTERVAL: must be above 0 minutes" end end },
  { key = "offline", name = "offline", env = "OFFLINE", default = false, help = "serve from --config-dir only, no network",
    check = function(on, f)
      if on and f.generate_offline_config then return "OFFLINE and GENERATE_OFFLINE_CONFIG contradict each other: generating needs the upstream" end
    end },
  { key = "config_dir", name = "config-dir", env = "CONFIG_DIR", default = "/config", help = "offline config directory (env-<uuid>/...)" },
  { key = "generate_offline_config", name = "generate-offline-config", env = "GENERATE_OFFLINE_CONFIG", default = false, help = "write --config-dir from the upstream, then exit 0",
    check = function(on, f)
      if on and f.read_replica then return "GENERATE_OFFLINE_CONFIG and READ_REPLICA contradict each other" end
    end },
  { key = "bypass_auth", name = "bypass-auth", env = "BYPASS_AUTH", default = false, help = "skip token checks (testing only)" },
  { key = "debug", name = "debug", env = "DEBUG", default = false, help = "debug logging (same as LOG_LEVEL=DEBUG)" },
  { key = "log_level", name = "log-level", env = "LOG_LEVEL", default = "info", help = "INFO, DEBUG, WARN or ERROR (any case)",
    choices = { "debug", "info", "warn", "error" }, any_case = true },
  { key = "tls_enabled", name = "tls-enabled", env = "TLS_ENABLED", default = false, help = "serve HTTPS with --tls-cert and --tls-key",
    check = function(on, f)
      if on and (f.tls_cert == "" or f.tls_key == "") then return "TLS_ENABLED needs TLS_CERT and TLS_KEY" end
      if not on and (f.tls_cert ~= "" or f.tls_key ~= "") then
        return "TLS_CERT/TLS_KEY are set but TLS_ENABLED is not: set TLS_ENABLED=true to serve HTTPS"
      end
    end },
  { key = "tls_cert", name = "tls-cert", env = "TLS_CERT", default = "", help = "PEM certificate (with TLS_ENABLED)" },
  { key = "tls_key", name = "tls-key", env = "TLS_KEY", default = "", help = "PEM private key (with TLS_ENABLED)" },
  { key = "proxy_key", name = "proxy-key", env = "PROXY_KEY", default = "", help = "v2 Proxy Key: pull every environment it covers from the upstream's /proxy/config",
    check = function(k, f)
      if k == "" and not f.offline and not f.read_replica and #distinct(f.api_keys) == 0 then
        return "API_KEYS (or PROXY_KEY) is required in online mode: which environments to pull from " .. f.base_url
      end
    end },
  { key = "read_replica", name = "read-replica", env = "READ_REPLICA", default = false, help = "serve from Redis only (a primary fills it)",
    check = function(on, f)
      if on and f.offline then return "OFFLINE and READ_REPLICA contradict each other: a replica reads Redis" end
    end },
  { key = "and_rules", name = "and-rules", env = "AND_RULES", default = false, help = "serve segments' servingRules to ?rules=v2 requests" },
  { key = "heartbeat", name = "sse-heartbeat", env = "SSE_HEARTBEAT", default = 15, help = "seconds of idle before an SSE stream gets a ':' comment" },
  { key = "metric_post_duration", name = "metric-post-duration", env = "METRIC_POST_DURATION", default = 60, help = "seconds between metric forwards upstream (0: off)" },
  { key = "target_store_max_len", name = "target-store-max-len", env = "TARGET_STORE_MAX_LEN", default = 10000, type = "integer", min = 0, help = "targets from /client/auth kept for evaluations (least recently used go first)" },
  { key = "target_store_max_bytes", name = "target-store-max-bytes", env = "TARGET_STORE_MAX_BYTES", default = 8 * 1024 * 1024, type = "integer", min = 0, help = "bytes of targets from /client/auth kept (as JSON; least recently used go first)" },
  { key = "target_attributes_max_bytes", name = "target-attributes-max-bytes", env = "TARGET_ATTRIBUTES_MAX_BYTES", default = 64 * 1024, type = "integer", min = 0, help = "largest target attributes /client/auth accepts (as JSON; more gets 413)" },
  { key = "allow_empty", name = "allow-empty", env = "ALLOW_EMPTY", default = false, help = "accept a config with no flags at all (otherwise a load or reload that would serve none is refused)" },
}
for _, d in ipairs(redisurl.flags) do M.flags[#M.flags + 1] = d end -- REDIS_USERNAME, REDIS_TLS_*

-- flags (app.flags, checked by relay.flags) -> settings: aliases merged, plus what is derived
-- from them.
function M.resolve(f)
  local s = f
  s.api_keys, s.legacy_secrets = distinct(f.api_keys), f.legacy_secrets or {}
  s.base_url, s.events_url = f.base_url:gsub("/+$", ""), f.events_url:gsub("/+$", "")
  s.poll_interval, s.redis = f.flag_poll_interval * 60, f.redis_address
  -- one URL: user, password (percent-encoded: '@', ':' or '%' stay in it), db, TLS
  if s.redis ~= "" then s.redis = redisurl.from_flags(s.redis, f, true) end
  s.log_level = f.debug and "debug" or f.log_level
  s.insecure_secret = s.auth_secret == "secret"
  return s
end

return M
