-- The prefix proxy: a drop-in for Lilya/Ravyn's Relay. Each --mount /prefix=URL forwards the
-- prefix and everything below it to URL (its path is kept as a base), through the native C
-- proxy: bodies stream, connections are pooled, hop-by-hop headers never cross.
--
--   relayhost prefix-proxy --mount /api=http://127.0.0.1:9001/v1 --mount /auth=http://auth:8000
--
-- URL may be a comma-separated list (same scheme and path), chosen round-robin:
-- --mount /api=http://10.0.0.1:9001/v1,http://10.0.0.2:9001/v1
--
-- --max-connections N caps the connections in use per upstream (Lilya's limits.max_connections):
-- more requests wait in a queue (--max-queue) for --pool-timeout seconds, then get 504.
--
-- For header policies, retries and hooks, write a script with relay.proxy{...} (README).
local relay = require "relay"

local app = relay.new {
  name = "prefix-proxy",
  description = "mounts upstreams under path prefixes (a drop-in for Lilya/Ravyn's Relay)",
  flags = {
    mount = { repeatable = true, env = "RELAY_MOUNTS", help = "PREFIX=URL[,URL...]: forward PREFIX and below to URL (a list: round-robin)" },
    max_retries = { default = 0, type = "integer", min = 0, help = "retries on connect errors, timeouts and 502/503/504" },
    timeout = { default = 10, min = 0.001, help = "seconds for connect, read and write, each" },
    preserve_host = { default = false, help = "send the client's Host upstream" },
    -- the gateway options: off, as Lilya; README recommends all of them for a new deployment
    forwarded_prefix = { default = false, help = "send the mount as X-Forwarded-Prefix (the client's own is dropped)" },
    rewrite_location = { default = false, help = "Location/Content-Location at the upstream's base URL move into the mount" },
    rewrite_cookie_path = { default = false, help = "Set-Cookie Path under the upstream's base moves into the mount" },
    retry_methods = { default = "", help = "comma-separated methods that may be retried, e.g. GET,HEAD,OPTIONS,PUT,DELETE (empty: all, as Lilya)" },
    retry_after = { default = false, help = "a retried status's Retry-After replaces the backoff (capped at --timeout)" },
    max_fails = { default = 3, type = "integer", min = 0, help = "failures in a row that take an upstream of a list out (0: never)" },
    fail_timeout = { default = 10, min = 0.001, help = "seconds an upstream taken out stays out" },
    balance = { default = "round_robin", help = "round_robin or least_conn: how a mount's list of upstreams is chosen from" },
    -- Lilya's limits.max_connections and timeout.pool (none and --timeout when not given)
    max_connections = { default = 0, type = "integer", min = 0, help = "connections in use per upstream at most; more requests wait in a queue (0: no cap)" },
    max_queue = { default = 0, type = "integer", min = 0, help = "requests that may wait for a connection per upstream; more get 503 (0: 1024)" },
    pool_timeout = { default = 0, min = 0, help = "seconds a request waits for a connection before 504 (0: --timeout)" },
  },
  -- the 'serving' line names the mounts and upstreams itself; these are the policy beside them
  summary = function(a) return { max_retries = a.flags.max_retries, timeout = a.flags.timeout } end,
}

local mounts = app.flags.mount or {}
if #mounts == 0 then error("prefix-proxy: give at least one --mount /prefix=http://host:port[/base]", 0) end

-- "GET, PUT" -> { "GET", "PUT" }; nil when empty (every method, as the original)
local function methods(list)
  local out = {}
  for m in list:gmatch("[^,%s]+") do out[#out + 1] = m end
  return #out > 0 and out or nil
end

-- The flag's list splits at commas, so "/api=http://a,http://b" arrives as two items: one that
-- is not "/prefix=..." continues the mount before it (its list of upstreams).
local function joined(items)
  local out = {}
  for _, item in ipairs(items) do
    if item:match("^/[^=]*=") or #out == 0 then out[#out + 1] = item
    else out[#out] = out[#out] .. "," .. item end
  end
  return out
end

local shown = {}
for _, m in ipairs(joined(mounts)) do
  local prefix, url = m:match("^(/[^=]*)=(.+)$")
  if not prefix then error(("prefix-proxy: --mount '%s': want /prefix=http://host:port[/base]"):format(m), 0) end
  -- a URL the proxy cannot use is the operator's --mount, not a line of this script
  local urls = {}
  for u in url:gmatch("[^,]+") do urls[#urls + 1] = u end
  local ok, proxy = pcall(relay.proxy, {
    target_base_url = #urls > 1 and urls or url,
    max_fails = app.flags.max_fails,
    fail_timeout = app.flags.fail_timeout,
    balance = app.flags.balance,
    max_retries = app.flags.max_retries,
    timeout = { connect = app.flags.timeout, read = app.flags.timeout, write = app.flags.timeout,
                pool = app.flags.pool_timeout > 0 and app.flags.pool_timeout or app.flags.timeout },
    limits = app.flags.max_connections > 0 and { max_connections = app.flags.max_connections } or nil,
    max_queue = app.flags.max_queue > 0 and app.flags.max_queue or nil,
    preserve_host = app.flags.preserve_host,
    forwarded_prefix = app.flags.forwarded_prefix,
    rewrite_location = app.flags.rewrite_location,
    rewrite_cookie_path = app.flags.rewrite_cookie_path,
    retry_methods = methods(app.flags.retry_methods),
    retry_after = app.flags.retry_after,
  })
  if not ok then error(("prefix-proxy: --mount '%s': %s"):format(m, (tostring(proxy):gsub("^.-relay%.proxy: ", ""))), 0) end
  app:mount(prefix, proxy)
  -- for the status page: no userinfo, query or fragment, where credentials could sit
  shown[#shown + 1] = { prefix = prefix, upstream = (url:gsub("//[^/]*@", "//"):gsub("[?#].*$", "")) }
end
relay.status(function()
  return { title = "prefix proxy", mounts = shown, max_retries = app.flags.max_retries, timeout = app.flags.timeout }
end)

return app
