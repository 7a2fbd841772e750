-- The flag proxy with ff-proxy v2's Redis variables against a real redis-server that only takes
-- TLS with a client certificate and an ACL user: REDIS_ADDRESS=rediss://…, REDIS_USERNAME,
-- REDIS_PASSWORD (with '@' and '%'), REDIS_TLS_CA_CERT, REDIS_TLS_CLIENT_CERT, REDIS_TLS_CLIENT_KEY;
-- a replica with REDIS_TLS_ENABLED=true and a redis:// address; settings that cannot work are
-- refused at start naming the variable.
local helpers = require "spec.helpers"
local cjson = require "cjson"

local F = dofile(helpers.fixture("flag_proxy.lua"))
local ENV = F.ENV
local SECRET = "shared-secret-of-the-cluster"
local PASSWORD = "p@ss%w"

describe("flag proxy with Redis over TLS (REDIS_TLS_*, REDIS_USERNAME)", function()
  local dir, tls_port, plain_port, redis_pid, primary, replica

  -- One command as al over the plain port (redis keeps one for the test to look through).
  local function redis_exists(key)
    local c = assert(helpers.connect(plain_port))
    c:send(("*3\r\n$4\r\nAUTH\r\n$2\r\nal\r\n$%d\r\n%s\r\n*2\r\n$6\r\nEXISTS\r\n$%d\r\n%s\r\n")
      :format(#PASSWORD, PASSWORD, #key, key))
    local auth, exists = c.sock:receive("*l"), c.sock:receive("*l")
    c:close()
    assert.equal("+OK", auth)
    return exists == ":1"
  end

  local function env(extra)
    local e = { AUTH_SECRET = SECRET, REDIS_USERNAME = "al", REDIS_PASSWORD = PASSWORD,
      REDIS_TLS_CA_CERT = dir .. "/ca.pem", REDIS_TLS_CLIENT_CERT = dir .. "/client.pem",
      REDIS_TLS_CLIENT_KEY = dir .. "/client.key" }
    for k, v in pairs(extra) do e[k] = v end
    return e
  end

  setup(function()
    dir = helpers.tmpdir()
    helpers.tls_pki(dir)
    -- the default user's password is another: only AUTH al … gets in
    tls_port, plain_port, redis_pid = helpers.start_redis_tls(dir,
      "--tls-auth-clients yes --requirepass not-this-one --user al on '>p@ss%w' '~*' '&*' '+@all'")
    F.sh(("cp -r %s/examples/flag-proxy/config %s/config"):format(F.root, dir))
    primary = helpers.start(F.script, { flags = { "--offline", "--config-dir", dir .. "/config" },
      env = env { REDIS_ADDRESS = "rediss://127.0.0.1:" .. tls_port, PROXY_KEY = "k" } })
    local ok = pcall(helpers.wait_until, function() return redis_exists("ffproxy_saas_stream_health") end, 10)
    assert.is_true(ok, "the primary's writes over TLS: " .. primary:log():sub(-2000))
    replica = helpers.start(F.script, { flags = { "--read-replica" },
      env = env { REDIS_ADDRESS = "redis://127.0.0.1:" .. tls_port, REDIS_TLS_ENABLED = "true" } })
  end)

  teardown(function()
    if replica then assert.equal(0, replica:stop()) end
    if primary then assert.equal(0, primary:stop()) end
    if redis_pid then os.execute("kill " .. redis_pid) end
  end)

  it("the primary writes ff-proxy's keys through TLS as the ACL user", function()
    assert.is_true(redis_exists("env-" .. ENV .. "-feature-configs"))
  end)

  it("a replica with REDIS_TLS_ENABLED and a redis:// address serves the flags the primary wrote", function()
    helpers.wait_until(function()
      local h = cjson.decode(replica:get("/health").body)
      return h.configStatus and h.configStatus.state == "READ_REPLICA" and h.cacheStatus == "healthy"
    end, 10, "the replica to load over TLS")
    local _, token = F.auth(replica)
    assert.truthy(token)
    local res = replica:get(("/client/env/%s/feature-configs"):format(ENV), { Authorization = "Bearer " .. token })
    assert.equal(200, res.status)
    assert.equal(8, #cjson.decode(res.body))
  end)

  local function start_fails(extra)
    local ok, err = pcall(helpers.start, F.script, { flags = { "--offline", "--config-dir", dir .. "/config" },
      env = env(extra) })
    if ok then err:stop() end
    assert.is_false(ok, "the proxy started")
    return tostring(err)
  end

  it("refuses at start a TLS file it cannot read, a key that is not the certificate's, or TLS files without TLS", function()
    local addr = "rediss://127.0.0.1:" .. tls_port
    local err = start_fails { REDIS_ADDRESS = addr, REDIS_TLS_CA_CERT = dir .. "/missing.pem" }
    assert.matches("REDIS_TLS_CA_CERT: " .. (dir .. "/missing.pem"):gsub("%p", "%%%0") .. ": No such file", err)
    err = start_fails { REDIS_ADDRESS = addr, REDIS_TLS_CLIENT_KEY = dir .. "/server.key" }
    assert.matches("ssl_keyfile: private key .*server%.key does not match the certificate in .*client%.pem", err)
    err = start_fails { REDIS_ADDRESS = "redis://127.0.0.1:" .. tls_port }
    assert.matches("REDIS_TLS_CA_CERT, REDIS_TLS_CLIENT_CERT, REDIS_TLS_CLIENT_KEY set but TLS is not on: " ..
      "set REDIS_TLS_ENABLED=true or use rediss://", err, 1, true)
    err = start_fails { REDIS_ADDRESS = addr, REDIS_PASSWORD = "" }
    assert.matches("REDIS_USERNAME: needs REDIS_PASSWORD", err, 1, true)
  end)
end)
