-- Online mode: an upstream that speaks the Harness client API (SaaS or another relayhost):
-- auth per SDK key (or v2 proxy key), full fetches, full syncs and polls.
local relay = require "relay"
local json = require "relay.flag.json"
local sha256_hex = require("relay.flag.store").sha256_hex

return function(Sync, S)
  local function upstream_get(self, env_id, path)
    local u = self.upstream[env_id]
    local r, err = relay.http.request {
      url = self.cfg.base_url .. path, timeout = 10,
      headers = { authorization = "Bearer " .. u.token, ["harness-sdk-info"] = "Proxy relayhost",
                  ["harness-environmentid"] = env_id },
    }
    if not r then return nil, err end
    if r.status ~= 200 then return nil, ("%s: status %d"):format(path, r.status) end
    local ok, v = pcall(json.decode, r.body)
    if not ok or type(v) ~= "table" then return nil, path .. ": not a JSON array" end
    return v
  end

  -- POST /client/auth for one SDK key -> environment id and token.
  function Sync:auth_key(key)
    local r, err = relay.http.request {
      method = "POST", url = self.cfg.base_url .. "/client/auth", timeout = 10,
      headers = { ["content-type"] = "application/json" }, body = json.encode({ apiKey = key }),
    }
    if not r then return nil, err end
    if r.status ~= 200 then return nil, ("/client/auth: status %d"):format(r.status) end
    local ok, body = pcall(json.decode, r.body)
    local token = ok and type(body) == "table" and body.authToken
    local payload = type(token) == "string" and token:match("^[^.]+%.([^.]+)%.")
    local claims = payload and select(2, pcall(json.decode, relay.base64.decode(payload) or ""))
    if type(claims) ~= "table" or not claims.environment then return nil, "/client/auth: token without environment" end
    return claims.environment, token, claims.clusterIdentifier or "1"
  end

  -- Fetches flags and segments of every known environment; returns the envs table or nil, err.
  local function fetch_env(self, env_id, u)
    local q = "?cluster=" .. u.cluster
    local flags, err = upstream_get(self, env_id, "/client/env/" .. env_id .. "/feature-configs" .. q)
    if not flags then return nil, err end
    local segs, err2 = upstream_get(self, env_id, "/client/env/" .. env_id .. "/target-segments" .. q .. "&rules=v2")
    if not segs then return nil, err2 end
    local old = self.store.envs[env_id]
    local at = self.cfg.base_url .. "/client/env/" .. env_id
    return { flags = flags, segments = segs, targets = old and old.targets or {}, keys = u.keys,
             sources = { flags = at .. "/feature-configs", segments = at .. "/target-segments" } }
  end

  -- Fetches flags and segments of every known environment (or only one); returns the envs table
  -- or nil, err.
  function Sync:fetch_all(only)
    local envs = {}
    for env_id, u in pairs(self.upstream) do
      if not only or env_id == only then
        local env, err = fetch_env(self, env_id, u)
        if not env then return nil, err end
        envs[env_id] = env
      end
    end
    return envs
  end

  -- v2 style: one Proxy Key covers many environments (POST /proxy/auth, GET /proxy/config pages).
  function Sync:proxy_authenticate()
    local r, err = relay.http.request {
      method = "POST", url = self.cfg.base_url .. "/proxy/auth", timeout = 10,
      headers = { ["content-type"] = "application/json" }, body = json.encode({ proxyKey = self.cfg.proxy_key }),
    }
    if not r then return nil, err end
    local ok, body = pcall(json.decode, r.body)
    if r.status ~= 200 or not ok or type(body) ~= "table" or type(body.token) ~= "string" then
      return nil, ("/proxy/auth: status %d"):format(r.status)
    end
    self.proxy_token = body.token
    return true
  end

  function Sync:proxy_fetch()
    local envs, page = {}, 0
    repeat
      local r, err = relay.http.request {
        url = ("%s/proxy/config?key=%s&cluster=1&pageNumber=%d&pageSize=10"):format(self.cfg.base_url, sha256_hex(self.cfg.proxy_key), page),
        timeout = 10, headers = { authorization = "Bearer " .. self.proxy_token },
      }
      if not r then return nil, err end
      local ok, cfg = pcall(json.decode, r.body)
      if r.status ~= 200 or not ok or type(cfg) ~= "table" then return nil, ("/proxy/config: status %d"):format(r.status) end
      for _, e in ipairs(type(cfg.environments) == "table" and cfg.environments or {}) do
        if type(e) ~= "table" or type(e.id) ~= "string" or e.id == "" then
          return nil, "/proxy/config: an environment without an id"
        end
        local old = self.store.envs[e.id]
        local at = ("%s/proxy/config environment %s"):format(self.cfg.base_url, tostring(e.id))
        envs[e.id] = { flags = e.featureConfigs or {}, segments = e.segments or {}, keys = e.apiKeys or {},
                       targets = old and old.targets or {},
                       sources = { flags = at .. " featureConfigs", segments = at .. " segments", keys = at .. " apiKeys" } }
        self.upstream[e.id] = self.upstream[e.id] or { cluster = "1", keys = e.apiKeys or {}, token = self.proxy_token,
                                                     key = self.cfg.proxy_key }
      end
      page = page + 1
    until page >= (tonumber(cfg.pageCount) or 1)
    return envs
  end

  function Sync:authenticate()
    if self.cfg.proxy_key ~= "" and #self.cfg.api_keys == 0 then return self:proxy_authenticate() end
    for _, key in ipairs(self.cfg.api_keys) do
      local env_id, token, cluster = self:auth_key(key)
      if not env_id then return nil, token end
      local u = self.upstream[env_id] or { keys = {} }
      u.token, u.cluster, u.key = token, cluster, key
      local h = sha256_hex(key)
      local have = false
      for _, k in ipairs(u.keys) do have = have or k == h end
      if not have then u.keys[#u.keys + 1] = h end
      self.upstream[env_id] = u
    end
    return true
  end

  -- One full sync. by_poll: changes found this way reach no SSE stream as events, so (like
  -- ff-proxy) every SDK stream of a changed environment is closed and the SDKs re-fetch.
  function Sync:proxy_mode() return self.cfg.proxy_key ~= "" and #self.cfg.api_keys == 0 end

  function Sync:sync(by_poll)
    if not next(self.upstream) and not self.proxy_token then
      local ok, err = self:authenticate()
      if not ok then return nil, err end
    end
    local envs, err
    if self:proxy_mode() then envs, err = self:proxy_fetch() else envs, err = self:fetch_all() end
    if not envs then return nil, err end
    local events, refused = self:replace_all(envs, self.cfg.base_url)
    if not events then return nil, refused end -- the last good config keeps serving
    S.set_status(self.config_status, "SYNCED")
    if by_poll and #events > 0 then
      local closed = {}
      for _, ev in ipairs(events) do
        if not closed[ev.environment] then closed[ev.environment] = true; relay.sse.close(ev.environment) end
      end
    end
    return true
  end

  function Sync:poll_once()
    local ok, err = self:sync(true)
    if not ok then
      relay.log.warn("upstream_sync_failed", { upstream = self.cfg.base_url, error = err })
      if self.config_status.state ~= "SYNCED" then S.set_status(self.config_status, "FAILED_TO_SYNC") end
    end
    return ok, err
  end

  -- Re-fetches one environment after an upstream event (as ff-proxy does: the whole list, not the
  -- item) and streams what changed to the SDKs.
  function Sync:refresh_env(env_id)
    local envs, err
    if self:proxy_mode() then envs, err = self:proxy_fetch() else envs, err = self:fetch_all(env_id) end
    if not envs then
      relay.log.warn("upstream_fetch_failed", { environment = env_id, error = err })
      return
    end
    local ok, why = self:replace_some(envs, self.cfg.base_url)
    if not ok then relay.log.warn("upstream_config_refused", { environment = env_id, error = why }) end
  end
end
