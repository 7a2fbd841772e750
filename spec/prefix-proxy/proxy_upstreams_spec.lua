-- A mount's list of upstreams (issue 18, "Upstream selection"): target_base_url = { a, b } is
-- chosen round-robin per request, and an upstream that fails max_fails times in a row is skipped
-- for fail_timeout seconds, a retry moving to the next one. An access phase may choose within
-- the list (req.upstream = 2, or one of its URLs), passive health and retries still applying;
-- a value not in the list is the script's error, a 500 with the request id, logged at the line
-- that set it. Two recording origins (spec/fixtures/raw_origin.lua) say which got what; a port
-- nothing listens on is the one down. The connection cap has its own spec (proxy_maxconn).
local helpers = require "helpers"
local socket = require "socket"
local start_origin = require("raw_origin").start

local function refused(opts)
  local script = helpers.tmpdir() .. "/bad.lua"
  helpers.write_file(script, ([[
local relay = require "relay"
local app = relay.new { name = "bad" }
app:mount("/x", relay.proxy { %s })
return app
]]):format(opts))
  local rc, out, err = helpers.run { script, "--listen=127.0.0.1:0" }
  return rc, out .. err
end

-- The host refuses to load a mount with these options, and says msg.
local function refuses(opts, msg)
  local rc, out = refused(opts)
  assert.equal(1, rc)
  assert.matches(msg, out, 1, true)
end

local function count(s, pat)
  local _, n = s:gsub(pat, "")
  return n
end

