-- The original's offline config directory: <dir>/env-<uuid>/{auth_config,feature_config,
-- segments,targets}.json. load() reads it; write() produces it (GENERATE_OFFLINE_CONFIG).
local relay = require "relay"
local json = require "relay.json"
local fs = relay.fs

local M = {}

local FILES = { keys = "auth_config.json", flags = "feature_config.json",
                segments = "segments.json", targets = "targets.json" }

local function read_array(path, required)
  local text, err = fs.read(path)
  if not text then
    if required then return nil, err end
    return {}
  end
  local ok, v = pcall(json.decode, text)
  if not ok then return nil, ("%s: not valid JSON (%s)"):format(path, tostring(v)) end
  if v == json.null then return {} end
  -- relay.json tells [] from {} (read as an empty list, {} once wiped every flag)
  if not json.is_array(v) then
    return nil, ("%s: expected a JSON array"):format(path)
  end
  return v
end

-- Returns { [env_id] = { keys, flags, segments, targets, sources } }, or nil and a message
-- naming the file that is wrong. The content's shape is checked by relay.flag.validate when the
-- config replaces what is served (sources name the files in its messages).
function M.load(dir)
  local names, err = fs.list(dir)
  if not names then return nil, err end
  local envs, n = {}, 0
  for _, name in ipairs(names) do
    local id = name:match("^env%-(.+)$")
    if id then
      local env, base = { sources = {} }, dir .. "/" .. name .. "/"
      for field, file in pairs(FILES) do
        local v, ferr = read_array(base .. file, field == "keys" or field == "flags")
        if not v then return nil, ferr end
        env[field], env.sources[field] = v, base .. file
      end
      envs[id], n = env, n + 1
    end
  end
  if n == 0 then return nil, ("%s holds no env-<id> directory"):format(dir) end
  return envs
end

-- Writes every environment of store under dir (the layout load() reads).
local function write(dir, store)
  local ok, err = fs.mkdir(dir)
  if not ok then return nil, err end
  for id, env in pairs(store.envs) do
    local base = dir .. "/env-" .. id
    ok, err = fs.mkdir(base)
    if not ok then return nil, err end
    local files = {
      [FILES.keys] = json.encode(env.keys),
      [FILES.flags] = json.encode(env.flags),
      [FILES.segments] = json.encode(env.segments),
      [FILES.targets] = json.encode(env.targets),
      ["README.md"] = ("Env id: %s\nNumber of Features: %d\nNumber of Segments: %d\nNumber of Targets: %d\nGenerated at: %s\n")
        :format(id, #env.flags, #env.segments, #env.targets, os.date("!%Y-%m-%dT%H:%M:%SZ")),
    }
    for name, text in pairs(files) do
      ok, err = fs.write(base .. "/" .. name, text)
      if not ok then return nil, err end
    end
  end
  return true
end

-- GENERATE_OFFLINE_CONFIG, once the first sync is done: writes cfg.config_dir and ends the
-- process (exit 0 as with any SIGTERM; 1 when there is nothing good to write).
function M.generate(cfg, sync)
  if sync.config_status.state ~= "SYNCED" then
    relay.log.error("generate_offline_config_failed", { upstream = cfg.base_url, error = "could not sync" })
    os.exit(1)
  end
  local ok, err = write(cfg.config_dir, sync.store)
  if not ok then
    relay.log.error("generate_offline_config_failed", { config_dir = cfg.config_dir, error = err })
    os.exit(1)
  end
  relay.log.info("offline_config_generated", { config_dir = cfg.config_dir })
  relay.terminate() -- a clean exit 0, as with any SIGTERM
end

return M
