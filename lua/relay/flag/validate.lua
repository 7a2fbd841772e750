-- The one check of a flag config against the shape the SDKs and the evaluator rely on (spec §2):
-- flags (kind, state, variations, defaultServe, offVariation, rules and clauses,
-- variationToTargetMap, prerequisites), target groups, targets and SDK key hashes. Every config
-- goes through it before it replaces anything: the offline directory at start and on SIGHUP, an
-- upstream's fetch, a replica's read from Redis. What does not fit is refused with a message
-- naming the source, the item and the field; absent or null lists are filled in as [] (the SDKs
-- iterate them). The check also decides what is written back: every list it accepts carries
-- relay.json's array mark (an empty one, or {} where a list belongs, is served as []), every
-- object loses it ([] where an object belongs is served as {}). Pure Lua: usable and testable
-- without a host.
local json = require "relay.json"

local M = {}
local NULL = json.null

local function kind_of(v)
  if v == nil then return "nothing" end
  if v == NULL then return "null" end
  if type(v) == "table" then return (next(v) == nil or v[1] ~= nil) and "array" or "object" end
  if type(v) == "string" then return ("%q"):format(#v > 40 and v:sub(1, 40) .. "..." or v) end
  return type(v)
end

-- A refusal: a table, so that a bug in the checks is not taken for one.
local function bad(path, want, v) error({ msg = ("%s must be %s, got %s"):format(path, want, kind_of(v)) }, 0) end
local function refuse(msg) error({ msg = msg }, 0) end

local function is_array(v) return type(v) == "table" and (next(v) == nil or v[1] ~= nil) end

local function str(v, path) if type(v) ~= "string" then bad(path, "a string", v) end return v end
local function id(v, path) if type(v) ~= "string" or v == "" then bad(path, "a non-empty string", v) end return v end
local function opt_str(v, path) if v ~= nil and v ~= NULL then str(v, path) end end
local function opt_num(v, path) if v ~= nil and v ~= NULL and type(v) ~= "number" then bad(path, "a number", v) end end
local function object(v, path)
  if type(v) ~= "table" or v[1] ~= nil then bad(path, "an object", v) end
  return setmetatable(v, nil)
end

local function array(v, path) if not is_array(v) then bad(path, "an array", v) end return json.array(v) end
-- A list the SDKs iterate: absent or null becomes [].
local function list(v, path)
  if v == nil or v == NULL then return json.array() end
  return array(v, path)
end

local function each(t, path, fn)
  for i, item in ipairs(t) do fn(item, ("%s[%d]"):format(path, i)) end
end

-- Each object of t's list field `name` (absent or null: filled in as []), checked by fn(item, path).
local function each_of(t, name, fn)
  t[name] = list(t[name], name)
  each(t[name], name, function(item, p) fn(object(item, p), p) end)
end

local function strings(v, path)
  each(array(v, path), path, str)
  return v
end

local function clause(c, path)
  object(c, path)
  id(c.op, path .. ".op")
  opt_str(c.attribute, path .. ".attribute")
  strings(c.values, path .. ".values")
  if c.negate ~= nil and c.negate ~= NULL and type(c.negate) ~= "boolean" then bad(path .. ".negate", "a boolean", c.negate) end
end

local function clauses(v, path)
  local l = list(v, path)
  each(l, path, clause)
  return l
end

local function target_refs(v, path)
  local l = list(v, path)
  each(l, path, function(t, p) id(object(t, p).identifier, p .. ".identifier") end)
  return l
end

-- ---- flags ----

local KINDS = { boolean = true, int = true, string = true, json = true }

local function variation_of(vars, v, path)
  id(v, path)
  if not vars[v] then refuse(("%s %s is not one of the flag's variations"):format(path, kind_of(v))) end
end

local function variations(f)
  local l, vars = array(f.variations, "variations"), {}
  if #l == 0 then refuse("variations must not be empty") end
  each(l, "variations", function(v, p)
    object(v, p)
    local vid = id(v.identifier, p .. ".identifier")
    if vars[vid] then refuse(("%s.identifier %s appears twice"):format(p, kind_of(vid))) end
    vars[vid] = true
    str(v.value, p .. ".value")
    opt_str(v.name, p .. ".name")
    if f.kind == "int" and not tonumber(v.value) then bad(p .. ".value", "a number (kind int)", v.value) end
    if f.kind == "json" and not pcall(json.decode, v.value) then bad(p .. ".value", "JSON text (kind json)", v.value) end
  end)
  return vars
end

local function distribution(d, vars, path)
  object(d, path)
  opt_str(d.bucketBy, path .. ".bucketBy")
  local l = array(d.variations, path .. ".variations")
  if #l == 0 then refuse(path .. ".variations must not be empty") end
  each(l, path .. ".variations", function(w, p)
    object(w, p)
    variation_of(vars, w.variation, p .. ".variation")
    if type(w.weight) ~= "number" or w.weight < 0 then bad(p .. ".weight", "a number >= 0", w.weight) end
  end)
end

-- defaultServe and a rule's serve: a variation, or a distribution (which wins, as in the SDKs).
local function serve(s, vars, path)
  object(s, path)
  if s.distribution ~= nil and s.distribution ~= NULL then return distribution(s.distribution, vars, path .. ".distribution") end
  if s.variation == nil or s.variation == NULL then refuse(path .. " needs a variation or a distribution") end
  variation_of(vars, s.variation, path .. ".variation")
end

local function flag(f)
  if not KINDS[f.kind] then bad("kind", "one of boolean, int, string, json", f.kind) end
  if f.state ~= "on" and f.state ~= "off" then bad("state", '"on" or "off"', f.state) end
  local vars = variations(f)
  variation_of(vars, f.offVariation, "offVariation")
  if f.defaultServe == nil or f.defaultServe == NULL then bad("defaultServe", "an object", f.defaultServe) end
  serve(f.defaultServe, vars, "defaultServe")
  each_of(f, "rules", function(r, p)
    r.clauses = clauses(r.clauses, p .. ".clauses")
    serve(r.serve, vars, p .. ".serve")
    opt_num(r.priority, p .. ".priority")
    opt_str(r.ruleId, p .. ".ruleId")
  end)
  each_of(f, "prerequisites", function(pre, p)
    id(pre.feature, p .. ".feature")
    strings(pre.variations, p .. ".variations")
  end)
  each_of(f, "variationToTargetMap", function(m, p)
    variation_of(vars, m.variation, p .. ".variation")
    m.targets = target_refs(m.targets, p .. ".targets")
    m.targetSegments = list(m.targetSegments, p .. ".targetSegments")
    each(m.targetSegments, p .. ".targetSegments", str)
  end)
  opt_num(f.version, "version")
end

-- ---- target groups, targets, keys ----

local function segment(s)
  opt_str(s.name, "name")
  s.included = target_refs(s.included, "included")
  s.excluded = target_refs(s.excluded, "excluded")
  s.rules = clauses(s.rules, "rules")
  if s.servingRules ~= nil and s.servingRules ~= NULL then -- null stays null: it says "use rules"
    each(array(s.servingRules, "servingRules"), "servingRules", function(r, p)
      r.clauses = clauses(object(r, p).clauses, p .. ".clauses")
      opt_num(r.priority, p .. ".priority")
    end)
  end
  if s.tags ~= nil and s.tags ~= NULL then array(s.tags, "tags") end
  opt_num(s.version, "version")
end

local function target(t)
  opt_str(t.name, "name")
  if t.attributes ~= nil and t.attributes ~= NULL then object(t.attributes, "attributes") end
end

-- Checks a list of items keyed by `key`; `what` names an item in messages.
local function items(v, source, what, key, check)
  local ok, err = pcall(function()
    local l = array(v, "the file")
    local seen = {}
    for i, item in ipairs(l) do
      local ok2, e = pcall(function()
        object(item, "the item")
        id(item[key], key)
      end)
      if not ok2 then refuse(("item %d: %s"):format(i, type(e) == "table" and e.msg or tostring(e))) end
      local label = ("%s %s"):format(what, kind_of(item[key]))
      if seen[item[key]] then refuse(label .. " appears twice") end
      seen[item[key]] = true
      local ok3, e3 = pcall(check, item)
      if not ok3 then refuse(label .. ": " .. (type(e3) == "table" and e3.msg or tostring(e3))) end
    end
  end)
  if ok then return true end
  if type(err) ~= "table" then error(err, 0) end
  return nil, ("%s: %s"):format(source, (err.msg:gsub("^the file must be", "must be")))
end

local function keys(v, source)
  if not is_array(v) then return nil, ("%s: must be an array of sha256 hex strings, got %s"):format(source, kind_of(v)) end
  for i, k in ipairs(v) do
    if type(k) ~= "string" or not k:match("^%x+$") or #k ~= 64 then
      return nil, ("%s: item %d must be a sha256 hex string (64 hex digits), got %s"):format(source, i, kind_of(k))
    end
  end
  json.array(v)
  return true
end

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
      return nil, ("%s: target group %s: its rules refer back to it through segmentMatch (%s)"):format(source, kind_of(s.identifier), cycle)
    end
  end
  return true
end

-- The names of an environment's sources in messages: data.sources (a file or URL per list) or
-- a description.
local function sources(env_id, data)
  local s = type(data.sources) == "table" and data.sources or {}
  return {
    flags = s.flags or ("environment %s feature configs"):format(env_id),
    segments = s.segments or ("environment %s target groups"):format(env_id),
    targets = s.targets or ("environment %s targets"):format(env_id),
    keys = s.keys or ("environment %s API keys"):format(env_id),
  }
end

-- Checks one environment's data { flags, segments, targets, keys } (lists may be absent,
-- except flags), filling in absent lists. Returns true, or nil and the message.
function M.env(env_id, data)
  local src = sources(env_id, data)
  data.segments = data.segments == nil and {} or data.segments
  data.targets = data.targets == nil and {} or data.targets
  data.keys = data.keys == nil and {} or data.keys
  local ok, err = items(data.flags, src.flags, "flag", "feature", flag)
  if ok then ok, err = items(data.segments, src.segments, "target group", "identifier", segment) end
  if ok then ok, err = segment_cycles(data.segments, src.segments) end
  if ok then ok, err = items(data.targets, src.targets, "target", "identifier", target) end
  if ok then ok, err = keys(data.keys, src.keys) end
  return ok, err
end

-- Checks every environment of a config that is to replace what is served: envs is
-- { [env_id] = data }. opts: { allow_empty, flags_elsewhere (flags served in environments this
-- does not replace), where (what the config is, for the no-flags message) }.
function M.envs(envs, opts)
  opts = opts or {}
  local ids, total = {}, opts.flags_elsewhere or 0
  for env_id in pairs(envs) do ids[#ids + 1] = env_id end
  table.sort(ids)
  for _, env_id in ipairs(ids) do
    local ok, err = M.env(env_id, envs[env_id])
    if not ok then return nil, err end
    total = total + #envs[env_id].flags
  end
  if total == 0 and not opts.allow_empty then
    return nil, ("%s: no flags at all; refused, as it would stop serving every flag (ALLOW_EMPTY=true or --allow-empty serves an empty config)")
      :format(opts.where or "the config")
  end
  return true
end

return M
