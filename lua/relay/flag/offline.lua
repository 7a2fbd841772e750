-- The original's offline config directory: <dir>/env-<uuid>/{auth_config,feature_config,
-- segments,targets}.json. load() reads it; write() produces it (GENERATE_OFFLINE_CONFIG).
local relay = require "relay"
local json = require "relay.json"
local fs = relay.fs

local M = {}

-- Each environment's files, by the field they fill; keys and flags are required.
local FILES = { { "keys", "auth_config.json", true }, { "flags", "feature_config.json", true },
                { "segments", "segments.json" }, { "targets", "targets.json" } }

local function read_array(path, required)
  local text, err = fs.read(path)
  if not text then return not required and {} or nil, err end -- an optional file may be missing
  local ok, v = pcall(json.decode, text)
  if not ok then return nil, ("%s: not valid JSON (%s)"):format(path, tostring(v)) end
  if v == json.null then return {} end
  -- relay.json tells [] from {} (read as an empty list, {} once wiped every flag)
  if not json.is_array(v) then return nil, ("%s: expected a JSON array"):format(path) end
  return v
end

-- Returns { [env_id] = { keys, flags, segments, targets, sources } }, or nil and a message
-- naming the file that is wrong. The content's shape is checked by relay.flag.validate when the
-- config replaces what is served (sources name the files in its messages).
function M.load(dir)
  local names, err = fs.list(dir)
  if not names then return nil, err end
  local envs = {}
  for _, name in ipairs(names) do
    local id = name:match("^env%-(.+)$")
    if id then
      local env, base = { sources = {} }, dir .. "/" .. name .. "/"
      for _, f in ipairs(FILES) do
        local v, ferr = read_array(base .. f[2], f[3])
        if not v then return nil, ferr end
        env[f[1]], env.sources[f[1]] = v, base .. f[2]
      end
      envs[id] = env
    end
  end
  if not next(envs) then return nil, ("%s holds no env-<id> directory"):format(dir) end
  return envs
end

local function indented(v) return json.indent(json.encode(v)) .. "\n" end

-- Writes every environment of store under dir (the layout load() reads), JSON indented as the
-- original's files are. Returns a line per file written (path and what it holds), or nil and why.
local function write(dir, store)
  local ok, err = fs.mkdir(dir)
  if not ok then return nil, err end
  local wrote = {}
  for _, id in ipairs(store:ids()) do
    local env, base = store.envs[id], dir .. "/env-" .. id
    ok, err = fs.mkdir(base)
    if not ok then return nil, err end
    local files = {}
    for i, f in ipairs(FILES) do files[i] = { f[2], indented(env[f[1]]), #env[f[1]] .. " " .. f[1] } end
    files[#files + 1] = { "README.md", ("Env id: %s\nNumber of Features: %d\nNumber of Segments: %d\n"
      .. "Number of Targets: %d\nGenerated at: %s\n"):format(id, #env.flags, #env.segments, #env.targets,
      os.date("!%Y-%m-%dT%H:%M:%SZ")), "summary" }
    for _, f in ipairs(files) do
      local path = base .. "/" .. f[1]
      ok, err = fs.write(path, f[2])
      if not ok then return nil, err end
      wrote[#wrote + 1] = ("%s (%s)"):format(path, f[3])
    end
  end
  return wrote
end

-- GENERATE_OFFLINE_CONFIG, once the first sync is done: writes cfg.config_dir, prints each file
-- it wrote, and ends the process: exit 0, or 1 with nothing written when the sync failed. This
-- run binds nothing and nothing else runs in it, so nothing is left to drain (relay.terminate
-- would log a SIGTERM nobody sent).
function M.generate(cfg, sync)
  if sync.config_status.state ~= "SYNCED" then
    local why = sync.failure and sync.failure.error or "could not sync"
    relay.log.error("generate_offline_config_failed", { upstream = cfg.base_url, error = why })
    os.exit(1)
  end
  local wrote, err = write(cfg.config_dir, sync.store)
  if not wrote then
    relay.log.error("generate_offline_config_failed", { config_dir = cfg.config_dir, error = err })
    os.exit(1)
  end
  io.stdout:write("flag-proxy: wrote ", cfg.config_dir, " from ", cfg.base_url, ":\n  ",
    table.concat(wrote, "\n  "), "\n")
  io.stdout:flush()
  relay.log.info("offline_config_generated", { config_dir = cfg.config_dir, files = #wrote })
  os.exit(0)
end

return M
