-- docker/prometheus (alert rules, their promtool tests, an example prometheus.yml) and
-- docker/grafana (the dashboard): promtool checks the rules and the config, runs the rules' tests
-- and parses every expression of the dashboard; and every metric either of them names, with the
-- labels they select or group by, is in the /metrics of a running personality (prefix proxy, flag
-- proxy offline, git tunnel server and client, workspace relay), and so are the names and labels
-- of the rule tests' series. Each personality is driven through the failure paths whose counters
-- only appear once counted (a 502, a refused head, a refused upgrade, a key set it cannot fetch,
-- Redis down under a daemon).
local helpers = require "helpers"
local cjson = require "cjson"
local lyaml = require "lyaml"
local support = require "git_tunnel_support" -- sh (output, status) and free_port

local root = helpers.root
local PROM = root .. "/docker/prometheus"
local RULES, RULE_TESTS = PROM .. "/relayhost-alerts.yml", PROM .. "/relayhost-alerts.test.yml"
local DASHBOARD = root .. "/docker/grafana/relayhost.json"
local ADMIN_TOKEN = "admin-token-for-observability"
local sh, free_port = support.sh, support.free_port

local function get(port, path, headers)
  local c = assert(helpers.connect(port))
  local res = c:get(path, headers)
  c:close()
  return assert(res, "no answer to GET " .. path)
end

-- ---- PromQL: the metric names an expression selects ----

-- Grafana's variables as Prometheus would see them once Grafana has put them in.
local function grafana_to_promql(expr)
  return (expr:gsub("%$__rate_interval", "5m"):gsub("%$__interval", "1m"):gsub("%$__range", "1h")
              :gsub("%${?[%a_][%w_]*}?", ".*"))
end

local KEYWORDS = {}
for w in ("by without on ignoring group_left group_right and or unless bool offset inf nan"):gmatch("%S+") do
  KEYWORDS[w] = true
end

-- Escapes only occur inside strings, so they go first; then each string is emptied.
local function blank_strings(expr)
  return (expr:gsub("\\.", "__"):gsub('"[^"]*"', '""'):gsub("'[^']*'", "''"):gsub("`[^`]*`", "``"))
end

local GROUPING = { "by", "without", "on", "ignoring", "group_left", "group_right" }

