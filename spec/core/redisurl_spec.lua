-- relay.redisurl: Redis settings given apart (address, user, password, db, TLS files) made into
-- the one URL relay.redis reads, and the flags that give them. Pure Lua: no host needed.
local redisurl = require "relay.redisurl"
local flags = require "relay.flags"

local function values(argv)
  return flags.parse(flags.declare(redisurl.flags, ""), argv, function() end)
end

describe("relay.redisurl", function()
  it("builds one URL from an address and the settings apart", function()
    assert.equal("rediss://al:p%40ss@h:1/2?socket_timeout=3",
      redisurl.build("h:1", { username = "al", password = "p@ss", db = 2, tls = true, socket_timeout = 3 }, {}))
  end)

  it("declares the flags, each read from its env var too", function()
    local d = flags.declare(redisurl.flags, "")
    assert.equal("REDIS_TLS_CA_CERT", d[4].env)
    local v = flags.parse(d, { "--redis-tls-enabled", "--redis-password", "pw" }, function(n)
      return n == "REDIS_USERNAME" and "al" or nil
    end)
    assert.equal("rediss://al:pw@h:1", redisurl.from_flags("h:1", v))
  end)

  it("takes redis_db and redis_read_timeout_seconds where a personality declares them", function()
    local v = values {}
    v.redis_db, v.redis_read_timeout_seconds = 3, 5
    assert.equal("redis://h:1/3?socket_timeout=5", redisurl.from_flags("h:1", v))
  end)

  it("names a wrong setting by its flag, or by its env var", function()
    local v = values { "--redis-username", "al", "--redis-tls-ca-cert", "/nonexistent/ca.pem" }
    local url, why = redisurl.from_flags("h:1", v)
    assert.is_nil(url)
    assert.same({ "--redis-username: needs --redis-password (a Redis ACL user logs in with its password)",
                  "--redis-tls-ca-cert: /nonexistent/ca.pem: No such file or directory",
                  "--redis-tls-ca-cert set but TLS is not on: set --redis-tls-enabled=true or use rediss://" }, why)
    _, why = redisurl.from_flags("h:1", v, true)
    assert.equal("REDIS_USERNAME: needs REDIS_PASSWORD (a Redis ACL user logs in with its password)", why[1])
  end)
end)
