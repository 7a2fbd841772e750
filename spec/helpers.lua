-- The repo's spec helpers: relay.test (what script authors use too) plus fixture paths.
local test = require "relay.test"

local helpers = setmetatable({}, { __index = test })

local root = (debug.getinfo(1, "S").source:match("^@(.*)/spec/helpers%.lua$")) or "."
helpers.root = root
-- What several specs share (origins, peers, rigs) lives in spec/support/: require "raw_origin".
package.path = root .. "/spec/support/?.lua;" .. package.path
function helpers.fixture(name) return root .. "/spec/fixtures/" .. name end

-- At the end of each spec file, a host it left running (it failed before stopping it) is
-- killed and named, so that it does not hold ports and CPU through the rest of the suite.
require("busted").subscribe({ "file", "end" }, function(file)
  local n = test.stop_all()
  if n > 0 then io.stderr:write(("%s: killed %d relayhost process(es) it left running\n"):format(file.name, n)) end
  return nil, true
end)

-- s percent-encoded for a query value (every byte but letters and digits).
function helpers.url_escape(s)
  return (s:gsub("[^%w]", function(ch) return ("%%%02X"):format(ch:byte()) end))
end

-- A loopback port free right now (for a peer that must be told its port before it starts).
function helpers.free_port()
  local s = assert(require("socket").bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

-- A redis-server of our own on a free port (retried: a parallel test may take the port before
-- redis binds it). Returns the port and the pid. PING tells redis from others (NOAUTH: one
-- started with extra = "--requirepass …"). extra: more redis-server arguments, shell-quoted.
function helpers.start_redis(dir, fixed_port, extra)
  local socket = require "socket"
  local function pong(p)
    local c = test.connect(p)
    if not c then return false end
    c:send("PING\r\n")
    local line = c.sock:receive("*l")
    c:close()
    return line == "+PONG" or (line or ""):find("^%-NOAUTH") ~= nil
  end
  for _ = 1, 5 do
    local port = fixed_port
    if not port then
      local s = socket.bind("127.0.0.1", 0)
      port = select(2, s:getsockname())
      s:close()
    end
    os.execute(("redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no --daemonize no %s " ..
      "> %s/redis.log 2>&1 & echo $! > %s/redis.pid"):format(port, extra or "", dir, dir))
    local pid = test.wait_until(function() return test.read_file(dir .. "/redis.pid") end):gsub("%s", "")
    local ok = pcall(test.wait_until, function()
      if not test.read_file("/proc/" .. pid .. "/status") then error("redis exited") end
      return pong(port)
    end, 5)
    if ok then return tonumber(port), pid end
  end
  error("could not start redis-server: " .. tostring(test.read_file(dir .. "/redis.log")))
end

-- SET key value on the primary at port, then WAIT for n replicas (1 unless told) on the same
-- connection: WAIT counts only its own connection's writes, so on a fresh connection it returns
-- at once, and a replica promoted before the write reached it lost the key (seen under CI load).
-- Returns redis-cli's answer to WAIT: the number of replicas that have the write.
function helpers.redis_set_replicated(port, key, value, n)
  -- they go through a shell and redis-cli's line syntax unquoted
  assert(key:match("^[%w_:%-]+$") and value:match("^[%w_:%-]+$"), "key and value: letters, digits, _ : - only")
  local p = io.popen(("printf 'SET %s %s\\nWAIT %d 5000\\n' | redis-cli -h 127.0.0.1 -p %d --raw 2>&1")
    :format(key, value, n or 1, port))
  local out = p:read("*a")
  p:close()
  return tonumber(out:match("^OK\n(%d+)\n$"))
end

-- A self-signed certificate for localhost and 127.0.0.1: dir/cert.pem and dir/key.pem.
-- The rig of the framework modules' Redis specs: a redis-server and a host running `script` (its
-- text, saved as `name`) with --redis pointing at it. rig.kill_redis() and rig.start_redis()
-- take Redis away and bring it back empty on the same port; rig.stop() ends both.
function helpers.redis_rig(script, name)
  local rig = { dir = test.tmpdir() }
  rig.port, rig.pid = helpers.start_redis(rig.dir)
  local path = rig.dir .. "/" .. name
  test.write_file(path, script)
  rig.host = test.start(path, { flags = { "--redis=redis://127.0.0.1:" .. rig.port } })
  function rig.kill_redis() os.execute("kill " .. rig.pid .. " && sleep 0.3") end
  function rig.start_redis() rig.port, rig.pid = helpers.start_redis(rig.dir, rig.port) end
  function rig.stop()
    rig.host:stop()
    os.execute("kill " .. rig.pid .. " 2>/dev/null")
  end
  return rig
end

