-- The 'serving' line (issue 20): at start-up and after every reload, one line saying what this
-- generation serves: its routes, mounts and upstreams, and each personality's own fields.
local helpers = require "helpers"
local cjson = require "cjson"
local F = require "spec.fixtures.flag_proxy"

local function serving(host, n)
  helpers.wait_until(function() return host:count("serving") >= n end, 10, "serving line " .. n)
  local lines = {}
  for line in host:log():gmatch('[^\n]*"event":"serving"[^\n]*') do lines[#lines + 1] = cjson.decode(line) end
  return lines[n]
end

describe("the serving line", function()
  it("names the prefix proxy's mounts and upstreams, and is written again at a reload", function()
    local host = helpers.start("prefix-proxy", { flags = { "--mount=/api=http://127.0.0.1:9/v1",
      "--mount=/auth=http://127.0.0.1:10", "--mount=/v2=http://127.0.0.1:9/v2", "--max-retries=2" } })
    local s = serving(host, 1)
    assert.equal("prefix-proxy", s.script)
    assert.equal("/api/*=http://127.0.0.1:9/v1 /auth/*=http://127.0.0.1:10 /v2/*=http://127.0.0.1:9/v2", s.mounts)
    assert.equal(3, s.upstreams)
    assert.equal(2, s.max_retries)
    assert.is_true(host:reload())
    local again = serving(host, 2)
    assert.is_true(again.generation > s.generation)
    assert.equal(s.mounts, again.mounts)
    assert.equal(0, host:stop())
  end)

  it("carries what a script's summary function returns", function()
    local script = helpers.tmpdir() .. "/s.lua"
    helpers.write_file(script, [[
local relay = require "relay"
local app = relay.new { name = "mine", summary = function(a) return { widgets = 3, mode = "test" } end }
app:get("/", function(_, res) res:send(200, "ok") end)
app:mount("/up", relay.proxy { target_base_url = "http://127.0.0.1:9" })
return app
]])
    local host = helpers.start(script)
    local s = serving(host, 1)
    assert.same({ "mine", 2, 3, "test", "/up/*=http://127.0.0.1:9", 1 }, { s.script, s.routes, s.widgets, s.mode, s.mounts, s.upstreams })
    assert.equal(0, host:stop())
  end)

  it("refuses a summary that is not a function", function()
    local script = helpers.tmpdir() .. "/s.lua"
    helpers.write_file(script, 'return require("relay").new { summary = 3 }\n')
    local rc, _, err = helpers.run({ "check", script })
    assert.not_equal(0, rc)
    assert.matches("summary must be a function", err)
  end)

  it("counts the git tunnel server's tokens (as bearers: a field named token is redacted) and the keys they are bound to", function()
    local file = helpers.tmpdir() .. "/tokens"
    helpers.write_file(file, "t1 alpha,beta\nt2 *\n")
    local host = helpers.start("git-tunnel/server", { flags = { "--tokens=t0", "--tokens-file=" .. file } })
    local s = serving(host, 1)
    assert.same({ 3, 2, 2, "main", "off" }, { s.bearers, s.bearers_bound, s.bound_keys, s.relay_listen, s.redis })
    assert.is_nil(host:log():find("t1", 1, true))
    assert.equal(0, host:stop())
  end)

  it("counts the flag proxy's environments, flags and segments", function()
    local cases = F.SAMPLE
    local host = helpers.start(F.script, { flags = { "--offline", "--config-dir", F.write_config(helpers.tmpdir(), cases) } })
    local s = serving(host, 1)
    assert.same({ "offline", 1, #cases.flags, #cases.segments }, { s.mode, s.environments, s.flags, s.segments })
    assert.equal(0, host:stop())
  end)

  it("names the workspace relay's admission steps and backplane", function()
    local host = helpers.start("workspace-relay", { env = { RELAY_VALIDATE_URL = "http://127.0.0.1:9/validate" } })
    local s = serving(host, 1)
    assert.equal("single", s.backplane)
    assert.is_string(s.admission)
    assert.is_true(#s.admission > 0)
    assert.equal(0, host:stop())
  end)
end)
