-- relay.versions: version numbers for the items of lists that are replaced whole (a mirrored
-- config: feature flags, segments, rules), and the change events that say what a replacement
-- changed. Kept in a shared dictionary (relay.shared), which outlives reloads: an item whose
-- content changed gets a higher version (clients such as Harness's Node SDK ignore an item whose
-- version did not go up), one that is gone a delete event one above its last version.
local relay = require "relay"
local json = require "relay.json"

local M = {}
local Versions = {}
Versions.__index = Versions

-- dict: relay.shared(...); kinds: the lists in the order their events come, each
-- { name = kind, id = the field that names an item }.
function M.new(dict, kinds)
  return setmetatable({ dict = dict, kinds = kinds }, Versions)
end

-- The item's content without its version.
local function content_hash(item)
  local saved = item.version
  item.version = nil
  local h = relay.crypto.sha256_hex(json.canon(item))
  item.version = saved
  return h
end

-- Sets one item's version from the record of its id, which it renews; adds its event (create or
-- patch) to events when notify.
local function record(dict, scope, kind, item, notify, events)
  local id = item[kind.id]
  local key = kind.name .. "\t" .. scope .. "\t" .. id
  local h = content_hash(item)
  local ph, pv = (dict:get(key) or ""):match("^(%x+)\t(%d+)$")
  local own = tonumber(item.version) or 0
  -- only a whole number kept exactly (2^53) is the item's own: the record below holds digits
  if own % 1 ~= 0 or own < 0 or own >= 2^53 then own = 0 end
  local version, event = own > 0 and own or 1, nil
  if not ph then
    event = "create"
  elseif ph ~= h then
    version, event = math.max(own, tonumber(pv) + 1), "patch"
  else
    version = math.max(own, tonumber(pv))
  end
  item.version = version
  dict:set(key, ("%s\t%.0f"):format(h, version)) -- not tostring: 1e14 and up would read "1e+14"
  if event and notify then
    events[#events + 1] = { event = event, kind = kind.name, id = id, version = version, scope = scope }
  end
end

-- Sets item.version on each item of one kind and adds to events what changed since the last
-- update of that scope (a delete for an id that is gone).
function Versions:_kind(scope, kind, items, notify, events)
  local dict, seen, last = self.dict, {}, {}
  -- an id listed twice is one item, its last entry (as a lookup by id finds it): else each
  -- entry would be a change from the other, at every update
  for i, item in ipairs(items) do last[item[kind.id]] = i end
  for i, item in ipairs(items) do
    local id = item[kind.id]
    if last[id] == i then
      seen[id] = true
      record(dict, scope, kind, item, notify, events)
    end
  end
  for _, item in ipairs(items) do item.version = items[last[item[kind.id]]].version end
  local ids_key = "ids\t" .. kind.name .. "\t" .. scope
  local ok, listed = pcall(json.decode, dict:get(ids_key) or "[]") -- JSON: an id may hold any byte
  for _, id in ipairs(ok and type(listed) == "table" and listed or {}) do
    if not seen[id] then
      local key = kind.name .. "\t" .. scope .. "\t" .. id
      local pv = tonumber(((dict:get(key) or ""):match("\t(%d+)$"))) or 0
      dict:delete(key)
      if notify then
        events[#events + 1] = { event = "delete", kind = kind.name, id = id, version = pv + 1, scope = scope }
      end
    end
  end
  local ids = json.array()
  for i, item in ipairs(items) do
    if last[item[kind.id]] == i then ids[#ids + 1] = item[kind.id] end
  end
  dict:set(ids_key, json.encode(ids))
end

-- lists: { [kind name] = array of items } for one scope (an environment, a tenant). Sets every
-- item's version and returns the events, { event = "create" | "patch" | "delete", kind, id,
-- version, scope } in the order of kinds then items; none the first time the dictionary sees
-- the scope (nothing was there to change).
function Versions:update(scope, lists)
  local loaded_key = "loaded\t" .. scope
  local notify, events = self.dict:get(loaded_key) ~= nil, {}
  for _, kind in ipairs(self.kinds) do self:_kind(scope, kind, lists[kind.name] or {}, notify, events) end
  self.dict:set(loaded_key, 1)
  return events
end

return M
