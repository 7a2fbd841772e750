-- Flags: declared by the host and by scripts, read from the command line and the
-- environment, printed by --help. Command line beats environment beats default.
--
-- Accepted shapes (the seeds use all of them): --name value, --name=value, -name value,
-- -name=value; a boolean flag alone means true. Dashes and underscores in names are the same.
local check = require "relay.check"

local M = {}

local function norm(name) return (name:gsub("_", "-")) end

-- The env var a flag reads unless it names its own: upper snake case of its name.
local function env_name(name) return (name:gsub("-", "_"):upper()) end

-- Host flags every script has. Their env vars carry the RELAY_ prefix so they cannot clash
-- with the product names personalities use.
M.host = {
  { name = "listen", env = "RELAY_LISTEN", help = "address to serve on, HOST:PORT (default: the script's, else 127.0.0.1:8080)" },
  { name = "admin-listen", env = "RELAY_ADMIN_LISTEN", default = "", help = "serve /health, /ready and /metrics on HOST:PORT (off when empty)" },
  { name = "workers", env = "RELAY_WORKERS", default = 1, type = "integer", min = 1, max = 256, help = "worker processes sharing the port" },
  { name = "log-level", env = "RELAY_LOG_LEVEL", default = "info", help = "debug, info, warn or error" },
  { name = "log-format", env = "RELAY_LOG_FORMAT", default = "json", choices = { "json", "text" }, help = "json (one object per line) or text (one readable line, colour on a terminal)" },
  { name = "trusted-proxies", env = "RELAY_TRUSTED_PROXIES", default = "", help = "CIDRs whose X-Forwarded-For is believed, comma-separated" },
  { name = "drain-timeout", env = "RELAY_DRAIN_TIMEOUT", default = 30, min = 0, help = "seconds old generations (reload) and connections (shutdown) get to finish" },
  { name = "tls-cert", env = "RELAY_TLS_CERT", default = "", help = "PEM certificate to serve HTTPS with" },
  { name = "tls-key", env = "RELAY_TLS_KEY", default = "", help = "PEM private key for --tls-cert" },
  { name = "pid-file", env = "RELAY_PID_FILE", default = "", help = "write the pid here (for relayhost reload)" },
  { name = "max-head", env = "RELAY_MAX_HEAD", default = 16384, type = "integer", min = 1, help = "largest request head in bytes (431 above)" },
  { name = "head-timeout", env = "RELAY_HEAD_TIMEOUT", default = 10, min = 0, help = "seconds a client gets to send a request head (408 after)" },
  { name = "body-timeout", env = "RELAY_BODY_TIMEOUT", default = 30, min = 0, help = "seconds a request body may stall (408 after)" },
  { name = "keepalive-timeout", env = "RELAY_KEEPALIVE_TIMEOUT", default = 75, min = 0, help = "seconds an idle keep-alive connection is kept" },
  { name = "send-timeout", env = "RELAY_SEND_TIMEOUT", default = 60, min = 0, help = "seconds a client may read nothing of a response before it is closed" },
  { name = "watchdog", env = "RELAY_WATCHDOG", default = 10, min = 0, help = "seconds a handler may run without yielding" },
  { name = "reload-timeout", env = "RELAY_RELOAD_TIMEOUT", default = 5, min = 0, help = "seconds a reload's script may take to load (tried in a child process first; at most --watchdog)" },
  { name = "upgrade-timeout", env = "RELAY_UPGRADE_TIMEOUT", default = 10, min = 0, help = "seconds a new binary (relayhost upgrade) gets to serve before it is killed" },
}

local function kind_of(decl)
  if decl.repeatable then return "list" end
  if decl.type then return decl.type end
  local t = type(decl.default)
  if t == "number" or t == "boolean" then return t end
  return "string"
end

local numeric = { number = true, integer = true, port = true }

local truthy = { ["true"] = true, ["1"] = true, yes = true, on = true }
local falsy = { ["false"] = true, ["0"] = true, no = true, off = true, [""] = true }

local function fmt_num(n) return n == math.floor(n) and ("%d"):format(n) or tostring(n) end

