-- A scope's session-event channels are forgotten when nobody follows them any more. A daemon may
-- stay connected for weeks while agent sessions (a channel each) come and go; the scope kept an
-- empty subscriber set for every channel ever subscribed (and walked them all at each client's
-- disconnect) until the whole scope went. The relay is the real script, wrapped to answer its Lua
-- heap after a full collection; the peers are node `ws` clients admitted by the validate fixture.
local helpers = require "helpers"
local W = require "workspace_support"

local N = 2000

local function channel(i) return ("agent-session:%08d"):format(i) end

describe("workspace relay, channels nobody follows", function()
  local peers, host

  setup(function()
    local channels = {}
    for i = 1, 2 * N + 1050 do channels[i] = channel(i) end
    W.tokens["client-token-many-channels"] = { claims = { workspaceId = "ws1", runtimeTargetId = "rt1", role = "client",
                                                          scope = "session-events", clientId = "client-many",
                                                          sessionChannels = channels } }
    peers = require("ws_peers").start()
    W.fixture(peers)
    -- MAX_LOGS=1: the log ring (two entries per connection) stays out of the measure
    host = W.start_measured(peers, { RELAY_ADMISSION_MAX_RESPONSE_BYTES = "262144", MAX_LOGS = "1" })
  end)

  teardown(function()
    assert.equal(0, host:stop())
    peers:stop()
  end)

  local function heap() return host:heap() end

  -- heap() - before, once it is below bound (5 s to get there: the relay sees a close a little
  -- after the peer does), or what it was then.
  local function settled(before, bound)
    local grown
    pcall(helpers.wait_until, function()
      grown = heap() - before
      return grown < bound
    end, 5)
    return grown
  end

  local function subscribe(id, i)
    peers:send(id, { type = "viewport.session_events.subscribe/v1", channel = channel(i) })
  end

  it("keeps no subscriber set for a channel after its last subscriber unsubscribes or leaves", function()
    assert.equal("open", W.connect(peers, host, "d", W.DAEMON_Q, "daemon-token-1"))
    assert.equal("open", W.connect(peers, host, "c", W.CLIENT_Q, "client-token-many-channels"))
    -- one channel at a time, each unsubscribed: N channels ever, one at most followed
    local function churn(first)
      for i = first, first + N - 1 do
        subscribe("c", i)
        peers:send("c", { type = "viewport.session_events.unsubscribe/v1", channel = channel(i) })
      end
      for _ = 1, 2 * N do peers:wait("d", "message", 10) end
    end
    churn(N + 1051) -- first, so that what LuaJIT compiles for these paths is there before the measure
    local before = heap()
    churn(1)
    -- measured (N = 2000): 279,228 B more when each channel's empty set was kept; 96 B without
    local grown = settled(before, 32 * 1024)
    assert(grown < 32 * 1024, ("%d bytes of Lua heap left by %d channels unsubscribed"):format(grown, N))
    peers:cmd { op = "close", id = "c", code = 1000 }
    peers:wait("c", "close")

    -- clients that leave without unsubscribing: 20 of them, `per` channels each
    local function leavers(first, per)
      for k = first, first + 19 do
        local id = "leaver" .. k
        assert.equal("open", W.connect(peers, host, id, W.CLIENT_Q, "client-token-many-channels"))
        for i = 1, per do subscribe(id, N + k * 50 + i) end
        for _ = 1, per do peers:wait("d", "message", 10) end
        peers:cmd { op = "close", id = id, code = 1000 }
        peers:wait(id, "close")
      end
    end
    leavers(100, 0) -- first, as churn: the compiled code of these paths
    before = heap()
    leavers(1, 50)
    -- measured: 265,904 B more when each channel's empty set was kept; 8,936 B without
    grown = settled(before, 32 * 1024)
    assert(grown < 32 * 1024, ("%d bytes of Lua heap left by 1,000 channels whose clients left"):format(grown))
  end)
end)
