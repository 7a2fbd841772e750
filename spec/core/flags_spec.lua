-- relay.flags: command line and environment parsing, and --help text. Pure Lua: no host needed.
local flags = require "relay.flags"

-- A getenv that reads only the given table (never the real environment).
local function env(t)
  t = t or {}
  return function(name) return t[name] end
end

local function decls()
  return {
    { name = "port", default = 8080, help = "port to use" },
    { name = "host", default = "127.0.0.1", help = "host to bind" },
    { name = "verbose", default = false, help = "say more" },
    { name = "dry-run", type = "boolean", help = "change nothing" },
    { name = "tag", repeatable = true, help = "a tag" },
    { name = "api-key", env = "MY_API_KEY", help = "the key" },
    { name = "max_conns", type = "number", help = "connection cap" },
    { name = "upstream-url", key = "upstream", help = "where to send" },
  }
end

local function parse(argv, envt, d)
  return flags.parse(d or decls(), argv, env(envt))
end

-- The error message of calling fn, which must fail.
local function err_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

describe("relay.flags.parse", function()
  describe("flag shapes", function()
    it("accepts --name value", function()
      local v, help = parse({ "--host", "0.0.0.0" })
      assert.equal("0.0.0.0", v.host)
      assert.is_false(help)
    end)

    it("accepts --name=value", function()
      assert.equal("0.0.0.0", parse({ "--host=0.0.0.0" }).host)
    end)

    it("accepts -name value", function()
      assert.equal("0.0.0.0", parse({ "-host", "0.0.0.0" }).host)
    end)

    it("accepts -name=value", function()
      assert.equal("0.0.0.0", parse({ "-host=0.0.0.0" }).host)
    end)

    it("keeps everything after the first '=' in the value", function()
      assert.equal("a=b=c", parse({ "--host=a=b=c" }).host)
    end)

    it("accepts an empty value with --name=", function()
      assert.equal("", parse({ "--host=" }).host)
    end)

    it("takes the next argument as the value even when it starts with '-'", function()
      assert.equal(-5, parse({ "--port", "-5" }).port)
      assert.equal(-5, parse({ "--port=-5" }).port)
    end)

    it("parses several flags together", function()
      local v = parse({ "--host", "h", "-port=1", "--verbose", "--max-conns", "3" })
      assert.same({ "h", 1, true, 3 }, { v.host, v.port, v.verbose, v.max_conns })
    end)

    it("lets a later occurrence of a single-valued flag win", function()
      assert.equal("b", parse({ "--host", "a", "--host=b" }).host)
    end)

    it("fails on a flag that needs a value at the end of argv", function()
      local err = err_of(parse, { "--host" })
      assert.matches("--host", err, 1, true)
      assert.matches("needs a value", err, 1, true)
    end)
  end)

  describe("booleans", function()
    it("treats a boolean flag alone as true", function()
      assert.is_true(parse({ "--verbose" }).verbose)
      assert.is_true(parse({ "-verbose" }).verbose)
      assert.is_true(parse({ "--dry-run" })["dry-run"])
    end)

    it("treats --flag=false as false", function()
      local v = parse({ "--verbose=false" })
      assert.is_false(v.verbose)
      assert.is_false(parse({ "--dry-run=false" })["dry-run"])
    end)

    it("accepts the other spellings of true and false", function()
      for _, s in ipairs({ "true", "TRUE", "1", "yes", "on", "On" }) do
        assert.is_true(parse({ "--verbose=" .. s }).verbose, s)
      end
      for _, s in ipairs({ "false", "False", "0", "no", "off", "OFF" }) do
        assert.is_false(parse({ "--verbose=" .. s }).verbose, s)
      end
    end)

    it("takes a following true/false word as the value", function()
      assert.is_false(parse({ "--verbose", "false" }).verbose)
      assert.is_true(parse({ "--verbose", "yes" }).verbose)
    end)

    it("does not swallow the next flag", function()
      local v = parse({ "--verbose", "--host", "h" })
      assert.is_true(v.verbose)
      assert.equal("h", v.host)
    end)

    it("rejects a value that is not a boolean", function()
      local err = err_of(parse, { "--verbose=maybe" })
      assert.matches("--verbose", err, 1, true)
      assert.matches("'maybe' is not a boolean", err, 1, true)
    end)

    it("keeps a false default when not given", function()
      assert.is_false(parse({}).verbose)
      assert.is_nil(parse({})["dry-run"])
    end)
  end)

  describe("names", function()
    it("treats underscores and dashes as the same", function()
      assert.equal(7, parse({ "--max-conns", "7" }).max_conns)
      assert.equal(7, parse({ "--max_conns", "7" }).max_conns)
      assert.equal(7, parse({ "--max_conns=7" }).max_conns)
      assert.equal("k", parse({ "--api_key", "k" })["api-key"])
      assert.equal("k", parse({ "-api-key=k" })["api-key"])
      assert.is_true(parse({ "--dry_run" })["dry-run"])
    end)

    it("stores a value under the decl's key when it has one", function()
      local v = parse({ "--upstream-url", "http://u" })
      assert.equal("http://u", v.upstream)
      assert.is_nil(v["upstream-url"])
    end)

    it("reads a flag's aliases as the flag itself; a list gathers them all", function()
      local d = { { name = "sdk-base-url", aliases = { "sdkBaseUrl" }, default = "" },
                  { name = "api-keys", aliases = { "apiKey" }, repeatable = true } }
      local v = parse({ "--sdkBaseUrl", "http://u", "--apiKey", "a", "--api-keys", "b", "--apiKey=c" }, {}, d)
      assert.equal("http://u", v["sdk-base-url"])
      assert.same({ "a", "b", "c" }, v["api-keys"])
      assert.matches("unknown flag %-%-apikeys", err_of(parse, { "--apikeys", "x" }, {}, d))
      local text = flags.help("s", nil, flags.declare(d, ""), {})
      assert.matches("--sdk-base-url VALUE, --sdkBaseUrl VALUE\n", text, 1, true)
      assert.matches("--api-keys VALUE, --apiKey VALUE (repeatable)", text, 1, true)
      assert.matches("aliases must be a list", err_of(flags.declare, { { name = "n", aliases = "m" } }, ""))
    end)

    it("derives env names as upper snake case", function()
      assert.equal("LOG_LEVEL", flags.env_name("log-level"))
      assert.equal("MAX_CONNS", flags.env_name("max_conns"))
      assert.equal("PORT", flags.env_name("port"))
    end)
  end)

  describe("numbers", function()
    it("converts number flags", function()
      local v = parse({ "--port", "9000", "--max-conns=2.5" })
      assert.equal(9000, v.port)
      assert.equal("number", type(v.port))
      assert.equal(2.5, v.max_conns)
    end)

    it("reports a bad number with the flag and the value", function()
      local err = err_of(parse, { "--port", "eighty" })
      assert.equal("--port: 'eighty' is not a number", err)
      err = err_of(parse, { "--max-conns=" })
      assert.matches("--max-conns: '' is not a number", err, 1, true)
    end)

    it("reports a bad number from the environment with the env var", function()
      local err = err_of(parse, {}, { PORT = "lots" })
      assert.equal("$PORT: 'lots' is not a number", err)
    end)

    it("keeps string flags as strings even when they look like numbers", function()
      local v = parse({ "--host", "42" })
      assert.equal("42", v.host)
      assert.equal("string", type(v.host))
    end)
  end)

  describe("errors", function()
    it("fails on an unknown flag, naming it", function()
      local err = err_of(parse, { "--no-such-flag", "x" })
      assert.matches("unknown flag", err, 1, true)
      assert.matches("--no-such-flag", err, 1, true)
      err = err_of(parse, { "-bogus=1" })
      assert.matches("bogus", err, 1, true)
    end)

    it("fails on a positional argument", function()
      local err = err_of(parse, { "stray" })
      assert.matches("unexpected argument 'stray'", err, 1, true)
      err = err_of(parse, { "--host", "h", "extra" })
      assert.matches("'extra'", err, 1, true)
      err = err_of(parse, { "--verbose", "file.txt" })
      assert.matches("'file.txt'", err, 1, true)
    end)

    it("raises plain messages without a file:line position", function()
      local err = err_of(parse, { "--nope" })
      assert.is_nil(err:match("^[^:]+%.lua:%d+:"))
    end)
  end)

  describe("environment and defaults", function()
    it("uses the env var when the flag is absent", function()
      local v = parse({}, { PORT = "9090", HOST = "10.0.0.1", MAX_CONNS = "4" })
      assert.equal(9090, v.port)
      assert.equal("10.0.0.1", v.host)
      assert.equal(4, v.max_conns)
    end)

    it("uses a decl's own env name", function()
      assert.equal("sekrit", parse({}, { MY_API_KEY = "sekrit" })["api-key"])
      assert.is_nil(parse({}, { API_KEY = "wrong" })["api-key"])
    end)

    it("derives the env name from the name, not the key", function()
      assert.equal("http://e", parse({}, { UPSTREAM_URL = "http://e" }).upstream)
    end)

    it("converts booleans from the environment", function()
      assert.is_true(parse({}, { VERBOSE = "true" }).verbose)
      assert.is_true(parse({}, { VERBOSE = "1" }).verbose)
      assert.is_false(parse({}, { VERBOSE = "off" }).verbose)
      assert.is_true(parse({}, { DRY_RUN = "yes" })["dry-run"])
    end)

    it("uses the default when neither flag nor env is set", function()
      local v = parse({}, {})
      assert.equal(8080, v.port)
      assert.equal("127.0.0.1", v.host)
      assert.is_nil(v.max_conns)
      assert.is_nil(v.tag)
    end)

    it("treats an empty env var as unset", function()
      assert.equal(8080, parse({}, { PORT = "" }).port)
    end)

    it("lets the command line beat the environment", function()
      local v = parse({ "--port", "1", "--host=cli" }, { PORT = "2", HOST = "env" })
      assert.equal(1, v.port)
      assert.equal("cli", v.host)
      assert.is_false(parse({ "--verbose=false" }, { VERBOSE = "true" }).verbose)
      assert.is_true(parse({ "--verbose" }, { VERBOSE = "false" }).verbose)
    end)

    it("reads os.getenv when no getenv is given", function()
      local v = flags.parse({ { name = "relay-flags-spec-unset-xyz", default = "d" } }, {})
      assert.equal("d", v["relay-flags-spec-unset-xyz"])
    end)

    it("calls getenv with each decl's env name", function()
      local asked = {}
      flags.parse(decls(), {}, function(n) asked[#asked + 1] = n end)
      table.sort(asked)
      assert.same({ "DRY_RUN", "HOST", "MAX_CONNS", "MY_API_KEY", "PORT", "TAG", "UPSTREAM_URL",
                    "VERBOSE" }, asked)
    end)
  end)

  describe("repeatable flags", function()
    it("accumulates repeated flags in order", function()
      assert.same({ "a", "b", "c" }, parse({ "--tag", "a", "--tag=b", "-tag", "c" }).tag)
    end)

    it("splits a command line value on commas too", function()
      assert.same({ "a", "b", "c" }, parse({ "--tag", "a,b", "--tag", "c" }).tag)
    end)

    it("splits the env var on commas and trims spaces", function()
      assert.same({ "x", "y", "z" }, parse({}, { TAG = "x, y ,z" }).tag)
      assert.same({ "one" }, parse({}, { TAG = "one" }).tag)
    end)

    it("prefers the command line over the env var", function()
      assert.same({ "cli" }, parse({ "--tag", "cli" }, { TAG = "e1,e2" }).tag)
    end)

    it("uses a table default when nothing is given", function()
      local d = { { name = "origin", repeatable = true, default = { "a", "b" } } }
      assert.same({ "a", "b" }, parse({}, {}, d).origin)
    end)
  end)

  describe("required flags", function()
    local req = {
      { name = "upstream", required = true, help = "where to send" },
      { name = "token", env = "STYRA_TOKEN", required = true },
    }

    it("fails when missing, naming the flag and its env var", function()
      local err = err_of(parse, {}, { STYRA_TOKEN = "t" }, req)
      assert.matches("--upstream", err, 1, true)
      assert.matches("env UPSTREAM", err, 1, true)
      assert.matches("required", err, 1, true)
      assert.matches("where to send", err, 1, true)
      err = err_of(parse, { "--upstream", "u" }, {}, req)
      assert.matches("--token", err, 1, true)
      assert.matches("STYRA_TOKEN", err, 1, true)
    end)

    it("is satisfied by the flag or the env var", function()
      local v = parse({ "--upstream", "u" }, { STYRA_TOKEN = "t" }, req)
      assert.equal("u", v.upstream)
      assert.equal("t", v.token)
      v = parse({ "--token=x" }, { UPSTREAM = "e" }, req)
      assert.equal("e", v.upstream)
      assert.equal("x", v.token)
    end)

    it("is not checked when --help is asked for", function()
      local v, help = parse({ "--help" }, {}, req)
      assert.is_true(help)
      assert.is_nil(v.upstream)
    end)
  end)

  describe("--help", function()
    it("returns help = true for --help, -help and -h", function()
      for _, a in ipairs({ "--help", "-help", "-h", "--h" }) do
        local _, help = parse({ a })
        assert.is_true(help, a)
      end
    end)

    it("still parses the other flags", function()
      local v, help = parse({ "--port", "1", "--help" })
      assert.is_true(help)
      assert.equal(1, v.port)
    end)

    it("returns help = false otherwise", function()
      local _, help = parse({ "--port", "1" })
      assert.is_false(help)
    end)
  end)
end)

describe("relay.flags.help", function()
  local text = flags.help("myscript", "Does things.", decls(), flags.host)

  local function has(s) assert.matches(s, text, 1, true) end

  it("starts with a usage line naming the script, then the description", function()
    local first, second = text:match("^([^\n]*)\n([^\n]*)\n")
    assert.equal("usage: relayhost myscript [flags]", first)
    assert.equal("Does things.", second)
    assert.equal("\n", text:sub(-1))
  end)

  it("lists every script flag and every host flag with its env var", function()
    for _, d in ipairs(decls()) do
      has("--" .. d.name)
      has("[env " .. (d.env or flags.env_name(d.name)) .. "]")
    end
    for _, d in ipairs(flags.host) do
      has("--" .. d.name)
      has("[env " .. d.env .. "]")
    end
    has("flags of this script:")
    has("host flags:")
    assert.is_true(text:find("flags of this script:", 1, true) < text:find("host flags:", 1, true))
  end)

  it("shows defaults, quoting strings", function()
    has("--port N\n      port to use  [env PORT] (default 8080)")
    has("--host VALUE\n      host to bind  [env HOST] (default \"127.0.0.1\")")
    has("[env RELAY_WORKERS] (default 1)")
    has("[env RELAY_LOG_LEVEL] (default \"info\")")
    has("[env RELAY_MAX_HEAD] (default 16384)")
  end)

  it("shows a false default and omits empty or missing ones", function()
    has("--verbose\n      say more  [env VERBOSE] (default false)")
    has("--dry-run\n      change nothing  [env DRY_RUN]\n")
    has("[env MY_API_KEY]\n")
    has("[env RELAY_ADMIN_LISTEN]\n") -- default ""
    has("[env RELAY_LISTEN]\n")       -- no default
  end)

  it("marks repeatable flags and shows list defaults joined", function()
    has("--tag VALUE (repeatable)")
    local t = flags.help("s", nil, { { name = "origin", repeatable = true, default = { "a", "b" } } }, {})
    assert.matches("(default \"a,b\")", t, 1, true)
  end)

  it("omits the script section when the script has no flags", function()
    local t = flags.help("bare", nil, {}, flags.host)
    assert.is_nil(t:find("flags of this script:", 1, true))
    assert.matches("^usage: relayhost bare %[flags%]\n\nhost flags:\n", t)
    has("--watchdog N")
  end)
end)

describe("relay.flags constraints (issue 20)", function()
  local d = {
    { name = "drain", type = "number", min = 0, help = "seconds" },
    { name = "workers", type = "integer", min = 1, max = 256, default = 1 },
    { name = "port", type = "port", env = { "PORT", "RELAY_LISTEN_PORT" } },
    { name = "base-url", type = "url", help = "where to go" },
    { name = "server-url", type = "url", schemes = { "ws", "wss" } },
    { name = "mode", choices = { "dev", "prod" }, default = "dev" },
    { name = "token", required = true, help = "the token" },
    { name = "key", required = true, help = "the key" },
  }
  local function run(argv, envt) return flags.parse(d, argv, env(envt)) end
  local ok_env = { TOKEN = "t", KEY = "k" }

  it("accepts values inside the constraints", function()
    local v = run({ "--drain", "0", "--workers=256", "--base-url", "https://git.corp", "--server-url=wss://r/x",
                    "--mode", "prod" }, { PORT = "7781", TOKEN = "t", KEY = "k" })
    assert.same({ 0, 256, 7781, "https://git.corp", "wss://r/x", "prod" },
                { v.drain, v.workers, v.port, v["base-url"], v["server-url"], v.mode })
  end)

  it("refuses a value below min or above max, naming the flag", function()
    assert.equal("--drain: -1 is below the minimum 0", err_of(run, { "--drain", "-1" }, ok_env))
    assert.equal("--workers: 300 is above the maximum 256", err_of(run, { "--workers=300" }, ok_env))
    assert.equal("--workers: '1.5' is not a whole number", err_of(run, { "--workers=1.5" }, ok_env))
  end)

  it("checks ports: whole, 1 to 65535, named by the env var that was set", function()
    assert.equal("$PORT: '99999' is not a port number (1 to 65535)", err_of(run, {}, { PORT = "99999", TOKEN = "t", KEY = "k" }))
    assert.equal("$RELAY_LISTEN_PORT: '7x' is not a port number (1 to 65535)",
                 err_of(run, {}, { RELAY_LISTEN_PORT = "7x", TOKEN = "t", KEY = "k" }))
    assert.equal(7000, run({}, { RELAY_LISTEN_PORT = "7000", TOKEN = "t", KEY = "k" }).port)
    assert.equal(7001, run({}, { PORT = "7001", RELAY_LISTEN_PORT = "7000", TOKEN = "t", KEY = "k" }).port)
  end)

  it("checks URLs against their schemes", function()
    assert.equal("--base-url: 'git.corp' is not a URL starting with http:// or https://",
                 err_of(run, { "--base-url", "git.corp" }, ok_env))
    assert.equal("--server-url: 'http://r' is not a URL starting with ws:// or wss://",
                 err_of(run, { "--server-url", "http://r" }, ok_env))
  end)

  it("checks choices", function()
    assert.equal("$MODE: 'test' is not one of dev, prod", err_of(run, {}, { MODE = "test", TOKEN = "t", KEY = "k" }))
  end)

  it("reports every problem at once, on one line, and every missing required flag", function()
    local err = err_of(run, { "--drain=-1", "--bogus", "x", "--base-url", "git.corp" }, { PORT = "0" })
    assert.is_nil(err:find("\n", 1, true))
    assert.matches("^6 problems with flags and environment: ", err)
    for _, want in ipairs { "unknown flag --bogus", "--drain: -1 is below the minimum 0", "$PORT: '0' is not a port number",
                            "--base-url: 'git.corp' is not a URL", "flag --token (env TOKEN) is required",
                            "flag --key (env KEY) is required" } do
      assert.matches(want, err, 1, true)
    end
    assert.is_nil(err:find("'x'", 1, true)) -- the unknown flag's value is not a second problem
  end)

  it("suggests the nearest flag for an unknown one", function()
    assert.equal("unknown flag --drian (did you mean --drain?)", err_of(run, { "--drian", "1" }, ok_env))
  end)

  it("does not let the env var or default stand in for a refused command-line value", function()
    local err = err_of(run, { "--token", "t", "--key", "k", "--mode", "x" }, { MODE = "dev" })
    assert.equal("--mode: 'x' is not one of dev, prod", err)
  end)

  it("shows every env name of a flag and what its value must be in --help", function()
    local text = flags.help("s", nil, d, {})
    assert.matches("[env PORT, RELAY_LISTEN_PORT] [1 to 65535]", text, 1, true)
    assert.matches("seconds  [env DRAIN] [at least 0]\n", text, 1, true)
    assert.matches("[env WORKERS] (default 1) [1 to 256]\n", text, 1, true)
    assert.matches("--base-url URL\n      where to go  [env BASE_URL] [http://, https://]\n", text, 1, true)
    assert.matches("[env MODE] (default \"dev\") [one of dev, prod]\n", text, 1, true)
  end)
end)

describe("relay.flags.declare and env prefixes (issue 20)", function()
  it("prefixes derived env names, keeps declared ones", function()
    local d = flags.declare({ { name = "upstream" }, { name = "rate-limit" }, { name = "keys", env = "KEYS" } }, "API_GW_")
    assert.same({ "API_GW_UPSTREAM", "API_GW_RATE_LIMIT", "KEYS" }, { d[1].env, d[2].env, d[3].env })
  end)

  it("derives the default prefix from the script's file name; bundled scripts have none", function()
    assert.equal("API_GW_", flags.default_env_prefix("/srv/gw/api-gw.lua"))
    assert.equal("MY_SCRIPT_", flags.default_env_prefix("/tmp/my.script.lua"))
    -- absolute: a relative path would be read against $PWD, which ctest does not set to its
    -- working directory (the spec then failed when ctest ran from build/)
    local root = debug.getinfo(1, "S").source:match("^@(.*)/spec/core/[^/]*$") or "."
    if root:sub(1, 1) ~= "/" then root = io.popen("pwd"):read("*l") .. "/" .. root end
    assert.equal("", flags.default_env_prefix(root .. "/scripts/flag-proxy.lua"))
    assert.equal("", flags.default_env_prefix(root .. "/scripts/git-tunnel/client.lua"))
    assert.equal("SERVER_", flags.default_env_prefix(root .. "/elsewhere/scripts/server.lua"))
    assert.equal("GW_", flags.default_env_prefix("/nonexistent/scripts/gw.lua"))
  end)

  it("refuses an unknown key in a declaration, naming the nearest", function()
    local err = err_of(flags.declare, { { name = "n", requird = true } }, "")
    assert.matches("unknown option 'requird' in flag 'n' (did you mean 'required'?)", err, 1, true)
    err = err_of(flags.declare, { { name = "n", type = "int" } }, "")
    assert.matches("flag 'n': unknown type 'int'", err, 1, true)
  end)
end)

describe("relay.flags.from_env", function()
  it("names each declaration by its env var; number defaults get the given fields, more's win", function()
    local d = flags.from_env({
      { "APP_MAX_BYTES", 10, "largest body" },
      { "APP_MODE", "dev", "mode", { choices = { "dev", "prod" } } },
      { "APP_RATIO", 0.5, "a ratio", { type = "number", min = 0 } },
    }, { type = "integer", min = 1 })
    assert.same({ name = "app-max-bytes", key = "app_max_bytes", env = "APP_MAX_BYTES", default = 10,
                  help = "largest body", type = "integer", min = 1 }, d[1])
    assert.same({ name = "app-mode", key = "app_mode", env = "APP_MODE", default = "dev", help = "mode",
                  choices = { "dev", "prod" } }, d[2])
    assert.equal("number", d[3].type)
    assert.equal(0, d[3].min)
    local v = flags.parse(d, { "--app-mode", "prod" }, env { APP_MAX_BYTES = "7" })
    assert.same({ 7, "prod", 0.5 }, { v.app_max_bytes, v.app_mode, v.app_ratio })
    assert.matches("APP_MAX_BYTES", err_of(flags.parse, d, {}, env { APP_MAX_BYTES = "0" }))
  end)
end)

describe("relay.flags any_case and check (rules across settings)", function()
  local function d()
    return {
      { name = "level", env = "LEVEL", default = "info", choices = { "debug", "info" }, any_case = true },
      { name = "tls", env = "TLS", default = false,
        check = function(on, v) if on and v.cert == "" then return "TLS needs CERT" end end },
      { name = "cert", env = "CERT", default = "" },
      { name = "a", default = false, check = function(on, v)
        if on and v.b then return { "A and B contradict each other", "A is on" } end
      end },
      { name = "b", default = false },
    }
  end

  it("lower-cases an any_case value before checking its choices, and keeps it so", function()
    assert.equal("debug", flags.parse(d(), {}, env { LEVEL = "DEBUG" }).level)
    assert.equal("info", flags.parse(d(), { "--level", "Info" }, env()).level)
    assert.matches("LEVEL: 'loud' is not one of debug, info", err_of(flags.parse, d(), {}, env { LEVEL = "LOUD" }), 1, true)
  end)

  it("runs each check with every value read and reports its problems with the others, all at once", function()
    assert.is_true(flags.parse(d(), { "--tls", "--cert", "c.pem" }, env()).tls)
    assert.equal("TLS needs CERT", err_of(flags.parse, d(), { "--tls" }, env()))
    local e = err_of(flags.parse, d(), { "--tls", "--a", "--b" }, env { LEVEL = "x" })
    assert.matches("^4 problems", e)
    for _, want in ipairs { "$LEVEL: 'x'", "TLS needs CERT", "A and B contradict each other", "A is on" } do
      assert.truthy(e:find(want, 1, true), want .. " not in " .. e)
    end
  end)

  it("runs no check for --help, and refuses a check that is not a function where it is declared", function()
    local _, help = flags.parse(d(), { "--tls", "--help" }, env())
    assert.is_true(help)
    assert.matches("check must be a function", err_of(flags.declare, { { name = "x", check = "yes" } }, ""))
  end)
end)
