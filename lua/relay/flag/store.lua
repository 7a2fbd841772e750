-- The flag proxy's cache: environments (flags, segments, targets, SDK key hashes) with their
-- JSON answers encoded once per change. Versions come from relay.versions (kept across reloads:
-- Node SDKs ignore a flag whose version did not go up), and set_env returns the SSE events for
-- what changed.
local relay = require "relay"
local json = require "relay.json"
local versions = require "relay.versions"

local sha256_hex = relay.crypto.sha256_hex

local M = {}
local Store = {}
Store.__index = Store

local KINDS = { { name = "flag", id = "feature" }, { name = "target-segment", id = "identifier" } }

-- opts: { and_rules = bool }
function M.new(opts)
  local dict = relay.shared("flag-proxy-state")
  return setmetatable({ envs = {}, key_env = {}, and_rules = opts.and_rules, dict = dict,
                        versions = versions.new(dict, KINDS) }, Store)
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
  local env = { id = env_id, flags = data.flags, segments = data.segments, targets = data.targets, keys = data.keys,
                target = index(data.targets, "identifier"), flag = index(data.flags, "feature"),
                segment = index(data.segments, "identifier"), item_json = {} }
  local events = self.versions:update(env_id, { flag = data.flags, ["target-segment"] = data.segments })
  for i, ev in ipairs(events) do -- as the SDKs read them (spec §1.5)
    events[i] = { event = ev.event, domain = ev.kind, identifier = ev.id, version = ev.version,
                  environment = env_id }
  end
  self:remove_env(env_id)
  for _, k in ipairs(env.keys) do self.key_env[k] = env_id end
  self.envs[env_id] = env
  return events
end

-- The ids of the environments served, sorted (a JSON array: a proxy token lists them).
function Store:ids()
  local ids = json.array()
  for id in pairs(self.envs) do ids[#ids + 1] = id end
  table.sort(ids)
  return ids
end

function Store:remove_env(env_id)
  local env = self.envs[env_id]
  if not env then return end
  for _, k in ipairs(env.keys) do if self.key_env[k] == env_id then self.key_env[k] = nil end end
  self.envs[env_id] = nil
end

function Store:env_of_key(api_key) return self.key_env[sha256_hex(api_key)] end

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