-- The declared constraints on a value already of the right kind: nil, or what is wrong.
local function constraint(decl, v)
  if type(v) == "number" then
    if decl.min and v < decl.min then return ("%s is below the minimum %s"):format(fmt_num(v), fmt_num(decl.min)) end
    if decl.max and v > decl.max then return ("%s is above the maximum %s"):format(fmt_num(v), fmt_num(decl.max)) end
  end
  if decl.choices and type(v) == "string" then
    for _, c in ipairs(decl.choices) do if c == v then return nil end end
    return ("'%s' is not one of %s"):format(v, table.concat(decl.choices, ", "))
  end
end

local function schemes_of(decl) return decl.schemes or { "http", "https" } end

local function url_problem(decl, raw)
  local scheme = raw:match("^(%a[%w+.-]*)://[^/?#]")
  for _, s in ipairs(schemes_of(decl)) do
    if scheme and scheme:lower() == s then return nil end
  end
  local want = {}
  for _, s in ipairs(schemes_of(decl)) do want[#want + 1] = s .. "://" end
  return ("'%s' is not a URL starting with %s"):format(raw, table.concat(want, " or "))
end

-- raw (a string, or true for a bare boolean flag) -> value | nil, what is wrong
local function convert_one(decl, raw)
  local kind = kind_of(decl)
  if numeric[kind] then
    local n = tonumber(raw)
    if n and (n ~= n or n == math.huge or n == -math.huge) then n = nil end -- nan, inf
    if kind == "port" and not (n and n == math.floor(n) and n >= 1 and n <= 65535) then
      return nil, ("'%s' is not a port number (1 to 65535)"):format(raw)
    end
    if not n then return nil, ("'%s' is not a number"):format(raw) end
    if kind == "integer" and n ~= math.floor(n) then return nil, ("'%s' is not a whole number"):format(raw) end
    return n
  elseif kind == "boolean" then
    if raw == true or truthy[raw:lower()] then return true end
    if falsy[raw:lower()] then return false end
    return nil, ("'%s' is not a boolean (true/false)"):format(raw)
  elseif kind == "list" then
    local out = {}
    for item in raw:gmatch("[^,]+") do out[#out + 1] = item:match("^%s*(.-)%s*$") end
    return out
  elseif kind == "url" and raw ~= "" then
    local bad = url_problem(decl, raw)
    if bad then return nil, bad end
  end
  return raw
end

-- Converts and checks one value; what is wrong goes to problems, prefixed with where it came from.
local function convert(decl, raw, from, problems)
  local v, bad = convert_one(decl, raw)
  if decl.any_case and type(v) == "string" then v = v:lower() end -- choices are lower case
  if v ~= nil then
    local items = type(v) == "table" and v or { v }
    for _, item in ipairs(items) do
      bad = bad or constraint(decl, item)
      if not bad and kind_of(decl) == "list" and decl.type == "url" then bad = url_problem(decl, item) end
    end
  end
  if bad then
    problems[#problems + 1] = ("%s: %s"):format(from, bad)
    return nil
  end
  return v
end

-- A decl's env names, in order of precedence: env is a name or an array of names.
local function env_names(d)
  if type(d.env) == "table" then return d.env end
  return { d.env or env_name(d.name) }
end
M.env_names = env_names

-- The first of a decl's env vars that is set: value, name.
local function from_env(d, getenv)
  for _, name in ipairs(env_names(d)) do
    local raw = getenv(name)
    if raw ~= nil and raw ~= "" then return raw, name end
  end
end

-- Raises every problem at once, on one line (the host prints an error's first line): the
-- operator fixes them all in one go.
local function raise(problems)
  if #problems == 1 then error(problems[1], 0) end
  error(("%d problems with flags and environment: %s"):format(#problems, table.concat(problems, "; ")), 0)
end

-- A value from the command line: a list flag given again adds to its list, others are replaced.
local BAD = {} -- given, but refused: neither the env var nor the default stands in for it

local function store(given, d, v)
  local key = d.key or d.name
  if v == nil then given[key] = given[key] or BAD; return end
  if given[key] == BAD then given[key] = nil end
  if kind_of(d) == "list" and given[key] then
    for _, item in ipairs(v) do given[key][#given[key] + 1] = item end
  else
    given[key] = v
  end
end

-- Reads argv into given (keyed by decl key); returns whether --help was asked for.
local function read_argv(by_name, argv, given, problems)
  local help, i = false, 1
  while i <= #argv do
    local a = argv[i]
    local body = a:match("^%-%-?(.+)$")
    local name, value = (body or ""):match("^([^=]+)=(.*)$")
    name = norm(name or body or "")
    local d = by_name[name]
    if not body then
      problems[#problems + 1] = ("unexpected argument '%s' (flags start with --)"):format(a)
    elseif name == "help" or name == "h" then
      help = true
    elseif not d then
      local near = check.nearest(name, by_name)
      problems[#problems + 1] = ("unknown flag --%s (%s)"):format(name,
        near and ("did you mean --%s?"):format(near) or "see --help")
      -- its value, if it has one, is not a second problem
      if value == nil and argv[i + 1] and not argv[i + 1]:match("^%-") then i = i + 1 end
    else
      if value == nil then
        local nxt = argv[i + 1]
        if kind_of(d) == "boolean" then
          value = true
          if nxt and nxt ~= "" and (truthy[nxt:lower()] or falsy[nxt:lower()]) then value = nxt; i = i + 1 end
        elseif nxt == nil then
          problems[#problems + 1] = ("flag --%s needs a value"):format(name)
        else
          value = nxt; i = i + 1
        end
      end
      if value ~= nil then store(given, d, convert(d, value, "--" .. name, problems)) end
    end
    i = i + 1
  end
  return help
end

-- Each declaration's check(value, values) once every value is read (rules that involve other
-- settings: "TLS_ENABLED needs TLS_CERT"), for a flag that has a value: its problems (a message,
-- or a list of them, each naming what it is about) join the others.
local function rules(decls, values, problems)
  for _, d in ipairs(decls) do
    local v = values[d.key or d.name]
    local bad = d.check and v ~= nil and d.check(v, values)
    for _, p in ipairs(type(bad) == "table" and bad or { bad or nil }) do problems[#problems + 1] = p end
  end
end

-- decls: array of { name, env, default, help, type, repeatable, key, required, min, max,
-- choices, any_case, schemes, aliases, check }. any_case: the value is lower-cased before it is
-- checked against choices (given in lower case) and kept so; check: see rules().
-- type: "number", "integer", "boolean", "port" (1..65535), "url"
-- (schemes: allowed, default http and https) or "string"; env: a name or names (the first set
-- wins); aliases: other names of the same flag (a product's older spellings; a list flag given
-- under several of them gathers every value).
-- Returns values keyed by each decl's key (or name), and whether --help was asked for. Every
-- value is checked; all the problems are raised together, each naming the flag or env var set.
function M.parse(decls, argv, getenv)
  getenv = getenv or os.getenv
  local by_name = {}
  for _, d in ipairs(decls) do
    for _, n in ipairs { d.name, unpack(d.aliases or {}) } do by_name[norm(n)] = d end
  end
  local given, problems = {}, {}
  local help = read_argv(by_name, argv, given, problems)
  local values, missing = {}, {}
  for _, d in ipairs(decls) do
    local key = d.key or d.name
    local v = given[key]
    if v == nil then
      local raw, env = from_env(d, getenv)
      if raw then
        v = convert(d, raw, "$" .. env, problems)
        if v == nil then v = BAD end
      end
    end
    if v == nil then v = d.default end
    if v == BAD then v = nil
    elseif v == nil and d.required and not help then
      missing[#missing + 1] = ("flag --%s (env %s) is required: %s"):format(d.name, table.concat(env_names(d), " or "), d.help or "")
    end
    values[key] = v
  end
  for _, m in ipairs(missing) do problems[#problems + 1] = m end
  if not help then rules(decls, values, problems) end
  if #problems > 0 and not help then raise(problems) end
  return values, help
end

local function show_default(d)
  local v = d.default
  if v == nil or v == "" then return "" end
  if type(v) == "table" then v = table.concat(v, ",") end
  return (" (default %s)"):format(type(v) == "string" and ("%q"):format(v) or tostring(v))
end

-- What --help says a value must be: " [1 to 256]", " [at least 0]", " [one of dev, prod]".
local function show_constraints(d)
  local kind, c = kind_of(d), nil
  if kind == "port" then c = "1 to 65535"
  elseif d.min and d.max then c = ("%s to %s"):format(fmt_num(d.min), fmt_num(d.max))
  elseif d.min then c = "at least " .. fmt_num(d.min)
  elseif d.max then c = "at most " .. fmt_num(d.max)
  elseif d.choices then c = "one of " .. table.concat(d.choices, ", ")
  elseif kind == "url" then c = table.concat(schemes_of(d), "://, ") .. "://" end
  return c and (" [%s]"):format(c) or ""
end

local function section(lines, title, decls)
  lines[#lines + 1] = title
  for _, d in ipairs(decls) do
    local kind = kind_of(d)
    local arg = kind == "boolean" and "" or (" " .. (numeric[kind] and "N" or kind == "url" and "URL" or "VALUE"))
    local names = { d.name, unpack(d.aliases or {}) }
    lines[#lines + 1] = ("  --%s%s%s"):format(table.concat(names, arg .. ", --"), arg,
      d.repeatable and " (repeatable)" or "")
    lines[#lines + 1] = ("      %s  [env %s]%s%s"):format(d.help or "", table.concat(env_names(d), ", "), show_default(d),
      show_constraints(d))
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

local DECL_KEYS = { "name", "key", "env", "default", "help", "type", "repeatable", "required", "min", "max",
                    "choices", "schemes", "aliases", "any_case", "check" }
local TYPES = { string = true, number = true, integer = true, boolean = true, port = true, url = true }

-- Checks a script's declarations where its author wrote them (unknown keys and types, constraints
-- of the wrong shape), and gives each one without its own env the prefixed env name.
function M.declare(decls, prefix)
  for _, d in ipairs(decls) do
    local what = ("flag '%s'"):format(tostring(d.name or d.key))
    check.options(d, DECL_KEYS, what)
    if type(d.name) ~= "string" or d.name == "" then check.fail(what .. ": name must be a non-empty string") end
    if d.type ~= nil and not TYPES[d.type] then
      local near = check.nearest(tostring(d.type), TYPES)
      check.fail(("%s: unknown type '%s' (string, number, integer, boolean, port or url)%s"):format(what,
        tostring(d.type), near and (" (did you mean '%s'?)"):format(near) or ""))
    end
    for _, k in ipairs { "min", "max" } do
      if d[k] ~= nil and type(d[k]) ~= "number" then check.fail(("%s: %s must be a number"):format(what, k)) end
    end
    for _, k in ipairs { "choices", "schemes", "aliases" } do
      if d[k] ~= nil and (type(d[k]) ~= "table" or #d[k] == 0) then check.fail(("%s: %s must be a list of strings"):format(what, k)) end
    end
    if d.check ~= nil and type(d.check) ~= "function" then check.fail(what .. ": check must be a function(value, values)") end
    if d.env ~= nil and type(d.env) ~= "string" and type(d.env) ~= "table" then
      check.fail(what .. ": env must be a name or a list of names")
    end
    if d.env == nil then d.env = prefix .. env_name(d.name) end
  end
  return decls
end

-- from_env{ { ENV, default, help, more }, ... }: declarations named by their env vars, as a
-- product's settings are (RELAY_MAX_FRAME_BYTES: --relay-max-frame-bytes, key
-- relay_max_frame_bytes); more: any other fields. numbers: fields that each declaration with a
-- number default gets (say { type = "integer", min = 1 }), unless its more names them.
function M.from_env(list, numbers)
  local out = {}
  for i, d in ipairs(list) do
    local f = { name = d[1]:lower():gsub("_", "-"), key = d[1]:lower(), env = d[1], default = d[2],
                help = d[3] }
    for k, v in pairs(type(d[2]) == "number" and numbers or {}) do f[k] = v end
    for k, v in pairs(d[4] or {}) do f[k] = v end
    out[i] = f
  end
  return out
end

-- A bundled personality: a script under a scripts/ directory that has relayhost's lua/ beside it
-- (a checkout, or share/relayhost/ installed), whichever library was loaded.
local function bundled(script)
  for dir in script:gmatch("()/scripts/") do
    local f = io.open(script:sub(1, dir - 1) .. "/lua/relay/init.lua", "r")
    if f then f:close(); return true end
  end
  return false
end

-- "" for a bundled personality (they keep their products' env names), else the script's file
-- name in upper snake case and "_".
function M.default_env_prefix(script)
  if not script then return "" end
  if script:sub(1, 1) ~= "/" then script = (os.getenv("PWD") or ".") .. "/" .. script end
  script = check.normalize(script)
  if bundled(script) then return "" end
  local base = script:match("([^/]+)$"):gsub("%.lua$", "")
  return (base:gsub("[^%w]+", "_"):upper()) .. "_"
end

return M
