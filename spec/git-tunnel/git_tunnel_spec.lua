-- The git tunnel end to end: real git against git http-backend under lighttpd, through the
-- relay-server and relay-client scripts, with basic auth passed through; registration errors,
-- unknown keys, the relay token, the base-url quirk and its host allow list, readiness
-- following the tunnel, replicas, a stalled stream next to a fast one, and wss:// with a CA
-- given by SSL_CERT_FILE.
local helpers = require "helpers"
local env = require "git_tunnel_support"
local cjson = require "cjson"
local socket = require "socket"

describe("git tunnel", function()
  local dir, web, server, client

  setup(function()
    local w = env.world("team-a")
    dir, web, server, client = w.dir, w.web, w.server, w.client
  end)

  teardown(function()
    env.stop_all_checked()
  end)

  it("clones, fetches and pushes with git through the tunnel, basic auth passed through", function()
    local url = env.url(server, "team-a", "/repo.git")
    local out, rc = env.git(("clone -q %s %s/c1"):format(url, dir))
    assert.equal(0, rc, out)
    assert.equal("hello\n", helpers.read_file(dir .. "/c1/a.txt"))

    helpers.write_file(dir .. "/c1/b.txt", "pushed through the tunnel\n")
    out, rc = env.commit(dir .. "/c1", "b.txt", "b", "origin HEAD:master")
    assert.equal(0, rc, out)
    out = env.must(("git --git-dir=%s/repos/repo.git show master:b.txt"):format(dir))
    assert.equal("pushed through the tunnel\n", out)

    out, rc = env.git(("clone -q %s %s/c2 && git -C %s/c1 commit -q --allow-empty -m c && git -C %s/c1 push -q origin HEAD:master && " ..
                       "git -C %s/c2 fetch -q origin && git -C %s/c2 log --format=%%s -1 origin/master"):format(
                       url, dir, dir, dir, dir, dir))
    assert.equal(0, rc, out)
    assert.equal("c\n", out)
  end)

  it("passes the git server's 401 through when git sends no credentials", function()
    local res = server:get("/v1/relay/team-a/repo.git/info/refs?service=git-upload-pack")
    assert.equal(401, res.status)
    assert.matches("Basic", res.headers["www-authenticate"])
    local out, rc = env.git(("ls-remote http://alice:wrong@127.0.0.1:%d/v1/relay/team-a/repo.git"):format(server.port))
    assert.are_not.equal(0, rc)
    assert.matches("Authentication failed", out)
  end)

  it("lists registered clients at /v1/relay/clients with a bearer token only", function()
    local res = server:get("/v1/relay/clients", { Authorization = "Bearer tok-2" })
    assert.equal(200, res.status)
    local body = cjson.decode(res.body)
    assert.equal(1, #body.result)
    assert.equal("team-a", body.result[1].client_key)
    assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", body.result[1].client_id)
    assert.equal("127.0.0.1", body.result[1].remote_address)
    assert.equal(401, server:get("/v1/relay/clients", { Authorization = "Bearer nope" }).status)
    assert.equal(401, server:get("/v1/relay/clients").status)
  end)

  it("takes the client's settings from the original's environment variables", function()
    local c = env.track(helpers.start(env.client_script, { env = {
      BASE_URL = env.base_url(web), CLIENT_KEY = "from-env", STYRA_TOKEN = "tok-2",
      SERVER_URL = ("ws://127.0.0.1:%d/v1/relay/register"):format(server.port), RELAY_DRAIN_TIMEOUT = "1" } }))
    env.wait_ready(c)
    local out, rc = env.git(("ls-remote %s"):format(env.url(server, "from-env", "/repo.git")))
    assert.equal(0, rc, out)
    assert.matches("refs/heads/master", out)
    c:stop()
  end)

  it("answers 502 naming the key when no client holds it", function()
    local res = server:get("/v1/relay/nobody/repo.git/info/refs")
    assert.equal(502, res.status)
    assert.matches("no relay client is registered for key 'nobody'", res.body)
  end)

  it("answers 504 when the client's upstream does not answer within --head-timeout", function()
    local mute = socket.bind("127.0.0.1", 0) -- accepts (the kernel does) and never answers
    local _, mute_port = mute:getsockname()
    local s = env.start_server({ "--head-timeout=1" })
    local c = env.start_ready_client(s.port, "mute", "http://127.0.0.1:" .. mute_port)
    local t0 = socket.gettime()
    local res = s:get("/v1/relay/mute/repo.git/info/refs")
    assert.equal(504, res.status)
    assert.matches("Gateway Timeout: no response from the relay client in time", res.body)
    assert.is_true(socket.gettime() - t0 < 5)
    assert.is_true(env.ready(c)) -- only that stream is gone
    mute:close()
    c:stop()
    s:stop()
  end)

  it("relays a request body without a length to the upstream chunked, every byte in order", function()
    local port = env.free_port()
    -- the origin reads the request to its last chunk, decodes it, and answers with what it got
    local py = ("import socket, hashlib\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n" ..
      "s.bind(('127.0.0.1', %d)); s.listen(1); print('up', flush=True)\nc,_=s.accept(); raw=b''\n" ..
      "while not raw.endswith(b'\\r\\n0\\r\\n\\r\\n'):\n  d=c.recv(65536)\n  if not d: break\n  raw+=d\n" ..
      "head, rest = raw.split(b'\\r\\n\\r\\n', 1); body=b''\n" ..
      "while True:\n  line, rest = rest.split(b'\\r\\n', 1); n=int(line, 16)\n  if n == 0: break\n" ..
      "  body += rest[:n]; rest = rest[n+2:]\n" ..
      "msg=(b'chunked' if b'transfer-encoding: chunked' in head.lower() else b'not chunked') + b' %%d %%s' %% (len(body), hashlib.sha256(body).hexdigest().encode())\n" ..
      "c.sendall(b'HTTP/1.1 200 OK\\r\\nContent-Length: %%d\\r\\n\\r\\n' %% len(msg) + msg); c.close()\n"):format(port)
    helpers.write_file(dir .. "/chunks.py", py)
    os.execute(("python3 %s/chunks.py > %s/chunks.out 2>&1 &"):format(dir, dir))
    helpers.wait_until(function() return (helpers.read_file(dir .. "/chunks.out") or ""):match("up") end, 10)
    local body = {}
    for i = 1, 30000 do body[i] = ("%05d\n"):format(i) end -- 180,000 bytes, none like another
    body = table.concat(body)
    helpers.write_file(dir .. "/chunks.body", body)
    local c = env.start_ready_client(server.port, "chunks", "http://127.0.0.1:" .. port)
    local out = env.must(("curl -s -H 'Transfer-Encoding: chunked' --data-binary @%s/chunks.body " ..
                          "http://127.0.0.1:%d/v1/relay/chunks/upload"):format(dir, server.port))
    local sum = env.must(("sha256sum %s/chunks.body"):format(dir)):match("^%x+")
    assert.equal(("chunked %d %s"):format(#body, sum), out)
    c:stop()
  end)

  it("relays a response whose body runs until the upstream closes, without the relay's own headers", function()
    local port = env.free_port()
    local py = ("import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n" ..
      "s.bind(('127.0.0.1', %d)); s.listen(1); print('up', flush=True)\nc,_=s.accept(); print(c.recv(65536), flush=True)\n" ..
      "c.sendall(b'HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\n' + b'x' * 100000); c.close()\n"):format(port)
    helpers.write_file(dir .. "/close.py", py)
    os.execute(("python3 %s/close.py > %s/close.out 2>&1 &"):format(dir, dir))
    helpers.wait_until(function() return (helpers.read_file(dir .. "/close.out") or ""):match("up") end, 5)
    local c = env.start_ready_client(server.port, "closer", "http://127.0.0.1:" .. port)
    local res = server:get("/v1/relay/closer/anything", { ["X-Relay-Token"] = "secret", Authorization = "Basic x" })
    assert.equal(200, res.status)
    assert.equal(100000, #res.body)
    local seen = helpers.read_file(dir .. "/close.out"):lower()
    assert.matches("authorization: basic x", seen)
    assert.is_nil(seen:find("x-relay-token", 1, true))
    c:stop()
  end)

  it("refuses registrations: wrong token 401, bad key 400, too many 429 with Retry-After", function()
    local s = env.start_server({ "--register-rate=3" })
    local up = { Upgrade = "websocket", Connection = "Upgrade", ["Sec-WebSocket-Version"] = "13",
                 ["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ==" }
    local function register(token, key)
      local h = { ["X-Relay-Client-Key"] = key }
      for k, v in pairs(up) do h[k] = v end
      if token then h.Authorization = "Bearer " .. token end
      return s:get("/v1/relay/register", h)
    end
    local res = register("wrong", "k")
    assert.equal(401, res.status)
    assert.matches("unknown bearer token", res.body)
    assert.equal(401, register(nil, "k").status)
    res = register("tok-1", "bad key!")
    assert.equal(400, res.status)
    assert.matches("letters, digits", res.body)
    assert.equal(400, register("tok-1", nil).status)
    assert.equal(400, register("tok-1", ("x"):rep(129)).status)
    for _ = 1, 3 do assert.equal(101, register("tok-1", "k").status) end
    res = register("tok-1", "k")
    assert.equal(429, res.status)
    assert.equal("60", res.headers["retry-after"])
    -- a real client's attempts are refused the same way and it stays unready
    local c = env.start_client(s.port, "bad key", "http://127.0.0.1:1", nil, { wait = false })
    c.killed = true -- exits 1 on purpose
    helpers.wait_until(function() return c:exited() end, 5, "the client to refuse its key")
    assert.matches("client%-key", c:log())
    local c2 = env.start_client(s.port, "k2", "http://127.0.0.1:1", { "--styra-token=wrong" })
    helpers.wait_until(function() return c2:count("relay_token_refused") > 0 end, 5)
    assert.matches('"event":"relay_token_refused"[^\n]*401', c2:log())
    assert.is_false(env.ready(c2))
    c2:stop()
    s:stop()
  end)

  it("asks for X-Relay-Token on the relay path when --relay-tokens is set", function()
    local s = env.start_server({ "--relay-tokens=rt" })
    local c = env.start_ready_client(s.port, "k", env.base_url(web))
    local res = s:get("/v1/relay/k/repo.git/info/refs")
    assert.equal(401, res.status)
    assert.matches("X%-Relay%-Token", res.body)
    assert.equal(401, s:get("/v1/relay/k/repo.git/info/refs", { ["X-Relay-Token"] = "no" }).status)
    local out, rc = env.git(("-c http.extraHeader='X-Relay-Token: rt' ls-remote %s"):format(env.url(s, "k", "/repo.git")))
    assert.equal(0, rc, out)
    assert.matches("refs/heads/master", out)
    c:stop()
    s:stop()
  end)

  it("supports --base-url=http:/ only for hosts in --allow-hosts", function()
    local c = env.start_ready_client(server.port, "quirk", "http:/", { "--allow-hosts=127.0.0.1:" .. web.port })
    local out, rc = env.git(("ls-remote %s"):format(env.url(server, "quirk", ("/127.0.0.1:%d/git/repo.git"):format(web.port))))
    assert.equal(0, rc, out)
    assert.matches("refs/heads/master", out)
    local res = server:get("/v1/relay/quirk/169.254.169.254/latest/meta-data")
    assert.equal(403, res.status)
    assert.matches("host 169.254.169.254:80 is not in %-%-allow%-hosts", res.body)
    -- without the quirk, userinfo tricks cannot move a request off base-url's host either
    local c2 = env.start_ready_client(server.port, "plain", ("http://127.0.0.1:%d"):format(web.port))
    res = server:get("/v1/relay/plain@169.254.169.254/x")
    assert.equal(502, res.status) -- "plain@…" is not a registered key
    c:stop()
    c2:stop()
  end)

  it("turns unready when the server stops answering (heartbeat) and ready when it is back", function()
    local s = env.start_server()
    local port = s.port
    local c = env.start_ready_client(port, "flip", env.base_url(web))
    s:signal("STOP") -- alive but silent: only the heartbeat can tell
    local t0 = socket.gettime()
    env.wait_ready(c, false, 10)
    local took = socket.gettime() - t0
    assert.is_true(took < 6, "readiness took " .. took .. " s to turn")
    s.killed = true
    s:signal("KILL")
    s:stop()
    local s2 = env.start_server(nil, { listen = "127.0.0.1:" .. port })
    env.wait_ready(c, true, 10)
    local out, rc = env.git(("ls-remote %s"):format(env.url(s2, "flip", "/repo.git")))
    assert.equal(0, rc, out)
    c:stop()
    s2:stop()
  end)

  it("goes on through another replica when one dies mid-clone", function()
    local bare = env.make_repo(dir, "big.git")
    env.must(("git clone -q %s %s/bigwork && head -c 30000000 /dev/urandom > %s/bigwork/blob.bin"):format(bare, dir, dir))
    local out, rc = env.commit(dir .. "/bigwork", "blob.bin", "blob", "origin HEAD:master")
    assert.equal(0, rc, out)
    local base = env.base_url(web)
    local r = { env.start_client(server.port, "rep", base), env.start_client(server.port, "rep", base) }
    env.wait_ready(r[1])
    env.wait_ready(r[2])
    local url = env.url(server, "rep", "/big.git")
    os.execute(("sh -c 'GIT_TERMINAL_PROMPT=0 git clone -q %s %s/rc1 > %s/rc1.out 2>&1; echo $? > %s/rc1.rc' &"):format(url, dir, dir, dir))
    local victim
    pcall(helpers.wait_until, function()
      for i = 1, 2 do
        local m = r[i]:get("/v1/system/metrics").body
        if tonumber(m:match("\nrelay_client_streams (%d+)")) > 0 then victim = i return true end
      end
      if helpers.read_file(dir .. "/rc1.rc") then return true end
    end, 20)
    victim = victim or 1 -- the clone was faster than we looked: kill one anyway
    r[victim].killed = true
    r[victim]:signal("KILL")
    r[victim]:stop()
    helpers.wait_until(function() return helpers.read_file(dir .. "/rc1.rc") end, 30, "the first clone to end")
    local list = cjson.decode(server:get("/v1/relay/clients", { Authorization = "Bearer tok-1" }).body).result
    local n = 0
    for _, c in ipairs(list) do if c.client_key == "rep" then n = n + 1 end end
    assert.equal(1, n)
    out, rc = env.git(("clone -q %s %s/rc2"):format(url, dir))
    assert.equal(0, rc, out)
    assert.equal(30000000, #helpers.read_file(dir .. "/rc2/blob.bin"))
    r[3 - victim]:stop()
  end)

  it("keeps one stream fast while another stalls, then resets only the stalled one", function()
    env.must(("head -c 67108864 /dev/zero > %s/www/big.bin"):format(dir))
    local c = env.start_ready_client(server.port, "slow", ("http://127.0.0.1:%d"):format(web.port), { "--stall-timeout=3" })
    local url = ("http://127.0.0.1:%d/v1/relay/slow/big.bin"):format(server.port)
    local function fetch()
      local out = env.must(("curl -s -o /dev/null -w '%%{size_download} %%{time_total}' %s"):format(url))
      local size, t = out:match("(%d+) ([%d.]+)")
      return tonumber(size), tonumber(t)
    end
    local size, alone = fetch()
    assert.equal(67108864, size)
    -- a reader that takes the head and stops reading
    local stalled = helpers.connect(server.port)
    stalled:send(("GET /v1/relay/slow/big.bin HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert.matches("^HTTP/1.1 200", stalled.sock:receive("*l"))
    socket.sleep(0.5) -- its stream runs out of credit
    local size2, beside = fetch()
    assert.equal(67108864, size2)
    assert.is_true(beside < alone * 3 + 1, ("alone %.2f s, beside a stalled stream %.2f s"):format(alone, beside))
    -- after --stall-timeout the stalled stream is reset: its connection ends short
    helpers.wait_until(function()
      return tonumber(c:get("/v1/system/metrics").body:match("\nrelay_client_tunnel_stream_resets (%d+)")) >= 1
    end, 10, "the stalled stream to be reset")
    stalled.sock:settimeout(10)
    local got = 0
    while true do
      local data, err, partial = stalled.sock:receive(65536)
      got = got + #(data or partial or "")
      if not data then assert.equal("closed", err) break end
    end
    assert.is_true(got < 67108864)
    assert.is_true(env.ready(c))
    assert.matches('"event":"access"[^\n]*"path":"/v1/relay/%[redacted%]/big.bin","status":200', server:log())
    size = fetch()
    assert.equal(67108864, size)
    c:stop()
  end)

  it("dials wss:// trusting the CA in SSL_CERT_FILE, for the server and an https base-url", function()
    local out, rc = env.sh(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/key.pem -out %s/cert.pem -days 2 " ..
      "-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1"):format(dir, dir))
    assert.equal(0, rc, out)
    local tls = { "--tls-cert=" .. dir .. "/cert.pem", "--tls-key=" .. dir .. "/key.pem" }
    local s = env.start_server(tls)
    local front = env.track(helpers.start("prefix-proxy", { flags = { "--mount=/git=http://127.0.0.1:" .. web.port .. "/git", tls[1], tls[2] } }))
    local wss = ("--server-url=wss://127.0.0.1:%d/v1/relay/register"):format(s.port)
    local base = ("https://127.0.0.1:%d/git"):format(front.port)
    local untrusting = env.start_client(s.port, "tls", base, { wss })
    local c = env.start_client(s.port, "tls", base, { wss }, { env = { SSL_CERT_FILE = dir .. "/cert.pem" } })
    env.wait_ready(c)
    helpers.wait_until(function() return untrusting:count("relay_connect_failed") > 0 end, 5)
    assert.matches('"event":"relay_connect_failed"[^\n]*certificate verify failed', untrusting:log())
    assert.is_false(env.ready(untrusting))
    out, rc = env.git(("clone -q https://alice:secret@127.0.0.1:%d/v1/relay/tls/repo.git %s/tls-clone"):format(s.port, dir),
                      { GIT_SSL_CAINFO = dir .. "/cert.pem" })
    assert.equal(0, rc, out)
    assert.equal("hello\n", helpers.read_file(dir .. "/tls-clone/a.txt"))
    untrusting:stop()
    c:stop()
    front:stop()
    s:stop()
  end)
end)
