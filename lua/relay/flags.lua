-- Flags: declared by the host and by scripts, read from the command line and the
-- environment, printed by --help. Command line beats environment beats default.
--
-- Accepted shapes (the seeds use all of them): --name value, --name=value, -name value,
-- -name=value; a boolean flag alone means true. Dashes and underscores in names are the same.
local M = {}

local function norm(name) return (name:gsub("_", "-")) end

-- The env var a flag reads unless it names its own: upper snake case of its name.
local function env_name(name) return (name:gsub("-", "_"):upper()) end

-- Host flags every script has. Their env vars carry the RELAY_ prefix so they cannot clash
-- with the product names personalities use.
M.host = {
  { name = "listen", env = "RELAY_LISTEN", help = "address to serve on, HOST:PORT (default: the script's, else 127.0.0.1:8080)" },
  { name = "admin-listen", env = "RELAY_ADMIN_LISTEN", default = "", help = "serve /health, /ready and /metrics on HOST:PORT (off when empty)" },
  { name = "workers", env = "RELAY_WORKERS", default = 1, help = "worker processes sharing the port" },
  { name = "log-level", env = "RELAY_LOG_LEVEL", default = "info", help = "debug, info, warn or error" },
  { name = "trusted-proxies", env = "RELAY_TRUSTED_PROXIES", default = "", help = "CIDRs whose X-Forwarded-For is believed, comma-separated" },
  { name = "drain-timeout", env = "RELAY_DRAIN_TIMEOUT", default = 30, help = "seconds old generations (reload) and connections (shutdown) get to finish" },
  { name = "tls-cert", env = "RELAY_TLS_CERT", default = "", help = "PEM certificate to serve HTTPS with" },
  { name = "tls-key", env = "RELAY_TLS_KEY", default = "", help = "PEM private key for --tls-cert" },
  { name = "pid-file", env = "RELAY_PID_FILE", default = "", help = "write the pid here (for relayhost reload)" },
  { name = "max-head", env = "RELAY_MAX_HEAD", default = 16384, help = "largest request head in bytes (431 above)" },
  { name = "head-timeout", env = "RELAY_HEAD_TIMEOUT", default = 10, help = "seconds a client gets to send a request head (408 after)" },
  { name = "body-timeout", env = "RELAY_BODY_TIMEOUT", default = 30, help = "seconds a request body may stall (408 after)" },
  { name = "keepalive-timeout", env = "RELAY_KEEPALIVE_TIMEOUT", default = 75, help = "seconds an idle keep-alive connection is kept" },
  { name = "send-timeout", env = "RELAY_SEND_TIMEOUT", default = 60, help = "seconds a client may read nothing of a response before it is closed" },
  { name = "watchdog", env = "RELAY_WATCHDOG", default = 10, help = "seconds a handler may run without yielding" },
  { name = "reload-timeout", env = "RELAY_RELOAD_TIMEOUT", default = 5, help = "seconds a reload's script may take to load (tried in a child process first; at most --watchdog)" },
  { name = "upgrade-timeout", env = "RELAY_UPGRADE_TIMEOUT", default = 10, help = "seconds a new binary (relayhost upgrade) gets to serve before it is killed" },
}

local function kind_of(decl)
  if decl.repeatable then return "list" end
  if decl.type then return decl.type end
  local t = type(decl.default)
  if t == "number" or t == "boolean" then return t end
  return "string"
end

local truthy = { ["true"] = true, ["1"] = true, yes = true, on = true }
local falsy = { ["false"] = true, ["0"] = true, no = true, off = true, [""] = true }

local function convert(decl, raw, from)
  local kind = kind_of(decl)
  if kind == "number" then
    local n = tonumber(raw)
    if n and (n ~= n or n == math.huge or n == -math.huge) then n = nil end -- nan, inf
    if not n then error(("%s: '%s' is not a number"):format(from, raw), 0) end
    return n
  elseif kind == "boolean" then
    if raw == true or truthy[raw:lower()] then return true end
    if falsy[raw:lower()] then return false end
    error(("%s: '%s' is not a boolean (true/false)"):format(from, raw), 0)
  elseif kind == "list" then
    local out = {}
    for item in raw:gmatch("[^,]+") do out[#out + 1] = item:match("^%s*(.-)%s*$") end
    return out
  end
  return raw
end

-- decls: array of { name, env, default, help, type, repeatable, key }
-- Returns values keyed by each decl's key (or name), and whether --help was asked for.
function M.parse(decls, argv, getenv)
  getenv = getenv or os.getenv
  local by_name = {}
  for _, d in ipairs(decls) do by_name[norm(d.name)] = d end
  local given, help = {}, false
  local i = 1
  while i <= #argv do
    local a = argv[i]
    local body = a:match("^%-%-?(.+)$")
    if not body then error(("unexpected argument '%s' (flags start with --)"):format(a), 0) end
    local name, value = body:match("^([^=]+)=(.*)$")
    name = norm(name or body)
    if name == "help" or name == "h" then
      help = true
    else
      local d = by_name[name]
      if not d then error(("unknown flag --%s (see --help)"):format(name), 0) end
      if value == nil then
        if kind_of(d) == "boolean" then
          local nxt = argv[i + 1]
          if nxt and (truthy[nxt:lower()] or falsy[nxt:lower()]) and nxt ~= "" then
            value = nxt; i = i + 1
          else
            value = true
          end
        else
          value = argv[i + 1]
          if value == nil then error(("flag --%s needs a value"):format(name), 0) end
          i = i + 1
        end
      end
      local key = d.key or d.name
      if kind_of(d) == "list" then
        local list = given[key] or {}
        for _, v in ipairs(convert(d, value, "--" .. name)) do list[#list + 1] = v end
        given[key] = list
      else
        given[key] = convert(d, value, "--" .. name)
      end
    end
    i = i + 1
  end
  local values = {}
  for _, d in ipairs(decls) do
    local key = d.key or d.name
    local v = given[key]
    if v == nil then
      local env = d.env or env_name(d.name)
      local raw = getenv(env)
      if raw ~= nil and raw ~= "" then v = convert(d, raw, "$" .. env) end
    end
    if v == nil then v = d.default end
    if v == nil and d.required and not help then
      error(("flag --%s (env %s) is required: %s"):format(d.name, d.env or env_name(d.name), d.help or ""), 0)
    end
    values[key] = v
  end
  return values, help
end

local function show_default(d)
  local v = d.default
  if v == nil or v == "" then return "" end
  if type(v) == "table" then v = table.concat(v, ",") end
  return (" (default %s)"):format(type(v) == "string" and ("%q"):format(v) or tostring(v))
end

local function section(lines, title, decls)
  lines[#lines + 1] = title
  for _, d in ipairs(decls) do
    local kind = kind_of(d)
    local arg = kind == "boolean" and "" or (" " .. (kind == "number" and "N" or "VALUE"))
    lines[#lines + 1] = ("  --%s%s%s"):format(d.name, arg, d.repeatable and " (repeatable)" or "")
    lines[#lines + 1] = ("      %s  [env %s]%s"):format(d.help or "", d.env or env_name(d.name), show_default(d))
  end
end

function M.help(app_name, description, script_decls, host_decls)
  local lines = { ("usage: relayhost %s [flags]"):format(app_name) }
  if description then lines[#lines + 1] = description end
  lines[#lines + 1] = ""
  if #script_decls > 0 then section(lines, "flags of this script:", script_decls); lines[#lines + 1] = "" end
  section(lines, "host flags:", host_decls)
  return table.concat(lines, "\n") .. "\n"
end

M.env_name = env_name
return M
