-- The flag evaluator of ff-proxy's /evaluations (the Go SDK's rules, spec §2.4): prerequisites,
-- off state, target map, rules (clauses ANDed), percentage rollouts, default serve; segment
-- membership by excluded / included / serving rules (AND) / legacy rules (OR).
local murmur3 = require "relay.murmur3"

local M = {}

local function list(v) return type(v) == "table" and v or {} end

-- A target attribute as a string, the way Go formats it.
local function attr_value(target, attr)
  local v = nil
  if attr == "identifier" or attr == "name" then
    v = target[attr] -- formatted like any attribute: a target from a header may hold anything
  elseif type(target.attributes) == "table" then
    v = target.attributes[attr]
  end
  local t = type(v)
  if t == "nil" or t == "userdata" then return "" end -- absent, or JSON null
  if t == "string" then return v end
  if t == "boolean" then return tostring(v) end
  if t == "number" then
    if v == math.floor(v) and math.abs(v) < 2^53 then return ("%d"):format(v) end
    for _, f in ipairs { "%.15g", "%.16g", "%.17g" } do -- shortest that round-trips, as Go's -1
      local out = f:format(v)
      if tonumber(out) == v then return out end
    end
  end
  if t == "table" then return require("cjson").encode(v) end
  return tostring(v)
end

-- Go regexp is not Lua patterns: the common subset (anchors, ., classes, *, +, ?, \d\w\s) is
-- translated; anything else (alternation, groups, counts) does not match.
local function regex_match(re, s)
  if re:find("[|(){}]") then return false end
  local pat = re:gsub("%%", "%%%%"):gsub("%-", "%%-"):gsub("\\([dws])", "%%%1"):gsub("\\(%p)", "%%%1")
  local ok, found = pcall(string.find, s, pat)
  return ok and found ~= nil
end

local in_segments

local ops = {
  starts_with = function(a, v) return a:sub(1, #v[1]) == v[1] end,
  ends_with = function(a, v) return v[1] == "" or a:sub(-#v[1]) == v[1] end,
  contains = function(a, v) return a:find(v[1], 1, true) ~= nil end,
  equal = function(a, v) return a:lower() == v[1]:lower() end,
  equal_sensitive = function(a, v) return a == v[1] end,
  ["in"] = function(a, v) for _, x in ipairs(v) do if x == a then return true end end return false end,
  gt = function(a, v) return a > v[1] end,
  match = function(a, v) return regex_match(v[1], a) end,
}

-- depth: how many target groups deep (groups may name groups; the validator refuses cycles,
-- and this stops one that got past it).
local function clause_matches(ctx, clause, target, depth)
  local values = list(clause.values)
  if not clause.op or clause.op == "" or #values == 0 then return false end
  if clause.op == "segmentMatch" then return in_segments(ctx, values, target, (depth or 0) + 1) end
  local a = attr_value(target, clause.attribute or "")
  if a == "" then return false end
  local op = ops[clause.op]
  return op ~= nil and op(a, values) or false
end

local function all_match(ctx, clauses, target, depth)
  for _, c in ipairs(list(clauses)) do
    if not clause_matches(ctx, c, target, depth) then return false end
  end
  return true
end

local function target_in(list_of, target)
  for _, t in ipairs(list(list_of)) do
    if t.identifier == target.identifier then return true end
  end
  return false
end

-- Is the target in any of these segments? Being excluded from one answers false for all.
function in_segments(ctx, ids, target, depth)
  depth = depth or 1
  if depth > 16 then return false end
  for _, id in ipairs(ids) do
    local seg = ctx.segments[id]
    if seg then
      if target_in(seg.excluded, target) then return false end
      if target_in(seg.included, target) then return true end
      local serving = list(seg.servingRules)
      if #serving > 0 then
        for _, rule in ipairs(serving) do
          if all_match(ctx, rule.clauses, target, depth) then return true end
        end
      else
        for _, c in ipairs(list(seg.rules)) do
          if clause_matches(ctx, c, target, depth) then return true end
        end
      end
    end
  end
  return false
end

-- The SDKs' bucket of a target: 1..100.
local function bucket(bucket_by, value) return murmur3.hash(bucket_by .. ":" .. value) % 100 + 1 end
M.bucket = bucket

local function distribute(dist, target)
  local bucket_by = dist.bucketBy or "identifier"
  local value = attr_value(target, bucket_by)
  if value == "" then bucket_by, value = "identifier", attr_value(target, "identifier") end
  local chosen, total = nil, 0
  local slot = value ~= "" and bucket(bucket_by, value) or nil
  for _, v in ipairs(list(dist.variations)) do
    chosen = v.variation
    total = total + (tonumber(v.weight) or 0)
    if slot and total > 0 and slot <= total then return v.variation end
  end
  return chosen
end

local function serve(s, target)
  if type(s) ~= "table" then return nil end
  if type(s.distribution) == "table" then return distribute(s.distribution, target) end
  return s.variation
end

local function from_target_map(ctx, flag, target)
  for _, m in ipairs(list(flag.variationToTargetMap)) do
    if target_in(m.targets, target) then return m.variation end
    local segs = list(m.targetSegments)
    if #segs > 0 and in_segments(ctx, segs, target) then return m.variation end
  end
end

local function from_rules(ctx, flag, target)
  for _, rule in ipairs(list(flag.rules)) do
    if all_match(ctx, rule.clauses, target) then
      local v = serve(rule.serve, target)
      if v and v ~= "" then return v end
    end
  end
end

-- The variation identifier a flag serves, prerequisites aside.
local function variation_id(ctx, flag, target)
  if flag.state ~= "on" then return flag.offVariation end
  local v = from_target_map(ctx, flag, target)
  if not v or v == "" then v = from_rules(ctx, flag, target) end
  local ds = type(flag.defaultServe) == "table" and flag.defaultServe or {}
  if (not v or v == "") and type(ds.distribution) == "table" then v = distribute(ds.distribution, target) end
  if not v or v == "" then v = ds.variation end
  return v
end

local function prerequisites_pass(ctx, flag, target, depth)
  if depth > 32 then return false end -- a prerequisite cycle: serve off
  for _, pre in ipairs(list(flag.prerequisites)) do
    local pf = ctx.flags[pre.feature]
    if pf then -- a missing prerequisite flag is ignored, as the Go SDK does
      local got, ok = variation_id(ctx, pf, target), false
      for _, want in ipairs(list(pre.variations)) do ok = ok or want == got end
      if not ok then return false end
      if #list(pf.prerequisites) > 0 and not prerequisites_pass(ctx, pf, target, depth + 1) then return false end
    end
  end
  return true
end

local function find_variation(flag, id)
  for _, v in ipairs(list(flag.variations)) do
    if v.identifier == id then return v end
  end
end

-- ctx: { flags = id -> FeatureConfig, segments = id -> Segment }. Returns the variation table,
-- or nil and a reason.
function M.evaluate(ctx, flag, target)
  local id
  if #list(flag.prerequisites) > 0 and not prerequisites_pass(ctx, flag, target, 0) then
    id = flag.offVariation
  else
    id = variation_id(ctx, flag, target)
  end
  local v = find_variation(flag, id)
  if not v then return nil, ("flag %s: variation '%s' not found"):format(tostring(flag.feature), tostring(id)) end
  return v
end

return M
