-- The flag proxy's cache: environments (flags, segments, targets, SDK key hashes) with their
-- JSON answers encoded once per change. Versions are kept in a shared dictionary, which
-- outlives reloads: an item whose content changed gets a higher version (Node SDKs ignore a
-- flag whose version did not go up), and set_env returns the SSE events for what changed.
local relay = require "relay"
local json = require "relay.json"

local sha256_hex = relay.crypto.sha256_hex

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

-- data (checked by relay.flag.validate): { flags = [FeatureConfig], segments = [Segment],
-- targets = [Target], keys = [sha256hex] }. Returns the SSE events for what changed since this
-- environment was last set (none the first time this process sees it).
function Store:set_env(env_id, data)
  local loaded_key = "loaded\t" .. env_id
  local notify = self.dict:get(loaded_key) ~= nil
  local events = {}
  local env = { id = env_id, flags = data.flags, segments = data.segments, targets = data.targets, keys = data.keys,
                target = index(data.targets, "identifier"), item_json = {} }
  for _, kind in ipairs(KINDS) do
    self:_version(env_id, kind, env[kind.list], notify, events)
    env[kind.by] = index(env[kind.list], kind.id)
  end
  self:remove_env(env_id)
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

-- An item as served: a segment as ff-proxy serves it, with servingRules null unless AND_RULES
-- and ?rules=v2 (then rules is null).
local function served(item, kind, v2)
  if kind ~= "segment" then return item end
  local out = {}
  for k, v in pairs(item) do out[k] = v end
  if v2 then out.rules = json.null else out.servingRules = json.null end
  return out
end

-- The JSON answer of an environment's list of a kind ("flag" or "segment"), or of one item when
-- id is given (nil when there is none); encoded once, kept until the environment changes.
function Store:answer(env_id, kind, id, rules_v2)
  local env = self.envs[env_id]
  local item = env and id and env[kind][id]
  if not env or (id and not item) then return not id and "[]\n" or nil end
  local v2 = kind == "segment" and rules_v2 and self.and_rules
  local key = kind .. (v2 and "2" or "1") .. (id and "\0" .. id or "")
  local body = env.item_json[key]
  if body then return body end
  if id then
    body = json.encode(served(item, kind, v2)) .. "\n"
  else
    local list = json.array()
    for i, x in ipairs(env[kind .. "s"]) do list[i] = served(x, kind, v2) end
    body = json.encode(list) .. "\n"
  end
  env.item_json[key] = body
  return body
end

return M
