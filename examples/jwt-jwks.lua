-- JWTs checked against a JWKS: the identity provider's keys are fetched once and kept
-- (relay.jwks: refetched after --jwks-ttl, or early for a token whose kid is new). A valid
-- token's subject goes upstream as X-Subject; anything else gets 401 with the reason.
--
--   relayhost examples/jwt-jwks.lua --upstream http://127.0.0.1:9001 \
--     --jwks-url https://idp.example.com/.well-known/jwks.json \
--     --issuer https://idp.example.com/ --audience my-api
local relay = require "relay"

local app = relay.new {
  name = "jwt-jwks",
  description = "a prefix proxy that admits requests carrying a JWT signed by a key of a JWKS",
  flags = {
    upstream = { type = "url", required = true, help = "where admitted requests go" },
    prefix = { default = "/", help = "the mount prefix" },
    jwks_url = { type = "url", required = true, help = "the JWKS document holding the signing keys" },
    jwks_ttl = { default = 300, min = 1, help = "seconds the keys are trusted before a refetch" },
    issuer = { required = true, help = "the iss every token must carry" },
    audience = { required = true, help = "the audience every token must name (in its aud string or list)" },
    leeway = { default = 30, min = 0, help = "seconds of clock skew allowed on exp and nbf" },
  },
}
local flags = app.flags
local keys = relay.jwks(flags.jwks_url, { ttl = flags.jwks_ttl })

local function deny(reason)
  reason = reason:gsub('[%c"\\]', "?") -- a reason may quote the token's kid: keep the header sound
  return 401, reason .. "\n",
    { ["www-authenticate"] = ('Bearer error="invalid_token", error_description="%s"'):format(reason) }
end

local function access(req)
  local token = relay.auth.bearer(req) -- "Authorization: Bearer <token>", one field only
  if not token then return deny("missing bearer token") end
  local claims, err = keys:verify(token, { iss = flags.issuer, aud = flags.audience,
                                           leeway = flags.leeway, require_exp = true })
  if not claims then return deny(err) end
  if type(claims.sub) ~= "string" or claims.sub == "" then return deny("token has no subject") end
  req.headers["x-subject"] = claims.sub -- set over whatever the client sent
end

app:mount(flags.prefix, relay.proxy { target_base_url = flags.upstream, access = access,
  drop_request_headers = { "authorization" } })

return app
