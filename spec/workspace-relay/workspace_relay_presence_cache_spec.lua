-- The backplane's presence lookup cache (relay.workspace.backplane remote_daemon) against many
-- distinct scopes, with a real redis-server: whatever scopes peers name, the cache keeps at most
-- its bound (1024 scopes), so the relay's Lua heap stops growing once it is full.
local helpers = require "helpers"
local cjson = require "cjson"

local ROUND = 2000 -- distinct scopes looked up per round: past the bound after the first

describe("workspace relay presence lookup cache", function()
  local dir, rport, rpid, host

  setup(function()
    dir = helpers.tmpdir()
    rport, rpid = helpers.start_redis(dir)
    host = helpers.start(helpers.root .. "/spec/workspace-relay/presence_cache_host.lua", { env = {
      RELAY_BACKPLANE_MODE = "redis", RELAY_REDIS_URL = "redis://127.0.0.1:" .. rport, RELAY_INTERNAL_KEY = "k",
      RELAY_REDIS_PRESENCE_TTL_MS = "60000" } }) -- entries stay fresh: only the bound removes them
  end)

  teardown(function()
    if host then host:stop() end
    os.execute("kill " .. rpid)
  end)

  local function heap_after(from)
    local c = host:client(60)
    local res = assert(c:get(("/lookups?from=%d&n=%d"):format(from, ROUND)))
    c:close()
    assert.equal(200, res.status, res.body)
    return cjson.decode(res.body).kb
  end

  it("holds a bounded number of scopes however many distinct ones are looked up", function()
    heap_after(0) -- the cache full
    local full = heap_after(ROUND)
    local grown = 0
    for round = 2, 4 do grown = math.max(grown, heap_after(round * ROUND) - full) end
    -- unbounded, each scope's entry (key, table, record) stays: 6000 more scopes are ~600 kB
    assert.is_true(grown < 100, "the Lua heap grew by " .. grown .. " kB over " .. 3 * ROUND .. " more scopes")
  end)
end)
