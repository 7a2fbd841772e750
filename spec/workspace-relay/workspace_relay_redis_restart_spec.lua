-- The workspace relay when its Redis restarts empty (a redis-server without persistence, killed
-- and started again on the same port): the daemon's presence key is gone, so a client on the
-- other relay cannot reach the daemon until the daemon's relay writes it again. The relays
-- re-announce every RELAY_PRESENCE_SYNC_INTERVAL_MS (here 5 s, a third of the 15 s TTL); Redis is
-- restarted right after one of those, the worst moment, and the spec measures how long after
-- Redis answers again frames cross again. It must be well inside the period: the relay writes
-- its presence again as soon as it finds Redis back without it, not a period later.
local helpers = require "helpers"
local socket = require "socket"
local W = require "workspace_support"
local X = require "workspace_crossing"
local rc = require "redis_cluster_support" -- its command() speaks to any one node

local PRESENCE = "viewport:relay:presence:ws1:rt1"
local TTL_MS, SYNC_MS = 15000, 5000

describe("workspace relay when Redis restarts empty", function()
  local pair, peers, rport, rpid, A, B

  setup(function()
    rport, rpid = helpers.start_redis(helpers.tmpdir())
    pair = X.start("redis://127.0.0.1:" .. rport, { "relay-a", "relay-b" },
                   { RELAY_PRESENCE_SYNC_INTERVAL_MS = tostring(SYNC_MS), RELAY_REDIS_PRESENCE_TTL_MS = tostring(TTL_MS) })
    peers, A, B = pair.peers, pair.A, pair.B
  end)

  teardown(function()
    local ok, err = true, nil
    if pair then ok, err = pair.stop() end
    if rpid then os.execute("kill " .. rpid .. " 2>/dev/null") end
    assert(ok, err)
  end)

  local function pttl() return tonumber((rc.command(rport, "PTTL " .. PRESENCE)):sub(2)) or -2 end

  -- Returns just after relay-a's periodic write (the key's TTL jumps back up): its next one is a
  -- whole period away. tick runs while waiting.
  local function after_sync(tick)
    local last = pttl()
    while true do
      tick()
      local now = pttl()
      if now > last + 500 then return end
      last = now
    end
  end

  it("reaches the daemon across relays again soon after Redis comes back empty", function()
    assert.equal("open", W.connect(peers, A, "da", W.DAEMON_Q, "daemon-token-1"))
    assert.equal("open", W.connect(peers, B, "cb", W.CLIENT_Q, "client-token-b"))
    X.session(peers, "cb", "da", "sess-restart")
    local probe = X.new(peers, "cb", "da", "sess-restart")
    probe:until_answered(10, 10, "before the restart")

    after_sync(function() probe:step() end)
    os.execute("kill -9 " .. rpid)
    local t0 = socket.gettime()
    rport, rpid = helpers.start_redis(helpers.tmpdir(), rport)
    local up = socket.gettime()
    assert.equal(-2, pttl()) -- empty
    probe.worst = 0 -- from here on
    local present
    local stop = up + SYNC_MS / 1000 + 3 -- a whole period, and the lookups' cache after it
    while socket.gettime() < stop do
      probe:step()
      if not present and pttl() > 0 then present = socket.gettime() - up end
    end
    probe:until_answered(5, 10, "after the restart")
    print(("\nworkspace relay, Redis restarted empty: down %.2f s; the presence key back %s after Redis answered " ..
           "(re-announce period %.1f s); after the restart: %s"):format(up - t0,
           present and ("%.2f s"):format(present) or "never", SYNC_MS / 1000, probe:summary()))
    assert.is_true(present ~= nil and present < 2.5, "the presence key written again within 2.5 s")
    assert.is_true(probe.worst < 3, ("frames could not cross for %.2f s"):format(probe.worst))
  end)

  -- A restart so quick that no call of relay-a's failed looks the same from the relay: only the
  -- record is gone. relay-a looks for one of its records every second and writes them again.
  it("writes a presence record that vanished without an error again within the heal period", function()
    helpers.wait_until(function() return pttl() > 0 end, 10, "the presence key")
    after_sync(function() socket.sleep(0.01) end)
    rc.command(rport, "DEL " .. PRESENCE)
    local t0 = socket.gettime()
    helpers.wait_until(function() return pttl() > 0 end, 10, "the presence key again")
    local back = socket.gettime() - t0
    print(("\nworkspace relay: a deleted presence key written again after %.2f s (period %.1f s)"):format(back, SYNC_MS / 1000))
    assert.is_true(back < 2.5, ("back after %.2f s"):format(back))
    -- The relay logs after its write has landed, so the line may follow the key by a moment.
    helpers.wait_until(function()
      return A:log():find('"event":"presence_reannounced"[^\n]*"reason":"a record was missing"') ~= nil
    end, 3, "presence_reannounced with reason 'a record was missing' in relay-a's log")
  end)
end)
