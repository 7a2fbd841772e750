-- SDK metrics: merged per environment and posted upstream in batches; replicas pass theirs to
-- the primary through Redis.
local relay = require "relay"
local json = require "relay.json"
local batch = require "relay.batch"

-- What may wait to be forwarded, queued or in flight (anyone with a public SDK key may post
-- metrics, and an events service that is slow or unreachable holds a batch for its timeout).
local QUEUE_MAX = 4 * 1024 * 1024
local FLUSH_AT = 1024 * 1024

local dropped = relay.metrics.counter("ff_proxy_metrics_dropped_total",
  "SDK metrics posts not forwarded: 4 MiB were already waiting for the upstream")
local forwarded = relay.metrics.counter("ff_proxy_metrics_forwarded", "SDK metrics batches posted upstream", { "envID", "error" })

local M = {}
local Forward = {}
Forward.__index = Forward

-- redis: relay.flag.redis_cache or nil; upstream: relay.flag.upstream (credentials) or nil.
function M.new(cfg, redis, upstream)
  local self = setmetatable({ cfg = cfg, redis = redis, upstream = upstream, pushing = 0 }, Forward)
  self.batch = batch.new { max_bytes = QUEUE_MAX, flush_at = FLUSH_AT, every = cfg.metric_post_duration,
    log_event = "metrics_forward_failed", key_field = "environment",
    send = function(env_id, q) self:post(env_id, q) end }
  return self
end

-- The elements of a JSON array field of m, as text without the brackets ("" when none).
local function elements(m, field)
  local v = m[field]
  if type(v) ~= "table" or v[1] == nil then return "" end
  return json.encode(v):sub(2, -2)
end

-- first: log it (once per flush, or once for a replica: a flood must not flood the log too).
function Forward:drop(env_id, first)
  dropped:inc(1)
  if first then
    relay.log.warn("metrics_dropped", { environment = env_id, error = "4 MiB of SDK metrics already wait for the upstream" })
  end
end

-- SDK metrics are merged per environment (as JSON text: the bytes counted are the bytes held)
-- and posted upstream in one request each.
function Forward:queue(env_id, body)
  if self.cfg.read_replica then -- the primary forwards them
    if self.pushing + #body > QUEUE_MAX then
      self:drop(env_id, not self.drop_logged)
      self.drop_logged = true
      return
    end
    self.pushing = self.pushing + #body
    relay.after(0, function()
      self.redis:push_metrics(env_id, body)
      self.pushing = self.pushing - #body
    end)
    return
  end
  if self.cfg.offline or self.cfg.metric_post_duration <= 0 then return end
  local m = json.decode_table(body)
  if not m then return end
  local parts = { metricsData = elements(m, "metricsData"), targetData = elements(m, "targetData") }
  if not self.batch:add(env_id, parts) then self:drop(env_id, self.batch.dropped == 1) end
end

function Forward:post(env_id, q)
  local u = self.upstream.envs[env_id] or { cluster = "1" } -- the cluster and token its SDK key got
  local cluster, token = u.cluster, u.token
  local r, err = relay.http.request {
    method = "POST", url = ("%s/metrics/%s?cluster=%s"):format(self.cfg.events_url, env_id, cluster),
    timeout = 10, body = '{"metricsData":[' .. table.concat(q.metricsData, ",") .. '],"targetData":[' ..
      table.concat(q.targetData, ",") .. "]}",
    headers = { ["content-type"] = "application/json", authorization = token and ("Bearer " .. token) or nil },
  }
  local failed = not r or r.status >= 300
  forwarded:inc(1, { env_id, tostring(failed) })
  if failed then relay.log.warn("metrics_forward_failed", { environment = env_id, error = err or ("status " .. r.status) }) end
end

-- An online primary posts every METRIC_POST_DURATION seconds, with the metrics its replicas
-- pushed to Redis too (followed until a reload replaced this generation).
function Forward:start()
  if self.cfg.metric_post_duration <= 0 then return end
  self.batch:start()
  if not self.redis then return end
  self.redis:follow_metrics(function(m)
    if type(m.environment) == "string" and type(m.body) == "string" then self:queue(m.environment, m.body) end
  end, function(err) relay.log.warn("redis_metrics_follow_failed", { error = err }) end)
end

return M
