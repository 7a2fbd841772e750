-- relay.murmur3: MurmurHash3 x86 32-bit with seed 0, the non-cryptographic hash that feature
-- flag SDKs (Harness's among them) bucket users into percentage rollouts with; any script that
-- must agree with them on a bucket uses this one. Pure Lua (LuaJIT's bit library): usable and
-- testable without a host.
local bit = require "bit"
local bor, bxor, lshift, rshift, rol, tobit = bit.bor, bit.bxor, bit.lshift,
  bit.rshift, bit.rol, bit.tobit
local byte = string.byte

local M = {}

-- 32-bit multiply: doubles hold 53 bits, so split a into 16-bit halves to stay exact.
local function mul(a, b)
  a, b = a % 0x100000000, b % 0x100000000
  local lo, hi = a % 0x10000, (a - a % 0x10000) / 0x10000
  return tobit(lo * b + ((hi * b) % 0x10000) * 0x10000)
end

local C1, C2 = tobit(0xcc9e2d51), tobit(0x1b873593)

local function mix(k)
  return mul(rol(mul(k, C1), 15), C2)
end

-- hash(s) -> the hash of the bytes of s, 0 .. 2^32-1
function M.hash(s)
  local h, len = 0, #s
  local nblocks = len - len % 4
  for i = 1, nblocks, 4 do
    local b1, b2, b3, b4 = byte(s, i, i + 3)
    local k = bor(b1, lshift(b2, 8), lshift(b3, 16), lshift(b4, 24))
    h = bxor(h, mix(k))
    h = tobit(mul(rol(h, 13), 5) + 0xe6546b64)
  end
  local rest = len - nblocks
  if rest > 0 then
    local k = 0
    local b1, b2, b3 = byte(s, nblocks + 1, len)
    if rest >= 3 then k = bxor(k, lshift(b3, 16)) end
    if rest >= 2 then k = bxor(k, lshift(b2, 8)) end
    k = bxor(k, b1)
    h = bxor(h, mix(k))
  end
  h = bxor(h, len)
  h = bxor(h, rshift(h, 16))
  h = mul(h, 0x85ebca6b)
  h = bxor(h, rshift(h, 13))
  h = mul(h, 0xc2b2ae35)
  h = bxor(h, rshift(h, 16))
  return h % 0x100000000 -- unsigned, as the SDKs see it
end

return M
