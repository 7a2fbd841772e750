-- The real Harness JavaScript client SDK (npm) in a real headless Chromium (Debian) evaluates
-- flags through the flag proxy from a page on another origin: auth and /evaluations with the
-- Harness-Target header, cross-origin (CORS preflights included); and, driven over the DevTools
-- protocol, streams a change the proxy picks up on SIGHUP.
local helpers = require "spec.helpers"
local cjson = require "cjson"

local F = dofile(helpers.fixture("flag_proxy.lua"))

local function chromium()
  for _, name in ipairs { "chromium", "chromium-browser" } do
    if os.execute("command -v " .. name .. " >/dev/null 2>&1") == 0 then return name end
  end
end

describe("flag proxy with the JavaScript client SDK in Chromium", function()
  local proxy, page

  setup(function()
    proxy = helpers.start(F.script, { flags = { "--offline", "--config-dir", F.root .. "/examples/flag-proxy/config" },
      env = { AUTH_SECRET = "browser-spec-secret" } })
    page = helpers.start(F.root .. "/spec/js/ff-browser-page.lua", { flags = {
      "--proxy", ("http://127.0.0.1:%d"):format(proxy.port),
      "--sdk", F.root .. "/spec/js/node_modules/@harnessio/ff-javascript-client-sdk/dist/sdk.client-iife.js" } })
  end)
  teardown(function()
    if page then assert.equal(0, page:stop()) end
    if proxy then assert.equal(0, proxy:stop()) end
  end)

  it("streams a change (SIGHUP on the proxy) into the page, cross-origin", function()
    local bin = assert(chromium(), "chromium is not installed (tools/deps installs it)")
    local dir = helpers.tmpdir()
    F.sh(("cp -r %s/examples/flag-proxy/config %s/config"):format(F.root, dir))
    local keep = F.cleanup(finally)
    local live = keep(helpers.start(F.script, { flags = { "--offline", "--config-dir", dir .. "/config" },
      env = { AUTH_SECRET = "browser-spec-secret" } }))
    local spage = keep(helpers.start(F.root .. "/spec/js/ff-browser-page.lua", { flags = {
      "--proxy", ("http://127.0.0.1:%d"):format(live.port), "--stream",
      "--sdk", F.root .. "/spec/js/node_modules/@harnessio/ff-javascript-client-sdk/dist/sdk.client-iife.js" } }))
    local out = dir .. "/cdp.out"
    F.sh(("node %sff-browser-cdp.js %s %s/profile http://127.0.0.1:%d/ > %s 2>&1 </dev/null & echo $! > %s/cdp.pid")
      :format(F.js, bin, dir, spage.port, out, dir))
    keep(function() F.sh("kill " .. (F.read(dir .. "/cdp.pid") or "") .. " 2>/dev/null") end)
    local function values()
      local list = {}
      for line in (F.read(out) or ""):gmatch("[^\n]+") do
        local ok, v = pcall(cjson.decode, line)
        if ok and type(v) == "table" then list[#list + 1] = v end
      end
      return list
    end
    helpers.wait_until(function() return #values() > 0 end, 20, "the page to render: " .. tostring(F.read(out)))
    assert.equal(true, values()[1].dark)
    helpers.wait_until(function()
      return live:get("/metrics").body:find('ff_proxy_http_requests_total{url="/stream"', 1, true)
    end, 10, "the browser's event stream")
    local file = dir .. "/config/env-" .. F.ENV .. "/feature_config.json"
    local flags = cjson.decode(F.read(file))
    for _, f in ipairs(flags) do if f.feature == "dark-mode" then f.state = "off" end end
    helpers.write_file(file, cjson.encode(flags))
    assert.is_true(live:reload())
    local ok = pcall(helpers.wait_until, function() local v = values(); return v[#v].dark == false end, 5)
    F.sh("kill " .. F.read(dir .. "/cdp.pid"))
    assert.is_true(ok, "the change never reached the page")
    assert.equal(0, spage:stop())
    assert.equal(0, live:stop())
  end)

  it("evaluates flags for its target through the proxy, cross-origin", function()
    local bin = assert(chromium(), "chromium is not installed (tools/deps installs it)")
    local dir = helpers.tmpdir()
    local cmd = ("timeout 60 %s --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run " ..
      "--user-data-dir=%s/profile --virtual-time-budget=5000 --dump-dom http://127.0.0.1:%d/ 2>%s/chromium.err")
      :format(bin, dir, page.port, dir)
    local p = io.popen(cmd)
    local dom = p:read("*a")
    p:close()
    local out = dom:match('<pre id="out">(.-)</pre>')
    local err = dom:match('<pre id="err">(.-)</pre>')
    assert.truthy(out and out ~= "pending", "the SDK never got ready; page errors: " .. tostring(err) ..
      "\nproxy log:\n" .. proxy:log():sub(-3000))
    local got = cjson.decode((out:gsub("&quot;", '"'):gsub("&amp;", "&")))
    -- bob, with the attributes the page gives (Harness-Target): the spec's rules (fixture rows)
    assert.equal("You are in the beta", got.banner)
    assert.equal(true, got.dark)
    assert.equal(10, got.items)
    assert.same({ color = "red", size = 14 }, got.theme) -- JSON variations reach the SDK as JSON text
    assert.equal("VIP Europe", got.gated)
    local log = proxy:log()
    assert.truthy(log:find('"method":"OPTIONS","path":"/client/auth","status":204', 1, true), "a CORS preflight")
    assert.truthy(log:find('"method":"POST","path":"/client/auth","status":200', 1, true))
    assert.truthy(log:find('/target/bob/evaluations[^"]*","status":200'), "evaluations fetched")
  end)
end)
