-- The flag proxy refuses a config that does not fit the shape the SDKs rely on (issue 14.11),
-- before it replaces anything: at start (the process does not start, the message names the file,
-- the flag and the field), on SIGHUP (the reload fails, the old flags keep serving), and from an
-- upstream (the poll fails, the last good config keeps serving). No flags at all is refused
-- unless ALLOW_EMPTY.
local helpers = require "spec.helpers"
local cjson = require "cjson"
local S = require "status_support"

local F = dofile(helpers.fixture("flag_proxy.lua"))
local ENV, KEY, root = F.ENV, F.KEY, F.root

local function config_dir()
  local dir = helpers.tmpdir()
  F.sh(("cp -r %s/examples/flag-proxy/config %s/config"):format(root, dir))
  return dir .. "/config", dir .. "/config/env-" .. ENV .. "/feature_config.json"
end

-- The sample flags with fn applied to dark-mode, as JSON text.
local function flags_with(fn)
  local flags = cjson.decode(F.read(root .. "/examples/flag-proxy/config/env-" .. ENV .. "/feature_config.json"))
  for _, f in ipairs(flags) do if f.feature == "dark-mode" then fn(f) end end
  return cjson.encode(flags)
end

-- What alice gets for dark-mode, and how many flags the proxy serves.
local function served(host)
  local _, token = F.auth(host)
  local ev = host:get(("/client/env/%s/target/alice/evaluations/dark-mode"):format(ENV), { Authorization = "Bearer " .. token })
  local list = host:get(("/client/env/%s/feature-configs"):format(ENV), { Authorization = "Bearer " .. token })
  return ev.status == 200 and cjson.decode(ev.body).value or ev.status, #cjson.decode(list.body)
end

