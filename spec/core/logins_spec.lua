-- relay.logins (lua/relay/logins.lua): credentials tried each on its own, in a host: one that
-- works is used at once, one that fails for now is tried again with backoff until what it gives
-- is in use, one refused is tried once and never again.
local helpers = require "helpers"
local socket = require "socket"

local SCRIPT = [[
local relay = require "relay"
local logins = require "relay.logins"
local app = relay.new { name = "logins-user" }
local fails = { a = 0, b = 2 } -- failures before it works; c is refused
local tries, in_use, used, failed, refused = {}, {}, {}, {}, {}
local l = logins.new { keys = { "a", "b", "c" }, min = 0.1, max = 0.4,
  login = function(key)
    tries[key] = (tries[key] or 0) + 1
    if key == "c" then return nil, "status 403", true end
    if tries[key] <= fails[key] then return nil, "status 503" end
    if key == "a" then in_use.a = true end -- the first pass's sync fetches it
    return true
  end,
  in_use = function(key) return in_use[key] == true end,
  use = function(key) used[#used + 1] = key; in_use[key] = true end,
  failed = function(k, retry_in) failed[#failed + 1] = ("%s:%s:%s"):format(k.key, k.why, retry_in <= 0.4) end,
  refused = function(k) refused[#refused + 1] = k.key .. ":" .. k.why end }
app:on_init(function() relay.after(0, function() l:start() end) end)
app:get("/state", function(_, res)
  local states = {}
  for _, k in ipairs(l.keys) do
    states[#states + 1] = k.key .. "=" .. k.state .. "/" .. (tries[k.key] or 0)
  end
  local first, n = l:unserved()
  res:send(200, ("%s used=%s failed=%s refused=%s unserved=%s/%d"):format(table.concat(states, " "),
    table.concat(used, ","), table.concat(failed, ","), table.concat(refused, ","),
    first and first.key or "-", n))
end)
return app
]]

describe("relay.logins", function()
  local dir, host
  setup(function()
    dir = helpers.tmpdir()
    helpers.write_file(dir .. "/logins.lua", SCRIPT)
    host = helpers.start(dir .. "/logins.lua")
  end)
  teardown(function() host:stop() end)

  it("uses what works at once, retries a passing failure until in use, never retries a refusal", function()
    helpers.wait_until(function() return host:get("/state").body:find("b=ok", 1, true) end, 5, "b logged in")
    socket.sleep(1) -- c would have been retried by now
    assert.equal("a=ok/1 b=ok/3 c=refused/1 used=b failed=b:status 503:true,b:status 503:true"
      .. " refused=c:status 403"
      .. " unserved=c/1", host:get("/state").body)
  end)
end)