describe("prefix proxy upstream lists", function()
  local a, b, proxy, dead, script, source

  setup(function()
    a, b = start_origin(), start_origin()
    dead = helpers.free_port()
    script = helpers.tmpdir() .. "/ups.lua"
    source = ([[
local relay = require "relay"
local app = relay.new { name = "ups" }
local a, b, dead = "http://127.0.0.1:%d/base", "http://127.0.0.1:%d/base", "http://127.0.0.1:%d/base"
app:mount("/rr", relay.proxy { target_base_url = { a, b } })
app:mount("/lc", relay.proxy { target_base_url = { a, b }, balance = "least_conn" })
app:mount("/lilya", relay.proxy { target_base_url = { dead, b }, max_retries = 1, retry_exceptions = { "ConnectError" },
  retry_backoff_factor = 0.01, limits = { max_connections = 100 } })
app:mount("/h", relay.proxy { target_base_url = { dead, b }, max_retries = 1, retry_on = { "connect" },
  retry_backoff_factor = 0.01, max_fails = 2, fail_timeout = 4 })
app:mount("/pick", relay.proxy { target_base_url = { a, b },
  access = function(req)
    local want = req.headers["x-pick"]
    req.upstream = tonumber(want) or want -- the choice
    req.headers["x-saw"] = tostring(req.upstream)
  end })
app:mount("/dead-first", relay.proxy { target_base_url = { dead, b }, max_retries = 1, retry_on = { "connect" },
  retry_backoff_factor = 0.01, max_fails = 1, fail_timeout = 30,
  access = function(req) req.upstream = 1 end })
app:get("/metrics", relay.metrics.handler)
return app
]]):format(a.port, b.port, dead)
    helpers.write_file(script, source)
    proxy = helpers.start(script)
  end)

  teardown(function()
    a:stop()
    b:stop()
    if proxy then assert.equal(0, proxy:stop(), proxy:log():sub(-3000)) end
  end)

  it("alternates requests between the upstreams, each sent its own Host", function()
    a:take(0.05); b:take(0.05)
    for i = 1, 4 do assert.equal(200, proxy:get("/rr/x" .. i).status) end
    local ha, hb = a:heads(), b:heads()
    assert.equal(2, #ha)
    assert.equal(2, #hb)
    for _, h in ipairs(ha) do assert.matches("\r\nHost: 127.0.0.1:" .. a.port .. "\r\n", h, 1, true) end
    for _, h in ipairs(hb) do assert.matches("\r\nHost: 127.0.0.1:" .. b.port .. "\r\n", h, 1, true) end
    -- alternating, not two then two
    local paths = {}
    for _, h in ipairs(ha) do paths[#paths + 1] = h:match("^GET (%S+)") end
    assert.same({ "/base/x1", "/base/x3" }, paths)
  end)

  it("skips an upstream after max_fails failures, retries to the next, and tries it again after fail_timeout",
    function()
      b:take(0.05)
      local before = count(proxy:log(), '"event":"upstream_retryable_error"')
      for i = 1, 8 do
        local res = proxy:get("/h/y" .. i)
        assert.equal(200, res.status) -- the client never sees the dead one
        assert.equal("ok", res.body)
      end
      assert.equal(8, #b:heads())
      local log = proxy:log()
      -- two connect failures took it out: the six requests after them went straight to b
      assert.equal(2, count(log, '"event":"upstream_retryable_error"') - before)
      assert.equal(1, count(log, '"event":"upstream_down"'))
      -- and counted, per upstream (the status page's "taken out" rows read it)
      assert.matches('relayhost_proxy_upstream_ejections_total{upstream="127.0.0.1:' .. dead .. '"} 1',
        proxy:get("/metrics").body, 1, true)
      helpers.sleep(4.2) -- past fail_timeout (4 s: room for the eight requests on a loaded machine)
      for i = 1, 2 do assert.equal(200, proxy:get("/h/z" .. i).status) end
      -- back in the rotation: one of these was sent to it (and failed over to b again)
      assert.equal(3, count(proxy:log(), '"event":"upstream_retryable_error"') - before)
    end)

  it("least_conn sends requests past an upstream that has one in flight", function()
    a:take(0.05); b:take(0.05)
    local hold = assert(socket.connect("127.0.0.1", proxy.port))
    hold:send("POST /lc/hold HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc") -- the rest never comes
    helpers.sleep(0.3)
    for i = 1, 4 do assert.equal(200, proxy:get("/lc/g" .. i).status) end
    hold:close()
    local ha, hb = a:heads(), b:heads()
    local busy, other = ha, hb
    if #hb == 1 then busy, other = hb, ha end
    assert.equal(1, #busy)
    assert.matches("^POST /base/hold ", busy[1])
    assert.equal(4, #other) -- round-robin would have sent two of them to the busy one
  end)

  it("takes Lilya's spellings: retry_exceptions for retry_on, limits accepted", function()
    b:take(0.05)
    for i = 1, 2 do assert.equal(200, proxy:get("/lilya/q" .. i).status) end
    assert.equal(2, #b:heads())
    refuses('target_base_url = "http://127.0.0.1:1", retry_on = { "connect" }, retry_exceptions = { "connect" }',
      "give retry_on or retry_exceptions, not both")
    refuses('target_base_url = "http://127.0.0.1:1", balance = "random"', "balance is \"round_robin\" or \"least_conn\"")
  end)

  it("the bundled prefix-proxy takes a comma-separated list in --mount", function()
    a:take(0.05); b:take(0.05)
    local pp = helpers.start("prefix-proxy", { flags = { "--mount",
      ("/api=http://127.0.0.1:%d/base,http://127.0.0.1:%d/base"):format(a.port, b.port) } })
    for i = 1, 2 do assert.equal(200, pp:get("/api/p" .. i).status) end
    assert.equal(0, pp:stop(), pp:log():sub(-2000))
    assert.equal(1, #a:heads())
    assert.equal(1, #b:heads())
  end)

  it("lets an access phase choose by place or by URL", function()
    a:take(0.05); b:take(0.05)
    for i = 1, 3 do assert.equal(200, proxy:get("/pick/n" .. i, { ["x-pick"] = "2" }).status) end
    assert.equal(200, proxy:get("/pick/u", { ["x-pick"] = ("http://127.0.0.1:%d/base/"):format(a.port) }).status)
    local ha, hb = a:heads(), b:heads()
    assert.equal(3, #hb)
    for _, h in ipairs(hb) do assert.matches("\r\nHost: 127.0.0.1:" .. b.port .. "\r\n", h, 1, true) end
    assert.equal(1, #ha)
    assert.matches("^GET /base/u HTTP/1%.1\r\n", ha[1])
    assert.matches("\r\n[Xx]%-[Ss]aw: 2\r\n", hb[1]) -- and reads back what it set
  end)

  it("refuses an access choice not in the list: 500 with the request id, logged at the script's line", function()
    a:take(0.05); b:take(0.05)
    local line, n = nil, 0
    for l in source:gmatch("([^\n]*)\n") do
      n = n + 1
      if l:find("-- the choice", 1, true) then line = n end
    end
    for _, bad in ipairs { "http://127.0.0.1:1/base", "3" } do
      local res = proxy:get("/pick/x", { ["x-pick"] = bad })
      assert.equal(500, res.status)
      assert.matches("request id " .. res.headers["x-request-id"], res.body, 1, true)
      local shown = tonumber(bad) and bad or "'" .. bad .. "'"
      assert.matches(script .. ":" .. line .. ": req.upstream = " .. shown .. " is not one of this mount's upstreams " ..
        ("(http://127.0.0.1:%d/base, http://127.0.0.1:%d/base, or 1..N for them in order)"):format(a.port, b.port),
        proxy:log(), 1, true)
    end
    assert.same({}, a:heads())
    assert.same({}, b:heads())
  end)

  it("keeps passive health and retries for an access choice: a dead one fails over, then is skipped", function()
    b:take(0.05)
    local before = count(proxy:log(), '"event":"upstream_retryable_error"')
    for i = 1, 3 do
      local res = proxy:get("/dead-first/d" .. i)
      assert.equal(200, res.status, res.body)
    end
    assert.equal(3, #b:heads())
    -- the first found it dead, and max_fails = 1 took it out for the other two
    assert.equal(1, count(proxy:log(), '"event":"upstream_retryable_error"') - before)
  end)

  it("refuses limits it cannot use, naming them", function()
    local url = 'target_base_url = "http://127.0.0.1:1", '
    refuses(url .. "limits = { max_connections = 0 }", "limits.max_connections must be a whole number >= 1")
    refuses(url .. "limits = { max_conections = 2 }", "max_connections")
    refuses(url .. "timeout = { pool = 1, poll = 2 }", "poll")
    refuses(url .. "max_queue = 0.5", "max_queue must be a whole number >= 1")
    refuses(url .. "limits = { keepalive_expiry = 0 }", "limits.keepalive_expiry must be > 0 seconds")
  end)

  it("reads every entry at load and names the one it refuses", function()
    refuses('target_base_url = { "http://127.0.0.1:1/p", "ftp://127.0.0.1:2/p" }', "target_base_url 'ftp://127.0.0.1:2/p'")
    refuses('target_base_url = { "http://127.0.0.1:1/p", "http://127.0.0.1:2/q" }',
      "target_base_url 'http://127.0.0.1:2/q': every entry needs the first one's scheme and path")
    refuses('target_base_url = { "http://127.0.0.1:1/p", 7 }', "target_base_url must be a list of strings (item 2 is a number)")
    refuses('target_base_url = {}', "target_base_url is required")
  end)
end)
