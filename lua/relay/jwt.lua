-- relay.jwt: HS256 tokens (what ff-proxy signs its SDK tokens with). Verification checks the
-- signature in constant time, the algorithm, and exp/nbf (with optional leeway), iss and aud.
local core = require "relay.core"
local json = require "cjson"

local M = {}

local function b64(s) return core.base64_encode(s, true) end

function M.sign(claims, secret, opts)
  local header = { alg = "HS256", typ = "JWT" }
  for k, v in pairs(opts and opts.header or {}) do header[k] = v end
  local input = b64(json.encode(header)) .. "." .. b64(json.encode(claims))
  return input .. "." .. b64(core.hmac_sha256(secret, input))
end

local function decode_part(part)
  local raw = core.base64_decode(part or "")
  if not raw then return nil end
  local ok, v = pcall(json.decode, raw)
  return ok and type(v) == "table" and v or nil
end

local function split(token)
  if type(token) ~= "string" then return nil, "no token" end
  local h, p, s = token:match("^([%w_-]+)%.([%w_-]+)%.([%w_-]+)$")
  if not h then return nil, "malformed token" end
  local header, claims = decode_part(h), decode_part(p)
  if not header or not claims then return nil, "malformed token" end
  return header, claims, h .. "." .. p, core.base64_decode(s)
end

-- exp/nbf (with leeway), iss and aud, the same for every algorithm.
local function check_claims(claims, opts)
  local now, leeway = opts.now or core.time(), opts.leeway or 0
  if type(claims.exp) == "number" and now > claims.exp + leeway then return nil, "token expired" end
  if type(claims.nbf) == "number" and now + leeway < claims.nbf then return nil, "token not yet valid" end
  if opts.require_exp and type(claims.exp) ~= "number" then return nil, "token has no exp" end
  if opts.iss and claims.iss ~= opts.iss then return nil, "wrong issuer" end
  if opts.aud then
    local aud, ok = claims.aud, false
    if type(aud) == "table" then for _, a in ipairs(aud) do ok = ok or a == opts.aud end else ok = aud == opts.aud end
    if not ok then return nil, "wrong audience" end
  end
  return claims
end

-- Header names RFC 7515 and RFC 7518 define for JWS: never extensions, so never in crit.
local standard = { alg = true, jku = true, jwk = true, kid = true, x5u = true, x5c = true, x5t = true,
                   ["x5t#S256"] = true, typ = true, cty = true, crit = true }

-- RFC 7515 4.1.11: crit lists the extensions a verifier must understand. It must be a non-empty
-- array of distinct names of extensions present in the header; as this verifier understands no
-- extension, a well-formed crit refuses the token too. nil if there is none, else why not.
local function crit_refusal(header)
  local crit = header.crit
  if crit == nil then return nil end
  if type(crit) ~= "table" or #crit == 0 or next(crit, #crit) ~= nil then
    return "invalid crit header: not a non-empty array"
  end
  local seen = {}
  for _, name in ipairs(crit) do
    if type(name) ~= "string" then return "invalid crit header: a name that is not a string" end
    if standard[name] then return "invalid crit header: lists the standard header " .. name end
    if seen[name] then return "invalid crit header: lists " .. name .. " twice" end
    if header[name] == nil then return "invalid crit header: lists " .. name .. ", which the header lacks" end
    seen[name] = true
  end
  return "unsupported critical header " .. crit[1]
end

-- The token's parts if its alg is one of accepted (alg -> true), else nil plus why.
local function open_token(token, accepted)
  local header, claims, input, sig = split(token)
  if not header then return nil, claims end
  if not accepted[header.alg] then return nil, "unsupported alg " .. tostring(header.alg) end
  local crit = crit_refusal(header)
  if crit then return nil, crit end
  if not sig then return nil, "bad signature" end
  return header, claims, input, sig
end

-- verify(token, secret, {leeway, iss, aud, now, require_exp}) -> claims | nil, err
function M.verify(token, secret, opts)
  local header, claims, input, sig = open_token(token, { HS256 = true })
  if not header then return nil, claims end
  if not core.constant_time_equal(sig, core.hmac_sha256(secret, input)) then return nil, "bad signature" end
  return check_claims(claims, opts or {})
end

-- The algorithms verify_jwks accepts and the key type each needs (never "none", never HS256
-- with a public key as the secret).
local asymmetric = { RS256 = "RSA", ES256 = "EC", EdDSA = "OKP" }

local function raw_key(jwk)
  local k = { kty = jwk.kty, crv = jwk.crv }
  for _, m in ipairs { "n", "e", "x", "y" } do
    if type(jwk[m]) == "string" then k[m] = core.base64_decode(jwk[m]) end
  end
  return k
end

-- verify_jwks(token, keys, {leeway, iss, aud, now, require_exp}) -> claims, header | nil, err.
-- keys: the "keys" array of a JWKS document. The token's kid picks the key (without a kid,
-- every key of the right type is tried); RS256, ES256 and EdDSA only, checked in C (OpenSSL).
function M.verify_jwks(token, keys, opts)
  opts = opts or {}
  local header, claims, input, sig = open_token(token, asymmetric)
  if not header then return nil, claims end
  local kty = asymmetric[header.alg]
  local tried, last_err = 0, nil
  for _, jwk in ipairs(keys or {}) do
    if type(jwk) == "table" and jwk.kty == kty and (header.kid == nil or jwk.kid == header.kid)
       and (jwk.alg == nil or jwk.alg == header.alg) and (jwk.use == nil or jwk.use == "sig") then
      tried = tried + 1
      local ok, err = core.jws_verify(header.alg, raw_key(jwk), input, sig)
      if ok then
        local c, why = check_claims(claims, opts)
        if not c then return nil, why end
        return c, header
      end
      last_err = err or last_err
    end
  end
  if tried == 0 then return nil, "no key for kid " .. tostring(header.kid), "unknown_kid" end
  return nil, last_err or "bad signature"
end

return M
