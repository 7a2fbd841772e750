-- relay.schema: the one shape check of data from outside (decoded JSON, Lua tables). A shape is
-- built once from constructors (string, number, integer, boolean, enum, const, any, array,
-- object, map, one_of, variant) and checked as often as needed: check(shape, value, ctx) ->
-- true | nil, "path.to.field: expected …, got …". Checking allocates nothing on success and
-- never raises on what it is given (a custom check that raises is reported as a refusal); the
-- depth it descends is bounded. Options a shape is built with go through relay.check, so a
-- misspelled one is refused at the author's line.
local check = require "relay.check"
local NULL = require("cjson").null -- every cjson instance's null is this one value

local type, rawget, rawset, next, pcall, tostring = type, rawget, rawset, next, pcall, tostring
local find, format, huge = string.find, string.format, math.huge

local MAX_DEPTH = 64
local M = { MAX_DEPTH = MAX_DEPTH }

-- ---- what a value is, in a message ----

-- "text" with every control byte escaped (LuaJIT's %q escapes all but newline); a long one cut
-- at 40 bytes, its length given.
local function quote(s)
  local q = format("%q", #s > 40 and s:sub(1, 40) or s):gsub("\\\n", "\\n")
  return #s > 40 and format("%s... (%d bytes)", q, #s) or q
end

-- nothing, null, an array, an object, an empty object or array, "text", 12, true, a function, ...
function M.describe(v)
  local t = type(v)
  if v == nil then return "nothing" end
  if v == NULL then return "null" end
  if t == "string" then return quote(v) end
  if t == "number" or t == "boolean" then return tostring(v) end
  if t == "table" then
    if next(v) == nil then return "an empty object or array" end
    return rawget(v, 1) ~= nil and "an array" or "an object"
  end
  return "a " .. t
end
local describe = M.describe

local function expected(node, v) return "expected " .. node.what .. ", got " .. describe(v) end

-- A path segment: .name for a plain key, ["odd key"] or [3] otherwise.
local function key_seg(k)
  if type(k) == "string" and #k <= 64 and find(k, "^[%a_][%w_]*$") then return "." .. k end
  return "[" .. (type(k) == "number" and tostring(k) or describe(k)) .. "]"
end

-- ---- walking ----

local walk

local function predicate(node, v, ctx, parent)
  local ok, good, want = pcall(node.check, v, ctx, parent)
  if ok and good then return nil end
  local msg = "expected " .. (ok and type(want) == "string" and want or node.what) .. ", got " .. describe(v)
  if not ok then msg = msg .. " (its check failed: " .. tostring(good) .. ")" end
  return msg, ""
end

-- A shape's own check, then its custom check and its after hook.
walk = function(node, v, ctx, depth, parent)
  local e, p = node.fn(node, v, ctx, depth, parent)
  if e then return e, p end
  if node.check then
    e, p = predicate(node, v, ctx, parent)
    if e then return e, p end
  end
  if node.after then node.after(v) end
end

-- An absent value (or null where null counts as absent): filled from default (into parent[k]),
-- passed if optional, else refused.
local function absent(node, v, parent, k)
  if node.default ~= nil then
    if parent then rawset(parent, k, node.default()) end
    return nil
  end
  if node.optional then return nil end
  return expected(node, v), ""
end

-- One value in its place: parent[k] (or the value checked, without a parent).
local function value(node, v, ctx, depth, parent, k)
  if v == nil or (v == NULL and node.nullable) then return absent(node, v, parent, k) end
  if node.plain then return node.fn(node, v, ctx, depth, parent) end
  return walk(node, v, ctx, depth, parent)
end

local function too_deep() return "expected at most " .. MAX_DEPTH .. " levels of nesting, got more", "" end

local function is_object(v) return type(v) == "table" and rawget(v, 1) == nil end
local function is_array(v) return type(v) == "table" and (next(v) == nil or rawget(v, 1) ~= nil) end

local function check_string(node, v)
  if type(v) ~= "string" or #v < node.min or #v > node.max or (node.pattern and not find(v, node.pattern)) then
    return expected(node, v), ""
  end
end

local function check_number(node, v)
  if type(v) ~= "number" or v ~= v or v < node.min or v > node.max or (node.integer and v % 1 ~= 0) then
    return expected(node, v), ""
  end
end

local function check_boolean(node, v)
  if type(v) ~= "boolean" then return expected(node, v), "" end
end

local function check_enum(node, v)
  if node.set[v] == nil then return expected(node, v), "" end
end

local function check_any() end

-- A repeated value of the item key `unique` names.
local function repeated(node, item, seen)
  local id = type(item) == "table" and rawget(item, node.unique)
  if id == nil or id ~= id then return false end
  if seen[id] then return true end
  seen[id] = true
  return false
end

local function check_array(node, v, ctx, depth)
  if not is_array(v) then return expected(node, v), "" end
  if depth >= MAX_DEPTH then return too_deep() end
  local item, seen, i = node.item, node.unique and {}, 1
  while true do
    local x = rawget(v, i)
    if x == nil then break end
    if i > node.max then return format("expected %s, got more", node.what), "" end
    local e, p = value(item, x, ctx, depth + 1, v, i)
    if e then return e, "[" .. i .. "]" .. p end
    if seen and repeated(node, x, seen) then
      return describe(rawget(x, node.unique)) .. " appears twice", "[" .. i .. "]" .. key_seg(node.unique)
    end
    i = i + 1
  end
  if i - 1 < node.min then return format("expected %s, got %d items", node.what, i - 1), "" end
end

local function unknown(node, k)
  local near = check.nearest(k, node.known)
  return "unknown field" .. (near and format(" (did you mean %q?)", near) or ""), key_seg(k)
end

-- Keys the object does not declare: refused (strict), checked against rest, or let through.
local function check_rest(node, v, ctx, depth)
  local known, rest = node.known, node.rest
  for k, x in next, v do
    if known[k] == nil then
      if node.strict then return unknown(node, k) end
      local e, p = value(rest, x, ctx, depth + 1, v, k)
      if e then return e, key_seg(k) .. p end
    end
  end
end

local function check_object(node, v, ctx, depth)
  if type(v) ~= "table" or rawget(v, 1) ~= nil then return expected(node, v), "" end
  if depth >= MAX_DEPTH then return too_deep() end
  local keys, nodes = node.keys, node.nodes
  for i = 1, node.n do
    local k = keys[i]
    local e, p = value(nodes[i], rawget(v, k), ctx, depth + 1, v, k)
    if e then return e, key_seg(k) .. p end
  end
  if node.strict or node.rest then return check_rest(node, v, ctx, depth) end
end

local function check_map(node, v, ctx, depth)
  if not is_object(v) then return expected(node, v), "" end
  if depth >= MAX_DEPTH then return too_deep() end
  local n = 0
  for k, x in next, v do
    n = n + 1
    if n > node.max then return format("expected at most %d entries, got more", node.max), "" end
    local e = value(node.key, k, ctx, depth + 1)
    if e then return "key " .. e, key_seg(k) end
    local e2, p = value(node.value, x, ctx, depth + 1, v, k)
    if e2 then return e2, key_seg(k) .. p end
  end
end

-- The first alternative that fits; when none does, the error of one whose type fitted but
-- something inside did not (its path is longer), else "expected A or B".
local function check_one_of(node, v, ctx, depth, parent)
  if depth >= MAX_DEPTH then return too_deep() end
  local alts, deep_e, deep_p = node.alts, nil, nil
  for i = 1, #alts do
    local e, p = walk(alts[i], v, ctx, depth + 1, parent)
    if not e then return nil end
    if p ~= "" and not deep_e then deep_e, deep_p = e, p end
  end
  if deep_e then return deep_e, deep_p end
  return expected(node, v), ""
end

local function check_variant(node, v, ctx, depth, parent)
  if not is_object(v) then return expected(node, v), "" end
  if depth >= MAX_DEPTH then return too_deep() end
  local chosen = node.by[rawget(v, node.field)]
  if chosen == nil then return "expected " .. node.tags.what .. ", got " .. describe(rawget(v, node.field)), key_seg(node.field) end
  return walk(chosen, v, ctx, depth + 1, parent)
end

-- check(shape, value, ctx?) -> true | nil, "path: expected …, got …". ctx is handed to custom
-- checks (what they compare against: a flag's own variations, say).
function M.check(node, v, ctx)
  local e, p = value(node, v, ctx, 0)
  if not e then return true end
  if p == "" then return nil, e end
  return nil, (p:sub(1, 1) == "." and p:sub(2) or p) .. ": " .. e
end

-- ---- building shapes ----

local COMMON = { "optional", "nullable", "default", "after", "check", "what" }

local function node(fn, opts, known, what, name)
  opts = opts or {}
  local all = {}
  for _, k in ipairs(COMMON) do all[k] = true end
  for _, k in ipairs(known) do all[k] = true end
  check.options(opts, all, "relay.schema." .. name)
  local n = { fn = fn, what = opts.what or what }
  for k, v in pairs(opts) do if k ~= "what" then n[k] = v end end
  for _, k in ipairs { "default", "after", "check" } do
    if n[k] ~= nil and type(n[k]) ~= "function" then check.fail(("relay.schema.%s: %s must be a function"):format(name, k)) end
  end
  if n.default then n.optional = true end
  n.plain = not (n.check or n.after)
  return n
end

local function bound(v, name, what)
  if v ~= nil and type(v) ~= "number" then check.fail(("relay.schema.%s: %s must be a number"):format(what, name)) end
end

-- "", " of at most 9 characters", " of 1 to 9 characters", ...
local function range_words(min, max, unit)
  if min == max then return format(" of %d %s", min, unit) end
  if max == huge then return format(" of at least %d %s", min, unit) end
  if min == 0 then return format(" of at most %d %s", max, unit) end
  return format(" of %d to %d %s", min, max, unit)
end

-- string{min, max (bytes), pattern (Lua, found anywhere: anchor it with ^ $)}
function M.string(opts)
  local o = opts or {}
  bound(o.min, "min", "string"); bound(o.max, "max", "string")
  if o.pattern ~= nil and (type(o.pattern) ~= "string" or not pcall(find, "", o.pattern)) then
    check.fail("relay.schema.string: pattern must be a valid Lua pattern")
  end
  local min, max = o.min or 0, o.max or huge
  local what = (min == 1 and max == huge) and "a non-empty string"
    or "a string" .. ((min == 0 and max == huge) and "" or range_words(min, max, "bytes"))
  if o.pattern then what = what .. format(" matching %q", o.pattern) end
  local n = node(check_string, opts, { "min", "max", "pattern" }, what, "string")
  n.min, n.max = min, max
  return n
end

local function number(opts, integer, name)
  local o = opts or {}
  bound(o.min, "min", name); bound(o.max, "max", name)
  local min, max = o.min or -huge, o.max or huge
  local what = integer and "an integer" or "a number"
  if min > -huge and max < huge then what = format("%s from %.14g to %.14g", what, min, max)
  elseif min > -huge then what = format("%s >= %.14g", what, min)
  elseif max < huge then what = format("%s <= %.14g", what, max) end
  local n = node(check_number, opts, { "min", "max" }, what, name)
  n.min, n.max, n.integer = min, max, integer
  return n
end

-- number{min, max}: a number (never NaN); integer{min, max}: a whole one.
function M.number(opts) return number(opts, false, "number") end
function M.integer(opts) return number(opts, true, "integer") end

function M.boolean(opts) return node(check_boolean, opts, {}, "a boolean", "boolean") end

-- anything but nothing (and null, with nullable)
function M.any(opts) return node(check_any, opts, {}, "a value", "any") end

local function show(v) return type(v) == "string" and format("%q", v) or tostring(v) end

-- enum({"a", "b"}, opts): one of these values (strings, numbers, booleans).
function M.enum(values, opts)
  if type(values) ~= "table" or values[1] == nil then check.fail("relay.schema.enum: values must be a non-empty list") end
  local set, shown = {}, {}
  for i, v in ipairs(values) do set[v], shown[i] = true, show(v) end
  local what = #shown == 1 and shown[1] or #shown == 2 and (shown[1] .. " or " .. shown[2])
    or "one of " .. table.concat(shown, ", ")
  local n = node(check_enum, opts, {}, what, "enum")
  n.set = set
  return n
end

function M.const(v, opts) return M.enum({ v }, opts) end

local function is_shape(v) return type(v) == "table" and type(v.fn) == "function" and type(v.what) == "string" end

local function shape_arg(v, what)
  if not is_shape(v) then check.fail(("relay.schema.%s: expects a shape (relay.schema.string{...}, ...)"):format(what)) end
  return v
end

-- array(item, {min, max (items), unique = key: no two items share item[key]})
function M.array(item, opts)
  local o = opts or {}
  shape_arg(item, "array")
  bound(o.min, "min", "array"); bound(o.max, "max", "array")
  local min, max = o.min or 0, o.max or huge
  local what = (min == 1 and max == huge) and "a non-empty array"
    or "an array" .. ((min == 0 and max == huge) and "" or range_words(min, max, "items"))
  local n = node(check_array, opts, { "min", "max", "unique" }, what, "array")
  n.item, n.min, n.max = item, min, max
  return n
end

-- object({ name = shape, ... }, {strict = true: refuse other keys; rest = shape: other keys'
-- values}). Fields are checked in name order, so the first error is always the same one.
function M.object(fields, opts)
  if type(fields) ~= "table" then check.fail("relay.schema.object: fields must be a table of shapes") end
  local n = node(check_object, opts, { "strict", "rest" }, "an object", "object")
  n.keys, n.nodes, n.known = {}, {}, {}
  for k in pairs(fields) do n.keys[#n.keys + 1] = k end
  table.sort(n.keys, function(a, b) return tostring(a) < tostring(b) end)
  for i, k in ipairs(n.keys) do n.nodes[i], n.known[k] = shape_arg(fields[k], "object"), true end
  n.n = #n.keys
  if n.rest ~= nil then shape_arg(n.rest, "object") end
  return n
end

-- map(key, value, {max (entries)}): an object whose keys and values have these shapes.
function M.map(key, value, opts)
  shape_arg(key, "map"); shape_arg(value, "map")
  bound(opts and opts.max, "max", "map")
  local n = node(check_map, opts, { "max" }, "an object", "map")
  n.key, n.value, n.max = key, value, n.max or huge
  return n
end

-- one_of({ shape, shape, ... }): the first that fits.
function M.one_of(alts, opts)
  if type(alts) ~= "table" or alts[1] == nil then check.fail("relay.schema.one_of: expects a list of shapes") end
  local whats = {}
  for i, a in ipairs(alts) do whats[i] = shape_arg(a, "one_of").what end
  local n = node(check_one_of, opts, {}, table.concat(whats, " or "), "one_of")
  n.alts = alts
  return n
end

-- variant(field, { [value] = shape, ... }): an object checked by the shape its field names
-- (a frame's "type", say): one lookup instead of trying each.
function M.variant(name, by, opts)
  if type(by) ~= "table" then check.fail("relay.schema.variant: expects a table of shapes by value") end
  local tags = {}
  for v, s in pairs(by) do shape_arg(s, "variant"); tags[#tags + 1] = v end
  table.sort(tags, function(a, b) return tostring(a) < tostring(b) end)
  local n = node(check_variant, opts, {}, "an object", "variant")
  n.field, n.by, n.tags = name, by, M.enum(tags)
  return n
end

-- The same shape, optional (absent passes) and, with nullable, null counting as absent.
function M.optional(shape, nullable)
  shape_arg(shape, "optional")
  local n = {}
  for k, v in pairs(shape) do n[k] = v end
  n.optional, n.nullable = true, nullable or n.nullable
  return n
end

M.null = NULL

return M
