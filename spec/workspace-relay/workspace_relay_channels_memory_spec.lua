-- A scope's session-event channels are forgotten when nobody follows them any more. A daemon may
-- stay connected for weeks while agent sessions (a channel each) come and go; the scope kept an
-- empty subscriber set for every channel ever subscribed (and walked them all at each client's
-- disconnect) until the whole scope went. The relay is the real script, wrapped to answer its Lua
-- heap after a full collection; the peers are node `ws` clients admitted by the validate fixture.
local helpers = require "helpers"
local cjson = require "cjson"
local W = require "workspace_support"

local N = 2000

describe("workspace relay, channels nobody follows", function()
  local peers, host

  setup(function()
    local channels = {}
    for i = 1, N do channels[i] = ("agent-session:%036d"):format(i) end
    W.tokens["client-token-many-channels"] = { claims = { workspaceId = "ws1", runtimeTargetId = "rt1", role = "client",
                                                          scope = "session-events", clientId = "client-many",
                                                          sessionChannels = channels } }
    peers = require("ws_peers").start()
    W.fixture(peers)
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/heap.lua", ([[
local app = dofile(%q)
app:get("/lua-heap", function(_, res)
  collectgarbage("collect")
  collectgarbage("collect")
  res:json(200, { bytes = collectgarbage("count") * 1024 })
end)
return app
]]):format(helpers.root .. "/scripts/workspace-relay.lua"))
    host = W.start(peers, { RELAY_ADMISSION_MAX_RESPONSE_BYTES = "262144" }, nil, nil, dir .. "/heap.lua")
  end)

  teardown(function()
    assert.equal(0, host:stop())
    peers:stop()
  end)

  local function heap()
    local res = host:get("/lua-heap")
    assert.equal(200, res.status)
    return cjson.decode(res.body).bytes
  end

  it("keeps no subscriber set for a channel after its last subscriber unsubscribes or leaves", function()
    assert.equal("open", W.connect(peers, host, "d", W.DAEMON_Q, "daemon-token-1"))
    -- a client that subscribes to nothing fills what a connection leaves behind anyway (log entries)
    assert.equal("open", W.connect(peers, host, "warm", W.CLIENT_Q, "client-token-many-channels"))
    peers:cmd { op = "close", id = "warm", code = 1000 }
    peers:wait("warm", "close")
    local before = heap()
    assert.equal("open", W.connect(peers, host, "c", W.CLIENT_Q, "client-token-many-channels"))
    for i = 1, N do
      peers:send("c", { type = "viewport.session_events.subscribe/v1", channel = ("agent-session:%036d"):format(i) })
    end
    -- half are unsubscribed, the other half go with the connection
    for i = 1, N / 2 do
      peers:send("c", { type = "viewport.session_events.unsubscribe/v1", channel = ("agent-session:%036d"):format(i) })
    end
    for _ = 1, N + N / 2 do peers:wait("d", "message", 10) end
    peers:cmd { op = "close", id = "c", code = 1000 }
    peers:wait("c", "close")
    -- measured: ~0.3 MB more when every channel's empty set was kept; a few KB without
    local grown
    local ok = pcall(helpers.wait_until, function()
      grown = heap() - before
      return grown < 64 * 1024
    end, 5)
    assert(ok, ("%d bytes of Lua heap left by %d channels nobody follows"):format(grown, N))
  end)
end)
