-- relay.harness: Harness Feature Flags configs as the SDKs read them (the ff-proxy spec's §2):
-- the one check of their shape, and their evaluation by the SDKs' rules. Pure Lua: usable
-- and testable without a host. The flag proxy serves and evaluates with it; a script that routes
-- or gates requests by a Harness flag (a config fetched from a flag proxy, say) checks what it
-- fetched with check() before evaluate() relies on it.
--
-- check(): flags (kind, state, variations, defaultServe, offVariation, rules and clauses,
-- variationToTargetMap, prerequisites), target groups and targets, declared as relay.schema
-- shapes. What does not fit is refused with a message naming the source, the item and the
-- field; absent or null lists are filled in as [] (the SDKs iterate them). The check also
-- decides what is written back: every list it accepts carries relay.json's array mark (an empty
-- one, or {} where a list belongs, is served as []), every object loses it ([] where an object
-- belongs is served as {}).
--
-- evaluate(): the Go SDK's rules (spec §2.4): prerequisites, off state, target map, rules
-- (clauses ANDed), percentage rollouts, default serve; segment membership by excluded / included
-- / serving rules (AND) / legacy rules (OR).
local json = require "relay.json"
local S = require "relay.schema"
local murmur3 = require "relay.murmur3"

local M = {}
local NULL, describe = json.null, S.describe

-- ==== the check ====
local function unmark(t) setmetatable(t, nil) end
local function with(o, k, v) o = o or {}; o[k] = v; return o end

local function object(fields, o) return S.object(fields, with(o, "after", unmark)) end
local function array(item, o) return S.array(item, with(o, "after", json.array)) end
-- A list the SDKs iterate: absent or null becomes [].
local function sdk_list(item) return array(item, { default = json.array, nullable = true }) end
local function opt(shape) return S.optional(shape, true) end

local function has(v) return v ~= nil and v ~= NULL end

local str, nonempty = S.string(), S.string { min = 1 }
local ostr, onum = opt(str), opt(S.number())
local strings = array(str)

-- ---- flags ----
-- A flag's checks are handed ctx = { kind, vars }: its kind and the set of its variations.

local function known_variation(v, ctx) return ctx.vars[v] ~= nil, "one of the flag's variations" end
local variation_ref = S.string { min = 1, check = known_variation }

local function of_kind(v, ctx)
  if ctx.kind == "int" then return tonumber(v) ~= nil, "a number (kind int)" end
  if ctx.kind == "json" then return (pcall(json.decode, v)), "JSON text (kind json)" end
  return true
end

local variations = array(object { identifier = nonempty, value = S.string { check = of_kind }, name = ostr },
                         { min = 1, unique = "identifier" })
local kinds = S.enum { "boolean", "int", "string", "json" }

-- A serve's variation counts only without a distribution (which wins, as in the SDKs).
local function serve_variation(v, ctx, s)
  return has(s.distribution) or (type(v) == "string" and ctx.vars[v] ~= nil), "one of the flag's variations"
end

local SERVE = object({
  distribution = opt(object {
    bucketBy = ostr,
    variations = array(object { variation = variation_ref, weight = S.number { min = 0 } }, { min = 1 }),
  }),
  variation = opt(S.any { check = serve_variation }),
}, { check = function(s) return has(s.distribution) or has(s.variation), "a variation or a distribution" end })

local clauses = sdk_list(object { op = nonempty, attribute = ostr, values = strings, negate = opt(S.boolean()) })
local target_refs = sdk_list(object { identifier = nonempty })

-- kind and variations first: the rest of the flag is checked against them.
local FLAG_HEAD = S.object { kind = kinds, variations = variations }
local FLAG = object {
  feature = nonempty, kind = kinds, state = S.enum { "on", "off" }, variations = variations,
  offVariation = variation_ref, defaultServe = SERVE, version = onum,
  rules = sdk_list(object { clauses = clauses, serve = SERVE, priority = onum, ruleId = ostr }),
  prerequisites = sdk_list(object { feature = nonempty, variations = strings }),
  variationToTargetMap = sdk_list(object { variation = variation_ref, targets = target_refs, targetSegments = sdk_list(str) }),
}

local function check_flag(f)
  local ctx = { kind = f.kind, vars = {} }
  local ok, err = S.check(FLAG_HEAD, f, ctx)
  if not ok then return nil, err end
  for _, v in ipairs(f.variations) do ctx.vars[v.identifier] = true end
  return S.check(FLAG, f, ctx)
end

-- ---- target groups, targets ----

local SEGMENT = object {
  identifier = nonempty, name = ostr, included = target_refs, excluded = target_refs, rules = clauses,
  -- null stays null: it says "use rules"
  servingRules = opt(array(object { clauses = clauses, priority = onum })),
  tags = opt(array(S.any())), version = onum,
}
local TARGET = object { identifier = nonempty, name = ostr, attributes = opt(object {}) }