-- Strings, label matchers, ranges and label lists hold no metric name; what is left is
-- functions and aggregations (followed by "("), keywords, numbers and metric names.
local function metric_names(expr)
  local s = blank_strings(expr):gsub("%b{}", " "):gsub("%b[]", " ")
  for _, w in ipairs(GROUPING) do s = s:gsub("%f[%w_]" .. w .. "%s*%b()", " ") end
  local names, i = {}, 1
  while i <= #s do
    local num = s:match("^[%d%.][%w%.]*", i)
    local name = not num and s:match("^[%a_:][%w_:]*", i)
    if num then i = i + #num
    elseif name then
      i = i + #name
      if not s:match("^%s*%(", i) and not KEYWORDS[name:lower()] then names[#names + 1] = name end
    else i = i + 1 end
  end
  return names
end

-- The labels an expression relies on: { metric, label } for a matcher (name{label=...}), and
-- { label = l } for a label it groups or matches on (by, without, on, ...), which one of the
-- expression's metrics must carry.
local function label_uses(expr)
  local s, uses = blank_strings(expr), {}
  for name, braces in s:gmatch("([%a_:][%w_:]*)%s*(%b{})") do
    for l in braces:gmatch("([%a_][%w_]*)%s*[=!]") do uses[#uses + 1] = { metric = name, label = l } end
  end
  for _, w in ipairs(GROUPING) do
    for list in s:gmatch("%f[%w_]" .. w .. "%s*(%b())") do
      for l in list:gmatch("[%a_][%w_]*") do uses[#uses + 1] = { label = l } end
    end
  end
  return uses
end

-- ---- what the files say ----

local function read_yaml(path) return lyaml.load((assert(helpers.read_file(path), path))) end

local function alert_rules()
  local out = {}
  for _, g in ipairs(read_yaml(RULES).groups) do
    for _, r in ipairs(g.rules) do out[#out + 1] = r end
  end
  return out
end

local function dashboard() return cjson.decode((assert(helpers.read_file(DASHBOARD), DASHBOARD))) end

-- Every expression of the dashboard, with where it is: panels' targets, Prometheus
-- annotations, and the selector inside a query variable's label_values(...).
local function dashboard_exprs(d)
  local out = {}
  for _, p in ipairs(d.panels) do
    for _, t in ipairs(p.targets or {}) do out[#out + 1] = { where = ("panel %q %s"):format(p.title, t.refId), expr = t.expr } end
  end
  for _, a in ipairs(d.annotations.list) do
    if a.expr then out[#out + 1] = { where = "annotation " .. a.name, expr = a.expr } end
  end
  for _, v in ipairs(d.templating.list) do
    if v.type == "query" then
      local sel = assert(v.definition:match("^label_values%((.*),%s*[%a_][%w_]*%)$"), "variable " .. v.name)
      out[#out + 1] = { where = "variable " .. v.name, expr = sel }
    end
  end
  return out
end

-- Every expression of the rules and the dashboard: { where, expr } in PromQL.
local function all_exprs()
  local out = {}
  for _, r in ipairs(alert_rules()) do out[#out + 1] = { where = "alert " .. r.alert, expr = r.expr } end
  for _, e in ipairs(dashboard_exprs(dashboard())) do
    out[#out + 1] = { where = "dashboard " .. e.where, expr = grafana_to_promql(e.expr) }
  end
  return out
end

-- The rule tests' input series: { where, name, labels = { label names } }.
local function test_series()
  local out = {}
  for i, t in ipairs(read_yaml(RULE_TESTS).tests) do
    for _, in_s in ipairs(t.input_series) do
      local name, braces = in_s.series:match("^([%a_:][%w_:]*)(.*)$")
      local labels = {}
      for l in braces:gmatch("([%a_][%w_]*)%s*=") do labels[#labels + 1] = l end
      out[#out + 1] = { where = ("rule test %d %s"):format(i, in_s.series), name = name, labels = labels }
    end
  end
  return out
end

-- ---- running personalities ----

-- Sample names in a Prometheus text exposition, each with the label names its samples carry
-- (a HELP or TYPE line alone does not count).
local function exposed(text, into)
  for line in text:gmatch("[^\n]+") do
    local n, rest = line:match("^([%a_:][%w_:]*)(.*)")
    if n then
      into[n] = into[n] or {}
      for l in (rest:match("^%b{}") or ""):gmatch('([%a_][%w_]*)="') do into[n][l] = true end
    end
  end
end

-- Labels every series has once scraped: Prometheus adds them.
local TARGET_LABELS = { job = true, instance = true }

-- Each personality: started (into hosts, for teardown), driven, and scraped (into scrapes).
local hosts, scrapes = {}, {}
local DEAD = free_port() -- an upstream nobody listens on: the proxy answers 502, fetches fail

local function start(script, opts)
  hosts[#hosts + 1] = helpers.start(script, opts)
  return hosts[#hosts]
end

local function scrape(who, port, path, headers, own)
  scrapes[#scrapes + 1] = { who = who, own = own, text = get(port, path, headers).body }
end

local function prefix_proxy()
  local admin = free_port()
  local pp = start("prefix-proxy", { flags = { "--mount", "/api=http://127.0.0.1:" .. DEAD .. "/v1",
                                              "--admin-listen", "127.0.0.1:" .. admin } })
  assert.equal(502, pp:get("/api/x").status)
  local c = pp:client()
  c:send("GARBAGE\r\n\r\n")
  assert.equal(400, c:read_response().status)
  c:close()
  scrape("prefix proxy (--admin-listen)", admin, "/metrics")
end

local function flag_proxy()
  local ff = start("flag-proxy", { flags = { "--offline", "--config-dir", root .. "/examples/flag-proxy/config" },
                                   env = { AUTH_SECRET = "spec-secret-0123456789" } })
  local auth = ff:request { method = "POST", path = "/client/auth", headers = { ["content-type"] = "application/json" },
                            body = cjson.encode { apiKey = "sample-server-sdk-key" } }
  assert.equal(200, auth.status)
  scrape("flag proxy", ff.port, "/metrics")
end

local function git_tunnel()
  local server = start("git-tunnel/server", { flags = { "--tokens=tok-1", "--drain-timeout=1" } })
  local client = start("git-tunnel/client", { flags = {
    "--client-key=obs", "--base-url=http://127.0.0.1:" .. DEAD .. "/git", "--styra-token=tok-1",
    ("--server-url=ws://127.0.0.1:%d/v1/relay/register"):format(server.port), "--drain-timeout=1" } })
  helpers.wait_until(function() return get(client.port, "/v1/system/ready").status == 200 end, 10, "the tunnel")
  assert.equal(502, server:get("/v1/relay/nobody/info/refs").status) -- no client with that key
  scrape("git tunnel server", server.port, "/metrics")
  scrape("git tunnel client", client.port, "/v1/system/metrics")
end

local function b64url(s)
  return (require("mime").b64(s):gsub("%+", "-"):gsub("/", "_"):gsub("=", ""))
end

local function workspace_relay()
  local admin = free_port()
  local ws = start("workspace-relay", { flags = { "--admin-listen", "127.0.0.1:" .. admin },
    env = { RELAY_ADMISSION = "jwks", RELAY_JWKS_URL = "http://127.0.0.1:" .. DEAD .. "/jwks.json",
            RELAY_INTERNAL_KEY = "internal-key-0123456789", RELAY_BACKPLANE_MODE = "single",
            RELAY_ENABLE_ADMIN_HTTP = "1", RELAY_ADMIN_TOKEN = ADMIN_TOKEN } })
  assert.equal(401, ws:get("/ws?role=client&workspaceId=ws1").status) -- no token
  local function part(t) return b64url(cjson.encode(t)) end
  local jwt = part { alg = "RS256", kid = "k1" } .. "." .. part { workspaceId = "ws1" } .. ".c2ln"
  -- a token, and a key set that cannot be fetched
  assert.equal(401, ws:get("/ws?role=client&workspaceId=ws1", { authorization = "Bearer " .. jwt }).status)
  scrape("workspace relay (its /metrics)", ws.port, "/metrics", { authorization = "Bearer " .. ADMIN_TOKEN }, true)
  scrape("workspace relay (--admin-listen)", admin, "/metrics")
end

-- The platform's validate endpoint, admitting every token as the daemon of ws1/rt1.
local VALIDATE = [[
local relay = require "relay"
local app = relay.new { name = "validate-fixture" }
app:post("/api/runtime/internal/relay/validate", function(_, res)
  res:send(200, '{"ok":true,"claims":{"workspaceId":"ws1","runtimeTargetId":"rt1","role":"workspace-daemon"}}',
           { ["content-type"] = "application/json" })
end)
return app
]]

-- A daemon admitted by the validate endpoint on a relay whose Redis is down: its presence
-- write fails, and its close is counted.
local function workspace_relay_redis_down()
  local script = helpers.tmpdir() .. "/validate.lua"
  helpers.write_file(script, VALIDATE)
  local validate = start(script)
  local ws = start("workspace-relay", { env = {
    SERVER_URL = "http://127.0.0.1:" .. validate.port, RELAY_BACKPLANE_MODE = "redis",
    RELAY_REDIS_URL = "redis://127.0.0.1:" .. DEAD, RELAY_INTERNAL_KEY = "internal-key-0123456789",
    RELAY_ENABLE_ADMIN_HTTP = "1", RELAY_ADMIN_TOKEN = ADMIN_TOKEN } })
  local c = ws:client()
  c:send("GET /ws?role=workspace-daemon&workspaceId=ws1&runtimeTargetId=rt1 HTTP/1.1\r\nHost: x\r\n" ..
         "Authorization: Bearer daemon-token-0123\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" ..
         "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
  assert.equal("HTTP/1.1 101 Switching Protocols", c.sock:receive("*l"))
  c:close()
  local admin = { authorization = "Bearer " .. ADMIN_TOKEN }
  helpers.wait_until(function()
    return get(ws.port, "/metrics", admin).body:find("relay_ws_connections_closed_total 1", 1, true)
  end, 10, "the daemon's close")
  scrape("workspace relay, Redis down (its /metrics)", ws.port, "/metrics", admin, true)
end

describe("observability: docker/prometheus and docker/grafana", function()
  it("promtool finds the alert rules valid", function()
    local out, rc = sh("promtool check rules " .. RULES)
    assert.equal(0, rc, out)
    assert.matches("SUCCESS", out)
  end)

  it("promtool's tests pass, with every alert firing on one series and quiet on another", function()
    local out, rc = sh("cd " .. PROM .. " && promtool test rules relayhost-alerts.test.yml")
    assert.equal(0, rc, out)
    local fires, quiet = {}, {}
    for _, t in ipairs(read_yaml(RULE_TESTS).tests) do
      for _, a in ipairs(t.alert_rule_test or {}) do
        if a.exp_alerts and #a.exp_alerts > 0 then fires[a.alertname] = true else quiet[a.alertname] = true end
      end
    end
    for _, r in ipairs(alert_rules()) do
      assert.is_true(fires[r.alert] == true, r.alert .. " has no test where it fires")
      assert.is_true(quiet[r.alert] == true, r.alert .. " has no test where it stays quiet")
      assert.is_string(r.labels and r.labels.severity, r.alert .. " has no severity")
      assert.is_string(r.annotations and r.annotations.summary, r.alert .. " has no summary")
    end
  end)

  it("docs/operations.md names every alert", function()
    local doc = assert(helpers.read_file(root .. "/docs/operations.md"))
    local section = assert(doc:match("\n### Dashboards and alerts\n(.-)\n##? "), "no Dashboards and alerts section")
    for _, r in ipairs(alert_rules()) do
      assert.truthy(section:find("`" .. r.alert .. "`", 1, true), r.alert .. " is not in docs/operations.md")
    end
  end)

  it("the example prometheus.yml is valid, loads the rules, and names its jobs as RelayhostDown expects", function()
    -- --syntax-only: the token file it names is on the Prometheus server, not here
    local out, rc = sh("promtool check config --syntax-only " .. PROM .. "/prometheus.yml")
    assert.equal(0, rc, out)
    local conf = read_yaml(PROM .. "/prometheus.yml")
    assert.same({ "relayhost-alerts.yml" }, conf.rule_files)
    for _, job in ipairs(conf.scrape_configs) do assert.matches("^relayhost", job.job_name) end
  end)

  it("the dashboard has Grafana's shape: a datasource variable, panels on the grid, targets with expressions", function()
    local d = dashboard()
    assert.is_string(d.uid)
    assert.is_string(d.title)
    assert.is_true(type(d.schemaVersion) == "number" and d.schemaVersion >= 36, "schemaVersion")
    local vars = {}
    for _, v in ipairs(d.templating.list) do vars[v.name] = v end
    assert.equal("datasource", vars.datasource.type)
    assert.equal("prometheus", vars.datasource.query)
    local ids, cells = {}, {}
    for _, p in ipairs(d.panels) do
      assert.is_nil(ids[p.id], "panel id used twice: " .. tostring(p.id))
      ids[p.id] = true
      local g = p.gridPos
      assert.is_true(g.w >= 1 and g.x >= 0 and g.x + g.w <= 24 and g.h >= 1 and g.y >= 0, "gridPos of " .. p.title)
      for y = g.y, g.y + g.h - 1 do
        for x = g.x, g.x + g.w - 1 do
          local k = x .. "," .. y
          assert.is_nil(cells[k], ("panels %q and %q overlap"):format(tostring(cells[k]), p.title))
          cells[k] = p.title
        end
      end
      if p.type == "row" then
        assert.same({}, p.panels)
      else
        assert.truthy(({ timeseries = true, stat = true })[p.type], "panel type " .. tostring(p.type))
        assert.equal("${datasource}", p.datasource.uid, p.title)
        assert.is_true(#p.targets > 0, p.title .. " has no targets")
        local refs = {}
        for _, t in ipairs(p.targets) do
          assert.is_nil(refs[t.refId], p.title .. ": refId twice")
          refs[t.refId] = true
          assert.equal("${datasource}", t.datasource.uid, p.title)
          assert.is_true(type(t.expr) == "string" and #t.expr > 0, p.title .. " has a target with no expr")
        end
      end
    end
  end)

  it("promtool parses every expression of the dashboard", function()
    local rules = {}
    for i, e in ipairs(dashboard_exprs(dashboard())) do
      rules[i] = { record = "relayhost_dashboard:expr_" .. i, expr = grafana_to_promql(e.expr) }
    end
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/dashboard-rules.yml", lyaml.dump { { groups = { { name = "dashboard", rules = rules } } } })
    local out, rc = sh("promtool check rules " .. dir .. "/dashboard-rules.yml")
    assert.equal(0, rc, out)
    assert.matches("SUCCESS: " .. #rules .. " rules found", out)
  end)

  it("finds metric names and labels in PromQL and nothing else", function()
    assert.same({ "a_total", "b_bucket", "up" }, metric_names(
      'sum by (code, le) (rate(a_total{code=~"5..", x="by (y)"}[5m])) / on (job) group_left (z) ' ..
      'histogram_quantile(0.9, rate(b_bucket[1m] offset 5m)) > 1e3 and bool up'))
    assert.same({ "m" }, metric_names(grafana_to_promql('rate(m{job=~"$job"}[$__rate_interval])')))
    assert.same({ { metric = "a", label = "code" }, { metric = "a", label = "x" }, { label = "le" }, { label = "job" } },
      label_uses('sum by (le) (a{code=~"5..", x!="{y=1}"}) / on(job) b'))
  end)

  describe("with every personality running", function()
    setup(function()
      prefix_proxy()
      flag_proxy()
      git_tunnel()
      workspace_relay()
      workspace_relay_redis_down()
    end)
    teardown(function()
      local bad = {}
      for _, h in ipairs(hosts) do
        local rc = h:stop()
        if rc ~= 0 then bad[#bad + 1] = ("%s exited %s:\n%s"):format(h.script, tostring(rc), h:log():sub(-2000)) end
      end
      assert.same({}, bad)
    end)

    it("each serves the host's own metrics (the dashboard's variables and overview read them)", function()
      for _, s in ipairs(scrapes) do
        if not s.own then -- the workspace relay's own /metrics is the original's: its counters only
          local names = {}
          exposed(s.text, names)
          assert.truthy(names.relayhost_generations, s.who .. " has no relayhost_generations:\n" .. s.text)
        end
      end
    end)

    -- name -> labels, over every scrape; up is Prometheus's own series for each scrape
    local function everything()
      local have = { up = {} }
      for _, s in ipairs(scrapes) do exposed(s.text, have) end
      return have
    end

    it("every metric the rules and the dashboard name is in one of their /metrics", function()
      local have, missing = everything(), {}
      for _, e in ipairs(all_exprs()) do
        for _, n in ipairs(metric_names(e.expr)) do
          if not have[n] then missing[#missing + 1] = n .. " (" .. e.where .. ")" end
        end
      end
      table.sort(missing)
      assert.same({}, missing)
    end)

    it("every label they select or group by is on one of those metrics", function()
      local have, missing = everything(), {}
      for _, e in ipairs(all_exprs()) do
        local names = metric_names(e.expr)
        for _, u in ipairs(label_uses(e.expr)) do
          local found = TARGET_LABELS[u.label]
          for _, n in ipairs(u.metric and { u.metric } or names) do found = found or (have[n] and have[n][u.label]) end
          if not found then missing[#missing + 1] = ("%s on %s (%s)"):format(u.label, u.metric or "any", e.where) end
        end
      end
      assert.same({}, missing)
    end)

    it("the rule tests' series have the names and labels of ours", function()
      local have, wrong = everything(), {}
      for _, t in ipairs(test_series()) do
        if not have[t.name] then wrong[#wrong + 1] = t.where .. ": no such metric" end
        for _, l in ipairs(t.labels) do
          if have[t.name] and not TARGET_LABELS[l] and not have[t.name][l] then wrong[#wrong + 1] = t.where .. ": no label " .. l end
        end
      end
      assert.same({}, wrong)
    end)
  end)
end)
