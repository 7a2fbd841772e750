-- Online with API_KEYS=k1,k2 where k2's /client/auth fails at start. The upstream is a real
-- offline relayhost flag proxy serving two environments, behind spec/fixtures/
-- flag_proxy_flaky_auth.lua, which answers k2's /client/auth with the status in a file while the
-- file exists. As the original (its Go SDK, one per key in v1): a failure that may pass (5xx, no
-- answer) is tried again with backoff until the key authenticates; a key the upstream refuses
-- (401/403) is not tried again. Either way /health is not SYNCED (500, ff-proxy v2's answer to a
-- failed sync) while a configured key's environment is not served, and says which key and why.
local helpers = require "spec.helpers"
local cjson = require "cjson"

local F = dofile(helpers.fixture("flag_proxy.lua"))
local ENV, KEY = F.ENV, F.KEY
local ENV2, KEY2 = "7c2d4e6f-8a9b-4c0d-9e1f-2a3b4c5d6e7f", "second-server-sdk-key"
local MASKED2 = "seco" .. ("*"):rep(#KEY2 - 4) -- as the original masks keys in its logs

local function sha256_hex(s)
  local p = io.popen("printf %s " .. s .. " | sha256sum")
  local hash = p:read("*l"):match("^(%x+)")
  p:close()
  return hash
end

-- The sample config (KEY's environment) and a copy of it as a second environment, KEY2's.
local function write_config(dir)
  F.sh(("rm -rf %s/config && cp -r %s/examples/flag-proxy/config %s/config"):format(dir, F.root, dir))
  local env2 = dir .. "/config/env-" .. ENV2
  F.sh(("cp -r %s/config/env-%s %s"):format(dir, ENV, env2))
  helpers.write_file(env2 .. "/auth_config.json", cjson.encode({ sha256_hex(KEY2) }))
  return env2 .. "/feature_config.json"
end

local function health(host)
  local res = host:get("/health")
  return res.status, cjson.decode(res.body)
end

-- The upstream, the flaky front (k2's auth answering `status` while it is in the fail file), and
-- the proxy under test; FLAG_POLL_INTERVAL is 1 minute unless env says otherwise.
local function start_all(keep, status, env)
  local dir = helpers.tmpdir()
  local flags2 = write_config(dir)
  local fail_file = dir .. "/fail"
  helpers.write_file(fail_file, tostring(status))
  local up = keep(helpers.start(F.script, { flags = { "--offline", "--config-dir", dir .. "/config" } }))
  local front = keep(helpers.start(helpers.fixture("flag_proxy_flaky_auth.lua"), {
    flags = { "--upstream", up:url(""):gsub("/$", ""), "--key", KEY2, "--fail-file", fail_file } }))
  env = env or {}
  env.API_KEYS, env.SDK_BASE_URL, env.METRIC_POST_DURATION = KEY .. "," .. KEY2, front:url(""):gsub("/$", ""), "0"
  local host = keep(helpers.start(F.script, { env = env }))
  return { up = up, front = front, host = host, fail_file = fail_file, flags2 = flags2, dir = dir }
end

describe("flag proxy, online, an API key whose auth fails at start", function()
  it("tries a key that got a 5xx again with backoff until it authenticates, and only then says SYNCED", function()
    local t = start_all(F.cleanup(finally), 503)
    local host, front = t.host, t.front
    -- k1 is served at once; k2 is not, and /health says so
    helpers.wait_until(function() return (F.auth(host)).status == 200 end, 10, "k1's environment")
    helpers.wait_until(function() return front:count("flaky_auth") > 0 end, 10, "k2's first auth")
    assert.equal(401, (F.auth(host, KEY2)).status)
    local status, h = health(host)
    assert.equal(500, status)
    assert.equal("FAILED_TO_SYNC", h.configStatus.state)
    assert.truthy(h.error:find("API key " .. MASKED2 .. ": /client/auth: status 503", 1, true), h.error)
    assert.is_nil(h.error:find(KEY2, 1, true), "the key itself is not shown")
    assert.is_true(h.retryIn >= 0 and h.retryIn <= 60, cjson.encode(h))
    -- tried again (1 s, then 2 s, ... up to 60 s), not at the next poll a minute later
    helpers.wait_until(function() return front:count("flaky_auth") >= 3 end, 15, "k2's retries")
    assert.equal("FAILED_TO_SYNC", select(2, health(host)).configStatus.state)
    -- the upstream answers again: k2's environment is served, and /health is SYNCED
    os.remove(t.fail_file)
    helpers.wait_until(function() return (F.auth(host, KEY2)).status == 200 end, 15, "k2's environment")
    helpers.wait_until(function()
      local s, hh = health(host)
      return s == 200 and hh.configStatus.state == "SYNCED" and hh.streamStatus.state == "CONNECTED"
    end, 10, "SYNCED and CONNECTED")
    local tries = front:count("flaky_auth")
    -- k2's environment is followed too: a change upstream reaches its SDK streams
    local _, token = F.auth(host, KEY2)
    local c, _, chunk = F.open_stream(host, token, KEY2)
    assert.equal(":\n\n", chunk())
    local flags = cjson.decode(F.read(t.flags2))
    for _, f in ipairs(flags) do if f.feature == "max-items" then f.defaultServe.variation = "hundred" end end
    helpers.write_file(t.flags2, cjson.encode(flags))
    assert.is_true(t.up:reload())
    local data = assert(chunk(5))
    while data == ":\n\n" do data = assert(chunk(5)) end
    local ev = cjson.decode(data:match("^event: %*\ndata: (.-)\n\n$"))
    assert.same({ "max-items", ENV2 }, { ev.identifier, ev.environment })
    c:close()
    helpers.sleep(2)
    assert.equal(tries, front:count("flaky_auth"), "no tries once it authenticated")
  end)

  it("does not try a key the upstream refuses (403) again, and /health names it while polls succeed", function()
    -- polling every 1.2 s (no stream): each poll succeeds for k1, none may say SYNCED
    local t = start_all(F.cleanup(finally), 403, { FLAG_STREAM_ENABLED = "false", FLAG_POLL_INTERVAL = "0.02" })
    local host, front = t.host, t.front
    helpers.wait_until(function() return (F.auth(host)).status == 200 end, 10, "k1's environment")
    helpers.sleep(2.5) -- two more polls
    assert.equal(401, (F.auth(host, KEY2)).status)
    local status, h = health(host)
    assert.equal(500, status)
    assert.equal("FAILED_TO_SYNC", h.configStatus.state)
    assert.truthy(h.error:find("API key " .. MASKED2 .. ": /client/auth: status 403", 1, true), h.error)
    assert.is_nil(h.retryIn, "nothing will try it again")
    assert.equal(1, host:count("upstream_key_refused"))
    -- the original's SDK gives up on a refused key: so does this, however long it runs
    os.remove(t.fail_file)
    helpers.sleep(4)
    assert.equal(1, front:count("flaky_auth"))
    assert.equal(500, (health(host)))
    -- a reload (a new generation, API_KEYS read again) tries it again
    assert.is_true(host:reload())
    helpers.wait_until(function() return (F.auth(host, KEY2)).status == 200 end, 10, "k2 after the reload")
    helpers.wait_until(function() return (health(host)) == 200 end, 10, "SYNCED after the reload")
  end)
end)
