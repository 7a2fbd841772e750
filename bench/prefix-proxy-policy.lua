-- The header policy of the bench/prefix-proxy.sh peers, as a relayhost script: /api/x is
-- forwarded to ORIGIN/v1/x with X-Service: main-app set, X-Internal-Token dropped on the way up
-- and X-Debug-Info dropped on the way down (relayhost adds X-Forwarded-For/Proto/Host itself;
-- the mount strips /api and joins /v1).
--
--   relayhost bench/prefix-proxy-policy.lua --mode lua    the policy in on_request/on_response hooks,
--                                                         through the head's methods (set_header, ...)
--   relayhost bench/prefix-proxy-policy.lua --mode table  the same hooks through the head.headers table
--   relayhost bench/prefix-proxy-policy.lua --mode c      the same policy as native proxy options
--   --origin http://127.0.0.1:9001                        where the origin listens
local relay = require "relay"

local app = relay.new {
  name = "bench-proxy",
  description = "the prefix-proxy benchmark's header policy, in Lua hooks (--mode lua) or C options (--mode c)",
  flags = {
    mode = { default = "lua", env = "BENCH_PROXY_MODE",
             help = "lua: on_request/on_response hooks with the head's methods; table: with head.headers; c: extra/drop header options" },
    origin = { default = "http://127.0.0.1:9001", env = "BENCH_PROXY_ORIGIN",
               help = "the origin's base URL (/v1 is joined to it)" },
  },
}

local mode = app.flags.mode
if mode ~= "lua" and mode ~= "table" and mode ~= "c" then
  error(("bench-proxy: --mode %s: want lua, table or c"):format(tostring(mode)), 0)
end
local lua_policy = mode ~= "c"

-- The hooks each way: the methods (nginx+Lua's peer, ngx.req.set_header), or the table.
local hooks = {
  lua = {
    on_request = function(head)
      head:set_header("x-service", "main-app")
      head:del_header("x-internal-token")
    end,
    on_response = function(head) head:del_header("x-debug-info") end,
  },
  table = {
    on_request = function(head)
      head.headers["x-service"] = "main-app"
      head.headers["x-internal-token"] = nil
    end,
    on_response = function(head) head.headers["x-debug-info"] = nil end,
  },
}

app:mount("/api", relay.proxy {
  target_base_url = app.flags.origin .. "/v1",
  extra_request_headers = (not lua_policy) and { ["X-Service"] = "main-app" } or nil,
  drop_request_headers = (not lua_policy) and { "x-internal-token" } or nil,
  drop_response_headers = (not lua_policy) and { "x-debug-info" } or nil,
  on_request = lua_policy and hooks[mode].on_request or nil,
  on_response = lua_policy and hooks[mode].on_response or nil,
})

return app
