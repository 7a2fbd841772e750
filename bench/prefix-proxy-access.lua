-- The bench/prefix-proxy.sh "relayhost-access" row: the peers' header policy with one
-- relay.shared incr in the mount's access phase, the counterpart of nginx+Lua on port 9106
-- (access_by_lua: ngx.shared.seen:incr, then the header policy; header_filter_by_lua hides
-- X-Debug-Info). /api/x is forwarded to ORIGIN/v1/x with X-Service: main-app set and
-- X-Internal-Token dropped, both in the access phase as nginx does them, and X-Debug-Info
-- dropped in on_response. GET /_bench/seen answers the counter, so the benchmark can tell that
-- the access phase ran (a relayhost without one may refuse the `access` key or ignore it).
--
--   relayhost bench/prefix-proxy-access.lua --origin http://127.0.0.1:9001
local relay = require "relay"

local app = relay.new {
  name = "bench-proxy-access",
  description = "the prefix-proxy benchmark's header policy with one relay.shared incr in the access phase",
  flags = {
    origin = { default = "http://127.0.0.1:9001", env = "BENCH_PROXY_ORIGIN",
               help = "the origin's base URL (/v1 is joined to it)" },
  },
}

local seen = relay.shared("seen")

app:get("/_bench/seen", function(_, res)
  res:send(200, tostring(seen:get("n") or 0) .. "\n", { ["content-type"] = "text/plain" })
end)

app:mount("/api", relay.proxy {
  target_base_url = app.flags.origin .. "/v1",
  access = function(req)
    if not seen:incr("n", 1, 0) then return 500, "shared dictionary incr failed\n" end
    req.headers["x-service"] = "main-app"
    req.headers["x-internal-token"] = nil
  end,
  on_response = function(head)
    head:del_header("x-debug-info")
  end,
})

return app
