-- relay.test: start relayhost with a script from a busted spec and talk to it, the way Kong's
-- spec helpers do. Runs under the plain `luajit` interpreter (busted), not inside the host;
-- needs luasocket. Finds the binary in $RELAYHOST_BIN, else `relayhost` on PATH.
--
--   local helpers = require "relay.test"
--   local host = helpers.start("myscript.lua", { flags = { "--greeting", "hi" } })
--   local res = host:client():get("/")
--   assert.equal(200, res.status)
--   host:stop()
--   local app = helpers.load("myscript.lua", { "--greeting", "hi" }) -- no process: flags, routes
local socket = require "socket"

local M = {}

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end
M.read_file = read_file

function M.write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

function M.sleep(s) socket.sleep(s) end

-- Polls fn until it returns a truthy value; returns that value, or errors after seconds.
function M.wait_until(fn, seconds, what)
  local deadline = socket.gettime() + (seconds or 5)
  repeat
    local v = fn()
    if v then return v end
    socket.sleep(0.02)
  until socket.gettime() > deadline
  error("timed out waiting for " .. (what or "a condition"), 2)
end

function M.bin()
  local bin = os.getenv("RELAYHOST_BIN")
  return bin and bin ~= "" and bin or "relayhost"
end

function M.tmpdir()
  local p = io.popen("mktemp -d /tmp/relaytest.XXXXXX")
  local dir = p:read("*l")
  p:close()
  return dir
end

-- ---- a small HTTP/1.1 client over luasocket (keep-alive, raw bytes for bad-input tests) ----

local Client = {}
Client.__index = Client

function M.connect(port, host, timeout)
  local sock = assert(socket.tcp())
  sock:settimeout(timeout or 5)
  local ok, err = sock:connect(host or "127.0.0.1", port)
  if not ok then return nil, err end
  sock:setoption("tcp-nodelay", true)
  return setmetatable({ sock = sock, port = port }, Client)
end

function Client:send(bytes) return self.sock:send(bytes) end
function Client:close() self.sock:close() end
function Client:settimeout(t) self.sock:settimeout(t) end

