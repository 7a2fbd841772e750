-- What the git tunnel specs share: a real git server (git http-backend as CGI under lighttpd,
-- with basic auth) with its bare repositories, the relay-server and relay-client scripts started
-- on ephemeral ports and waited for, Redis, and the real git CLI.
local helpers = require "helpers"
local socket = require "socket"

local M = {}

-- Every host and lighttpd started here, so a failed test leaves no process behind.
local started = {}

-- Stops them all; returns the relayhost exits that were not 0 (a leak under ASan exits 86),
-- leaving out the ones a test killed on purpose (h.killed).
function M.stop_all()
  local bad = {}
  for _, h in ipairs(started) do
    if h.stop then
      local rc = h:stop()
      if rc ~= 0 and not h.killed then bad[#bad + 1] = ("%s exited %s:\n%s"):format(h.script, tostring(rc), h:log():sub(-2000)) end
    else
      M.kill(h.pid)
    end
  end
  started = {}
  return bad
end

function M.kill(pid) os.execute("kill " .. pid .. " 2>/dev/null") end

local function track(h)
  started[#started + 1] = h
  return h
end

M.free_port = helpers.free_port

-- Runs a shell command: output (stdout and stderr), exit status.
function M.sh(cmd)
  local p = io.popen("(" .. cmd .. ") 2>&1; echo \"#rc=$?\"")
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("#rc=(%d+)%s*$"))
  return out:gsub("#rc=%d+%s*$", ""), rc
end

local function must(cmd)
  local out, rc = M.sh(cmd)
  if rc ~= 0 then error(("command failed (%d): %s\n%s"):format(rc, cmd, out), 2) end
  return out
end
M.must = must

-- git with no prompts and no user config.
function M.git(args, vars)
  local prefix = ""
  for k, v in pairs(vars or {}) do prefix = prefix .. k .. "='" .. v .. "' " end
  return M.sh(prefix .. "GIT_TERMINAL_PROMPT=0 GIT_CONFIG_NOSYSTEM=1 HOME=/nonexistent git -c user.name=t " ..
              "-c user.email=t@example.com -c protocol.version=2 " .. args)
end

-- Adds `file` in the work tree `work` and commits it as `msg`, then, when `push` is given
-- ("origin HEAD:master"), pushes: output and exit status.
function M.commit(work, file, msg, push)
  local cmd = ("-C %s add %s && git -c user.name=t -c user.email=t@example.com -C %s commit -qm %s"):format(
    work, file, work, msg)
  if push then cmd = cmd .. (" && git -C %s push -q %s"):format(work, push) end
  return M.git(cmd)
end

-- A bare repository with one commit (a.txt) under dir/repos/name.
function M.make_repo(dir, name)
  local bare = dir .. "/repos/" .. name
  must(("mkdir -p %s/repos && git init -q --bare %s && git -C %s config http.receivepack true"):format(dir, bare, bare))
  local work = dir .. "/seed-" .. name
  must(("git init -q %s && echo hello > %s/a.txt"):format(work, work))
  local _, rc = M.commit(work, "a.txt", "init", bare .. " HEAD:refs/heads/master")
  assert(rc == 0, "seeding the repository failed")
  return bare
end

-- Starts a peer server on a free port: cmd(port) is its shell command, ok(port) says it is up.
-- The port is picked free; if another test takes it first the peer exits, and we try another.
local function spawn(name, dir, cmd, ok)
  for _ = 1, 5 do
    local port = M.free_port()
    local pid = tonumber(must(("%s > %s/%s.out 2>&1 & echo $!"):format(cmd(port), dir, name)):match("%d+"))
    local up = pcall(helpers.wait_until, function()
      if not helpers.read_file("/proc/" .. pid .. "/status") then error(name .. " exited") end
      return ok(port)
    end, 5)
    if up then return track({ port = port, pid = pid, dir = dir }) end
    M.kill(pid)
  end
  error(("could not start %s: %s"):format(name, tostring(helpers.read_file(dir .. "/" .. name .. ".out"))))
end

local function accepts(port)
  local c = helpers.connect(port)
  if c then c:close() return true end
end

-- lighttpd serving git http-backend at /git (basic auth alice:secret) and dir/www as files.
function M.start_lighttpd(dir)
  must(("mkdir -p %s/www && printf 'alice:secret\\n' > %s/users"):format(dir, dir))
  local conf = helpers.read_file(helpers.fixture("git-tunnel-lighttpd.conf"))
  return spawn("lighttpd", dir, function(port)
    helpers.write_file(dir .. "/lighttpd.conf", (conf:gsub("@PORT@", tostring(port)):gsub("@DIR@", dir)))
    return ("/usr/sbin/lighttpd -D -f %s/lighttpd.conf"):format(dir)
  end, accepts)
end

-- A redis-server of our own (helpers.start_redis), stopped with the rest.
function M.start_redis(dir)
  local port, pid = helpers.start_redis(dir)
  return track({ port = port, pid = tonumber(pid), dir = dir })
end

-- The git server's URL as a relay-client's --base-url.
function M.base_url(web)
  return ("http://127.0.0.1:%d/git"):format(web.port)
end

local root = helpers.root
M.server_script = root .. "/scripts/git-tunnel/server.lua"
M.client_script = root .. "/scripts/git-tunnel/client.lua"

function M.start_server(flags, opts)
  opts = opts or {}
  local all = { "--tokens=tok-1,tok-2", "--drain-timeout=1", "--ping-interval=1" }
  for _, f in ipairs(flags or {}) do all[#all + 1] = f end
  opts.flags = all
  return track(helpers.start(M.server_script, opts))
end

-- A server of several sharing a registry: on a port of its own, which it advertises, with
-- --redis-address (any form the server takes), --presence-ttl (ttl, else 3 s) and flags.
function M.start_shared_server(redis_address, flags, ttl)
  local port = M.free_port()
  local all = { "--redis-address=" .. redis_address, "--advertise-url=http://127.0.0.1:" .. port,
                "--presence-ttl=" .. (ttl or 3) }
  for _, f in ipairs(flags or {}) do all[#all + 1] = f end
  return M.start_server(all, { listen = "127.0.0.1:" .. port })
end

function M.start_client(server_port, key, base_url, flags, opts)
  opts = opts or {}
  local all = { "--client-key=" .. key, "--base-url=" .. base_url, "--styra-token=tok-1",
                ("--server-url=ws://127.0.0.1:%d/v1/relay/register"):format(server_port),
                "--drain-timeout=1", "--backoff-max=1", "--ping-interval=1" }
  for _, f in ipairs(flags or {}) do
    if f:match("^%-%-server%-url=") then all[4] = f else all[#all + 1] = f end
  end
  opts.flags = all
  return track(helpers.start(M.client_script, opts))
end

function M.ready(client)
  local res = client:get("/v1/system/ready")
  return res and res.status == 200
end

function M.wait_ready(client, want, seconds)
  if want == nil then want = true end
  return helpers.wait_until(function() return M.ready(client) == want end, seconds or 10,
                            "the client's readiness to be " .. tostring(want))
end

-- The relay URL of a repository on the server, with alice's credentials.
function M.url(server, key, path)
  return ("http://alice:secret@127.0.0.1:%d/v1/relay/%s%s"):format(server.port, key, path)
end

-- A relay-client of key on the server at server_port, ready.
function M.start_ready_client(server_port, key, base_url, flags, opts)
  local c = M.start_client(server_port, key, base_url, flags, opts)
  M.wait_ready(c)
  return c
end

-- A fresh dir with one git server on it (repo.git): { dir, web }.
function M.git_server()
  local w = { dir = helpers.tmpdir() }
  M.make_repo(w.dir, "repo.git")
  w.web = M.start_lighttpd(w.dir)
  return w
end

-- One git server (repo.git), one relay-server and one relay-client of key on it, ready.
function M.world(key)
  local w = M.git_server()
  w.server = M.start_server()
  w.client = M.start_ready_client(w.server.port, key, M.base_url(w.web))
  return w
end

-- For teardown: stops everything, fails if a relayhost did not exit 0 (ASan leaks exit 86).
function M.stop_all_checked()
  local bad = M.stop_all()
  if #bad > 0 then error(table.concat(bad, "\n"), 2) end
end

function M.rss_kb(pid)
  local s = helpers.read_file("/proc/" .. pid .. "/status") or ""
  return tonumber(s:match("VmRSS:%s*(%d+)")) or 0
end

M.track = track

return M
