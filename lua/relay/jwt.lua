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

-- verify(token, secret, {leeway, iss, aud, now}) -> claims | nil, err
function M.verify(token, secret, opts)
  opts = opts or {}
  if type(token) ~= "string" then return nil, "no token" end
  local h, p, s = token:match("^([%w_-]+)%.([%w_-]+)%.([%w_-]+)$")
  if not h then return nil, "malformed token" end
  local header, claims = decode_part(h), decode_part(p)
  if not header or not claims then return nil, "malformed token" end
  if header.alg ~= "HS256" then return nil, "unsupported alg " .. tostring(header.alg) end
  local sig = core.base64_decode(s)
  if not sig or not core.constant_time_equal(sig, core.hmac_sha256(secret, h .. "." .. p)) then
    return nil, "bad signature"
  end
  local now, leeway = opts.now or core.time(), opts.leeway or 0
  if type(claims.exp) == "number" and now > claims.exp + leeway then return nil, "token expired" end
  if type(claims.nbf) == "number" and now + leeway < claims.nbf then return nil, "token not yet valid" end
  if opts.iss and claims.iss ~= opts.iss then return nil, "wrong issuer" end
  if opts.aud then
    local aud, ok = claims.aud, false
    if type(aud) == "table" then for _, a in ipairs(aud) do ok = ok or a == opts.aud end else ok = aud == opts.aud end
    if not ok then return nil, "wrong audience" end
  end
  return claims
end

return M
