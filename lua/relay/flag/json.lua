-- JSON for the Harness shapes. lua-cjson cannot tell an empty array from an empty object, and
-- the SDKs need arrays (Node iterates flag.rules; .NET breaks on null): fields that the API
-- defines as arrays are written as [] when empty. canon() is a key-sorted serialisation for diffs.
-- A private instance, strict as Go's encoding/json on numbers: nan/inf literals are refused, and
-- a number that overflows (1e999) fails decode() instead of failing every answer that would
-- carry it later.
local cjson = require("cjson").new()
cjson.decode_invalid_numbers(false)

local M = { null = cjson.null }

function M.decode(text)
  local v = cjson.decode(text)
  if type(v) == "table" and not pcall(cjson.encode, v) then error("a number out of range (JSON has no Inf or NaN)", 0) end
  return v
end

local ARRAY_FIELDS = {
  rules = true, prerequisites = true, variationToTargetMap = true, targets = true,
  targetSegments = true, variations = true, clauses = true, values = true, included = true,
  excluded = true, servingRules = true, tags = true, segments = true, environments = true,
  apiKeys = true, featureConfigs = true, metricsData = true, targetData = true,
}
-- The placeholder an empty array is encoded as, then replaced by []: unpredictable per process
-- (a heap address and the time), so that no string from a config or an upstream can be taken
-- for it (a key equal to a fixed marker once turned into "[]" and broke the whole answer).
local EMPTY = ("\0empty-array-%s-%x\0"):format(tostring({}):match("0x(%x+)") or "", os.time())
local EMPTY_JSON = cjson.encode(EMPTY)
local EMPTY_PATTERN = EMPTY_JSON:gsub("%p", "%%%0")

local function mark(v, key)
  if type(v) ~= "table" then return v end
  if next(v) == nil then
    if key == true or ARRAY_FIELDS[key] then return EMPTY end
    return v
  end
  local out = {}
  if v[1] ~= nil then
    for i, x in ipairs(v) do out[i] = mark(x, nil) end
  else
    for k, x in pairs(v) do out[k] = mark(x, k) end
  end
  return out
end

-- encode(value, top_is_array): top_is_array says an empty top-level table is [].
function M.encode(v, top_is_array)
  local s = cjson.encode(mark(v, top_is_array or nil))
  if s == EMPTY_JSON then return "[]" end
  -- only where a value stands (before , ] or }): whatever a key holds, the output stays JSON
  if s:find(EMPTY_JSON, 1, true) then s = s:gsub(EMPTY_PATTERN .. "([,%]}])", "[]%1") end
  return s
end

-- A deterministic serialisation (keys sorted) for change detection: not JSON, but cheap
-- (cjson.encode per scalar made it the slowest step of a reload).
local function canon(v, out)
  local t = type(v)
  if t == "string" then out[#out + 1] = "s" .. #v .. ":" .. v; return end
  if t ~= "table" then out[#out + 1] = tostring(v); return end
  if v[1] ~= nil or next(v) == nil then
    out[#out + 1] = "["
    for _, x in ipairs(v) do canon(x, out); out[#out + 1] = "," end
    out[#out + 1] = "]"
    return
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  out[#out + 1] = "{"
  for _, k in ipairs(keys) do
    out[#out + 1] = k
    out[#out + 1] = "="
    canon(v[k], out)
    out[#out + 1] = ";"
  end
  out[#out + 1] = "}"
end

function M.canon(v)
  local out = {}
  canon(v, out)
  return table.concat(out)
end

return M
