-- The one check of a flag config before it replaces anything (spec §2): the offline directory at
-- start and on SIGHUP, an upstream's fetch, a replica's read from Redis. relay.harness checks the
-- flags, target groups and targets (and fills in absent lists); this adds the SDK key hashes,
-- names each list's source in messages, and refuses a config that would serve no flag at all.
-- Pure Lua: usable and testable without a host.
local json = require "relay.json"
local S = require "relay.schema"
local harness = require "relay.harness"

local M = {}

local KEYS = S.array(S.string { min = 64, max = 64, pattern = "^%x+$",
                                what = "a sha256 hex string (64 hex digits)" }, { after = json.array })

-- The names of an environment's sources in messages: data.sources (a file or URL per list) or
-- a description.
local LISTS = { flags = "feature configs", segments = "target groups", targets = "targets",
                keys = "API keys" }
local function sources(env_id, data)
  local given, out = type(data.sources) == "table" and data.sources or {}, {}
  for list, what in pairs(LISTS) do out[list] = given[list] or ("environment %s %s"):format(env_id, what) end
  return out
end

-- Checks one environment's data { flags, segments, targets, keys } (lists may be absent,
-- except flags), filling in absent lists. Returns true, or nil and the message.
function M.env(env_id, data)
  local src = sources(env_id, data)
  data.keys = data.keys == nil and {} or data.keys
  local ok, err = harness.check(data, src)
  if ok then
    ok, err = S.check(KEYS, data.keys)
    -- "[2]: …" -> "item 2: …", as relay.harness names an item
    if not ok then err = ("%s: %s"):format(src.keys, (err:gsub("^%[(%d+)%]", "item %1"))) end
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
