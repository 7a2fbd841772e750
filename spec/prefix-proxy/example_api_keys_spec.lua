-- examples/api-keys.lua against a real redis-server and a relayhost upstream that counts what
-- reaches it, with --workers 2: a known key passes (its name goes up as X-Api-Client, the key
-- itself does not), an unknown or missing key gets 401, and the per-key limit is one count in
-- Redis that both workers share (N+k requests on fresh connections: exactly N pass, the rest
-- 429 with Retry-After). Redis's MONITOR shows the counting coming from two connections, one
-- per worker, so the limit held across both (SO_REUSEPORT spreads the 15 fresh connections).
local helpers = require "helpers"
local json = require "cjson"

local UPSTREAM = [[
local relay = require "relay"
local app = relay.new { name = "api-keys-upstream" }
local seen = 0
app:any("/app/*", function(req, res)
  seen = seen + 1
  res:json(200, { path = req.path, client = req.headers["x-api-client"] or false,
                  key = req.headers["x-api-key"] or false })
end)
app:get("/seen", function(_, res) res:send(200, tostring(seen)) end)
return app
]]

describe("examples/api-keys.lua", function()
  local dir, redis_port, redis_pid, upstream, proxy

  local function redis_cli(...)
    local args = { "redis-cli", "-p", tostring(redis_port) }
    for _, a in ipairs { ... } do args[#args + 1] = ("'%s'"):format(a) end
    local p = assert(io.popen(table.concat(args, " ")))
    local out = p:read("*a")
    p:close()
    return (out:gsub("%s+$", ""))
  end
  local function seen() return tonumber(upstream:get("/seen").body) end
  -- each request on a fresh connection, so that either worker may take it
  local function get(path, key)
    local c = proxy:client(10)
    local res = c:get(path, key and { ["x-api-key"] = key } or nil)
    c:close()
    return res
  end

  setup(function()
    dir = helpers.tmpdir()
    redis_port, redis_pid = helpers.start_redis(dir)
    redis_cli("HSET", "apikeys", "k-alice", "alice", "k-bob", '{"name":"bob","limit":3}', "k-carol", "carol")
    helpers.write_file(dir .. "/upstream.lua", UPSTREAM)
    upstream = helpers.start(dir .. "/upstream.lua")
    proxy = helpers.start(helpers.root .. "/examples/api-keys.lua", { flags = {
      "--upstream", upstream:url("/app"), "--redis", "redis://127.0.0.1:" .. redis_port,
      "--limit", "10", "--window", "60", "--workers", "2" } })
  end)

  teardown(function()
    if proxy then assert.equal(0, proxy:stop(), proxy:log():sub(-3000)) end
    if upstream then assert.equal(0, upstream:stop()) end
    if redis_pid then os.execute("kill " .. redis_pid) end
  end)

  it("passes a known key with its name upstream, and not the key itself", function()
    local before = seen()
    local res = get("/things/1", "k-alice")
    assert.equal(200, res.status, res.body)
    local up = json.decode(res.body)
    assert.equal("/app/things/1", up.path)
    assert.equal("alice", up.client)
    assert.is_false(up.key)
    assert.equal(before + 1, seen())
  end)

  it("answers 401 for an unknown or missing key, and nothing reaches the upstream", function()
    local before = seen()
    local res = get("/things/1", "k-nobody")
    assert.equal(401, res.status)
    assert.equal("unknown API key\n", res.body)
    assert.equal(401, get("/things/1").status)
    assert.equal(before, seen())
  end)

  it("holds the limit across two workers: of 15 requests exactly 10 pass, 5 get 429", function()
    local before = seen()
    local monitor = dir .. "/monitor"
    os.execute(("redis-cli -p %d MONITOR > %s 2>&1 & echo $! > %s.pid"):format(redis_port, monitor, monitor))
    helpers.wait_until(function() return (helpers.read_file(monitor) or ""):find("OK") end, 5, "MONITOR")
    local passed, limited, retry = 0, 0, {}
    for i = 1, 15 do
      local res = get("/n/" .. i, "k-carol")
      if res.status == 200 then passed = passed + 1
      else
        assert.equal(429, res.status, res.body)
        limited = limited + 1
        retry[#retry + 1] = tonumber(res.headers["retry-after"])
      end
    end
    assert.equal(10, passed)
    assert.equal(5, limited)
    for _, s in ipairs(retry) do assert.is_true(s >= 1 and s <= 60, tostring(s)) end
    assert.equal(before + 10, seen())
    assert.equal("15", redis_cli("GET", "ratelimit:k-carol"))
    local counters, n -- the connections (workers) that counted for k-carol, and how many
    helpers.wait_until(function() -- redis-cli may not have written the last lines yet
      local total = 0
      counters, n = {}, 0
      for addr in helpers.read_file(monitor):gmatch('%[%d+ ([%d.:]+)%] "EVAL" "[^\n]-"ratelimit:k%-carol"') do
        if not counters[addr] then n = n + 1 end
        counters[addr], total = (counters[addr] or 0) + 1, total + 1
      end
      return total == 15
    end, 5, "MONITOR to show the 15 counts")
    os.execute("kill " .. helpers.read_file(monitor .. ".pid"))
    assert.equal(2, n)
    -- another key has a window of its own
    assert.equal(200, get("/n/x", "k-alice").status)
  end)

  it("uses a key's own limit from its JSON", function()
    local codes = {}
    for i = 1, 5 do codes[i] = get("/b/" .. i, "k-bob").status end
    assert.same({ 200, 200, 200, 429, 429 }, codes)
  end)

  it("answers 503 while Redis is down, and comes back", function()
    os.execute("kill " .. redis_pid)
    helpers.wait_until(function() return get("/down", "k-alice").status == 503 end, 10, "503 with Redis down")
    redis_port, redis_pid = helpers.start_redis(dir, redis_port)
    redis_cli("HSET", "apikeys", "k-alice", "alice")
    helpers.wait_until(function() return get("/up", "k-alice").status == 200 end, 15, "200 with Redis back")
  end)

  it("shows its flags with help in --help", function()
    local rc, out = helpers.run { helpers.root .. "/examples/api-keys.lua", "--help" }
    assert.equal(0, rc)
    for _, flag in ipairs { "--upstream", "--redis", "--header", "--limit", "--window", "--prefix" } do
      assert.matches(flag:gsub("%-", "%%-") .. " [^\n]*\n%s+%S", out)
    end
  end)

  it("is run in README with flags it has", function()
    local readme = helpers.read_file(helpers.root .. "/README.md")
    local cmd = assert(readme:match("`(relayhost examples/api%-keys%.lua [^`]*)`"), "README has no command for it")
    local _, out = helpers.run { helpers.root .. "/examples/api-keys.lua", "--help" }
    for flag in cmd:gmatch("%s(%-%-[%w-]+)") do assert.matches("\n  " .. flag:gsub("%-", "%%-") .. " ", out) end
  end)
end)
