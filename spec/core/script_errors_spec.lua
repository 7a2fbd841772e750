-- Issue 20: a script author's and an operator's mistakes, as the built binary reports them.
-- Errors name the author's file:line (never lua/relay/), unknown option keys are refused with
-- the nearest known one, values are checked at start with every problem in one message naming
-- what the operator set, and a script's flags read env vars under its own prefix.
local helpers = require "helpers"

local dir = helpers.tmpdir()

-- Writes a script (lines joined by newlines, so that line numbers are easy to count).
local function script(name, lines)
  local path = dir .. "/" .. name
  helpers.write_file(path, table.concat(lines, "\n") .. "\n")
  return path
end

-- `relayhost check ...`: exit status and stdout..stderr.
local function check(args, env)
  local status, out, err = helpers.run({ "check", unpack(args) }, env)
  return status, out .. err
end

local function refused(args, env)
  local status, out = check(args, env)
  assert.equal(1, status, out)
  assert.not_matches("lua/relay/", out)
  return out
end

local HEAD = { 'local relay = require "relay"', 'local app = relay.new { name = "t" }' }
local function with(...)
  local lines = { unpack(HEAD) }
  for _, l in ipairs { ... } do lines[#lines + 1] = l end
  lines[#lines + 1] = "return app"
  return lines
end

describe("script errors name the author's file:line", function()
  it("a proxy URL the proxy cannot use", function()
    local p = script("ftp.lua", with('app:mount("/api", relay.proxy { target_base_url = "ftp://127.0.0.1:1" })'))
    assert.equal(p .. ":3: relay.proxy: target_base_url 'ftp://127.0.0.1:1': unsupported scheme 'ftp' (want http https)\n",
                 refused { p })
  end)

  it("the same when the script is started rather than checked", function()
    local p = script("ftp_start.lua", with('app:mount("/api", relay.proxy { target_base_url = "ftp://127.0.0.1:1" })'))
    local status, out, err = helpers.run { p, "--listen", "127.0.0.1:0" }
    assert.equal(1, status)
    assert.matches(p .. ":3: relay.proxy: target_base_url 'ftp://", out .. err, 1, true)
    assert.not_matches("lua/relay/", out .. err)
  end)

  it("the prefix proxy names the --mount the operator gave", function()
    assert.equal("prefix-proxy: --mount '/api=ftp://x': target_base_url 'ftp://x': unsupported scheme 'ftp' (want http https)\n",
                 refused { "prefix-proxy", "--mount", "/api=ftp://x" })
  end)

  it("the proxy refuses userinfo and bad ports in a mount's upstream (it would send no credentials)", function()
    assert.equal("prefix-proxy: --mount '/api=http://u:p@x': target_base_url 'http://u:p@x': userinfo not allowed here\n",
                 refused { "prefix-proxy", "--mount", "/api=http://u:p@x" })
    assert.matches("target_base_url 'http://x:80x': port '80x' is not a number",
                   refused { "prefix-proxy", "--mount", "/api=http://x:80x" }, 1, true)
    assert.matches("target_base_url 'http://[::1:80': IPv6 literal not closed",
                   refused { "prefix-proxy", "--mount", "/api=http://[::1:80" }, 1, true)
  end)

  it("a handler's bad option table, logged with the handler's line", function()
    local p = script("runtime.lua", with(
      'app:get("/req", function(req, res)',
      '  relay.http.request { url = "http://127.0.0.1:9/", timeot = 1 }',
      'end)'))
    local host = helpers.start(p)
    finally(function() host:stop() end)
    assert.equal(500, host:get("/req").status)
    helpers.wait_until(function() return host:log():find("handler_error", 1, true) end, 5, "the handler's error")
    assert.matches('"error":"' .. p .. ":4: unknown option 'timeot' in relay.http.request (did you mean 'timeout'?)\"",
                   host:log(), 1, true)
  end)

  it("a route pattern or limit the host refuses, at the route's line", function()
    local p = script("pattern.lua", with('app:get("/ok", function() end)', 'app:get("nope", function() end)'))
    assert.equal(p .. ":4: bad route pattern 'nope': a route pattern starts with '/'\n", refused { p })
    p = script("limit.lua", with('app:post("/in", function() end, { max_body = -1 })'))
    assert.equal(p .. ":3: route POST /in: max_body must be a number >= 0\n", refused { p })
  end)

  it("a response C refuses (CR/LF in a header), logged with the handler's line", function()
    local p = script("header.lua", with(
      'app:get("/h", function(req, res)',
      '  res:send(200, "x", { ["x-a"] = "a\\r\\nb" })',
      'end)'))
    local host = helpers.start(p)
    finally(function() host:stop() end)
    assert.equal(500, host:get("/h").status)
    helpers.wait_until(function() return host:log():find("handler_error", 1, true) end, 5, "the handler's error")
    assert.matches('"error":"' .. p .. ":4: header 'x-a': value contains CR, LF", host:log(), 1, true)
  end)

  it("an undeclared listener, at the route's line", function()
    local p = script("listener.lua", with('app:get("/x", function() end, { listener = "relay" })'))
    assert.equal(p .. ":3: route GET /x: listener 'relay' is not declared (app:listener)\n", refused { p })
  end)
end)

describe("unknown option keys are refused, naming the nearest known one", function()
  local cases = {
    { 'local relay = require "relay"\nlocal app = relay.new { name = "t", flagz = {} }\nreturn app',
      ":2: unknown option 'flagz' in relay.new (did you mean 'flags'?)" },
    { with('app:get("/x", function() end, { max_bdy = 10 })'),
      ":3: unknown option 'max_bdy' in route GET /x (did you mean 'max_body'?)" },
    { with('app:mount("/api", relay.proxy { target_url = "http://127.0.0.1:1" })'),
      ":3: unknown option 'target_url' in relay.proxy (did you mean 'target_base_url'?)" },
    { with('app:mount("/api", relay.proxy { target_base_url = "http://127.0.0.1:1", max_retires = 2 })'),
      ":3: unknown option 'max_retires' in relay.proxy (did you mean 'max_retries'?)" },
    { with('app:mount("/api", relay.proxy { target_base_url = "http://127.0.0.1:1", timeout = { conect = 1 } })'),
      ":3: unknown option 'conect' in relay.proxy timeout (did you mean 'connect'?)" },
    { with('app:websocket("/ws", function() end, { protocol = "chat" })'),
      ":3: unknown option 'protocol' in route GET /ws (did you mean 'protocols'?)" },
    { with('app:mount("/m", function() end, { listner = "*" })'),
      ":3: unknown option 'listner' in route * /m/* (did you mean 'listener'?)" },
    { with('local d = relay.shared("d", { max_item = 10 })'),
      ":3: unknown option 'max_item' in relay.shared (did you mean 'max_items'?)" },
    { with('local c = relay.jwt.verify("a.b.c", "s", { leway = 60 })'),
      ":3: unknown option 'leway' in relay.jwt.verify (did you mean 'leeway'?)" },
    { 'local relay = require "relay"\nlocal app = relay.new { name = "t",\n  flags = { upstream = { defualt = "x" } } }\nreturn app',
      ":2: unknown option 'defualt' in flag 'upstream' (did you mean 'default'?)" },
    { 'local relay = require "relay"\nlocal app = relay.new { name = "t",\n  flags = { n = { type = "int" } } }\nreturn app',
      ":2: flag 'n': unknown type 'int'" },
  }
  for i, c in ipairs(cases) do
    it(c[2], function()
      local p = script(("unknown%d.lua"):format(i), type(c[1]) == "table" and c[1] or { c[1] })
      local out = refused { p }
      assert.equal(p .. c[2], out:sub(1, #p + #c[2]), out)
    end)
  end

  it("in option tables handlers pass: sse.hold, ws.connect, websocket accept", function()
    local p = script("handler_opts.lua", with(
      'app:get("/sse", function(req, res) relay.sse.hold(res, "c", { heartbeet = 1 }) end)',
      'app:get("/ws", function(req, res) relay.ws.connect("ws://127.0.0.1:9/", { protocol = "x" }) end)',
      'app:get("/up", function(req, res) req:websocket(nil, { max_msg = 1 }) end)'))
    local host = helpers.start(p)
    finally(function() host:stop() end)
    for _, path in ipairs { "/sse", "/ws", "/up" } do assert.equal(500, host:get(path).status) end
    helpers.wait_until(function() return host:count("handler_error") >= 3 end, 5, "three handler errors")
    local log = host:log()
    assert.matches(p .. ":3: unknown option 'heartbeet' in relay.sse.hold (did you mean 'heartbeat'?)", log, 1, true)
    assert.matches(p .. ":4: unknown option 'protocol' in relay.ws.connect (did you mean 'protocols'?)", log, 1, true)
    assert.matches(p .. ":5: unknown option 'max_msg' in websocket accept options (did you mean 'max_message'?)", log, 1, true)
  end)
end)

describe("values are checked at start", function()
  it("host flags: --drain-timeout -1 and friends, all in one message", function()
    assert.equal("--drain-timeout: -1 is below the minimum 0\n", refused { "demo", "--drain-timeout", "-1" })
    assert.equal("$RELAY_DRAIN_TIMEOUT: -1 is below the minimum 0\n", refused({ "demo" }, { RELAY_DRAIN_TIMEOUT = "-1" }))
    local out = refused({ "demo", "--workers", "0", "--head-timeout=-3" }, { RELAY_MAX_HEAD = "1.5" })
    assert.equal("3 problems with flags and environment: --workers: 0 is below the minimum 1; "
      .. "--head-timeout: -3 is below the minimum 0; $RELAY_MAX_HEAD: '1.5' is not a whole number\n", out)
  end)

  it("the workspace relay's numbers and ports, named by the variable set", function()
    assert.equal("$RELAY_MAX_FRAME_BYTES: -5 is below the minimum 1\n",
                 refused({ "workspace-relay" }, { RELAY_MAX_FRAME_BYTES = "-5" }))
    assert.equal("$RELAY_LISTEN_PORT: '7x' is not a port number (1 to 65535)\n",
                 refused({ "workspace-relay" }, { RELAY_LISTEN_PORT = "7x" }))
    assert.equal("$PORT: '99999' is not a port number (1 to 65535)\n", refused({ "workspace-relay" }, { PORT = "99999" }))
    local out = refused({ "workspace-relay" }, { RELAY_PING_INTERVAL_MS = "0", RELAY_MAX_PENDING_BYTES = "-1", PORT = "0" })
    assert.matches("^3 problems with flags and environment: ", out)
  end)

  it("every missing required flag in one run", function()
    local out = refused { "git-tunnel/client" }
    assert.matches("^4 problems with flags and environment: ", out)
    for _, f in ipairs { "--base-url", "--client-key", "--server-url", "--styra-token" } do
      assert.matches("flag " .. f .. " ", out, 1, true)
    end
  end)

  it("declared types and constraints of a script's flags: url, port, choices, min", function()
    local p = script("typed.lua", {
      'local relay = require "relay"',
      'local app = relay.new { name = "typed", env_prefix = "", flags = {',
      '  base_url = { type = "url", required = true, help = "where to go" },',
      '  port = { type = "port", default = 8080 },',
      '  mode = { choices = { "dev", "prod" }, default = "dev" },',
      '  rate = { type = "number", min = 1, default = 10 },',
      '} }',
      'return app' })
    local out = refused({ p, "--base-url", "git.corp", "--rate", "0" }, { PORT = "70000", MODE = "test" })
    assert.equal("4 problems with flags and environment: --base-url: 'git.corp' is not a URL starting with http:// "
      .. "or https://; --rate: 0 is below the minimum 1; $MODE: 'test' is not one of dev, prod; "
      .. "$PORT: '70000' is not a port number (1 to 65535)\n", out)
    local status, ok = check({ p, "--base-url", "https://git.corp" }, { PORT = "7000" })
    assert.equal(0, status, ok)
  end)
end)

describe("env prefixes", function()
  local function app_script(name, opts)
    return script(name, {
      'local relay = require "relay"',
      ('local app = relay.new { name = "gw", %s flags = { upstream = { default = "none" } } }'):format(opts or ""),
      'app:get("/", function(_, res) res:send(200, app.flags.upstream) end)',
      'return app' })
  end

  it("a new script's flags read SCRIPT_NAME_FLAG, not the bare name", function()
    local p = app_script("api-gw.lua")
    local status, out = helpers.run { p, "--help" }
    assert.equal(0, status)
    assert.matches("[env API_GW_UPSTREAM]", out, 1, true)
    local host = helpers.start(p, { env = { UPSTREAM = "bare", API_GW_UPSTREAM = "prefixed" } })
    finally(function() host:stop() end)
    assert.equal("prefixed", host:get("/").body)
  end)

  it("env_prefix names the prefix, and \"\" turns it off", function()
    local p = app_script("named.lua", 'env_prefix = "APIGW_",')
    local host = helpers.start(p, { env = { UPSTREAM = "bare", NAMED_UPSTREAM = "file", APIGW_UPSTREAM = "chosen" } })
    local bare
    -- one finally: busted keeps only the last one a test registers (a second left `host` running)
    finally(function() host:stop(); if bare then bare:stop() end end)
    assert.equal("chosen", host:get("/").body)
    bare = helpers.start(app_script("bare.lua", 'env_prefix = "",'), { env = { UPSTREAM = "bare" } })
    assert.equal("bare", bare:get("/").body)
    assert.matches("env_prefix must be letters, digits and _", refused { app_script("badprefix.lua", 'env_prefix = "a-b",') }, 1, true)
  end)

  it("relay.test's load gives a script the same prefix (and still loads a relay.proxy)", function()
    script("loaded-gw.lua", {
      'local relay = require "relay"',
      'local app = relay.new { name = "gw", flags = { upstream = { default = "none" } } }',
      'app:mount("/api", relay.proxy { target_base_url = "http://127.0.0.1:9" })',
      'return app' })
    local build = helpers.bin():match("^(.*)/[^/]+$")
    -- an ASan build's module needs the sanitizer runtime first in a luajit that has none
    local ldd = io.popen(("ldd %q"):format(build .. "/relay/core.so"))
    local asan = ldd:read("*a"):match("(/%S*libasan%.so[%.%d]*)")
    ldd:close()
    local cmd = ("cd %q && UPSTREAM=bare LOADED_GW_UPSTREAM=prefixed %sLUA_CPATH=%q LUA_PATH=%q luajit -e %q >out 2>err"):format(
      dir, asan and ("ASAN_OPTIONS=detect_leaks=0 LD_PRELOAD=%q "):format(asan) or "", build .. "/?.so;;",
      helpers.root .. "/lua/?.lua;" .. helpers.root .. "/lua/?/init.lua;;",
      'io.write(require("relay.test").load("loaded-gw.lua").flags.upstream)')
    os.execute(cmd)
    assert.equal("prefixed", helpers.read_file(dir .. "/out"), helpers.read_file(dir .. "/err"))
  end)

  it("the bundled personalities keep their products' env names", function()
    local want = {
      demo = { "TITLE" },
      ["prefix-proxy"] = { "RELAY_MOUNTS", "MAX_RETRIES", "TIMEOUT", "PRESERVE_HOST" },
      ["flag-proxy"] = { "PORT", "API_KEYS", "OFFLINE", "CONFIG_DIR", "REDIS_ADDRESS", "AUTH_SECRET" },
      ["workspace-relay"] = { "PORT", "RELAY_LISTEN_PORT", "RELAY_MODE", "RELAY_MAX_FRAME_BYTES" },
      ["git-tunnel/server"] = { "RELAY_TOKENS", "TOKENS_FILE", "REDIS_ADDRESS" },
      ["git-tunnel/client"] = { "BASE_URL", "CLIENT_KEY", "SERVER_URL", "STYRA_TOKEN", "PROBE_LISTEN" },
    }
    for name, envs in pairs(want) do
      local status, out = helpers.run { name, "--help" }
      assert.equal(0, status, name)
      local listed = {} -- a flag may name several: "[env PORT, RELAY_LISTEN_PORT]"
      for names in out:gmatch("%[env ([^%]]*)%]") do
        for e in names:gmatch("[%w_]+") do listed[e] = true end
      end
      for _, e in ipairs(envs) do assert.is_true(listed[e], name .. " --help names $" .. e) end
    end
    -- and it is read: the flag proxy's PORT, the workspace relay's RELAY_LISTEN_PORT
    assert.equal("$PORT: '7x' is not a port number (1 to 65535)\n",
                 refused({ "workspace-relay" }, { PORT = "7x", RELAY_LISTEN_PORT = "1" }))
  end)
end)
