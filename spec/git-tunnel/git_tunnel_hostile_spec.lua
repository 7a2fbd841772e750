-- The git tunnel against hostile peers (issue 15, items 2, 3, 4 and 12; issue 14, item 6): a raw
-- relay-client (spec/support/git_tunnel_peer.lua) sends the server broken responses, and a raw
-- relay-server sends a real relay-client broken requests, while an origin records every byte it
-- gets. Each end checks every head it relays, frames every body itself, keeps targets under
-- base-url, and bounds what a peer that stops reading can cost it.
local helpers = require "helpers"
local env = require "git_tunnel_support"
local peer = require "git_tunnel_peer"
local socket = require "socket"

-- The origin that records every byte (spec/fixtures/recording-origin.py): { port, log() }.
local function recording_origin(dir, name)
  local out, log = ("%s/%s.out"):format(dir, name), ("%s/%s.log"):format(dir, name)
  for _ = 1, 5 do
    local port = env.free_port()
    local pid = env.must(("python3 %s %d %s > %s 2>&1 & echo $!"):format(helpers.fixture("recording-origin.py"), port, log, out))
    local up = pcall(helpers.wait_until, function() return (helpers.read_file(out) or ""):match("up") end, 5)
    if up then
      env.track({ pid = tonumber(pid:match("%d+")) })
      return { port = port, log = function() return helpers.read_file(log) or "" end }
    end
  end
  error("the recording origin did not start")
end