local function start_fails(dir, extra)
  local flags = { "--offline", "--config-dir", dir }
  for _, a in ipairs(extra or {}) do flags[#flags + 1] = a end
  local ok, err = pcall(helpers.start, F.script, { flags = flags })
  if ok then err:stop() end
  assert.is_false(ok, "the proxy started with a bad config")
  return tostring(err)
end

describe("flag proxy config checks, offline", function()
  it("refuses to start with a config that does not fit, naming the file, the flag and the field", function()
    local dir, file = config_dir()
    local cases = {
      { flags_with(function(f) f.rules = 5 end), 'flag "dark-mode": rules: expected an array, got 5' },
      { flags_with(function(f) f.variations = nil end), 'flag "dark-mode": variations: expected a non-empty array, got nothing' },
      { flags_with(function(f) f.defaultServe = nil end), 'flag "dark-mode": defaultServe: expected an object, got nothing' },
      { "{}", "feature_config.json: expected a JSON array" },
      { "[]", "no flags at all" },
    }
    for _, c in ipairs(cases) do
      helpers.write_file(file, c[1])
      local err = start_fails(dir)
      assert.truthy(err:find(c[2], 1, true), ("want %s in:\n%s"):format(c[2], err))
      if c[2] ~= "no flags at all" then assert.truthy(err:find(file, 1, true), "the file is not named: " .. err) end
    end
    -- --allow-empty (ALLOW_EMPTY) serves a config with no flags
    local host = F.cleanup(finally)(helpers.start(F.script, { flags = { "--offline", "--config-dir", dir, "--allow-empty" } }))
    assert.same({ 404, 0 }, { served(host) })
    assert.equal(0, host:stop())
  end)

  it("keeps the old flags serving when a reload brings a config that does not fit", function()
    local dir, file = config_dir()
    local host = F.cleanup(finally)(helpers.start(F.script, { flags = { "--offline", "--config-dir", dir } }))
    assert.same({ "true", 8 }, { served(host) })
    local cases = {
      { "{}", "expected a JSON array" },
      { "[]", "no flags at all" },
      { flags_with(function(f) f.rules = 5 end), file .. ': flag "dark-mode": rules: expected an array, got 5' },
      { flags_with(function(f) f.variations, f.defaultServe = nil, nil end), "variations: expected a non-empty array, got nothing" },
      { flags_with(function(f) f.defaultServe = { variation = "maybe" } end), [[defaultServe.variation: expected one of the flag's variations, got "maybe"]] },
    }
    for _, c in ipairs(cases) do
      helpers.write_file(file, c[1])
      local ok, line = host:reload()
      assert.is_false(ok, c[1]:sub(1, 60))
      local msg = cjson.decode(line).error or line
      assert.truthy(msg:find(c[2], 1, true), ("want %s in:\n%s"):format(c[2], line))
      assert.same({ "true", 8 }, { served(host) })
    end
    -- a reload is rehearsed in a child process first (README, "Signals, reload and shutdown"): a
    -- config refused there is counted as a failed reload by the host, which replaced nothing
    assert.truthy(host:get("/metrics").body:find("relayhost_reload_failures_total " .. #cases, 1, true))
    -- a good config reloads
    helpers.write_file(file, flags_with(function(f) f.state = "off" end))
    assert.is_true(host:reload())
    assert.same({ "false", 8 }, { served(host) })
    assert.equal(0, host:stop())
  end)
end)

describe("flag proxy config checks, online", function()
  it("does not let a bad upstream payload replace the flags it serves", function()
    local dir = helpers.tmpdir()
    local flags_file = dir .. "/flags.json"
    helpers.write_file(flags_file, F.read(root .. "/examples/flag-proxy/config/env-" .. ENV .. "/feature_config.json"))
    local keep = F.cleanup(finally)
    local up = keep(helpers.start(helpers.fixture("flag_proxy_fake_upstream.lua"), {
      flags = { "--flags-file", flags_file, "--env", ENV } }))
    local host = keep(helpers.start(F.script, { env = {
      API_KEYS = KEY, SDK_BASE_URL = up:url(""):gsub("/$", ""), FLAG_STREAM_ENABLED = "false",
      FLAG_POLL_INTERVAL = "0.005", METRIC_POST_DURATION = "0" } }))
    helpers.wait_until(function() return host:get("/health").status == 200 end, 10, "the first sync")
    assert.same({ "true", 8 }, { served(host) })
    local function refused_poll(payload, want)
      local before = host:count("upstream_sync_failed")
      helpers.write_file(flags_file, payload)
      helpers.wait_until(function() return host:count("upstream_sync_failed") > before + 1 end, 10, "a refused poll")
      local last
      for line in host:log():gmatch('[^\n]*"event":"upstream_sync_failed"[^\n]*') do last = line end
      assert.truthy(last:find(want, 1, true), ("want %s in:\n%s"):format(want, last))
      assert.same({ "true", 8 }, { served(host) })
      assert.equal(200, host:get("/health").status)
    end
    refused_poll(flags_with(function(f) f.rules = 5 end),
      '/client/env/' .. ENV .. '/feature-configs: flag \\"dark-mode\\": rules: expected an array, got 5')
    refused_poll("[]", "no flags at all")
    refused_poll('{"not":"a list"}', "expected an array, got an object")
    helpers.write_file(flags_file, flags_with(function(f) f.state = "off" end))
    helpers.wait_until(function() return served(host) == "false" end, 10, "the good config")
    assert.equal(0, host:stop())
    assert.equal(0, up:stop())
  end)
end)

describe("flag proxy config checks, read replica", function()
  -- One Redis command over RESP.
  local function redis(port, ...)
    local args = { ... }
    local out = { "*" .. #args }
    for _, a in ipairs(args) do out[#out + 1] = "$" .. #a; out[#out + 1] = a end
    local c = assert(helpers.connect(port))
    c:send(table.concat(out, "\r\n") .. "\r\n")
    local line = c.sock:receive("*l")
    c:close()
    return line
  end

  it("does not let a bad payload in Redis replace the flags a replica serves", function()
    local dir = helpers.tmpdir()
    local port, pid = helpers.start_redis(dir)
    local keep = F.cleanup(finally)
    keep(function() os.execute("kill " .. pid) end)
    local cfg = config_dir()
    local env = { REDIS_ADDRESS = "127.0.0.1:" .. port, AUTH_SECRET = "replica-secret" }
    keep(helpers.start(F.script, { flags = { "--offline", "--config-dir", cfg }, env = env }))
    helpers.wait_until(function() return redis(port, "GET", "env-" .. ENV .. "-feature-configs"):match("^%$%d") end, 5, "the primary's writes")
    local admin = S.free_port()
    local replica = keep(helpers.start(F.script, { flags = { "--read-replica", "--admin-listen", "127.0.0.1:" .. admin }, env = env }))
    helpers.wait_until(function() return replica:get("/health").status == 200 end, 10, "the replica to load")
    assert.same({ "true", 8 }, { served(replica) })
    assert.equal("read-replica", S.json(admin).panels[1].mode) -- the status page says what the log's summary says
    -- what a broken primary (or anyone with Redis access) could write, then announce
    assert.equal("+OK", redis(port, "SET", "env-" .. ENV .. "-feature-configs", flags_with(function(f) f.rules = 5 end)))
    redis(port, "XADD", "proxy:sse_events", "*", "event",
      cjson.encode({ event = "patch", domain = "flag", identifier = "dark-mode", version = 9, environment = ENV }))
    helpers.wait_until(function() return replica:count("redis_config_refused") > 0 end, 10, "the refusal")
    assert.truthy(replica:log():find('redis env-' .. ENV .. '-feature-configs: flag \\"dark-mode\\": rules: expected an array, got 5', 1, true))
    assert.same({ "true", 8 }, { served(replica) })
    assert.equal(0, replica:stop())
  end)
end)
