-- WebSocket pass-through of proxy mounts, with real peers on both sides: node `ws` as the
-- upstream echo server and as the client.
local helpers = require "helpers"
local cjson = require "cjson"

local js = helpers.root .. "/spec/js/"

local function ws_client(url, script)
  local p = io.popen(("node %sws-client.js '%s' '%s'"):format(js, url, cjson.encode(script)))
  local out = p:read("*a")
  p:close()
  return cjson.decode(out)
end

describe("WebSocket pass-through", function()
  local dir, echo_out, echo_pid, slow, proxy

  setup(function()
    dir = helpers.tmpdir()
    echo_out = dir .. "/echo.out"
    os.execute(("node %sws-echo-server.js > %s 2>&1 & echo $! > %s/echo.pid"):format(js, echo_out, dir))
    echo_pid = helpers.wait_until(function() return helpers.read_file(dir .. "/echo.pid") end)
    local port = tonumber(helpers.wait_until(function()
      return (helpers.read_file(echo_out) or ""):match('"port":(%d+)')
    end, 10, "the node ws server"))
    slow = helpers.start(helpers.fixture("upstream.lua"))
    helpers.write_file(dir .. "/proxy.lua", ([[
local relay = require "relay"
local app = relay.new { name = "ws-proxy" }
app:mount("/ws", relay.proxy { target_base_url = "http://127.0.0.1:%d" })
app:mount("/dead", relay.proxy { target_base_url = "http://127.0.0.1:1" })
app:mount("/slow", relay.proxy { target_base_url = "http://127.0.0.1:%d", timeout = 0.3 })
app:mount("/guarded", relay.proxy {
  target_base_url = "http://127.0.0.1:%d",
  on_request = function(head) if not head.path:find("token=ok", 1, true) then return 403, "no\n" end end,
})
return app
]]):format(port, slow.port, port))
    proxy = helpers.start(dir .. "/proxy.lua")
  end)

  teardown(function()
    os.execute("kill " .. tostring(echo_pid):gsub("%s", ""))
    assert.equal(0, proxy:stop())
    assert.equal(0, slow:stop())
  end)

  local function url(path) return ("ws://127.0.0.1:%d%s"):format(proxy.port, path) end

  it("reaches the upstream path and query, with the subprotocol it picked", function()
    local r = ws_client(url("/ws/room?x=1"), { protocols = { "chat", "other" },
      send = { { wait = true }, { close = { 1000, "done" } } } })
    assert.is_true(r.opened)
    assert.equal("chat", r.protocol)
    local hello = cjson.decode(r.messages[1].text)
    assert.equal("/room?x=1", hello.hello)
    assert.equal("chat", hello.protocol)
    assert.is_nil(hello.headers["sec-websocket-extensions"])
    assert.equal("127.0.0.1", hello.headers["x-forwarded-for"])
    assert.equal(1000, r.close.code)
  end)

  it("relays text, binary, fragmented and large messages both ways", function()
    local r = ws_client(url("/ws/echo"), { send = {
      { wait = true }, -- the upstream's hello first
      { text = "hello", wait = true }, { binary_len = 3, wait = true }, { fragments = { "frag", "men", "ted" }, wait = true },
      { binary_len = 1024 * 1024, wait = true }, { close = { 1000, "bye" } } } })
    assert.equal(cjson.null, r.error)
    assert.equal("hello", r.messages[2].text)
    assert.equal(3, r.messages[3].binary_len)
    assert.equal("fragmented", r.messages[4].text)
    assert.equal(1024 * 1024, r.messages[5].binary_len)
    assert.equal(1000, r.close.code)
  end)

  it("carries a burst of messages in order", function()
    local r = ws_client(url("/ws/burst"), { send = { { text = "burst:500", wait = true } }, timeout_ms = 1500 })
    assert.equal(501, #r.messages)
    assert.equal("m0", r.messages[2].text)
    assert.equal("m499", r.messages[501].text)
  end)

  it("gives the client the upstream's close code and reason", function()
    local r = ws_client(url("/ws/c"), { send = { { text = "close:4001:going" } } })
    assert.same({ code = 4001, reason = "going" }, r.close)
  end)

  it("closes 1000 'Upstream closed' when the upstream drops without a close frame", function()
    local r = ws_client(url("/ws/d"), { send = { { text = "drop" } } })
    assert.same({ code = 1000, reason = "Upstream closed" }, r.close)
  end)

  it("passes the client's close code to the upstream promptly", function()
    ws_client(url("/ws/e"), { send = { { close = { 4002, "client done" } } } })
    helpers.wait_until(function() return (helpers.read_file(echo_out) or ""):find('"closed":4002', 1, true) end, 3)
  end)

  it("completes the handshake and closes 1011 when the upstream is unreachable or slow", function()
    local r = ws_client(url("/dead/x"), {})
    assert.is_true(r.opened)
    assert.same({ code = 1011, reason = "Upstream WS error" }, r.close)
    assert.matches('"event":"websocket_error"[^\n]*connection refused', proxy:log())
    local s = ws_client(url("/slow/slow?s=3"), {})
    assert.is_true(s.opened)
    assert.same({ code = 1011, reason = "Upstream WS timeout" }, s.close)
  end)

  it("lets an on_request hook refuse the upgrade", function()
    local r = ws_client(url("/guarded/x"), {})
    assert.is_false(r.opened)
    assert.matches("403", r.error)
    local ok = ws_client(url("/guarded/x?token=ok"), { send = { { close = { 1000, "" } } } })
    assert.is_true(ok.opened)
  end)
end)