-- A list file: an array of objects, each with its own non-empty key, no key twice.
local FILES = {}
for _, key in ipairs { "feature", "identifier" } do
  FILES[key] = S.array(S.object { [key] = nonempty }, { unique = key })
end

-- "[2].feature: …" -> "item 2: feature: …"
local function itemized(msg)
  local i, rest = msg:match("^%[(%d+)%]%.?(.*)$")
  if not i then return msg end
  return "item " .. i .. (rest:sub(1, 1) == ":" and rest or ": " .. rest)
end

-- Checks a list of items keyed by `key` with check(item); `what` names an item in messages.
local function items(v, source, what, key, check)
  local ok, err = S.check(FILES[key], v)
  if not ok then return nil, ("%s: %s"):format(source, itemized(err)) end
  for _, item in ipairs(v) do
    ok, err = check(item)
    if not ok then return nil, ("%s: %s %s: %s"):format(source, what, describe(item[key]), err) end
  end
  json.array(v)
  return true
end

local function check_segment(s) return S.check(SEGMENT, s) end
local function check_target(t) return S.check(TARGET, t) end

-- Target groups may name target groups (segmentMatch in their rules): a cycle would recurse
-- for ever in the evaluator, so one is refused. Returns true, or nil and the message.
local function segment_cycles(segs, source)
  local refs = {}
  for _, s in ipairs(segs) do
    local out = {}
    local function scan(cs) for _, c in ipairs(cs) do if c.op == "segmentMatch" then for _, v in ipairs(c.values) do out[#out + 1] = v end end end end
    scan(s.rules)
    for _, r in ipairs(type(s.servingRules) == "table" and s.servingRules or {}) do scan(r.clauses) end
    refs[s.identifier] = out
  end
  local state = {} -- nil: not seen, 1: on the path, 2: done
  local function visit(sid, path)
    if state[sid] == 2 or not refs[sid] then return nil end
    if state[sid] == 1 then return path end
    state[sid] = 1
    for _, to in ipairs(refs[sid]) do
      local cycle = visit(to, path .. " -> " .. to)
      if cycle then return cycle end
    end
    state[sid] = 2
  end
  for _, s in ipairs(segs) do
    local cycle = visit(s.identifier, s.identifier)
    if cycle then
      return nil, ("%s: target group %s: its rules refer back to it through segmentMatch (%s)"):format(source, describe(s.identifier), cycle)
    end
  end
  return true
end

-- data: { flags, segments, targets } (segments and targets may be absent: filled in as []);
-- sources: how messages name each list ({ flags, segments, targets }; defaults "feature
-- configs", "target groups", "targets"). Returns true, or nil and the message.
function M.check(data, sources)
  local src = sources or {}
  data.segments = data.segments == nil and {} or data.segments
  data.targets = data.targets == nil and {} or data.targets
  local segs = src.segments or "target groups"
  local ok, err = items(data.flags, src.flags or "feature configs", "flag", "feature", check_flag)
  if ok then ok, err = items(data.segments, segs, "target group", "identifier", check_segment) end
  if ok then ok, err = segment_cycles(data.segments, segs) end
  if ok then ok, err = items(data.targets, src.targets or "targets", "target", "identifier", check_target) end
  return ok, err
end

-- ==== evaluation ====

local function list(v) return type(v) == "table" and v or {} end
-- The evaluator may be given a config relay.harness.check did not see: a list entry that is
-- not an object (a number, null) is passed over (a clause that is not one fails its rule),
-- never indexed. A type test per entry: a filtering iterator cost 30 % of an evaluation.
local function is_obj(v) return type(v) == "table" end

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
    if not is_obj(c) or not clause_matches(ctx, c, target, depth) then return false end
  end
  return true
end

local function target_in(list_of, target)
  for _, t in ipairs(list(list_of)) do
    if is_obj(t) and t.identifier == target.identifier then return true end
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
          if is_obj(rule) and all_match(ctx, rule.clauses, target, depth) then return true end
        end
      else
        for _, c in ipairs(list(seg.rules)) do
          if is_obj(c) and clause_matches(ctx, c, target, depth) then return true end
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
    if not is_obj(v) then v = {} end
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
    if not is_obj(m) then m = {} end
    if target_in(m.targets, target) then return m.variation end
    local segs = list(m.targetSegments)
    if #segs > 0 and in_segments(ctx, segs, target) then return m.variation end
  end
end

local function from_rules(ctx, flag, target)
  for _, rule in ipairs(list(flag.rules)) do
    if is_obj(rule) and all_match(ctx, rule.clauses, target) then
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
    local pf = is_obj(pre) and ctx.flags[pre.feature]
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
    if is_obj(v) and v.identifier == id then return v end
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


-- The client API's Evaluation of a flag for a target ({ flag, identifier, kind, value }, what
-- /evaluations answers), or nil and a reason.
function M.evaluation(ctx, flag, target)
  local v, why = M.evaluate(ctx, flag, target)
  if not v then return nil, why end
  return { flag = flag.feature, identifier = v.identifier, kind = flag.kind, value = v.value }
end

return M