function helpers.self_signed_cert(dir)
  assert(os.execute(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/key.pem -out %s/cert.pem -days 2 " ..
    "-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 >/dev/null 2>&1"):format(dir, dir)) == 0,
    "openssl req failed")
end

-- A private CA (dir/ca.pem) that signed a server certificate for localhost and 127.0.0.1
-- (dir/server.pem, server.key) and a client certificate (dir/client.pem, client.key), and a
-- second CA that signed neither (dir/other-ca.pem).
function helpers.tls_pki(dir)
  local function sh(cmd) assert(os.execute(cmd .. " >/dev/null 2>&1") == 0, "failed: " .. cmd) end
  for _, ca in ipairs { "ca", "other-ca" } do
    sh(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/%s.key -out %s/%s.pem -days 2 -subj /CN=%s")
      :format(dir, ca, dir, ca, ca))
  end
  for _, who in ipairs { "server", "client" } do
    sh(("openssl req -newkey rsa:2048 -nodes -keyout %s/%s.key -out %s/%s.csr -subj /CN=%s"):format(dir, who, dir, who, who))
    helpers.write_file(dir .. "/" .. who .. ".ext", who == "server"
      and "subjectAltName=DNS:localhost,DNS:redis.test,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"
      or "extendedKeyUsage=clientAuth\n")
    sh(("openssl x509 -req -in %s/%s.csr -CA %s/ca.pem -CAkey %s/ca.key -CAcreateserial -days 2 -out %s/%s.pem -extfile %s/%s.ext")
      :format(dir, who, dir, dir, dir, who, dir, who))
  end
end

-- redis-server with a TLS port besides its plain one (tls_pki's files in dir); extra goes on its
-- command line. Returns the TLS port, the plain port and the pid.
function helpers.start_redis_tls(dir, extra)
  local tls_port = helpers.free_port()
  local port, pid = helpers.start_redis(dir, nil, ("--tls-port %d --tls-cert-file %s/server.pem --tls-key-file %s/server.key " ..
    "--tls-ca-cert-file %s/ca.pem %s"):format(tls_port, dir, dir, dir, extra or ""))
  return tls_port, port, pid
end

-- A number from redis-server's INFO (e.g. helpers.redis_info(port, "clients", "connected_clients")).
function helpers.redis_info(port, section, field)
  local c = assert(helpers.connect(port))
  c:send("INFO " .. section .. "\r\n")
  local len = tonumber(c.sock:receive("*l"):match("^%$(%d+)"))
  local body = c.sock:receive(len + 2)
  c:close()
  return tonumber(body:match(field .. ":(%d+)"))
end

-- ---- memory bounds under a flood ----

-- A process's resident set in kB (nil once it has gone).
function helpers.rss_kb(pid, field)
  local s = test.read_file("/proc/" .. pid .. "/status")
  return s and tonumber(s:match((field or "VmRSS") .. ":%s*(%d+)"))
end

-- Whether the binary under test carries ASan, where RSS is shadow memory and quarantine and
-- says nothing about our own bounds: flood tests then check only that the host lives and answers.
local asan
function helpers.asan()
  if asan == nil then
    local p = io.popen("ldd " .. test.bin() .. " 2>/dev/null")
    asan = p:read("*a"):find("libasan", 1, true) ~= nil
    p:close()
  end
  return asan
end

-- Runs a flood against `host` and holds it to a memory bound. opts:
--   seconds   how long step() is called, over and over (default 3)
--   step      one slice of the flood; keeps its own state (a socket it writes to, …)
--   probe     a normal client's request; must return true (default: any answer to GET /)
--   bound_kb  how far RSS may rise above what it was before the flood (plain build only)
-- Probes run every 0.25 s during the flood and once after it. Returns the peak rise in kB (0
-- under ASan), for the test's own message.
function helpers.flood(host, opts)
  local socket = require "socket"
  local probe = opts.probe or function()
    local c = test.connect(host.port, nil, 2)
    local res = c and c:get("/")
    if c then c:close() end
    return res ~= nil and res.status ~= nil
  end
  local base = helpers.rss_kb(host.pid)
  local peak, t_end, next_probe = 0, socket.gettime() + (opts.seconds or 3), 0
  while socket.gettime() < t_end do
    opts.step()
    local now = socket.gettime()
    if now >= next_probe then
      assert(not host:exited(), "the host exited during the flood:\n" .. host:log():sub(-2000))
      assert(probe(), "a probe request got no answer during the flood")
      next_probe = now + 0.25
    end
    peak = math.max(peak, (helpers.rss_kb(host.pid) or base) - base)
  end
  assert(probe(), "a probe request got no answer after the flood")
  if helpers.asan() then return 0 end
  assert(peak <= opts.bound_kb,
    ("RSS rose %d kB during the flood, more than the bound of %d kB"):format(peak, opts.bound_kb))
  return peak
end

return helpers