-- Reads one response. opts.head = true for a HEAD request (no body follows).
function Client:read_response(opts)
  local line, err = self.sock:receive("*l")
  if not line then return nil, err end
  local version, status, reason = line:match("^HTTP/(%d%.%d) (%d%d%d) ?(.*)$")
  if not status then return nil, "bad status line: " .. line end
  local res = { status = tonumber(status), reason = reason, version = version, headers = {}, raw_headers = {} }
  while true do
    local h = self.sock:receive("*l")
    if not h then return nil, "connection closed in head" end
    if h == "" then break end
    local name, value = h:match("^([^:]+):%s*(.-)%s*$")
    res.raw_headers[#res.raw_headers + 1] = { name, value }
    local l = name:lower()
    if res.headers[l] then res.headers[l] = res.headers[l] .. ", " .. value else res.headers[l] = value end
  end
  if res.status < 200 and res.status ~= 101 then return self:read_response(opts) end
  if (opts and opts.head) or res.status == 204 or res.status == 304 then res.body = ""; return res end
  local te, cl = res.headers["transfer-encoding"], res.headers["content-length"]
  if te and te:lower():find("chunked") then
    local parts = {}
    while true do
      local size_line = self.sock:receive("*l")
      if not size_line then return nil, "connection closed in chunked body" end
      local size = tonumber(size_line:match("^(%x+)"), 16)
      if size == 0 then self.sock:receive("*l"); break end
      parts[#parts + 1] = self.sock:receive(size)
      self.sock:receive("*l")
    end
    res.body = table.concat(parts)
  elseif cl then
    res.body = tonumber(cl) > 0 and self.sock:receive(tonumber(cl)) or ""
  else
    local body, _, partial = self.sock:receive("*a")
    res.body = body or partial
  end
  return res
end

-- request{method, path, headers, body}: sends and reads the response on this connection.
function Client:request(req)
  local method = req.method or "GET"
  local lines = { ("%s %s HTTP/1.1"):format(method, req.path or "/") }
  local headers = req.headers or {}
  local has_host = false
  for k in pairs(headers) do if k:lower() == "host" then has_host = true end end
  if not has_host then lines[#lines + 1] = "Host: 127.0.0.1:" .. self.port end
  for k, v in pairs(headers) do
    if type(v) == "table" then
      for _, item in ipairs(v) do lines[#lines + 1] = k .. ": " .. item end
    else
      lines[#lines + 1] = k .. ": " .. v
    end
  end
  if req.body and not headers["Content-Length"] and not headers["Transfer-Encoding"] then
    lines[#lines + 1] = "Content-Length: " .. #req.body
  end
  local ok, err = self.sock:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. (req.body or ""))
  if not ok then return nil, err end
  return self:read_response { head = method == "HEAD" }
end

function Client:get(path, headers) return self:request { path = path, headers = headers } end
function Client:post(path, body, headers) return self:request { method = "POST", path = path, body = body, headers = headers } end

-- ---- a host process ----

local Host = {}
Host.__index = Host
-- Every host start() made, until stop_all(): a spec that fails between start and stop (an
-- assertion in a teardown, or in an it() that started its own host) would leave it running.
local started = {}

local function flag_list(flags)
  local out = {}
  if not flags then return out end
  if flags[1] then return flags end
  for k, v in pairs(flags) do out[#out + 1] = "--" .. k .. "=" .. tostring(v) end
  return out
end

-- Starts `relayhost script` on an ephemeral port. opts: flags (array of strings, or a table
-- name -> value), env (table), listen (default 127.0.0.1:0), wait (default true), nofile (a
-- lower file descriptor limit, for fault tests), vmem (an address-space limit in kB), bin (the
-- binary to run instead of M.bin()).
function M.start(script, opts)
  opts = opts or {}
  local dir = M.tmpdir()
  local host = setmetatable({ dir = dir, script = script, log_path = dir .. "/host.log",
                              out_path = dir .. "/host.out", pid_path = dir .. "/pid",
                              rc_path = dir .. "/rc", pid_file = dir .. "/relayhost.pid" }, Host)
  local args = { shell_quote(opts.bin or M.bin()), shell_quote(script) }
  for _, f in ipairs(flag_list(opts.flags)) do args[#args + 1] = shell_quote(f) end
  if opts.listen ~= false then args[#args + 1] = "--listen=" .. (opts.listen or "127.0.0.1:0") end
  args[#args + 1] = "--pid-file=" .. shell_quote(host.pid_file)
  local env = {}
  for k, v in pairs(opts.env or {}) do env[#env + 1] = k .. "=" .. shell_quote(v) end
  local cmd = ("%s%s %s >%s 2>%s & echo $! >%s; wait $!; echo $? >%s"):format(
    (opts.nofile and ("ulimit -n %d; "):format(opts.nofile) or "") ..
      (opts.vmem and ("ulimit -v %d; "):format(opts.vmem) or ""),
    #env > 0 and ("env " .. table.concat(env, " ")) or "", table.concat(args, " "),
    shell_quote(host.out_path), shell_quote(host.log_path), shell_quote(host.pid_path),
    shell_quote(host.rc_path))
  os.execute("sh -c " .. shell_quote(cmd) .. " >/dev/null 2>&1 &")
  -- the file exists before the shell has written the number into it
  host.pid = tonumber(M.wait_until(function() return (read_file(host.pid_path) or ""):match("^(%d+)\n") end, 5, "the host's pid"))
  started[#started + 1] = host
  if opts.wait == false then return host end
  local ok, err = pcall(M.wait_until, function()
    return host:exited() or (read_file(host.log_path) or ""):match('"event":"listening"[^\n]*"port":(%d+)')
  end, 10, "relayhost to listen")
  if not ok or host:exited() then
    error(("relayhost did not start (%s); its log:\n%s"):format(tostring(err), host:log()), 2)
  end
  host.port = tonumber((host:log()):match('"event":"listening"[^\n]*"port":(%d+)'))
  host.listeners = {} -- app:listener name -> port
  for name, port in host:log():gmatch('"event":"listener","name":"([^"]+)"[^\n]*"port":(%d+)') do
    host.listeners[name] = tonumber(port)
  end
  return host
end

function Host:log() return read_file(self.log_path) or "" end
function Host:stdout() return read_file(self.out_path) or "" end
function Host:url(path) return ("http://127.0.0.1:%d%s"):format(self.port, path or "/") end
function Host:client(timeout) return assert(M.connect(self.port, nil, timeout)) end
-- The same for an app:listener listener: host:on("relay"):get(path).
function Host:on(name)
  local port = assert(self.listeners[name], "no listener named " .. tostring(name))
  return setmetatable({ port = port }, { __index = self })
end

-- One request on a fresh connection.
function Host:request(req)
  local c = self:client()
  local res, err = c:request(req)
  c:close()
  return res, err
end
function Host:get(path, headers) return self:request { path = path, headers = headers } end

-- Exit status once the process has ended, else nil.
function Host:exited()
  local rc = read_file(self.rc_path)
  return rc and tonumber(rc)
end

function Host:signal(name) os.execute(("kill -%s %d 2>/dev/null"):format(name, self.pid)) end

-- Counts log lines with this event.
function Host:count(event)
  local n = 0
  for _ in self:log():gmatch('"event":"' .. event .. '"') do n = n + 1 end
  return n
end

-- SIGHUP and wait for its outcome; returns true, or false and the failure's log line.
function Host:reload()
  local ok_before, fail_before = self:count("reloaded"), self:count("reload_failed")
  self:signal("HUP")
  M.wait_until(function()
    return self:count("reloaded") > ok_before or self:count("reload_failed") > fail_before
  end, 10, "the reload's outcome")
  if self:count("reloaded") > ok_before then return true end
  local lines = {}
  for line in self:log():gmatch('[^\n]*"event":"reload_failed"[^\n]*') do lines[#lines + 1] = line end
  return false, lines[#lines]
end

-- Stops the host (SIGTERM by default) and returns its exit status.
function Host:stop(signal, seconds)
  if not self:exited() then self:signal(signal or "TERM") end
  local ok = pcall(M.wait_until, function() return self:exited() end, seconds or 10, "relayhost to exit")
  if not ok then self:signal("KILL"); M.wait_until(function() return self:exited() end, 5) end
  return self:exited()
end

-- Stops every host start() made that is still running (SIGKILL: whatever a failed spec left
-- behind) and forgets them all; returns how many were running. For the end of a spec file
-- (busted: subscribe({ "file", "end" }, …)).
function M.stop_all()
  local n = 0
  for _, host in ipairs(started) do
    if not host:exited() then
      n = n + 1
      host:stop("KILL", 5)
    end
  end
  started = {}
  return n
end

-- Runs a script in this Lua, without relayhost (relay.core is then the C module relay/core.so
-- that the rock installs), with flags as its command line (as in start; env vars are this
-- process's) and returns the app it built: app.flags, app.host and app._routes (method,
-- pattern, fn) can be checked and handlers called with stand-ins. What needs the host's loop
-- (relay.sleep, relay.after, HTTP, WebSockets, Redis, ...) raises an error naming it.
function M.load(script, flags)
  local relay = require "relay"
  relay._begin_load(flag_list(flags))
  local ok, app = pcall(dofile, script)
  if ok then app = app or relay._last_app() end
  relay._begin_load({}) -- a later relay.new{} in this process sees no command line
  if not ok then error(app, 0) end
  assert(type(app) == "table" and app._is_app, script .. ": the script must return an app made by relay.new{...}")
  return app
end

-- Runs relayhost with args to completion: returns exit status, stdout, stderr.
function M.run(args, env)
  local dir = M.tmpdir()
  local quoted = {}
  for _, a in ipairs(args) do quoted[#quoted + 1] = shell_quote(a) end
  local prefix = ""
  for k, v in pairs(env or {}) do prefix = prefix .. k .. "=" .. shell_quote(v) .. " " end
  local cmd = ("%s%s %s >%s/out 2>%s/err; echo $? >%s/rc"):format(prefix, shell_quote(M.bin()),
    table.concat(quoted, " "), dir, dir, dir)
  os.execute("sh -c " .. shell_quote(cmd))
  return tonumber(read_file(dir .. "/rc")), read_file(dir .. "/out") or "", read_file(dir .. "/err") or ""
end

return M
