-- What the status page specs share: a prefix proxy with --admin-listen in front of the demo
-- script (200s), a route nobody serves (404s) and an upstream nobody listens on (502s), plain
-- GETs on the admin listener, and /metrics read into numbers.
local helpers = require "spec.helpers"
local cjson = require "cjson"
local assert = require "luassert"
local support = require "git_tunnel_support"

local M = { free_port = support.free_port, sh = support.sh }

function M.get(port, path, headers)
  local c = assert(helpers.connect(port))
  local res = c:get(path, headers)
  c:close()
  return assert(res, "no answer to GET " .. path)
end

function M.json(port)
  local res = M.get(port, "/status.json")
  assert.equal(200, res.status)
  return cjson.decode(res.body), res.body
end

-- /metrics of the admin listener: { ["name{labels}"] = value }, plus sum(name, pattern) over the
-- series of a family whose labels match pattern.
function M.metrics(port)
  local text = M.get(port, "/metrics").body
  local m = {}
  for line in text:gmatch("[^\n]+") do
    local key, v = line:match("^([%w_:]+%b{}) (%S+)$")
    if not key then key, v = line:match("^([%w_:]+) (%S+)$") end
    if key then m[key] = tonumber(v) end
  end
  return setmetatable(m, { __index = {
    sum = function(self, name, pattern)
      local n = 0
      for k, v in pairs(self) do
        if k:match("^" .. name .. "{") and k:match(pattern or "") then n = n + v end
      end
      return n
    end,
  } })
end

-- Starts the demo origin and a prefix proxy mounting it at /app and a dead port at /dead, with
-- an admin listener; drives n2xx 200s, n4xx 404s and n5xx 502s through it. Returns the proxy
-- (proxy.admin is its admin port) and the origin, both to be stopped.
function M.start(n2xx, n4xx, n5xx, extra)
  local origin = helpers.start("demo")
  local admin = M.free_port()
  local flags = { "--mount", "/app=http://127.0.0.1:" .. origin.port,
                  "--mount", "/dead=http://127.0.0.1:" .. M.free_port() .. "/v1",
                  "--admin-listen", "127.0.0.1:" .. admin }
  for _, f in ipairs(extra or {}) do flags[#flags + 1] = f end
  local proxy = helpers.start("prefix-proxy", { flags = flags })
  proxy.admin = admin
  for _ = 1, n2xx do assert.equal(200, proxy:get("/app/count").status) end
  for _ = 1, n4xx do assert.equal(404, proxy:get("/nowhere").status) end
  for _ = 1, n5xx do assert.equal(502, proxy:get("/dead/x").status) end
  return proxy, origin
end

-- The classes of relayhost_http_requests_total, as the page shows them.
function M.classes(m)
  local out = {}
  for c = 1, 5 do out[c .. "xx"] = m:sum("relayhost_http_requests_total", 'code="' .. c .. '%d%d"') end
  return out
end

return M
