-- Online mode, live: following the upstream's /stream (one per SDK key's environment, or one
-- account-level stream for a proxy key), reconnecting with backoff, and GENERATE_OFFLINE_CONFIG.
local relay = require "relay"
local json = require "relay.flag.json"

return function(Sync, S)
  -- The environments whose upstream streams we follow: each SDK key's, or (proxy key) one
  -- account-level stream that carries every environment.
  function Sync:stream_envs()
    local ids = {}
    for id in pairs(self.upstream) do ids[#ids + 1] = id end
    table.sort(ids)
    if self:proxy_mode() then return { ids[1] } end
    return ids
  end

  local function all_connected(self)
    local ids = self:stream_envs()
    for _, id in ipairs(ids) do if not self.upstream[id].connected then return false end end
    return #ids > 0
  end

  -- Upstream stream lost: SDK streams are closed (they poll, and get 503 until it is back).
  function Sync:stream_lost(env_id, why)
    local u = self.upstream[env_id]
    if u.connected then relay.log.warn("upstream_stream_lost", { environment = env_id, error = why }) end
    u.connected = false
    if self.stream_status.state == "CONNECTED" then relay.sse.close(nil) end
    self:set_stream("DISCONNECTED")
  end

  -- Reads one upstream SSE feed until it fails. Events are "event: *\ndata: {json}\n\n".
  function Sync:read_stream(env_id, s)
    local buf = ""
    while true do
      local data, err = s:read()
      if not data then return err end
      buf = buf .. data
      while true do
        local i, j = buf:find("\n\n", 1, true)
        if not i then break end
        local block = buf:sub(1, i - 1)
        buf = buf:sub(j + 1)
        local payload = block:match("data:%s*([^\n]*)")
        local ok, ev = pcall(json.decode, payload or "")
        if ok and type(ev) == "table" and (ev.domain == "flag" or ev.domain == "target-segment") then
          local target = self.upstream[ev.environment] and ev.environment or env_id
          local tu = self.upstream[target]
          if not tu.refreshing then
            tu.refreshing = true -- events that arrive during a fetch are covered by it
            relay.after(0, function() tu.refreshing = false; self:refresh_env(target) end)
          end
        end
      end
    end
  end

  function Sync:follow(env_id)
    local backoff = 1
    while not self.stopped do
      local u = self.upstream[env_id]
      local s, status = relay.http.stream {
        url = self.cfg.base_url .. "/stream?cluster=" .. u.cluster, timeout = 60,
        headers = { authorization = "Bearer " .. u.token, ["api-key"] = u.key, accept = "text/event-stream",
                    ["cache-control"] = "no-cache", ["harness-sdk-info"] = "Proxy relayhost" },
      }
      if s and status == 200 and self.stopped then s:close(); return end
      if s and status == 200 then
        backoff = 1
        u.stream = s
        u.connected = true
        if all_connected(self) then
          local was = self.stream_status.state
          self:set_stream("CONNECTED")
          relay.log.info("upstream_stream_connected", { environment = env_id })
          if was == "DISCONNECTED" then self:poll_once() end -- what changed while we were away
        end
        local why = self:read_stream(env_id, s)
        s:close()
        u.stream = nil
        if self.stopped then return end -- replaced by a reload: the new generation follows now
        self:stream_lost(env_id, why)
      else
        if s then s:close() end
        self:stream_lost(env_id, s and ("status " .. tostring(status)) or status)
      end
      relay.sleep(backoff)
      backoff = math.min(backoff * 2, 60)
    end
  end

  -- A reload replaced this generation: its feeds close now (the new one opens its own). A
  -- reader parked on a closed feed ends with the generation's drain.
  function Sync:stop()
    self.stopped = true
    for _, u in pairs(self.upstream) do
      if u.stream then u.stream:close(); u.stream = nil end
    end
  end

  function Sync:start()
    relay.after(0, function()
      self:poll_once()
      if self.cfg.generate then return self:generate() end
      if self.cfg.stream then
        for _, env_id in ipairs(self:stream_envs()) do relay.after(0, function() self:follow(env_id) end) end
      else
        self:set_stream("DISCONNECTED")
      end
    end)
    -- polls only while no upstream stream carries the changes
    relay.every(self.cfg.poll_interval, function()
      if self.stream_status.state ~= "CONNECTED" then self:poll_once() end
    end)
    if self.cfg.metric_post > 0 then
      relay.every(self.cfg.metric_post, function() self:flush_metrics() end)
      if self.redis then relay.after(0, function() self:collect_replica_metrics() end) end
    end
  end

  function Sync:generate()
    local offline = require "relay.flag.offline"
    if self.config_status.state ~= "SYNCED" then
      relay.log.error("generate_offline_config_failed", { upstream = self.cfg.base_url, error = "could not sync" })
      os.exit(1)
    end
    local ok, err = offline.write(self.cfg.config_dir, self.store)
    if not ok then
      relay.log.error("generate_offline_config_failed", { config_dir = self.cfg.config_dir, error = err })
      os.exit(1)
    end
    relay.log.info("offline_config_generated", { config_dir = self.cfg.config_dir })
    require("relay.flag.fs").terminate() -- a clean exit 0, like any SIGTERM
  end
end
