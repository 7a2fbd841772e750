-- Redis comes back empty under a flag proxy primary and its read replicas (a restart without
-- persistence, a FLUSHALL), or comes back with an old copy (a snapshot from before the last change,
-- as a failover to a replica that lost the latest writes does).
-- The primary must notice and write its cache again at once; a replica already running keeps
-- answering from memory and reloads from the refilled cache without a restart; a replica
-- started meanwhile must not answer 401 to a valid key while /health says it is healthy.
-- Each case prints how long the state was not whole, and what the replicas answered then.
local helpers = require "spec.helpers"
local cjson = require "cjson"
local socket = require "socket"
local fr = require "flag_redis_support"

local F = dofile(helpers.fixture("flag_proxy.lua"))
local ENV, KEY = F.ENV, F.KEY
local SECRET = "shared-secret-of-the-cluster"

local AUTH_KEY = fr.auth_key(KEY)

local health, says_whole, redis = fr.health, fr.says_whole, fr.command

local function pid_gone(pid) return not helpers.read_file("/proc/" .. pid .. "/status") end

describe("flag proxy: Redis comes back empty", function()
  local dir, port, pid, primary, replica

  local function start_replica(more)
    local flags = { "--read-replica" }
    for _, f in ipairs(more or {}) do flags[#flags + 1] = f end
    return helpers.start(F.script, { flags = flags,
      env = { AUTH_SECRET = SECRET, REDIS_ADDRESS = "127.0.0.1:" .. port } })
  end

  before_each(function()
    dir = helpers.tmpdir()
    port, pid = helpers.start_redis(dir, nil, "--dir " .. dir) -- SAVE writes dir/dump.rdb
    F.sh(("cp -r %s/examples/flag-proxy/config %s/config"):format(F.root, dir))
    primary = helpers.start(F.script, { flags = { "--offline", "--config-dir", dir .. "/config" },
      env = { AUTH_SECRET = SECRET, REDIS_ADDRESS = "127.0.0.1:" .. port } })
    helpers.wait_until(function() return select(2, redis(port, "GET", AUTH_KEY)) end, 5, "the primary's writes")
    replica = start_replica()
    helpers.wait_until(function() return says_whole(replica) end, 5, "the replica to load")
  end)
  after_each(function()
    if replica then assert.equal(0, replica:stop()) end
    if primary then assert.equal(0, primary:stop()) end
    if pid then os.execute("kill " .. pid) end
  end)

  -- Polls until both replicas and the primary are whole again and Redis holds the key once
  -- more; counts the wrong answers (a valid key refused, or a 200 from /health claiming a
  -- healthy cache that Redis does not hold), and how long each instance said it was not whole.
  local function watch(token, late, t0)
    local seen = { wrong = {}, late_statuses = {}, old_errors = 0, primary_wrong = 0 }
    local not_whole = { primary = 0, replica = 0, late = 0 }
    local last = t0
    while true do
      local now = socket.gettime()
      local dt = now - last
      last = now
      -- health before the state it claims: a claim then found false was false when made
      local pw = says_whole(primary)
      local held = select(2, redis(port, "GET", AUTH_KEY)) ~= nil
      if not pw then not_whole.primary = not_whole.primary + dt end
      if pw and not held then seen.primary_wrong = seen.primary_wrong + dt end
      -- the replica that ran through it: a token it issued keeps working
      local r = replica:get(("/client/env/%s/target/carol/evaluations/max-items"):format(ENV),
                            { Authorization = "Bearer " .. token })
      if r.status ~= 200 then seen.old_errors = seen.old_errors + 1 end
      if not says_whole(replica) then not_whole.replica = not_whole.replica + dt end
      local lw = late and says_whole(late)
      local la = late and F.auth(late).status
      if late then
        seen.late_statuses[la] = (seen.late_statuses[la] or 0) + 1
        if not lw then not_whole.late = not_whole.late + dt end
        if la ~= 200 and lw then seen.wrong[#seen.wrong + 1] = "late replica healthy, key refused " .. la end
      end
      if held and pw and says_whole(replica) and (not late or (lw and la == 200)) then break end
      assert(now - t0 < 15, "not whole again after 15 s: " .. cjson.encode({ wrong = seen.wrong, held = held, primary = pw,
        replica = { health(replica) }, late = late and { health(late) } or false }))
      socket.sleep(0.02)
    end
    return seen, not_whole, socket.gettime() - t0
  end

  -- A change on the primary reaches the replicas (their feeds follow the new stream).
  local function change_reaches(hosts)
    local file = dir .. "/config/env-" .. ENV .. "/feature_config.json"
    local flags = cjson.decode(F.read(file))
    for _, f in ipairs(flags) do if f.feature == "legacy-off" then f.state = "on" end end
    helpers.write_file(file, cjson.encode(flags))
    assert.is_true(primary:reload())
    for _, host in ipairs(hosts) do
      local _, token = F.auth(host)
      helpers.wait_until(function()
        local r = host:get(("/client/env/%s/target/erin/evaluations/legacy-off"):format(ENV), { Authorization = "Bearer " .. token })
        return cjson.decode(r.body).value == "on"
      end, 5, "the change after the refill")
    end
  end

  local function report(what, seen, not_whole, took)
    local statuses = {}
    for s, n in pairs(seen.late_statuses) do statuses[#statuses + 1] = s .. "×" .. n end
    table.sort(statuses)
    print(("\nflag proxy, %s: whole again after %.2f s; not whole per /health: primary %.2f s, " ..
      "running replica %.2f s (valid-token errors %d), replica started after %.2f s (auth answers %s); " ..
      "wrong answers (a key refused while saying healthy): %d; the primary said healthy with Redis empty for %.2f s")
      :format(what, took, not_whole.primary, not_whole.replica, seen.old_errors, not_whole.late,
              #statuses > 0 and table.concat(statuses, " ") or "-", #seen.wrong, seen.primary_wrong))
  end

  it("restart without persistence: the primary re-seeds, replicas reload, no one is healthy while wrong", function()
    local _, token = F.auth(replica)
    os.execute("kill " .. pid)
    helpers.wait_until(function() return pid_gone(pid) end, 5, "redis to exit")
    local t0 = socket.gettime()
    port, pid = helpers.start_redis(dir, port)
    local late = start_replica({ "--allow-empty" }) -- an empty Redis is then a valid config: the tester's 401 while healthy
    local ok, err = pcall(function()
      local seen, not_whole, took = watch(token, late, t0)
      report("Redis restarted empty", seen, not_whole, took)
      assert.same({}, seen.wrong)
      assert.equal(0, seen.primary_wrong) -- the reconnect is seen at once
      assert.equal(0, seen.old_errors)
      F.node_evaluates_all(late.port)
      change_reaches({ replica, late })
    end)
    assert.equal(0, late:stop())
    assert(ok, err)
  end)

  it("FLUSHALL (the connections stay up): detected and re-seeded all the same", function()
    local _, token = F.auth(replica)
    local t0 = socket.gettime()
    assert.equal("+OK", (redis(port, "FLUSHALL")))
    local seen, not_whole, took = watch(token, nil, t0)
    report("FLUSHALL", seen, not_whole, took)
    assert.same({}, seen.wrong)
    -- nothing tells of a FLUSHALL but the seed mark, read every 0.25 s
    assert.is_true(seen.primary_wrong < 0.5, ("%.2f s"):format(seen.primary_wrong))
    assert.equal(0, seen.old_errors)
    change_reaches({ replica })
  end)

  it("restart from a snapshot older than the last change: the primary writes what it serves again", function()
    local _, token = F.auth(replica)
    local function dark_mode()
      local r = replica:get(("/client/env/%s/target/alice/evaluations/dark-mode"):format(ENV), { Authorization = "Bearer " .. token })
      return r.status == 200 and cjson.decode(r.body).value or r.status
    end
    local key = "env-" .. ENV .. "-feature-config-dark-mode"
    local function redis_state() return cjson.decode(select(2, redis(port, "GET", key)) or "{}").state end
    assert.equal("+OK", (redis(port, "SAVE"))) -- dark-mode on
    local file = dir .. "/config/env-" .. ENV .. "/feature_config.json"
    local flags = cjson.decode(F.read(file))
    for _, f in ipairs(flags) do if f.feature == "dark-mode" then f.state = "off" end end
    helpers.write_file(file, cjson.encode(flags))
    assert.is_true(primary:reload())
    helpers.wait_until(function() return dark_mode() == "false" end, 5, "the change on the replica")
    os.execute("kill -9 " .. pid)
    helpers.wait_until(function() return pid_gone(pid) end, 5, "redis to exit")
    local t0 = socket.gettime()
    port, pid = helpers.start_redis(dir, port, "--dir " .. dir)
    local stale, last, values = 0, socket.gettime(), {}
    while true do
      local now = socket.gettime()
      local v = dark_mode()
      values[tostring(v)] = (values[tostring(v)] or 0) + 1
      if v ~= "false" then stale = stale + (now - last) end
      last = now
      if redis_state() == "off" and v == "false" and says_whole(replica) and says_whole(primary) then break end
      assert(now - t0 < 15, ("Redis still holds the old dark-mode after 15 s (%s); the replica answered %s")
        :format(tostring(redis_state()), cjson.encode(values)))
      socket.sleep(0.02)
    end
    local seen = {}
    for v, n in pairs(values) do seen[#seen + 1] = v .. "×" .. n end
    table.sort(seen)
    print(("\nflag proxy, Redis restarted from an old snapshot: Redis holds the primary's config again after " ..
      "%.2f s; the replica served the old value for %.2f s (answers %s)"):format(socket.gettime() - t0, stale,
      table.concat(seen, " ")))
  end)
end)
