-- What operators deploy with: the image's entrypoint rule ($RELAYHOST_SCRIPT), its healthcheck,
-- systemd's readiness protocol and the unit file. (tools/docker-check runs the Dockerfile's steps
-- in Debian 12 chroots; it needs root and the network, so it is not part of this suite.)
local helpers = require "helpers"
local socket = require "socket"
local unix = require "socket.unix"

describe("packaging", function()
  it("serves $RELAYHOST_SCRIPT when the command line has only flags (one image per personality)", function()
    local host = helpers.start("--drain-timeout=5", { env = { RELAYHOST_SCRIPT = "demo" } })
    assert.equal(200, host:get("/").status)
    assert.matches("demo%.lua listening on 127%.0%.0%.1:%d+, serving at", host:stdout())
    assert.equal(0, host:stop())
    local rc, out = helpers.run({ "--help" }, { RELAYHOST_SCRIPT = "demo" })
    assert.equal(0, rc)
    assert.matches("usage: relayhost demo", out)
  end)

  it("docker/healthcheck probes a personality's health URL without curl", function()
    local probe = assert(socket.bind("127.0.0.1", 0))
    local _, admin = probe:getsockname()
    probe:close()
    local host = helpers.start("demo", { flags = { "--admin-listen", "127.0.0.1:" .. admin } })
    local check = "docker/healthcheck >/dev/null 2>&1"
    assert.is_true(os.execute(("RELAYHOST_HEALTH=127.0.0.1:%d/health %s"):format(admin, check)) == 0)
    -- a 404 and a closed port are unhealthy
    assert.is_false(os.execute(("RELAYHOST_HEALTH=127.0.0.1:%d/nothing %s"):format(admin, check)) == 0)
    assert.equal(0, host:stop())
    assert.is_false(os.execute(("RELAYHOST_HEALTH=127.0.0.1:%d/health %s"):format(admin, check)) == 0)
  end)

  -- The image's HEALTHCHECK reads the running process's own flags and environment, so a
  -- personality moved to another port (or with no health route) is still reported right.
  it("docker/healthcheck follows the listener each personality really serves on", function()
    local free_port = helpers.free_port
    local function healthy(host)
      return os.execute(("RELAYHOST_HEALTH_PID=%d docker/healthcheck >/dev/null 2>&1"):format(host.pid)) == 0
    end
    -- the flag proxy on -port (Go style, as ff-proxy takes it), not the default 7000
    local flag = helpers.start("flag-proxy", { listen = false,
      flags = { "-port", tostring(free_port()), "--offline", "--config-dir", "examples/flag-proxy/config" } })
    assert.is_true(healthy(flag))
    assert.equal(0, flag:stop())
    assert.is_false(healthy(flag))
    -- the workspace relay on PORT from its environment
    local ws = helpers.start("workspace-relay", { listen = false, env = { PORT = tostring(free_port()) } })
    assert.is_true(healthy(ws))
    assert.equal(0, ws:stop())
    -- the prefix proxy has no health route and no admin listener: its listener answering is health
    local prefix = helpers.start("prefix-proxy", { listen = "127.0.0.1:" .. free_port(),
      flags = { "--mount", "/api=http://127.0.0.1:9" } })
    assert.is_true(healthy(prefix))
    assert.equal(0, prefix:stop())
    assert.is_false(healthy(prefix))
  end)

  -- A liveness probe on a health route that waits for the first sync restarts the pod in a loop
  -- while the upstream is away; a startup probe gives a slow start its time.
  it("gives every k8s manifest a startup probe and a liveness probe that only asks whether it serves", function()
    for _, name in ipairs({ "flag-proxy", "workspace-relay", "relay-client" }) do
      local text = assert(io.open("docker/k8s/" .. name .. ".yaml")):read("*a")
      assert.truthy(text:find("startupProbe:", 1, true), name .. " has no startupProbe")
      local liveness = assert(text:match("livenessProbe:\n(.-)\n          %a"), name .. " has no livenessProbe")
      assert.falsy(liveness:find("/health", 1, true), name .. "'s liveness probe asks /health: " .. liveness)
    end
  end)

  it("tells systemd (NOTIFY_SOCKET) when it serves, and the new main pid after an upgrade", function()
    local dir = helpers.tmpdir()
    local path = dir .. "/notify"
    local sock = assert(unix.dgram())
    assert(sock:bind(path))
    sock:settimeout(10)
    local host = helpers.start("demo", { env = { NOTIFY_SOCKET = path } })
    assert.equal("MAINPID=" .. host.pid .. "\nREADY=1", sock:receive())
    assert.equal(0, helpers.run { "upgrade", "--pid-file", host.pid_file })
    local new = tonumber(helpers.read_file(host.pid_file):match("%d+"))
    assert.equal("MAINPID=" .. new .. "\nREADY=1", sock:receive())
    assert.equal(0, host:stop())
    os.execute(("kill -TERM %d"):format(new))
    assert.equal("STOPPING=1", sock:receive())
    sock:close()
  end)

  it("ships a systemd unit that systemd-analyze accepts", function()
    if os.execute("command -v systemd-analyze >/dev/null") ~= 0 then
      pending("systemd-analyze is not installed")
      return
    end
    local dir = helpers.tmpdir()
    -- the unit names the installed binary; point it at the built one
    local unit = helpers.read_file("docs/systemd/relayhost@.service"):gsub("/usr/local/bin/relayhost", helpers.bin())
    helpers.write_file(dir .. "/relayhost@.service", unit)
    local out = assert(io.popen(("cd %q && systemd-analyze verify relayhost@demo.service 2>&1; echo rc=$?"):format(dir))):read("*a")
    assert.matches("rc=0", out)
  end)
end)
