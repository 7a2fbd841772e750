-- relay.redis over rediss:// against a real redis-server with a TLS port that requires a client
-- certificate (--tls-auth-clients yes): the CA, the client certificate and the server name come
-- from the URL's query (redis-py's ssl_ca_certs, ssl_certfile, ssl_keyfile, ssl_cert_reqs, and
-- ssl_server_name), verification is on by default, and a file that cannot be used is refused
-- when relay.redis is called, naming the parameter and the file.
local helpers = require "helpers"
local cjson = require "cjson"

describe("relay.redis over TLS", function()
  local dir, tls_port, plain_port, redis_pid, host

  local function q(path) return helpers.url_escape(dir .. "/" .. path) end
  local function url(query, userinfo, port)
    return ("rediss://%s127.0.0.1:%d%s"):format(userinfo or "", port or tls_port, query and "?" .. query or "")
  end

  setup(function()
    dir = helpers.tmpdir()
    helpers.tls_pki(dir)
    -- the password holds '@' and '%': percent-encoded in the URL as %40 and %25
    tls_port, plain_port, redis_pid = helpers.start_redis_tls(dir, "--tls-auth-clients yes --user al on '>p@ss%w' '~*' '&*' '+@all'")
    local cert = ("ssl_certfile=%s&ssl_keyfile=%s"):format(q("client.pem"), q("client.key"))
    local ca = "ssl_ca_certs=" .. q("ca.pem")
    local urls = {
      good = url(ca .. "&" .. cert, "al:p%40ss%25w@"),
      nocert = url(ca),
      wrongca = url("ssl_ca_certs=" .. q("other-ca.pem") .. "&" .. cert),
      system = url(cert),
      insecure = url("ssl_cert_reqs=none&" .. cert),
      named = url(ca .. "&" .. cert .. "&ssl_server_name=redis.test"),
      misnamed = url(ca .. "&" .. cert .. "&ssl_server_name=other.test"),
      plain_to_tls = ("redis://127.0.0.1:%d"):format(tls_port),
      badpass = url(ca .. "&" .. cert, "al:wrong@"),
    }
    local lines = { "local relay = require 'relay'", "local app = relay.new { name = 'redis-tls' }", "local clients = {" }
    for k, v in pairs(urls) do lines[#lines + 1] = ("  %s = relay.redis(%q),"):format(k, v) end
    lines[#lines + 1] = "}"
    lines[#lines + 1] = [[
app:get("/call", function(req, res)
  local c, a = clients[req.args.c], req.args.a ~= "" and req.args.a or nil
  local v, err
  if a then v, err = c:call(req.args.cmd, a) else v, err = c:call(req.args.cmd) end
  res:json(200, { v = v, err = err })
end)
app:get("/bad", function(req, res)
  local ok, err = pcall(relay.redis, req.args.url, req.args.cluster and { cluster = true } or nil)
  res:send(200, ok and "accepted" or err)
end)
return app]]
    helpers.write_file(dir .. "/r.lua", table.concat(lines, "\n"))
    host = helpers.start(dir .. "/r.lua")
  end)

  teardown(function()
    if host then assert.equal(0, host:stop()) end
    if redis_pid then os.execute("kill " .. redis_pid) end
  end)

  local function call(c, cmd, a)
    return cjson.decode(host:get(("/call?c=%s&cmd=%s&a=%s"):format(c, cmd or "PING", a or "")).body)
  end
  -- the first answer that says why (the client redials with backoff, and says why it is down)
  local function answer(c, cmd)
    local r
    helpers.wait_until(function()
      r = call(c, cmd)
      return r.v ~= nil or (r.err and r.err ~= "redis: not connected")
    end, 10, c)
    return r
  end
  local function bad(u, cluster)
    return host:get("/bad?url=" .. helpers.url_escape(u) .. (cluster and "&cluster=1" or "")).body
  end

  it("speaks to redis with the CA and the client certificate, as an ACL user whose password has '@' and '%'", function()
    helpers.wait_until(function() return call("good").v == "PONG" end, 10, "PING over TLS")
    assert.equal("al", call("good", "ACL", "WHOAMI").v)
  end)

  it("is refused without a client certificate, and says why", function()
    local r = answer("nocert")
    assert.is_nil(r.v)
    assert.matches("peer sent alert %(certificate required: the server wants a client certificate%)", r.err)
  end)

  it("refuses a server whose certificate a CA it was not given signed", function()
    local r = answer("wrongca")
    assert.is_nil(r.v)
    assert.matches("certificate verify failed", r.err)
    r = answer("system") -- no ssl_ca_certs: the system store, which does not know our CA
    assert.is_nil(r.v)
    assert.matches("certificate verify failed", r.err)
  end)

  it("skips verification only when told to (ssl_cert_reqs=none)", function()
    helpers.wait_until(function() return call("insecure").v == "PONG" end, 10, "PING unverified")
  end)

  it("sends and verifies ssl_server_name instead of the host dialled", function()
    helpers.wait_until(function() return call("named").v == "PONG" end, 10, "PING as redis.test")
    local r = answer("misnamed")
    assert.is_nil(r.v)
    assert.matches("certificate verify failed", r.err)
  end)

  it("does not speak plain text to a TLS port as if it were redis", function()
    local r = call("plain_to_tls")
    assert.is_nil(r.v)
  end)

  it("backs off from a server that refuses the handshake or the password, and logs why once", function()
    assert.matches("WRONGPASS", answer("badpass").err)
    answer("nocert")
    local function accepted() return helpers.redis_info(plain_port, "stats", "total_connections_received") end
    -- redis counts the connections whose handshake it completed (badpass's, here): redialled
    -- every 0.1 s whatever the failure, they were 27 in 3 s; backing off (0.1 s doubling to
    -- 5 s), 4
    local before = accepted()
    helpers.sleep(3)
    local made = accepted() - before - 1
    assert.is_true(made < 12, made .. " connections in 3 s")
    local log = host:log()
    local _, ups = log:gsub('"event":"redis_up"', "")
    local _, refused = log:gsub('"event":"redis_unreachable"[^\n]*certificate required', "")
    assert.equal(1, refused)
    assert.is_true(ups <= 5, ups .. " redis_up lines") -- good, insecure, named, and their reconnects
  end)

  it("refuses a TLS file it cannot use when relay.redis is called, naming the parameter and the file", function()
    local function with(query) return url(query) end
    local missing = dir .. "/nope.pem"
    local m = bad(with("ssl_ca_certs=" .. helpers.url_escape(missing)))
    assert.matches("ssl_ca_certs: cannot load CA file " .. missing:gsub("%p", "%%%0") .. ": No such file", m)
    m = bad(with("ssl_ca_certs=" .. q("client.key")))
    assert.matches("ssl_ca_certs: cannot load CA file .*client%.key", m)
    m = bad(with(("ssl_certfile=%s&ssl_keyfile=%s"):format(q("client.pem"), helpers.url_escape(missing))))
    assert.matches("ssl_keyfile: cannot load private key .*nope%.pem: No such file", m)
    m = bad(with(("ssl_certfile=%s&ssl_keyfile=%s"):format(q("client.pem"), q("server.key"))))
    assert.matches("ssl_keyfile: private key .*server%.key does not match the certificate in .*client%.pem", m)
    m = bad(with(("ssl_certfile=%s"):format(q("ca.key"))))
    assert.matches("ssl_certfile: cannot load certificate chain .*ca%.key", m)
    m = bad(with("ssl_ca_certs=" .. helpers.url_escape(missing)), true)
    assert.matches("ssl_ca_certs: cannot load CA file .*nope%.pem", m)
    assert.matches("unknown parameter 'ssl_ca_cert'", bad(with("ssl_ca_cert=x")))
    assert.matches("ssl_cert_reqs: 'maybe' %(want required or none%)", bad(with("ssl_cert_reqs=maybe")))
    assert.matches("ssl_keyfile needs ssl_certfile", bad(with("ssl_keyfile=" .. q("client.key"))))
    assert.matches("for rediss://", bad(("redis://127.0.0.1:%d?ssl_ca_certs=%s"):format(tls_port, q("ca.pem"))))
  end)
end)

describe("relay.redis over TLS to a Redis Cluster", function()
  local rc = require "redis_cluster_support"
  local cluster, host, dir

  setup(function()
    dir = helpers.tmpdir()
    helpers.tls_pki(dir)
    cluster = rc.start { tls = dir }
    local function q(path) return helpers.url_escape(dir .. "/" .. path) end
    -- one seed: the other nodes are found in the slot map and dialled with the seed's settings
    local seed = cluster.tls_seeds:match("^[^,]+")
    local query = ("ssl_ca_certs=%s&ssl_certfile=%s&ssl_keyfile=%s"):format(q("ca.pem"), q("client.pem"), q("client.key"))
    helpers.write_file(dir .. "/c.lua", ([[
local relay = require "relay"
local app = relay.new { name = "redis-tls-cluster" }
local r = relay.redis(%q, { cluster = true })
app:get("/set", function(req, res)
  local ok, err = r:call("SET", req.args.k, "v-" .. req.args.k)
  local v, err2 = r:call("GET", req.args.k)
  res:json(200, { ok = ok, v = v, err = err or err2 })
end)
return app]]):format("rediss://127.0.0.1:" .. seed:match(":(%d+)$") .. "?" .. query))
    host = helpers.start(dir .. "/c.lua")
  end)

  teardown(function()
    if host then assert.equal(0, host:stop()) end
    if cluster then cluster:stop() end
  end)

  it("reaches every primary with the CA and the client certificate", function()
    local owners = {}
    for _, k in ipairs { "a", "b", "c", "d", "e", "f" } do
      local r
      helpers.wait_until(function()
        r = cjson.decode(host:get("/set?k=" .. k).body)
        return r.ok == "OK"
      end, 15, "SET " .. k .. " over TLS")
      assert.equal("v-" .. k, r.v)
    end
    -- "b", "c" and "a" hash to slots 3300, 7365 and 15495: one on each primary
    for _, slot in ipairs { 3300, 7365, 15495 } do owners[cluster:owner(slot)] = true end
    local n = 0
    for _ in pairs(owners) do n = n + 1 end
    assert.equal(3, n)
  end)
end)
