-- flag-proxy: a drop-in for the Harness Feature Flags Relay Proxy (ff-proxy). Unmodified Harness
-- SDKs authenticate, fetch flags and segments, evaluate, stream changes and post metrics here.
-- Offline it serves a config directory in the original's layout (SIGHUP re-reads it and streams
-- what changed); online it mirrors the environments of API_KEYS from an upstream that speaks the
-- Harness client API (SaaS, or another relayhost flag proxy).
local relay = require "relay"
local config = require "relay.flag.config"
local store_mod = require "relay.flag.store"
local sync_mod = require "relay.flag.sync"
local upstream_mod = require "relay.flag.upstream"
local forward_mod = require "relay.flag.metrics_forward"
local offline = require "relay.flag.offline"
local api = require "relay.flag.api"

local cfg, store -- below; the 'serving' line counts what the store holds

local function summary()
  local envs, flags, segments = 0, 0, 0
  for _, env in pairs(store and store.envs or {}) do
    envs, flags, segments = envs + 1, flags + #(env.flags or {}), segments + #(env.segments or {})
  end
  return { mode = cfg.offline and "offline" or cfg.read_replica and "read-replica"
             or cfg.generate_offline_config and "generate-offline-config" or "online",
           environments = envs, flags = flags, segments = segments }
end

local app = relay.new {
  name = "flag-proxy",
  description = "Harness Feature Flags relay proxy (ff-proxy drop-in); every flag also reads its env var",
  flags = config.flags,
  -- GENERATE_OFFLINE_CONFIG is a one-shot job: it binds nothing (it runs beside a serving proxy)
  listen = function(f) return not f.generate_offline_config and "0.0.0.0:" .. math.floor(f.port) end,
  -- the cache and the SDK streams live in each process: several workers meet through Redis only
  single_process = function(f)
    if f.redis_address == "" then
      return "the flag cache and SDK streams live in each process; set REDIS_ADDRESS so that workers share one cache and its change events"
    end
  end,
  summary = summary,
}
cfg = config.resolve(app.flags)
app.host["log-level"] = cfg.log_level

store = store_mod.new { and_rules = cfg.and_rules }
local sync = sync_mod.new(cfg, store)
local upstream = not cfg.offline and not cfg.read_replica and upstream_mod.new(cfg, sync) or nil
local forward = forward_mod.new(cfg, sync.redis, upstream)
api.install(app, cfg, store, sync, forward)

local insecure = relay.metrics.gauge("relayhost_insecure_config", "1 when started with a product's insecure default secret")
app:on_init(function()
  insecure:set(cfg.insecure_secret and 1 or 0)
  if cfg.insecure_secret and not cfg.generate_offline_config then -- generating mints no tokens
    relay.log.warn("insecure_config", { setting = "AUTH_SECRET",
      message = "AUTH_SECRET is the insecure default 'secret': anyone can mint SDK tokens; set your own" })
  end
  if cfg.offline then
    local envs, err = offline.load(cfg.config_dir)
    if not envs then error("flag-proxy: CONFIG_DIR: " .. err, 0) end
    -- checked before anything is replaced: a refused config fails the start, or the reload (the
    -- running generation keeps serving); on SIGHUP events for what changed go out once this serves
    local ok, why = sync:replace(envs, cfg.config_dir, true)
    if not ok then error("flag-proxy: " .. why, 0) end
    sync:set_stream("CONNECTED")
  elseif cfg.read_replica then
    sync:start_replica()
  elseif cfg.generate_offline_config then
    upstream:start(function() offline.generate(cfg, sync) end)
  else
    upstream:start()
    forward:start()
  end
end)
app:on_retire(function()
  if upstream then upstream:stop() end
  sync:stop()
end)
-- The admin status page's panel: counts per environment, no keys.
relay.status(function()
  local envs = {}
  for id, env in pairs(store.envs) do
    envs[#envs + 1] = { environment = id, flags = #env.flags, segments = #env.segments, sdk_streams = relay.sse.count(id) }
  end
  return { title = "flag proxy", mode = summary().mode, upstream = sync.stream_status.state, environments = envs }
end)

return app
