-- The status page on --admin-listen in a real headless Chromium (Debian), driven over the
-- DevTools protocol: it loads under its own CSP with no error and no request to anyone but the
-- admin listener, refreshes itself from /status.json, and the numbers it shows are /metrics'
-- taken at a quiet moment. A screenshot is kept under the build tree (its path is printed).
local helpers = require "spec.helpers"
local cjson = require "cjson"
local S = require "status_support"

local function chromium()
  for _, name in ipairs { "chromium", "chromium-browser" } do
    if os.execute("command -v " .. name .. " >/dev/null 2>&1") == 0 then return name end
  end
end

-- build/artifacts beside the binary under test (build-asan's for the ASan run).
local function artifacts()
  local dir = (os.getenv("RELAYHOST_BIN") or helpers.root .. "/build/relayhost"):match("^(.*)/[^/]+$") .. "/artifacts"
  os.execute("mkdir -p '" .. dir .. "'")
  return dir
end

describe("the status page in Chromium", function()
  it("shows /metrics' numbers, refreshed from /status.json", function()
    local bin = assert(chromium(), "chromium is not installed (tools/deps installs it)")
    local proxy, origin = S.start(5, 3, 2)
    local held = { proxy:client(), proxy:client() } -- open connections on the main listener
    for _, c in ipairs(held) do assert.equal(200, c:get("/app/count").status) end
    local dir = helpers.tmpdir()
    local png = artifacts() .. "/status-page.png"
    os.remove(png)
    -- every=0: the page refreshes once, so nothing moves between its numbers and the scrape below
    local out, rc = S.sh(("timeout 60 node %s/spec/js/status-page-cdp.js %s %s/profile 'http://127.0.0.1:%d/?every=0' %s")
      :format(helpers.root, bin, dir, proxy.admin, png))
    assert.equal(0, rc, out)
    local line
    for l in out:gmatch("[^\n]+") do if l:sub(1, 1) == "{" then line = l end end
    local page = cjson.decode((assert(line, out)))
    print("status page screenshot: " .. png)

    -- a quiet moment: Chromium is gone (its connection to the admin listener with it)
    local probes = 0 -- each one a 200 of its own
    helpers.wait_until(function()
      probes = probes + 1
      return S.json(proxy.admin).listeners[2].connections == 1
    end, 5, "Chromium's connection to close")
    local m = S.metrics(proxy.admin)
    local classes = S.classes(m)
    for _, c in ipairs(held) do c:close() end

    assert.same({}, page.errors, "console errors or CSP refusals")
    for _, url in ipairs(page.requested) do
      assert.truthy(url:find("^http://127%.0%.0%.1:" .. proxy.admin .. "/"), "a request to another origin: " .. url)
    end
    assert.equal(1, page.refreshes)
    local v = page.values
    local n = function(k) return tonumber(v[k]) end
    -- what was sent: 7 proxied 200s, 3 404s, 2 502s, plus the page itself (200)
    assert.equal(8, n "requests.classes.2xx")
    assert.equal(3, n "requests.classes.4xx")
    assert.equal(2, n "requests.classes.5xx")
    assert.equal(13, n "requests.total")
    -- /metrics, scraped after: the same, but for the 200s of the page's /status.json and our probes
    assert.equal(classes["2xx"], n "requests.classes.2xx" + 1 + probes)
    assert.equal(classes["4xx"], n "requests.classes.4xx")
    assert.equal(classes["5xx"], n "requests.classes.5xx")
    assert.equal(classes["1xx"] + classes["3xx"], n "requests.classes.1xx" + n "requests.classes.3xx")
    assert.equal(m.relayhost_http_request_duration_seconds_count, n "latency_ms.count" + 1 + probes)
    assert.equal(m.relayhost_generations, n "lua.generations")
    assert.equal(m.relayhost_reloads_total, n "lua.reloads")
    -- connections: the two held on the main listener, then and now (plus this scrape's own)
    assert.same({ "main", "127.0.0.1:" .. proxy.port, "2" }, page.listeners[1])
    assert.equal(m.relayhost_http_connections, 2 + 1)
    assert.is_number(n "latency_ms.p50")
    assert.is_true(page.chart >= 5, "the chart's lines")
    assert.truthy(page.panels:find("prefix proxy", 1, true))
    assert.truthy(page.panels:find("/app", 1, true))
    local f = assert(io.open(png, "rb"), "no screenshot")
    assert.equal("\137PNG", f:read(4))
    f:close()
    assert.equal(0, proxy:stop())
    assert.equal(0, origin:stop())
  end)
end)
