-- relay.json: JSON with arrays that stay arrays. lua-cjson 2.1.0 (Debian 12) reads [] and {} as
-- the same empty table and writes an empty table as {} (it has no empty_array or array_mt), so
-- one mark is kept here: a metatable. json.array(t) puts it on a table, decode() puts it on every
-- array it reads (empty or not), and encode() writes a marked empty table as []. Nothing is
-- patched into the text: cjson writes every subtree without a marked empty array; only the
-- levels above one are joined here. Numbers are as strict as Go's encoding/json: no NaN or
-- Infinity literals, and one that overflows (1e999) fails decode(), not every later encode.
local cjson = require("cjson").new() -- a private instance: nobody else's settings change ours
cjson.decode_invalid_numbers(false)
cjson.encode_invalid_numbers(false)

local type, next, pairs, getmetatable, setmetatable = type, next, pairs, getmetatable, setmetatable
local concat, huge, find, byte, sub = table.concat, math.huge, string.find, string.byte, string.sub
local cencode, cdecode = cjson.encode, cjson.decode
local ffi = require "ffi"

local M = { null = cjson.null }

local ARRAY = { __name = "relay.json.array" }
local MAX_DEPTH = 1000 -- cjson's own limit, for both directions

-- json.array(t?) -> t, marked to encode as a JSON array even when empty.
function M.array(t)
  t = t or {}
  if type(t) ~= "table" then error("relay.json.array: expects a table", 2) end
  return setmetatable(t, ARRAY)
end

function M.is_array(t) return getmetatable(t) == ARRAY end

-- ---- encode ----

local function key_json(k)
  local t = type(k)
  if t == "string" then return cencode(k) end
  if t == "number" then return '"' .. cencode(k) .. '"' end
  error("relay.json.encode: cannot write a " .. t .. " key (only strings and numbers)", 0)
end

