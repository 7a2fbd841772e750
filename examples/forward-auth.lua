-- Forward auth (nginx's auth_request, Traefik's ForwardAuth): before a request goes up, its
-- credentials go to an auth service. A 2xx lets it through with the service's named headers
-- (X-User, ...) copied up; any other answer is the client's (401/403 with WWW-Authenticate).
--
--   relayhost examples/forward-auth.lua --upstream http://127.0.0.1:9001 \
--     --auth-url http://127.0.0.1:9002/check --copy-headers x-user,x-user-roles
local relay = require "relay"

local app = relay.new {
  name = "forward-auth",
  description = "a prefix proxy that asks an auth service before every request",
  flags = {
    upstream = { type = "url", required = true, help = "where allowed requests go" },
    prefix = { default = "/", help = "the mount prefix" },
    auth_url = { type = "url", required = true, help = "the auth service: 2xx allows, anything else is the client's answer" },
    copy_headers = { default = "x-user", help = "comma-separated headers copied from the auth service's 2xx to the upstream" },
    auth_timeout = { default = 2, min = 0.001, help = "seconds to wait on the auth service (then 503)" },
  },
}
local flags = app.flags

local copied = {}
for name in flags.copy_headers:gmatch("[^,%s]+") do copied[#copied + 1] = name:lower() end
-- what the auth service sees of the request; its answer's headers the client may get
local ASKED = { "authorization", "cookie" }
local ANSWERED = { "www-authenticate", "location", "content-type" }

local function pick(from, names)
  local out = {}
  for _, name in ipairs(names) do out[name] = from[name] end
  return out
end

local function access(req)
  local ask = pick(req.headers, ASKED)
  ask["x-forwarded-method"] = req.method
  ask["x-forwarded-uri"] = req.path .. ((req.query or "") ~= "" and "?" .. req.query or "")
  local r, err = relay.http.request { url = flags.auth_url, headers = ask, timeout = flags.auth_timeout }
  if not r then
    relay.log.warn("auth_unavailable", { id = req.id, err = err })
    return 503, "auth service unavailable\n"
  end
  if r.status < 200 or r.status > 299 then return r.status, r.body, pick(r.headers, ANSWERED) end
  -- the service's value or none: a client's own X-User never goes up
  for _, name in ipairs(copied) do req.headers[name] = r.headers[name] end
end

app:mount(flags.prefix, relay.proxy { target_base_url = flags.upstream, access = access })

return app
