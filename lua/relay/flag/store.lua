-- The flag proxy's cache: environments (flags, segments, targets, SDK key hashes) with their
-- JSON answers encoded once per change. Versions are kept in a shared dictionary, which
-- outlives reloads: an item whose content changed gets a higher version (Node SDKs ignore a
-- flag whose version did not go up), and set_env returns the SSE events for what changed.
local relay = require "relay"
local json = require "relay.json"

local function sha256_hex(s) return (relay.crypto.sha256(s):gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

local M = {}
local Store = {}
Store.__index = Store

local KINDS = {
  { name = "flag", list = "flags", by = "flag", id = "feature" },
  { name = "target-segment", list = "segments", by = "segment", id = "identifier" },
}

-- opts: { and_rules = bool, dict = relay.shared(...) }
function M.new(opts)
  return setmetatable({ envs = {}, key_env = {}, and_rules = opts.and_rules,
                        dict = opts.dict or relay.shared("flag-proxy-state") }, Store)
end

local function content_hash(item)
  local saved = item.version
  item.version = nil
  local h = sha256_hex(json.canon(item))
  item.version = saved
  return h
end

-- Assigns versions to one kind's items and collects events against what was there before.
function Store:_version(env_id, kind, items, notify, events)
  local dict, seen = self.dict, {}
  for _, item in ipairs(items) do
    local id = item[kind.id]
    seen[id] = true
    local key = kind.name .. "\t" .. env_id .. "\t" .. id
    local h = content_hash(item)
    local prev = dict:get(key)
    local ph, pv = (prev or ""):match("^(%x+)\t(%d+)$")
    local own = tonumber(item.version) or 0
    local version, event = own > 0 and own or 1, nil
    if not ph then
      event = "create"
    elseif ph ~= h then
      version, event = math.max(own, tonumber(pv) + 1), "patch"
    else
      version = math.max(own, tonumber(pv))
    end
    item.version = version
    dict:set(key, h .. "\t" .. version)
    if event and notify then
      events[#events + 1] = { event = event, domain = kind.name, identifier = id, version = version, environment = env_id }
    end
  end
  local ids_key = "ids\t" .. kind.name .. "\t" .. env_id
  local ok, listed = pcall(json.decode, dict:get(ids_key) or "[]") -- JSON: an id may hold any byte
  for _, id in ipairs(ok and type(listed) == "table" and listed or {}) do
    if not seen[id] then
      local key = kind.name .. "\t" .. env_id .. "\t" .. id
      local pv = tonumber(((dict:get(key) or ""):match("\t(%d+)$"))) or 0
      dict:delete(key)
      if notify then
        events[#events + 1] = { event = "delete", domain = kind.name, identifier = id, version = pv + 1, environment = env_id }
      end
    end
  end
  local ids = json.array()
  for _, item in ipairs(items) do ids[#ids + 1] = item[kind.id] end
  dict:set(ids_key, json.encode(ids))
end

local function index(items, field)
  local by = {}
  for _, item in ipairs(items) do by[item[field]] = item end
  return by
end

-- data: { flags = [FeatureConfig], segments = [Segment], targets = [Target], keys = [sha256hex] }.
-- Returns the SSE events for what changed since this environment was last set (none the first
-- time this process sees it).
function Store:set_env(env_id, data)
  local loaded_key = "loaded\t" .. env_id
  local notify = self.dict:get(loaded_key) ~= nil
  local events = {}
  local env = { id = env_id, flags = data.flags or {}, segments = data.segments or {},
                targets = data.targets or {}, keys = data.keys or {}, item_json = {} }
  for _, kind in ipairs(KINDS) do self:_version(env_id, kind, env[kind.list], notify, events) end
  env.flag = index(env.flags, "feature")
  env.segment = index(env.segments, "identifier")
  env.target = index(env.targets, "identifier")
  local old = self.envs[env_id]
  if old then
    for _, k in ipairs(old.keys) do if self.key_env[k] == env_id then self.key_env[k] = nil end end
  end
  for _, k in ipairs(env.keys) do self.key_env[k] = env_id end
  self.envs[env_id] = env
  self.dict:set(loaded_key, 1)
  return events
end

function Store:remove_env(env_id)
  local env = self.envs[env_id]
  if not env then return end
  for _, k in ipairs(env.keys) do if self.key_env[k] == env_id then self.key_env[k] = nil end end
  self.envs[env_id] = nil
end

function Store:env_of_key(api_key) return self.key_env[sha256_hex(api_key)] end
function Store:has_key_hash(hash) return self.key_env[hash] ~= nil end

-- Segments as served: ff-proxy nulls servingRules unless AND_RULES and ?rules=v2 (then rules).
local function segment_view(seg, v2)
  local out = {}
  for k, v in pairs(seg) do out[k] = v end
  if v2 then out.rules = json.null else out.servingRules = json.null end
  return out
end

local function cached(env, key, build)
  local s = env.item_json[key]
  if not s then s = build(); env.item_json[key] = s end
  return s
end

function Store:feature_configs(env_id)
  local env = self.envs[env_id]
  if not env then return "[]\n" end
  return cached(env, "\0flags", function() return json.encode(env.flags) .. "\n" end)
end

function Store:feature_config(env_id, id)
  local env = self.envs[env_id]
  local fc = env and env.flag[id]
  if not fc then return nil end
  return cached(env, "f\0" .. id, function() return json.encode(fc) .. "\n" end)
end

function Store:segments_json(env_id, rules_v2)
  local env = self.envs[env_id]
  if not env then return "[]\n" end
  local v2 = rules_v2 and self.and_rules
  return cached(env, v2 and "\0seg2" or "\0seg1", function()
    local list = json.array()
    for i, s in ipairs(env.segments) do list[i] = segment_view(s, v2) end
    return json.encode(list) .. "\n"
  end)
end

function Store:segment_json(env_id, id, rules_v2)
  local env = self.envs[env_id]
  local seg = env and env.segment[id]
  if not seg then return nil end
  local v2 = rules_v2 and self.and_rules
  return cached(env, (v2 and "s2\0" or "s1\0") .. id, function() return json.encode(segment_view(seg, v2)) .. "\n" end)
end

M.sha256_hex = sha256_hex
return M
