-- --log-format (issue 20): JSON by default, one object per line; text is one readable line per
-- event with the same fields and the same redaction; colour only on a terminal.
local helpers = require "helpers"
local cjson = require "cjson"

local APP = [[
local relay = require "relay"
local app = relay.new { name = "fmt" }
app:get("/x", function(_, res)
  relay.log.warn("said", { text = "two words", token = "s3cret", n = 0.1 + 0.2, url = "http://u:pw@h/?api_key=k9" })
  res:send(200, "ok")
end)
return app
]]

local function start_text(script, opts)
  local host = helpers.start(script, opts)
  host.port = tonumber(helpers.wait_until(function() return host:log():match("INFO  listening [^\n]*port=(%d+)") end,
                                          10, "the text listening line"))
  return host
end

describe("--log-format", function()
  local script
  before_each(function()
    script = helpers.tmpdir() .. "/fmt.lua"
    helpers.write_file(script, APP)
  end)

  it("json (the default) writes one JSON object per line", function()
    local host = helpers.start(script)
    assert.equal(200, host:get("/x").status)
    helpers.wait_until(function() return host:log():find('"event":"access"') end, 5, "the access line")
    assert.equal(0, host:stop())
    for line in host:log():gmatch("[^\n]+") do
      local ok, obj = pcall(cjson.decode, line)
      assert.is_true(ok, line)
      assert.is_string(obj.event)
    end
    assert.matches('"n":0%.3[,}]', host:log())
  end)

  for _, how in ipairs { "flag", "env" } do
    it("text (from the " .. how .. ") writes one readable line per event, no colour off a terminal", function()
      local host = start_text(script, how == "flag" and { flags = { "--log-format=text" }, wait = false }
                                        or { env = { RELAY_LOG_FORMAT = "text" }, wait = false })
      assert.equal(200, host:get("/x").status)
      helpers.wait_until(function() return host:log():find("access") end, 5, "the access line")
      assert.equal(0, host:stop())
      local log = host:log()
      assert.is_nil(log:find("\27", 1, true))
      assert.is_nil(log:find("{", 1, true))
      assert.matches("\n%d%d:%d%d:%d%d%.%d%d%d INFO  access method=GET path=/x status=200 bytes=2 ms=[%d.]+ peer=127%.0%.0%.1 request_id=%x+ trace_id=%x+\n", log)
      assert.matches('\n%d%d:%d%d:%d%d%.%d%d%d WARN  said [^\n]*text="two words"', log)
      assert.matches("said [^\n]*token=%[redacted%]", log)
      assert.matches("said [^\n]*n=0%.3", log)
      assert.matches('said [^\n]*url="http://u:%[redacted%]@h/%?api_key=%[redacted%]"', log) -- quoted: it holds "="
      assert.is_nil(log:find("s3cret", 1, true))
    end)
  end

  it("text is coloured on a terminal, and not with NO_COLOR", function()
    for _, no_color in ipairs { "", "1" } do
      local out = helpers.tmpdir() .. "/tty.out"
      -- script(1) gives relayhost a terminal for stderr; it stops on the timeout's SIGTERM
      os.execute(("NO_COLOR=%s script -qec 'timeout 2 %s %s --listen=127.0.0.1:0 --log-format=text' %s >/dev/null 2>&1")
        :format(no_color, helpers.bin(), script, out))
      local text = helpers.read_file(out) or ""
      assert.matches("INFO [^\n]*listening", text)
      if no_color == "" then
        assert.truthy(text:find("\27[32mINFO \27[0m listening", 1, true), text)
      else
        assert.is_nil(text:find("\27", 1, true), text)
      end
    end
  end)

  it("refuses another format, naming it", function()
    local rc, _, err = helpers.run({ script, "--log-format=yaml" })
    assert.equal(1, rc)
    assert.matches("%-%-log%-format: 'yaml' is not one of json, text", err)
  end)
end)
