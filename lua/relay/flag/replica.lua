-- Read replica: everything comes from the primary through Redis (its writes and its events).
local relay = require "relay"

return function(Sync, S)
  function Sync:replica_load()
    local envs, err = self.redis:read_all()
    if not envs then return nil, err end
    local ok, why = self:replace_all(envs, "redis")
    if not ok then return nil, why end
    S.set_status(self.config_status, "READ_REPLICA")
    local h = self.redis:stream_health()
    S.set_status(self.stream_status, h and h.state or "DISCONNECTED")
    return true
  end

  function Sync:start_replica()
    S.set_status(self.config_status, "INITIALIZING")
    relay.after(0, function()
      local backoff, last = 0.5, nil
      while true do
        local ok, err = self:replica_load()
        if ok then
          backoff = 0.5
          last, err = self.redis:follow(function(ev)
            if ev.environment and (ev.domain == "flag" or ev.domain == "target-segment") then
              local env = self.redis:read_env(ev.environment)
              local ok, why = true, nil
              if env then ok, why = self:replace_some({ [ev.environment] = env }, "redis") end
              if not ok then relay.log.warn("redis_config_refused", { environment = ev.environment, error = why }) end
            end
          end, last)
        end
        relay.log.warn("replica_redis_failed", { error = err })
        relay.sleep(backoff)
        backoff = math.min(backoff * 2, 5)
      end
    end)
    -- the primary's stream health decides whether SDK streams are served (spec §1.5)
    relay.every(2, function()
      local h = self.redis:stream_health()
      if h and h.state ~= self.stream_status.state then
        if h.state ~= "CONNECTED" then relay.sse.close(nil) end
        S.set_status(self.stream_status, h.state)
      end
    end)
  end
end
