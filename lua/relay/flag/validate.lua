-- The one check of a flag config against the shape the SDKs and the evaluator rely on (spec §2):
-- flags (kind, state, variations, defaultServe, offVariation, rules and clauses,
-- variationToTargetMap, prerequisites), target groups, targets and SDK key hashes, declared as
-- relay.schema shapes. Every config goes through it before it replaces anything: the offline
-- directory at start and on SIGHUP, an upstream's fetch, a replica's read from Redis. What does
-- not fit is refused with a message naming the source, the item and the field; absent or null
-- lists are filled in as [] (the SDKs iterate them). The check also decides what is written
-- back: every list it accepts carries relay.json's array mark (an empty one, or {} where a list
-- belongs, is served as []), every object loses it ([] where an object belongs is served as {}).
-- Pure Lua: usable and testable without a host.
local json = require "relay.json"
local S = require "relay.schema"

local M = {}
local NULL, describe = json.null, S.describe

local function unmark(t) setmetatable(t, nil) end
local function with(o, k, v) o = o or {}; o[k] = v; return o end

local function object(fields, o) return S.object(fields, with(o, "after", unmark)) end
local function array(item, o) return S.array(item, with(o, "after", json.array)) end
-- A list the SDKs iterate: absent or null becomes [].
local function list(item) return array(item, { default = json.array, nullable = true }) end
local function opt(shape) return S.optional(shape, true) end

local function has(v) return v ~= nil and v ~= NULL end

local str, id = S.string(), S.string { min = 1 }
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

local variations = array(object { identifier = id, value = S.string { check = of_kind }, name = ostr },
                         { min = 1, unique = "identifier" })
local kinds = S.enum { "boolean", "int", "string", "json" }

-- A serve's variation counts only without a distribution (which wins, as in the SDKs).
local function serve_variation(v, ctx, s)
  return has(s.distribution) or (type(v) == "string" and ctx.vars[v] ~= nil), "one of the flag's variations"
end

local serve = object({
  distribution = opt(object {
    bucketBy = ostr,
    variations = array(object { variation = variation_ref, weight = S.number { min = 0 } }, { min = 1 }),
  }),
  variation = opt(S.any { check = serve_variation }),
}, { check = function(s) return has(s.distribution) or has(s.variation), "a variation or a distribution" end })

local clauses = list(object { op = id, attribute = ostr, values = strings, negate = opt(S.boolean()) })
local target_refs = list(object { identifier = id })

-- kind and variations first: the rest of the flag is checked against them.
local FLAG_HEAD = S.object { kind = kinds, variations = variations }
local FLAG = object {
  feature = id, kind = kinds, state = S.enum { "on", "off" }, variations = variations,
  offVariation = variation_ref, defaultServe = serve, version = onum,
  rules = list(object { clauses = clauses, serve = serve, priority = onum, ruleId = ostr }),
  prerequisites = list(object { feature = id, variations = strings }),
  variationToTargetMap = list(object { variation = variation_ref, targets = target_refs, targetSegments = list(str) }),
}

local function flag(f)
  local ctx = { kind = f.kind, vars = {} }
  local ok, err = S.check(FLAG_HEAD, f, ctx)
  if not ok then return nil, err end
  for _, v in ipairs(f.variations) do ctx.vars[v.identifier] = true end
  return S.check(FLAG, f, ctx)
end

-- ---- target groups, targets, keys ----

local SEGMENT = object {
  identifier = id, name = ostr, included = target_refs, excluded = target_refs, rules = clauses,
  -- null stays null: it says "use rules"
  servingRules = opt(array(object { clauses = clauses, priority = onum })),
  tags = opt(array(S.any())), version = onum,
}
local TARGET = object { identifier = id, name = ostr, attributes = opt(object {}) }
local KEYS = array(S.string { min = 64, max = 64, pattern = "^%x+$", what = "a sha256 hex string (64 hex digits)" })

-- A list file: an array of objects, each with its own non-empty key, no key twice.
local FILES = {}
for _, key in ipairs { "feature", "identifier" } do
  FILES[key] = S.array(S.object { [key] = id }, { unique = key })
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

local function segment(s) return S.check(SEGMENT, s) end
local function target(t) return S.check(TARGET, t) end

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
  if ok then
    ok, err = S.check(KEYS, data.keys)
    if not ok then err = ("%s: %s"):format(src.keys, itemized(err)) end
  end
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
