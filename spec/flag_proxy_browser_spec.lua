-- The real Harness JavaScript client SDK (npm) in a real headless Chromium (Debian) evaluates
-- flags through the flag proxy from a page on another origin: auth and /evaluations with the
-- Harness-Target header, cross-origin (CORS preflights included). The SDK's stream is off here:
-- an open stream keeps headless Chromium's virtual time from ending (SSE is covered by the Node
-- SDK specs).
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
