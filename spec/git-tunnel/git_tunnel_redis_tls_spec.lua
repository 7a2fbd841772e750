-- Two relay-servers sharing a redis-server that takes only TLS with a client certificate and an
-- ACL user, given with the flag proxy's spelling of the settings (--redis-username,
-- --redis-password, --redis-tls-enabled, --redis-tls-ca-cert, --redis-tls-client-cert,
-- --redis-tls-client-key): git goes to the server the client is not on, which finds the key's
-- server in Redis. A TLS file that cannot be read is refused at start, naming the flag.
local helpers = require "helpers"
local env = require "git_tunnel_support"

describe("git tunnel with two servers and Redis over TLS", function()
  local dir, web, tls_port, s1, s2

  -- The TLS login, after --redis-address; ca: the CA file's flag value (the good one unless told).
  local function tls_flags(ca)
    return { "--redis-tls-enabled", "--redis-username=al", "--redis-password=p@ss%w",
      "--redis-tls-ca-cert=" .. (ca or dir .. "/ca.pem"),
      "--redis-tls-client-cert=" .. dir .. "/client.pem", "--redis-tls-client-key=" .. dir .. "/client.key" }
  end
  local function server() return env.start_shared_server("127.0.0.1:" .. tls_port, tls_flags()) end

  setup(function()
    local w = env.git_server()
    dir, web = w.dir, w.web
    helpers.tls_pki(dir)
    local pid
    tls_port, _, pid = helpers.start_redis_tls(dir,
      "--tls-auth-clients yes --requirepass not-this-one --user al on '>p@ss%w' '~*' '&*' '+@all'")
    env.track({ pid = tonumber(pid), dir = dir })
    s1, s2 = server(), server()
  end)

  teardown(env.stop_all_checked)

  it("clones through the server the client is not on", function()
    local c = env.start_ready_client(s1.port, "shared", env.base_url(web))
    local out, rc
    helpers.wait_until(function()
      out, rc = env.git(("ls-remote %s"):format(env.url(s2, "shared", "/repo.git")))
      return rc == 0
    end, 10, "ls-remote through s2")
    out, rc = env.git(("clone -q %s %s/via2"):format(env.url(s2, "shared", "/repo.git"), dir))
    assert.equal(0, rc, out)
    assert.equal("hello\n", helpers.read_file(dir .. "/via2/a.txt"))
    assert.matches('relay_server_requests_total{outcome="forwarded"} %d', s2:get("/metrics").body)
    c:stop()
  end)

  it("refuses a TLS file it cannot read at start, naming the flag", function()
    local port = env.free_port()
    local f = tls_flags(dir .. "/missing.pem")
    table.insert(f, 1, "--redis-address=127.0.0.1:" .. tls_port)
    table.insert(f, 1, "--tokens=tok-1")
    local ok, err = pcall(helpers.start, env.server_script, { flags = f, listen = "127.0.0.1:" .. port })
    if ok then err:stop() end
    assert.is_false(ok)
    assert.matches("git-tunnel/server: --redis-tls-ca-cert: " .. dir .. "/missing.pem: No such file", tostring(err), 1, true)
  end)
end)
