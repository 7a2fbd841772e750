-- SDK metrics: merged per environment and posted upstream in batches; replicas pass theirs to
-- the primary through Redis.
local relay = require "relay"
local json = require "relay.json"

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
  return setmetatable({ cfg = cfg, redis = redis, upstream = upstream, batches = {}, bytes = 0, pushing = 0 }, Forward)
end

-- The elements of a JSON array field of m, as text without the brackets ("" when none).
local function elements(m, field)
  local v = m[field]
  if type(v) ~= "table" or v[1] == nil then return "" end
  return json.encode(v):sub(2, -2)
end

function Forward:drop(env_id)
  dropped:inc(1)
  if not self.drop_logged then -- once per flush: a flood must not flood the log too
    self.drop_logged = true
    relay.log.warn("metrics_dropped", { environment = env_id, error = "4 MiB of SDK metrics already wait for the upstream" })
  end
end

-- SDK metrics are merged per environment (as JSON text: the bytes counted are the bytes held)
-- and posted upstream in one request each.
function Forward:queue(env_id, body)
  if self.cfg.read_replica then -- the primary forwards them
    if self.pushing + #body > QUEUE_MAX then return self:drop(env_id) end
    self.pushing = self.pushing + #body
    relay.after(0, function()
      self.redis:push_metrics(env_id, body)
      self.pushing = self.pushing - #body
    end)
    return
  end
  if self.cfg.offline or self.cfg.metric_post_duration <= 0 then return end
  local ok, m = pcall(json.decode, body)
  if not ok or type(m) ~= "table" then return end
  local md, td = elements(m, "metricsData"), elements(m, "targetData")
  if self.bytes + (self.in_flight or 0) + #md + #td > QUEUE_MAX then return self:drop(env_id) end
  local q = self.batches[env_id] or { metricsData = {}, targetData = {} }
  if md ~= "" then q.metricsData[#q.metricsData + 1] = md end
  if td ~= "" then q.targetData[#q.targetData + 1] = td end
  self.batches[env_id] = q
  self.bytes = self.bytes + #md + #td
  if self.bytes >= FLUSH_AT and not self.in_flight then relay.after(0, function() self:flush() end) end
end

function Forward:post(env_id, q)
  local cluster, token = self.upstream:credentials(env_id)
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

-- One flush at a time: what comes meanwhile waits (up to QUEUE_MAX) for the next.
function Forward:flush()
  if self.in_flight or self.bytes == 0 then return end
  local batches = self.batches
  self.batches, self.in_flight, self.bytes, self.drop_logged = {}, self.bytes, 0, false
  for env_id, q in pairs(batches) do
    local ok, err = pcall(self.post, self, env_id, q) -- whatever happens, the next flush may run
    if not ok then relay.log.warn("metrics_forward_failed", { environment = env_id, error = tostring(err) }) end
  end
  self.in_flight = nil
end

-- A primary takes the metrics its replicas pushed to Redis into its own batches.
function Forward:collect_replica_metrics()
  local last, backoff = nil, 0.5
  while true do
    local err
    last, err = self.redis:follow_metrics(function(m)
      if type(m.environment) == "string" and type(m.body) == "string" then self:queue(m.environment, m.body) end
    end, last)
    relay.log.warn("redis_metrics_follow_failed", { error = err })
    relay.sleep(backoff)
    backoff = math.min(backoff * 2, 5)
  end
end

-- An online primary posts every METRIC_POST_DURATION seconds, with its replicas' metrics too.
function Forward:start()
  if self.cfg.metric_post_duration <= 0 then return end
  relay.every(self.cfg.metric_post_duration, function() self:flush() end)
  if self.redis then relay.after(0, function() self:collect_replica_metrics() end) end
end

return M
