-- relay.check: how the framework refuses what a script author wrote. The message names the
-- author's file:line (the first caller outside lua/relay/, not the framework line that noticed),
-- and every option table the framework takes goes through options(), which refuses keys it does
-- not know and names the nearest known one.
local M = {}

local function dirname(path) return path:match("^(.*)/[^/]*$") or "." end

-- "/a/bin/../share/x" -> "/a/share/x": the library may be found through a relative path.
local function normalize(path)
  local out = {}
  for part in path:gmatch("[^/]+") do
    if part == ".." and #out > 0 and out[#out] ~= ".." then out[#out] = nil
    elseif part ~= "." then out[#out + 1] = part end
  end
  return (path:sub(1, 1) == "/" and "/" or "") .. table.concat(out, "/")
end
M.normalize = normalize

-- The directory holding relay/ (lua/ in a checkout, share/relayhost/lua installed).
local lib = dirname(dirname(debug.getinfo(1, "S").source:sub(2)))
local internal = "@" .. lib .. "/relay/"

local function user_frame(info)
  return info.what ~= "C" and info.currentline > 0 and info.source:sub(1, #internal) ~= internal
end

-- "file:line: " of the first frame above level that is not the framework's ("" when none is).
function M.where(level)
  level = (level or 1) + 1
  while true do
    local info = debug.getinfo(level, "Sl")
    if not info then return "" end
    if user_frame(info) then
      local file = info.source:sub(1, 1) == "@" and info.source:sub(2) or info.short_src
      return ("%s:%d: "):format(file, info.currentline)
    end
    level = level + 1
  end
end

-- The file of the first frame outside the framework (the script that called it), or nil.
function M.caller_file()
  for level = 2, 100 do
    local info = debug.getinfo(level, "S")
    if not info then return nil end
    if info.what ~= "C" and info.source:sub(1, 1) == "@" and info.source:sub(1, #internal) ~= internal then
      return info.source:sub(2)
    end
  end
end

-- Raises msg at the script author's line. at: a "file:line: " taken earlier (a route's, checked
-- once the script has returned), else the current caller's.
function M.fail(msg, at)
  error((at or M.where(2)) .. msg, 0)
end

-- Re-raises an error C raised on the framework's behalf (a URL, a pattern, a header it refuses) at
-- the author's line, without the framework's own file:line.
function M.rethrow(err, at)
  local msg = tostring(err)
  if msg:sub(1, #internal - 1) == internal:sub(2) then msg = msg:gsub("^[^:]*:%d+: ", "", 1) end
  M.fail(msg, at or M.where(2))
end

-- Passes on the results of a C call (ok: pcall's, or true), or re-raises what C refused at the
-- author's line. As a wrapper's last call it also keeps the wrapper's frame while C runs (the C
-- call is not a tail call), so that a wait C cannot do is reported under the wrapper's public
-- name (relay.http.request), not the C function's.
function M.results(ok, ...)
  if not ok then M.rethrow((...)) end
  return ...
end

local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

-- Every word of key is in known ("target_url" in "target_base_url").
local function words_in(key, known)
  local any = false
  for w in key:gmatch("[^_%-]+") do
    if not known:find(w, 1, true) then return false end
    any = true
  end
  return any
end

-- key's letters appear in known in order: an abbreviation ("max_msg" of "max_message").
local function abbreviates(key, known)
  local j = 1
  for i = 1, #key do
    j = known:find(key:sub(i, i), j, true)
    if not j then return false end
    j = j + 1
  end
  return #key >= 3 and key:sub(1, 1) == known:sub(1, 1)
end

-- The known name closest to key, when one is close enough to be a likely misspelling.
function M.nearest(key, known)
  if type(key) ~= "string" then return nil end
  local best, best_d
  local names = {}
  for k in pairs(known) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do
    local d = distance(key:lower(), k:lower())
    if d <= math.max(2, math.floor(#key / 3)) or words_in(key:lower(), k:lower())
        or abbreviates(key:lower(), k:lower()) then
      if not best_d or d < best_d then best, best_d = k, d end
    end
  end
  return best
end

-- known: a set, or an array of names.
local function as_set(known)
  if known[1] == nil then return known end
  local set = {}
  for _, k in ipairs(known) do set[k] = true end
  return set
end

-- Refuses every key of t not in known: "unknown option 'max_bdy' in route GET /x (did you mean
-- 'max_body'?)". what names the table; at as for fail. A nil t passes.
function M.options(t, known, what, at)
  if t == nil then return t end
  if type(t) ~= "table" then M.fail(("%s: options must be a table, got %s"):format(what, type(t)), at or M.where(2)) end
  known = as_set(known)
  local bad = {}
  for k in pairs(t) do
    if not known[k] then
      local near = M.nearest(k, known)
      bad[#bad + 1] = ("unknown option '%s' in %s%s"):format(tostring(k), what,
        near and (" (did you mean '%s'?)"):format(near) or "")
    end
  end
  if #bad > 0 then
    table.sort(bad)
    M.fail(table.concat(bad, "; "), at or M.where(2))
  end
  return t
end

return M
