-- SDK metrics: merged per environment and posted upstream in batches; replicas pass theirs to
-- the primary through Redis.
local relay = require "relay"
local json = require "relay.flag.json"

return function(Sync, S)
  -- SDK metrics are merged per environment and posted upstream in one request each.
  function Sync:queue_metrics(env_id, body)
    if self.cfg.read_replica then -- the primary forwards them
      relay.after(0, function() self.redis:push_metrics(env_id, body) end)
      return
    end
    if self.cfg.offline or self.cfg.metric_post <= 0 then return end
    local ok, m = pcall(json.decode, body)
    if not ok or type(m) ~= "table" then return end
    local q = self.metrics[env_id] or { metricsData = {}, targetData = {} }
    for _, d in ipairs(type(m.metricsData) == "table" and m.metricsData or {}) do q.metricsData[#q.metricsData + 1] = d end
    for _, d in ipairs(type(m.targetData) == "table" and m.targetData or {}) do q.targetData[#q.targetData + 1] = d end
    self.metrics[env_id] = q
    self.metrics_bytes = self.metrics_bytes + #body
    if self.metrics_bytes >= 1024 * 1024 then relay.after(0, function() self:flush_metrics() end) end
  end

  local forwarded = relay.metrics.counter("ff_proxy_metrics_forwarded", "SDK metrics batches posted upstream", { "envID", "error" })

  function Sync:flush_metrics()
    local batches = self.metrics
    self.metrics, self.metrics_bytes = {}, 0
    for env_id, m in pairs(batches) do
      local u = self.upstream[env_id]
      local r, err = relay.http.request {
        method = "POST", url = ("%s/metrics/%s?cluster=%s"):format(self.cfg.events_url, env_id, u and u.cluster or "1"),
        timeout = 10, body = json.encode(m),
        headers = { ["content-type"] = "application/json", authorization = u and ("Bearer " .. u.token) or nil },
      }
      local failed = not r or r.status >= 300
      forwarded:inc(1, { env_id, tostring(failed) })
      if failed then relay.log.warn("metrics_forward_failed", { environment = env_id, error = err or ("status " .. r.status) }) end
    end
  end

  -- A primary takes the metrics its replicas pushed to Redis into its own batches.
  function Sync:collect_replica_metrics()
    local last, backoff = nil, 0.5
    while true do
      local err
      last, err = self.redis:follow_metrics(function(m)
        if type(m.environment) == "string" and type(m.body) == "string" then self:queue_metrics(m.environment, m.body) end
      end, last)
      relay.log.warn("redis_metrics_follow_failed", { error = err })
      relay.sleep(backoff)
      backoff = math.min(backoff * 2, 5)
    end
  end
end
