-- The flag proxy's primary and read replica on a real Redis Cluster (3 primaries, 3 replicas),
-- given the seeds as ff-proxy's own cluster form of REDIS_ADDRESS (host:port,host:port). ff-proxy
-- v2's key layout is kept (no hash tags: every command names one key). A change on the primary
-- reaches an SDK client of the replica; then the node holding proxy:sse_events (the replica's
-- feed) is killed, a change is made at that moment, and the spec measures how long until it
-- reaches the client, and what the client saw meanwhile.
local helpers = require "spec.helpers"
local cjson = require "cjson"
local socket = require "socket"
local rc = require "redis_cluster_support"
local fr = require "flag_redis_support"

local F = dofile(helpers.fixture("flag_proxy.lua"))
local ENV = F.ENV
local SECRET = "shared-secret-of-the-cluster"

local health = fr.health
local function says_whole(host) return fr.says_whole(host, true) end

describe("flag proxy on a Redis Cluster: primary and read replica", function()
  local dir, cluster, primary, replica

  setup(function()
    dir = helpers.tmpdir()
    cluster = rc.start { replicas = 1 }
    F.sh(("cp -r %s/examples/flag-proxy/config %s/config"):format(F.root, dir))
    primary = helpers.start(F.script, { flags = { "--offline", "--config-dir", dir .. "/config" },
      env = { AUTH_SECRET = SECRET, REDIS_ADDRESS = cluster.seeds } })
    helpers.wait_until(function() return says_whole(primary) end, 10, "the primary's cache")
    replica = helpers.start(F.script, { flags = { "--read-replica" },
      env = { AUTH_SECRET = SECRET, REDIS_ADDRESS = cluster.seeds } })
    helpers.wait_until(function() return says_whole(replica) end, 10, "the replica to load")
  end)
  teardown(function()
    local ok, err = true, nil
    for _, h in ipairs { replica, primary } do
      local code = h and h:stop()
      if h and code ~= 0 then ok, err = false, "exit " .. tostring(code) end
    end
    if cluster then cluster:stop() end
    assert(ok, err)
  end)

  -- Sets one flag's state in the primary's config directory and reloads it.
  local function set_state(feature, state)
    local file = dir .. "/config/env-" .. ENV .. "/feature_config.json"
    local flags = cjson.decode(F.read(file))
    for _, f in ipairs(flags) do if f.feature == feature then f.state = state end end
    helpers.write_file(file, cjson.encode(flags))
    assert.is_true(primary:reload())
  end

  local function eval(token, feature)
    local r = replica:get(("/client/env/%s/target/erin/evaluations/%s"):format(ENV, feature), { Authorization = "Bearer " .. token })
    local ok, body = pcall(cjson.decode, r.body)
    return r.status, ok and type(body) == "table" and body.value or nil
  end

  it("a change reaches the replica's SDK client, and again while the node holding its feed fails over", function()
    F.node_evaluates_all(replica.port)
    local _, token = F.auth(replica)
    local c, _, chunk = F.open_stream(replica, token)
    assert.equal(":\n\n", chunk())
    set_state("dark-mode", "off")
    local data = assert(chunk(2))
    assert.truthy(data:find('"identifier":"dark-mode"', 1, true), data)
    assert.equal("false", select(2, eval(token, "dark-mode")))

    local slot = tonumber((rc.command(cluster.ports[1], "CLUSTER KEYSLOT proxy:sse_events")):sub(2))
    local victim = cluster:owner(slot)
    cluster:kill(victim)
    local t0 = socket.gettime()
    set_state("legacy-off", "on") -- made while the feed's node is dead
    -- a client polls the replica meanwhile; its SSE stream is read as it goes
    local statuses, not_whole, stream_event, stream_end = {}, 0, nil, nil
    local last, seen_at = t0, nil
    c:settimeout(0)
    while true do
      local now = socket.gettime()
      local status, value = eval(token, "legacy-off")
      statuses[status] = (statuses[status] or 0) + 1
      if not says_whole(replica) then not_whole = not_whole + (now - last) end
      last = now
      if not stream_event and not stream_end then
        local got, err = chunk(0.01)
        if got and got:find('"identifier":"legacy-off"', 1, true) then stream_event = socket.gettime() - t0
        elseif not got and err ~= "timeout" then stream_end = err end
      end
      if value == "on" and not seen_at then seen_at = now - t0 end
      if seen_at and says_whole(replica) and says_whole(primary) then break end
      assert(now - t0 < 30, "the change did not reach the replica within 30 s: " ..
        cjson.encode({ owner = cluster:owner(slot), victim = victim, replica = { health(replica) }, primary = { health(primary) } }))
      socket.sleep(0.05)
    end
    local codes = {}
    for s, n in pairs(statuses) do codes[#codes + 1] = s .. "×" .. n end
    table.sort(codes)
    print(("\nflag proxy on a Redis Cluster, node of proxy:sse_events killed: a change made then reached the " ..
      "replica's evaluations after %.2f s (%s on its SSE stream), replica /health not whole for %.2f s; " ..
      "evaluations answered %s"):format(seen_at, stream_event and ("%.2f s"):format(stream_event)
        or stream_end and ("the stream ended: " .. stream_end) or "no event", not_whole, table.concat(codes, " ")))
    assert.same({ 200 }, (function() local k = {} for s in pairs(statuses) do k[#k + 1] = s end return k end)())
    assert.truthy(cluster:owner(slot) ~= victim)
    c:close()

    -- after the failover, changes flow again
    local _, token2 = F.auth(replica)
    local c2, _, chunk2 = F.open_stream(replica, token2)
    assert.equal(":\n\n", chunk2())
    local t1 = socket.gettime()
    set_state("dark-mode", "on")
    local data2 = assert(chunk2(5))
    assert.truthy(data2:find('"identifier":"dark-mode"', 1, true), data2)
    local took = socket.gettime() - t1
    print(("flag proxy on a Redis Cluster, after the failover: a change reached the replica's SDK stream in %.3f s"):format(took))
    -- (an offline primary's reload opens new Redis clients: one that sends before it has the slot
    -- map may try the dead seed first, fail, and rewrite everything a tick later)
    assert.is_true(took < 2, ("took %.3f s"):format(took))
    c2:close()
  end)
end)
