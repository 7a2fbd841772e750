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