describe("git tunnel server against a hostile relay-client", function()
  local server

  setup(function() server = env.start_server() end)
  teardown(function() env.stop_all_checked() end)

  -- Registers a raw client for key and relays one request from a git user through it; answer(p, f)
  -- gets the request HEAD frame and plays the client. Returns what the git user received.
  local function exchange(key, request, answer)
    local p = assert(peer.register(server.port, "tok-1", key))
    local c = assert(socket.connect("127.0.0.1", server.port))
    c:send(request)
    local f = assert(p:expect(peer.HEAD))
    answer(p, f)
    c:settimeout(3)
    local got = {}
    while true do
      local data, err, partial = c:receive(65536)
      got[#got + 1] = data or partial
      if not data then break end
    end
    c:close()
    p:close()
    return table.concat(got)
  end

  local get = "GET /v1/relay/%s/x HTTP/1.1\r\nHost: x\r\n\r\n"

  it("answers 502 to a response head with CR/LF or NUL in a value, a bad name or a 1xx status", function()
    local heads = {
      { "200", { { "X-A", "1\r\nSet-Cookie: stolen=1" } } },
      { "200", { { "X-A", "a\0b" } } },
      { "200", { { "Bad Name", "v" } } },
      { "100", {} },
      { "101", { { "Upgrade", "websocket" } } },
      { "2000", {} },
    }
    for i, h in ipairs(heads) do
      local key = "evil-head-" .. i
      local got = exchange(key, get:format(key), function(p, f)
        p:send_frame(peer.head(f.stream, h[1], "", h[2]))
        p:send_frame(peer.frame(peer.DATA, f.stream, "body"))
        p:send_frame(peer.frame(peer.END, f.stream))
      end)
      assert.matches("^HTTP/1.1 502", got, "case " .. i)
      assert.matches("bad response head", got, "case " .. i)
      assert.is_nil(got:lower():find("set-cookie", 1, true), "case " .. i)
    end
    assert.matches('"event":"relay_failed"', server:log())
  end)

  it("never lets a body longer than its Content-Length reach the next request on the connection", function()
    local key = "evil-long"
    local smuggled = "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nsmuggled!"
    local got = exchange(key, get:format(key) .. get:format(key), function(p, f)
      p:send_frame(peer.head(f.stream, "200", "OK", { { "Content-Length", "5" } }))
      p:send_frame(peer.frame(peer.DATA, f.stream, "hello" .. smuggled))
      p:send_frame(peer.frame(peer.END, f.stream))
    end)
    assert.is_nil(got:find("smuggled", 1, true), got)
    assert.is_nil(got:find("HTTP/1.1 200 OK\r\nContent-Length: 9", 1, true))
  end)

  it("cuts the connection when a body ends short of its Content-Length", function()
    local key = "evil-short"
    local t0 = socket.gettime()
    local got = exchange(key, get:format(key), function(p, f)
      p:send_frame(peer.head(f.stream, "200", "OK", { { "Content-Length", "100" } }))
      p:send_frame(peer.frame(peer.DATA, f.stream, "hello"))
      p:send_frame(peer.frame(peer.END, f.stream))
    end)
    assert.is_true(socket.gettime() - t0 < 2.5, ("the connection was left waiting for the rest (%.2f s)"):format(socket.gettime() - t0))
    assert.equal("hello", got:match("\r\n\r\n(.*)$")) -- and then the close: no 100-byte body
  end)

  it("answers 502 to a bad or conflicting Content-Length", function()
    for i, v in ipairs({ { "5, 6" }, { "-1" }, { "5", "6" }, { "0x10" } }) do
      local key = "evil-len-" .. i
      local fields = {}
      for _, x in ipairs(v) do fields[#fields + 1] = { "Content-Length", x } end
      local got = exchange(key, get:format(key), function(p, f)
        p:send_frame(peer.head(f.stream, "200", "OK", fields))
        p:send_frame(peer.frame(peer.END, f.stream))
      end)
      assert.matches("^HTTP/1.1 502", got, "case " .. i)
    end
  end)

  it("relays an honest response, re-chunked when it has no length", function()
    local key = "honest"
    local got = exchange(key, get:format(key), function(p, f)
      p:send_frame(peer.head(f.stream, "200", "OK", { { "X-Fine", "yes" } }))
      p:send_frame(peer.frame(peer.DATA, f.stream, "0\r\n\r\n"))
      p:send_frame(peer.frame(peer.END, f.stream))
    end)
    assert.matches("^HTTP/1.1 200", got)
    assert.matches("[Tt]ransfer%-[Ee]ncoding: chunked", got)
    assert.matches("\r\n5\r\n0\r\n\r\n\r\n0\r\n\r\n$", got) -- the client's bytes are data, framed by us
  end)

  it("closes a tunnel whose client leaves more than its bound unread, with a log line and a metric", function()
    -- the deaf peer answers no heartbeat either: a slow machine's pushes outlast the default 3 s
    -- of silence, and the tunnel went for that instead of its bound
    local s = env.start_server({ "--ping-interval=30" })
    local p = assert(peer.register(s.port, "tok-1", "deaf"))
    local dir = helpers.tmpdir()
    -- every push fills its stream's window at the client, which never reads and resets the
    -- stream: what the windows sent stays queued, and the tunnel's bound is reached
    for i = 1, 12 do
      os.execute(("head -c 8388608 /dev/zero | curl -s -o /dev/null -m 20 -X POST --data-binary @- " ..
                  "http://127.0.0.1:%d/v1/relay/deaf/x > /dev/null 2>&1 &"):format(s.port))
      helpers.sleep(0.4)
      p:send_frame(peer.u32_frame(peer.RESET, i, 1, "not reading"))
      if s:log():find('"event":"tunnel_over_bound"', 1, true) then break end
    end
    helpers.wait_until(function() return s:log():find('"event":"relay_client_gone"', 1, true) end, 5,
                       "the tunnel to be closed")
    assert.matches('"event":"tunnel_over_bound"[^\n]*"queued":%d+', s:log())
    assert.matches('"event":"relay_client_gone"[^\n]*1008 peer is not reading', s:log())
    assert.matches('relayhost_tunnel_closed_total{reason="over_bound"} 1', s:get("/metrics").body)
    p:close()
    s:stop()
  end)

  it("holds memory when a client grants itself credit and never reads, or floods PINGs (+32 MB)", function()
    local s = env.start_server()
    local p = assert(peer.register(s.port, "tok-1", "sink"))
    p.zero_mask = true
    -- a git user pushes 400 MiB at the client that never reads
    local dir = helpers.tmpdir()
    os.execute(("head -c 419430400 /dev/zero | curl -s -o /dev/null -m 60 -X POST --data-binary @- " ..
                "http://127.0.0.1:%d/v1/relay/sink/x > %s/curl.out 2>&1 &"):format(s.port, dir))
    local ping = peer.frame(peer.PING, 0, "12345678")
    local batch = {}
    for i = 1, 200 do batch[i] = ping end
    local sent = 0
    local peak = helpers.flood(s, {
      seconds = 4,
      bound_kb = 32 * 1024,
      step = function()
        p:send_frame(peer.u32_frame(peer.WINDOW, 1, 0x7fffffff)) -- credit it never uses
        for _ = 1, 10 do
          if not p:send_many(batch) then return end
          sent = sent + 200
        end
      end,
      probe = function()
        local res = helpers.connect(s.port, nil, helpers.asan() and 10 or 2) -- ASan: 2 cores shared, the flood slowed 10x
        local r = res and res:get("/v1/relay/clients", { Authorization = "Bearer tok-1" })
        if res then res:close() end
        return r ~= nil and r.status == 200
      end,
    })
    print(("\n  tunnel client that never reads: %d PING frames sent, RSS peak +%d kB"):format(sent, peak))
    p:close()
    s:stop()
  end)
end)

describe("git tunnel client against a hostile relay-server", function()
  local dir, origin, other, tunnel, client

  setup(function()
    dir = helpers.tmpdir()
    origin = recording_origin(dir, "origin")
    other = recording_origin(dir, "other")
    local fake = peer.listen()
    client = env.start_client(fake.port, "victim", ("http://127.0.0.1:%d/base"):format(origin.port))
    tunnel = fake:accept()
  end)
  teardown(function()
    client:stop() -- before its server goes: no redial in flight as it stops
    tunnel:close()
    env.stop_all_checked()
  end)

  local next_stream = 0
  -- Sends one request HEAD (and body frames); returns the response HEAD frame (or RESET).
  local function request(method, target, fields, body)
    next_stream = next_stream + 1
    local id = next_stream
    tunnel:send_frame(peer.head(id, method, target, fields or {}))
    for _, d in ipairs(body or {}) do tunnel:send_frame(peer.frame(peer.DATA, id, d)) end
    tunnel:send_frame(peer.frame(peer.END, id))
    while true do
      local f = assert(tunnel:recv(5))
      if f.stream == id and (f.type == peer.HEAD or f.type == peer.RESET) then return f end
    end
  end

  local function connections(log)
    local n = 0
    for _ in log:gmatch("=== connection %d+ ===") do n = n + 1 end
    return n
  end

  it("refuses a method, target or header that would smuggle a second request", function()
    local cases = {
      { "GET", "/x HTTP/1.1\r\nHost: a\r\n\r\nGET /smuggled" },
      { "GET /smuggled HTTP/1.1\r\n\r\nGET", "/x" },
      { "GET", "/x", { { "X-A", "a\r\n\r\nGET /smuggled HTTP/1.1" } } },
      { "GET", "/x", { { "Host ", "evil" } } },
      { "GET", "/x", { { "X-A", "a\0b" } } },
      { "POST", "/x", { { "Content-Length", "5, 7" } } },
    }
    for i, c in ipairs(cases) do
      local f = request(c[1], c[2], c[3])
      assert.equal(peer.HEAD, f.type, "case " .. i)
      assert.equal("400", f.a, "case " .. i)
    end
    helpers.sleep(0.7)
    assert.equal(0, connections(origin.log()))
  end)

  it("keeps every target on base-url's host and port, under its path", function()
    local cases = {
      ("@127.0.0.1:%d/x"):format(other.port),
      (":%d/x"):format(other.port),
      "/../x", "/a/../../x", "/%2e%2e/x", "/.%2E/x", "/..%2fx", "x",
    }
    for i, t in ipairs(cases) do
      local f = request("GET", t)
      assert.equal("400", f.a, "case " .. i .. ": " .. t)
    end
    helpers.sleep(0.7)
    assert.equal(0, connections(origin.log()))
    assert.equal(0, connections(other.log()))
  end)

  it("sends resolved paths under base-url, with the query, without a stray '?'", function()
    local before = connections(origin.log())
    for _, t in ipairs({ "/a/./b/../c?q=1", "?x=1", "", "/plain" }) do
      local f = request("GET", t)
      assert.equal("200", f.a, t)
    end
    helpers.wait_until(function() return connections(origin.log()) == before + 4 end, 5)
    local log = origin.log()
    assert.matches("GET /base/a/c%?q=1 HTTP/1.1\r\n", log)
    assert.matches("GET /base%?x=1 HTTP/1.1\r\n", log)
    assert.matches("GET /base HTTP/1.1\r\n", log)
    assert.matches("GET /base/plain HTTP/1.1\r\n", log)
    assert.matches(("Host: 127.0.0.1:%d\r\n"):format(origin.port), log)
  end)

  it("frames the request body itself: no more than its Content-Length reaches the origin", function()
    local before = connections(origin.log())
    local f = request("POST", "/up", { { "Content-Length", "5" } }, { "helloGET /smuggled HTTP/1.1\r\n\r\n" })
    assert.is_truthy(f)
    helpers.sleep(0.8)
    local log = origin.log()
    assert.is_nil(log:find("smuggled", 1, true))
    assert.is_true(connections(log) <= before + 1)
  end)

  it("answers every PING, and relays honest requests after all that", function()
    tunnel:send_frame(peer.frame(peer.PING, 0, "abcdefgh"))
    local f = assert(tunnel:expect(peer.PONG, 0))
    assert.equal("abcdefgh", f.payload)
    assert.equal("200", request("GET", "/after").a)
    assert.is_true(env.ready(client))
  end)

  -- A flood's probe: the client's own probe endpoint answers.
  local function alive(c)
    local res = helpers.connect(c.port, nil, helpers.asan() and 10 or 2) -- ASan: 2 cores shared
    local r = res and res:get("/v1/system/alive")
    if res then res:close() end
    return r ~= nil and r.status == 200
  end

  -- The mirror of "a tunnel client that never reads": the client's PONGs wait in its own
  -- dialled WebSocket, which must count them (rh_lua_ws_queued) for the tunnel to hold them.
  it("holds memory when a server floods PINGs and never reads the PONGs (+32 MB)", function()
    local fake = peer.listen()
    local c = env.start_client(fake.port, "deaf-server", ("http://127.0.0.1:%d/base"):format(origin.port),
                               { "--ping-interval=5" }) -- its heartbeat waits out our drain below
    local p = fake:accept()
    local ping = p:ws_frame(peer.frame(peer.PING, 0, "12345678"))
    local batch = ping:rep(2000)
    local bytes, off = 0, 1 -- what the flood wrote, and where in batch it goes on
    p.sock:settimeout(0.5)
    local peak = helpers.flood(c, {
      seconds = 4,
      bound_kb = 32 * 1024,
      step = function()
        for _ = 1, 10 do
          local n, _, last = p.sock:send(batch, off)
          bytes = bytes + (n or last) - off + 1
          off = n and 1 or last + 1
          if not n then return end -- the client stopped reading: it is paused
        end
      end,
      probe = function() return alive(c) end,
    })
    -- what the client answered: every byte it sent us, read now until it has nothing more
    p.sock:settimeout(1)
    local got = 0
    while true do
      local data, _, partial = p.sock:receive(65536)
      got = got + #(data or partial or "")
      if not data then break end
    end
    local sent = math.floor(bytes / #ping)
    print(("\n  tunnel server that never reads: %d PING frames sent, %d bytes of answers, RSS peak +%d kB"):format(
      sent, got, peak))
    local closed = c:log():find('"event":"tunnel_over_bound"', 1, true)
    -- What the answers may come to when the client holds them: the two kernel buffers between
    -- us (their largest autotuned sizes) plus the 8 MiB the client queues for its server. A
    -- flood smaller than that (a busy machine sends fewer PINGs in 4 s) fits in the buffers
    -- whatever the client does, so only a flood past it tells holding from queuing all.
    local function max_of(path) return tonumber((helpers.read_file(path) or ""):match("(%d+)%s*$")) or 0 end
    local buffered = max_of("/proc/sys/net/ipv4/tcp_rmem") + max_of("/proc/sys/net/ipv4/tcp_wmem") + 9 * 1024 * 1024
    assert.is_true(closed ~= nil or got <= buffered,
      ("the client answered %d bytes to %d PINGs, past the buffers (%d): it queued them"):format(got, sent, buffered))
    if sent * 19 > 2 * buffered then
      assert.is_true(closed ~= nil or got < sent * 19 / 2,
        ("the client answered %d bytes to %d PINGs (a PONG is 19): it queued them all"):format(got, sent))
    end
    if not closed then -- held, not closed: the latest PING is answered once we read again
      p:send_frame(peer.frame(peer.PING, 0, "after..."))
      local f
      repeat f = assert(p:expect(peer.PONG, 0, 10)) until f.payload == "after..."
    end
    p:close()
    c:stop()
  end)

  -- Each stream's window is 4 MiB, and a server opens as many streams as it likes: what they
  -- queue together is held to RH_TUN_CLIENT_QUEUE, the streams waiting as if out of credit.
  it("holds memory when a server opens many streams and never reads their responses (+32 MB)", function()
    local web_dir = helpers.tmpdir()
    local web = env.start_lighttpd(web_dir)
    env.must(("head -c 67108864 /dev/zero > %s/www/big"):format(web_dir))
    local fake = peer.listen()
    local c = env.start_client(fake.port, "deaf-streams", ("http://127.0.0.1:%d"):format(web.port),
                               { "--ping-interval=5" })
    local p = fake:accept()
    local opened = 0
    local peak = helpers.flood(c, {
      seconds = 4,
      bound_kb = 32 * 1024,
      step = function()
        if opened < 24 then
          opened = opened + 1
          p:send_frame(peer.head(opened, "GET", "/big", {}))
          p:send_frame(peer.frame(peer.END, opened))
        end
        helpers.sleep(0.1)
      end,
      probe = function() return alive(c) end,
    })
    print(("\n  tunnel server that never reads: %d streams of 64 MiB opened, RSS peak +%d kB"):format(opened, peak))
    assert.is_true(env.ready(c)) -- paused, not closed
    p:close()
    c:stop()
  end)
end)

describe("git tunnel client against an upstream that never ends its head", function()
  it("answers 502 once the head's fields pass 64 KiB (http/collect's limit), holding no more", function()
    local dir = helpers.tmpdir()
    local port, out = env.free_port(), dir .. "/endless.out"
    local pid = env.must(("python3 %s %d %s endless-head > %s 2>&1 & echo $!"):format(helpers.fixture("recording-origin.py"),
      port, dir .. "/endless.log", out))
    env.track({ pid = tonumber(pid:match("%d+")) })
    helpers.wait_until(function() return (helpers.read_file(out) or ""):match("up") end, 5, "the endless origin")
    local fake = peer.listen()
    local client = env.start_client(fake.port, "victim", ("http://127.0.0.1:%d/"):format(port))
    local tunnel = fake:accept()
    tunnel:send_frame(peer.head(1, "GET", "/x", {}))
    tunnel:send_frame(peer.frame(peer.END, 1))
    local f
    repeat f = assert(tunnel:recv(10), "no answer to a request whose upstream never ends its head")
    until f.stream == 1 and (f.type == peer.HEAD or f.type == peer.RESET)
    assert.equal(peer.RESET, f.type)
    assert.matches("head over 64 KiB", f.payload)
    client:stop()
    tunnel:close()
    env.stop_all_checked()
  end)
end)

describe("git tunnel targets through a real server and client (--allow-hosts, queries)", function()
  local dir, origin, other, server

  setup(function()
    dir = helpers.tmpdir()
    origin = recording_origin(dir, "origin")
    other = recording_origin(dir, "other")
    server = env.start_server()
  end)
  teardown(function() env.stop_all_checked() end)

  it("takes 'host' as the default port only, 'host:port' as that port, 'host:*' as any", function()
    local function via(key, allow, port, path)
      local c = env.start_ready_client(server.port, key, "http:/", { "--allow-hosts=" .. allow })
      local res = server:get(("/v1/relay/%s/127.0.0.1:%d%s"):format(key, port, path or "/x"))
      c:stop()
      return res
    end
    local res = via("q1", "127.0.0.1", other.port)
    assert.equal(403, res.status)
    assert.matches("127.0.0.1:" .. other.port .. " is not in %-%-allow%-hosts", res.body)
    assert.equal(200, via("q2", "127.0.0.1:" .. origin.port, origin.port).status)
    assert.equal(403, via("q3", "127.0.0.1:" .. origin.port, other.port).status)
    assert.equal(200, via("q4", "127.0.0.1:*", other.port).status)
    -- the path after the host is confined too
    assert.equal(400, via("q5", "127.0.0.1:*", origin.port, "/%2e%2e/%2e%2e/x").status)
    helpers.sleep(0.7)
    assert.equal(1, select(2, origin.log():gsub("=== connection", "")))
    assert.matches("GET /x HTTP/1.1\r\n", origin.log())
  end)

  it("relays a target without a query without a stray '?'", function()
    local c = env.start_ready_client(server.port, "noq", ("http://127.0.0.1:%d/base"):format(origin.port))
    assert.equal(200, server:get("/v1/relay/noq/plain").status)
    assert.equal(200, server:get("/v1/relay/noq/withq?a=1").status)
    helpers.sleep(0.7)
    assert.matches("GET /base/plain HTTP/1.1\r\n", origin.log())
    assert.matches("GET /base/withq%?a=1 HTTP/1.1\r\n", origin.log())
    c:stop()
  end)

  it("relays a query-only target to base-url's root with its query (base-url without a path)", function()
    local c = env.start_ready_client(server.port, "rootq", ("http://127.0.0.1:%d"):format(other.port))
    assert.equal(200, server:get("/v1/relay/rootq?only=1").status)
    helpers.sleep(0.7)
    assert.matches("GET /%?only=1 HTTP/1.1\r\n", other.log())
    c:stop()
  end)
end)
