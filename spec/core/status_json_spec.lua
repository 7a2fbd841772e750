-- /status.json on --admin-listen: its shape, that its numbers are /metrics' numbers, the panels
-- scripts add with relay.status (the bundled personalities' included), the last reload's
-- outcome, the page's CSP, and that no secret given on the command line or in the environment
-- appears in it.
local helpers = require "spec.helpers"
local S = require "status_support"

local function no_secret(body, secrets)
  for _, s in ipairs(secrets) do
    assert.falsy(body:find(s, 1, true), "a secret in /status.json: " .. s)
  end
end

describe("/status.json", function()
  local hosts = {}
  local function keep(h) hosts[#hosts + 1] = h; return h end
  after_each(function()
    for _, h in ipairs(hosts) do assert.equal(0, h:stop()) end
    hosts = {}
  end)

  it("has the shape the page reads, with /metrics' numbers", function()
    local proxy, origin = S.start(3, 2, 1, { "--mount", "/secret=http://127.0.0.1:9/v1?key=q5ecret" })
    keep(proxy); keep(origin)
    local held = proxy:client() -- an idle keep-alive connection on the main listener
    assert.equal(200, held:get("/app/count").status)
    local s, body = S.json(proxy.admin)
    local m = S.metrics(proxy.admin)
    held:close()
    assert.equal("string", type(s.version))
    assert.equal(proxy.pid, s.pid)
    -- listeners, with the ports actually bound, and their open connections
    assert.same({ "main", "admin" }, { s.listeners[1].name, s.listeners[2].name })
    assert.equal("127.0.0.1:" .. proxy.port, s.listeners[1].address)
    assert.equal("127.0.0.1:" .. proxy.admin, s.listeners[2].address)
    assert.equal(1, s.listeners[1].connections)
    assert.equal(s.connections, s.listeners[1].connections + s.listeners[2].connections)
    -- the same counters as /metrics; this request's own 200 is counted after it was answered
    local classes = S.classes(m)
    assert.same({ ["1xx"] = 0, ["2xx"] = 4, ["3xx"] = 0, ["4xx"] = 2, ["5xx"] = 1 }, s.requests.classes)
    assert.equal(classes["2xx"], s.requests.classes["2xx"] + 1)
    assert.equal(classes["4xx"], s.requests.classes["4xx"])
    assert.equal(classes["5xx"], s.requests.classes["5xx"])
    assert.equal(7, s.requests.total)
    assert.same({ ["200"] = 4, ["404"] = 2, ["502"] = 1 }, s.requests.codes)
    assert.equal(m["relayhost_proxy_upstream_errors_total{code=\"502\"}"], s.upstreams.errors["502"])
    -- the pool by upstream: the origin's kept-alive connections, adding up to the total
    local by, sum = s.upstreams.idle_by_upstream, 0
    for _, n in pairs(by) do sum = sum + n end
    assert.equal(s.upstreams.idle_pooled, sum)
    assert.is_true((by["127.0.0.1:" .. origin.port] or 0) >= 1, "no idle connection to the origin in " .. body)
    -- percentiles from the duration histogram, over as many requests
    assert.equal(7, s.latency_ms.count)
    assert.equal(m.relayhost_http_request_duration_seconds_count, s.latency_ms.count + 1)
    assert.is_number(s.latency_ms.p50)
    assert.is_true(s.latency_ms.p50 <= s.latency_ms.p90 and s.latency_ms.p90 <= s.latency_ms.p99)
    assert.equal(7, s.latency_ms.last_minute.count)
    -- Lua
    assert.equal(1, s.lua.generation)
    assert.equal(m.relayhost_generations, s.lua.generations)
    assert.equal(0, s.lua.reloads)
    assert.equal(require("cjson").null, s.lua.last_reload)
    -- the chart's history: [t, 1xx..5xx, rejected, connections], cumulative
    assert.equal(2, s.history.interval)
    assert.is_true(#s.history.samples >= 1)
    for _, sample in ipairs(s.history.samples) do assert.equal(8, #sample) end
    -- the prefix proxy's panel: its mounts, without the query (where credentials could sit)
    assert.equal("prefix proxy", s.panels[1].title)
    assert.same({ prefix = "/app", upstream = "http://127.0.0.1:" .. origin.port }, s.panels[1].mounts[1])
    assert.same({ prefix = "/secret", upstream = "http://127.0.0.1:9/v1" }, s.panels[1].mounts[3])
    no_secret(body, { "q5ecret" })
  end)

  it("serves the page with a CSP that allows its own inline script and nothing else", function()
    local proxy, origin = S.start(0, 0, 0)
    keep(proxy); keep(origin)
    local res = S.get(proxy.admin, "/")
    assert.equal(200, res.status)
    assert.equal("text/html; charset=utf-8", res.headers["content-type"])
    local csp = assert(res.headers["content-security-policy"])
    assert.truthy(csp:find("default-src 'none'", 1, true))
    assert.truthy(csp:find("connect-src 'self'", 1, true))
    assert.falsy(csp:find("unsafe", 1, true))
    local script = assert(res.body:match("<script>(.-)</script>"))
    helpers.write_file(proxy.dir .. "/script.js", script)
    local digest = S.sh("openssl dgst -sha256 -binary " .. proxy.dir .. "/script.js | base64"):gsub("%s", "")
    assert.truthy(csp:find("script-src 'sha256-" .. digest .. "'", 1, true), csp)
    local text = res.body:gsub("http://www%.w3%.org/2000/svg", "") -- a namespace name, never fetched
    assert.falsy(text:find("https?://"), "the page names no other origin")
  end)

  it("tells the last reload's outcome, and a failing panel's error", function()
    local dir = helpers.tmpdir()
    local script = dir .. "/app.lua"
    local function write(panel)
      helpers.write_file(script, ([[
local relay = require "relay"
local app = relay.new { name = "status-reload" }
app:get("/", function(_, res) res:send(200, "ok") end)
relay.status(function() return { title = "mine", answer = 42 } end)
relay.status(function() %s end)
return app
]]):format(panel))
    end
    write('error("no panel today")')
    local admin = S.free_port()
    local h = keep(helpers.start(script, { flags = { "--admin-listen", "127.0.0.1:" .. admin } }))
    local s = S.json(admin)
    assert.same({ title = "mine", answer = 42 }, s.panels[1])
    assert.equal("panel 2", s.panels[2].title)
    assert.truthy(s.panels[2].error:find("no panel today", 1, true))
    write("return 'not a table'")
    assert.is_true(h:reload())
    s = S.json(admin)
    assert.equal(2, s.lua.generation)
    assert.equal("ok", s.lua.last_reload.outcome)
    assert.equal(1, s.lua.reloads)
    assert.truthy(s.panels[2].error:find("not a table", 1, true))
    helpers.write_file(script, "return (")
    assert.is_false((h:reload()))
    s = S.json(admin)
    assert.equal("failed", s.lua.last_reload.outcome)
    assert.equal(1, s.lua.reload_failures)
    assert.equal(2, s.lua.generation)
  end)

  it("shows the git tunnel server's clients, not its tokens or client keys", function()
    local admin = S.free_port()
    local server = keep(helpers.start("git-tunnel/server", { flags = { "--tokens=tok-s3cret-one", "--drain-timeout=1",
                                                                       "--admin-listen", "127.0.0.1:" .. admin } }))
    local client = keep(helpers.start("git-tunnel/client", { flags = {
      "--client-key=key-s3cret-two", "--base-url=http://127.0.0.1:9/git", "--styra-token=tok-s3cret-one",
      ("--server-url=ws://127.0.0.1:%d/v1/relay/register"):format(server.port), "--drain-timeout=1" } }))
    helpers.wait_until(function() return S.json(admin).panels[1].clients == 1 end, 10, "the tunnel")
    local s, body = S.json(admin)
    assert.same({ title = "git tunnel server", clients = 1, client_keys = 1, tokens = 1, presence = "off",
                  relayed = { ok = 0, forwarded = 0, failed = 0, no_client = 0 } }, s.panels[1])
    no_secret(body, { "tok-s3cret-one", "key-s3cret-two" })
    -- the tunnel's WebSocket, open on both ends: as /metrics counts it (issue 20)
    local m = S.metrics(admin)
    assert.same({ server = 1, client = 0, proxy = 0 }, s.websockets)
    assert.equal(m['relayhost_websockets_open{side="server"}'], s.websockets.server)
    assert.matches('\nrelayhost_websockets_open{side="client"} 1\n', client:get("/v1/system/metrics").body)
    assert.equal(0, client:stop())
    helpers.wait_until(function() return S.json(admin).websockets.server == 0 end, 10, "the tunnel's end to be counted")
    assert.equal(0, S.metrics(admin)['relayhost_websockets_open{side="server"}'])
  end)

  it("counts the WebSockets a proxy mount passes through, as /metrics does", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/echo.lua", [[
local relay = require "relay"
local app = relay.new { name = "echo" }
app:websocket("/echo", function(ws) while ws:recv() do end end)
return app
]])
    local origin = keep(helpers.start(dir .. "/echo.lua"))
    local admin = S.free_port()
    local proxy = keep(helpers.start("prefix-proxy", { flags = { "--mount", "/ws=http://127.0.0.1:" .. origin.port,
                                                                 "--admin-listen", "127.0.0.1:" .. admin } }))
    local ws = assert(require("ws_raw").open(proxy.port, "/ws/echo"))
    local s = S.json(admin)
    local m = S.metrics(admin)
    assert.same({ server = 0, client = 0, proxy = 1 }, s.websockets)
    assert.equal(m['relayhost_websockets_open{side="proxy"}'], s.websockets.proxy)
    ws.sock:close()
    helpers.wait_until(function() return S.json(admin).websockets.proxy == 0 end, 10, "the pass-through's end to be counted")
  end)

  it("shows the flag proxy's environments and streams, not its secret or keys", function()
    local admin = S.free_port()
    keep(helpers.start("flag-proxy", { flags = { "--offline", "--config-dir", helpers.root .. "/examples/flag-proxy/config",
                                                 "--admin-listen", "127.0.0.1:" .. admin },
                                       env = { AUTH_SECRET = "auth-s3cret-three" } }))
    local s, body = S.json(admin)
    local p = s.panels[1]
    assert.equal("flag proxy", p.title)
    assert.equal("offline", p.mode)
    assert.is_true(#p.environments >= 1)
    assert.is_true(p.environments[1].flags > 0)
    assert.equal(0, p.environments[1].sdk_streams)
    no_secret(body, { "auth-s3cret-three", "sample-server-sdk-key" })
  end)

  it("shows the workspace relay's counts, not its keys", function()
    local admin = S.free_port()
    keep(helpers.start("workspace-relay", { flags = { "--admin-listen", "127.0.0.1:" .. admin },
      env = { RELAY_ADMISSION = "jwks", RELAY_JWKS_URL = "http://127.0.0.1:9/jwks.json",
              RELAY_INTERNAL_KEY = "internal-s3cret-four", RELAY_BACKPLANE_MODE = "single",
              RELAY_ENABLE_ADMIN_HTTP = "1", RELAY_ADMIN_TOKEN = "admin-s3cret-five" } }))
    local s, body = S.json(admin)
    assert.same({ title = "workspace relay", workspaces = 0, connections = 0, daemons = 0, clients = 0,
                  backplane = "single" }, s.panels[1])
    no_secret(body, { "internal-s3cret-four", "admin-s3cret-five" })
  end)
end)