-- 1..n if every key of t is a positive integer (cjson's test for an array), else nil.
local function array_length(t)
  local n, count = 0, 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k % 1 ~= 0 then return nil end
    if k > n then n = k end
    count = count + 1
  end
  if n > 10 and n > count * 2 then error("relay.json.encode: an excessively sparse array", 0) end
  return n
end

local enc

-- This level as text, given the text of the children that have a marked empty array inside.
local function join(t, parts)
  local n = array_length(t)
  if getmetatable(t) == ARRAY and not n then error("relay.json.encode: an array (json.array) with a key that is not an index", 0) end
  local out = {}
  if n then
    for i = 1, n do
      local x = t[i]
      out[i] = parts[i] or (x == nil and "null" or cencode(x))
    end
    return "[" .. concat(out, ",") .. "]"
  end
  for k, x in pairs(t) do out[#out + 1] = key_json(k) .. ":" .. (parts[k] or cencode(x)) end
  return "{" .. concat(out, ",") .. "}"
end

-- The text of t if a marked empty array is inside it (cjson cannot write that), else nil: the
-- caller lets cjson write t whole.
enc = function(t, depth)
  if depth > MAX_DEPTH then error("relay.json.encode: nested deeper than " .. MAX_DEPTH, 0) end
  if next(t) == nil then return getmetatable(t) == ARRAY and "[]" or nil end
  local parts
  for k, x in pairs(t) do
    local s = type(x) == "table" and enc(x, depth + 1)
    if s then parts = parts or {}; parts[k] = s end
  end
  return parts and join(t, parts)
end

-- json.encode(value) -> text; raises on what JSON cannot hold (NaN, Inf, a function, a cycle).
function M.encode(v)
  if type(v) ~= "table" then return cencode(v) end
  return enc(v, 1) or cencode(v)
end

-- ---- decode ----

-- Refuses numbers JSON cannot have come from: cjson reads 1e999 as inf.
local function check_numbers(t)
  for _, x in pairs(t) do
    local tx = type(x)
    if tx == "table" then check_numbers(x)
    elseif tx == "number" and (x ~= x or x == huge or x == -huge) then
      error("relay.json.decode: a number out of range (JSON has no Inf or NaN)", 0)
    end
  end
end

local QUOTE, BACKSLASH, COMMA, OPEN_ARRAY, OPEN_OBJECT, CLOSE_ARRAY, CLOSE_OBJECT = byte('"\\,[{]}', 1, 7)
local SPACE = { [32] = true, [9] = true, [10] = true, [13] = true }
local MINUS, PLUS, ZERO, NINE, E_LOWER, E_UPPER = byte("-+09eE", 1, 6)

-- Whether the number token at p[i] may be beyond a double (cjson reads 1e999 as inf): 200
-- characters or more, or a non-negative exponent of 100 or more. -> that, and the token's end.
local function number_may_overflow(p, i)
  local j, exp_at = i, nil
  while true do
    local c = p[j]
    if c == E_LOWER or c == E_UPPER then exp_at = j
    elseif not (c >= ZERO and c <= NINE or c == MINUS or c == PLUS or c == 46) then break end
    j = j + 1
  end
  if j - i >= 200 then return true, j end
  if not exp_at then return false, j end
  local k = exp_at + 1
  if p[k] == MINUS then return false, j end
  if p[k] == PLUS then k = k + 1 end
  while p[k] == ZERO do k = k + 1 end
  return j - k >= 3, j
end

-- After cjson read text into root, marks its arrays, walking the text's structure beside the
-- tree: a non-empty table read from [...] (cjson gives objects string keys only, so t[1] tells
-- the last of repeated keys apart too), and an empty one read from [] (an empty table does not
-- tell: the last occurrence of its key decides, as in cjson). The text is valid JSON (cjson read
-- it), so the byte loop (compiled by LuaJIT; string.find with a pattern is not) needs no bounds
-- beyond its grammar. A key is only cut out of the text when a container is its value.
-- -> whether a number may have overflowed (then the tree's numbers are looked at).
local function mark_arrays(text, root)
  local p = ffi.cast("const uint8_t *", text)
  -- the open containers: node (or false where the tree has no table), is it an array, the
  -- index of its current element, or where its current key's quotes are (text offsets)
  local nodes, arrs, idx, key_at, key_end, d = {}, {}, {}, {}, {}, 0
  local want_key, overflow = false, false
  local found, n = {}, 0 -- empty containers: parent, key, is_array triples in text order
  local i, len = 0, #text
  while i < len do
    local ch = p[i]
    if ch == QUOTE then
      local j, b = i, nil -- j: the closing quote (0-based), found by memchr (a plain find)
      repeat
        j = find(text, '"', j + 2, true) - 1
        b = j - 1
        while p[b] == BACKSLASH do b = b - 1 end
      until (j - 1 - b) % 2 == 0 -- an even run of backslashes escapes nothing
      if want_key then key_at[d], key_end[d], want_key = i, j, false end
      i = j
    elseif ch == OPEN_ARRAY or ch == OPEN_OBJECT then
      local parent, k, node = nil, nil, root
      if d > 0 then
        parent = nodes[d]
        if arrs[d] then k = idx[d]
        else
          k = sub(text, key_at[d] + 2, key_end[d])
          if find(k, "\\", 1, true) then k = cdecode(sub(text, key_at[d] + 1, key_end[d] + 1)) end
        end
        node = parent and parent[k]
        if type(node) ~= "table" then node = false end
      end
      local j = i + 1
      while SPACE[p[j]] do j = j + 1 end
      if p[j] == CLOSE_ARRAY or p[j] == CLOSE_OBJECT then
        found[n + 1], found[n + 2], found[n + 3], n = parent, k, ch == OPEN_ARRAY, n + 3
        i = j
      else
        if ch == OPEN_ARRAY and node and node[1] ~= nil then setmetatable(node, ARRAY) end
        d = d + 1
        nodes[d], arrs[d], idx[d], want_key = node, ch == OPEN_ARRAY, 1, ch == OPEN_OBJECT
      end
    elseif ch == COMMA then
      if arrs[d] then idx[d] = idx[d] + 1 else want_key = true end
    elseif ch == MINUS or ch >= ZERO and ch <= NINE then
      local big, j = number_may_overflow(p, i)
      overflow = overflow or big
      i = j - 1
    elseif ch == CLOSE_ARRAY or ch == CLOSE_OBJECT then
      nodes[d], d = nil, d - 1
    end
    i = i + 1
  end
  for j = 1, n, 3 do
    local parent, k, is_array = found[j], found[j + 1], found[j + 2]
    local t = parent == nil and root or parent and parent[k]
    if type(t) == "table" and next(t) == nil then setmetatable(t, is_array and ARRAY or nil) end
  end
  return overflow
end

-- json.decode(text) -> value; raises on text that is not JSON. Every array read carries the
-- array mark, so it is written back as an array even if it was (or became) empty.
function M.decode(text)
  local v = cdecode(text)
  if type(v) ~= "table" then
    if v ~= v or v == huge or v == -huge then error("relay.json.decode: a number out of range (JSON has no Inf or NaN)", 0) end
    return v
  end
  if mark_arrays(text, v) then check_numbers(v) end
  return v
end

-- json.decode_table(text) -> the object or array text holds, or nil and why (not JSON, or JSON
-- that is not an object or array: what a peer's body, token or event must be before a field is read).
function M.decode_table(text)
  local ok, v = pcall(M.decode, text)
  if not ok then return nil, v end
  if type(v) ~= "table" then return nil, "not a JSON object or array" end
  return v
end

-- ---- canon ----

-- A deterministic serialisation (keys sorted) for change detection: not JSON, but cheap (a
-- reload compares whole configs with it; cjson.encode per scalar was the slowest step).
local function by_string(a, b) return tostring(a) < tostring(b) end

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
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, by_string)
  out[#out + 1] = "{"
  for _, k in ipairs(keys) do
    out[#out + 1] = tostring(k)
    out[#out + 1] = "="
    canon(v[k], out)
    out[#out + 1] = ";"
  end
  out[#out + 1] = "}"
end

-- json.canon(value) -> a string equal for equal values, whatever the order of their keys.
function M.canon(v)
  local out = {}
  canon(v, out)
  return table.concat(out)
end

-- json.indent(text, step?) -> the JSON text encode() wrote, laid out for people: one member per
-- line, indented by step spaces (2), "key": value, empty [] and {} kept on one line (Go's
-- json.MarshalIndent layout, which files other tools read and people diff are written in).
function M.indent(text, step)
  local pad, out, depth, i = (" "):rep(step or 2), {}, 0, 1
  local function nl() out[#out + 1] = "\n" .. pad:rep(depth) end
  while true do
    local j = find(text, '[][{},:"]', i)
    if not j then out[#out + 1] = sub(text, i); break end
    out[#out + 1] = sub(text, i, j - 1)
    local c = byte(text, j)
    if c == QUOTE then -- a string: copied whole, escapes included
      local k = j + 1
      while true do
        k = find(text, '["\\]', k)
        if byte(text, k) == QUOTE then break end
        k = k + 2
      end
      out[#out + 1], j = sub(text, j, k), k
    elseif c == OPEN_ARRAY or c == OPEN_OBJECT then
      local close = byte(text, j + 1)
      if close == CLOSE_ARRAY or close == CLOSE_OBJECT then
        out[#out + 1], j = sub(text, j, j + 1), j + 1
      else
        out[#out + 1], depth = sub(text, j, j), depth + 1
        nl()
      end
    elseif c == CLOSE_ARRAY or c == CLOSE_OBJECT then
      depth = depth - 1
      nl()
      out[#out + 1] = sub(text, j, j)
    elseif c == COMMA then
      out[#out + 1] = ","
      nl()
    else
      out[#out + 1] = ": "
    end
    i = j + 1
  end
  return concat(out)
end

return M
