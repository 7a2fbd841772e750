-- head:header, head:set_header and head:del_header in on_request / on_response (README "Prefix
-- proxy"): they change the head's fields in C, and head.headers is built only when a hook reads
-- it (then it shows what the methods did, and the methods act on it). A bad name or value raises
-- at the script's line (500 with the request id), and a head kept past its hook cannot change a
-- later request's. The origin (spec/fixtures/raw_origin.lua) records what it received and
-- answers /…/reply?r=… with r.
local helpers = require "helpers"
local raw_origin = require "raw_origin"
local start_origin, reply, fields_named = raw_origin.start, raw_origin.reply, raw_origin.fields_named

local function count(h, name) return select(2, h:lower():gsub("\r\n" .. name:gsub("%-", "%%-") .. ":", "")) end

describe("prefix proxy hook methods", function()
  local origin, proxy, script

  setup(function()
    origin = start_origin()
    local dir = helpers.tmpdir()
    script = dir .. "/methods.lua"
    helpers.write_file(script, ([[
local relay = require "relay"
local app = relay.new { name = "methods" }
local up = "http://127.0.0.1:%d"
app:mount("/m", relay.proxy { target_base_url = up,
  on_request = function(head)
    head:set_header("X-Saw", tostring(head:header("x-in")) .. "|" .. tostring(head:header("X-IN")))
    head:set_header("x-service", "main-app")
    head:set_header("x-twice", "replaced")
    head:del_header("X-Internal-Token")
    head:set_header("x-num", 42)
    head:set_header("x-list", { "l1", "l2" })
    head:set_header("x-gone-later", "1")
    head:del_header("x-gone-later")
  end,
  on_response = function(head)
    head:del_header("x-debug-info")
    head:set_header("x-resp", head:header("x-up") or "none")
  end })
app:mount("/mixed", relay.proxy { target_base_url = up,
  on_request = function(head)
    head:set_header("x-before", "b")
    head:del_header("x-drop")
    local t = head.headers -- built now: shows what the methods did
    t["x-saw-before"] = tostring(t["x-before"]) .. "|" .. tostring(t["x-drop"])
    head:set_header("x-after", "a") -- acts on the table now
    head:del_header("x-keep-not")
  end })
app:mount("/many", relay.proxy { target_base_url = up,
  on_request = function(head)
    for i = 1, 70 do head:set_header(("x-m%%02d"):format(i), tostring(i)) end
    head.headers["x-m01"] = nil -- read after more fields than the closure's array holds
  end })
app:mount("/cookies", relay.proxy { target_base_url = up,
  on_response = function(head)
    head:del_header("x-debug-info")
    head:set_header("x-cookies", table.concat(head.headers:all("set-cookie"), "|")) -- acts on the table
  end })
app:mount("/badname", relay.proxy { target_base_url = up,
  on_request = function(head) head:set_header("bad name", "v") end })
app:mount("/badvalue", relay.proxy { target_base_url = up,
  on_request = function(head) head:set_header("x-inject", "a\r\nx-evil: 1") end })
app:mount("/novalue", relay.proxy { target_base_url = up,
  on_request = function(head) head:set_header("x-none") end })
local raised
app:mount("/raised", relay.proxy { target_base_url = up,
  on_request = function(head)
    if head:header("x-step") == "1" then raised = head; error("kept, then raised") end
    raised:set_header("x-stolen", "yes")
  end })
local kept_lazy, kept_table
app:mount("/stale-any", relay.proxy { target_base_url = up,
  on_request = function(head)
    if head:header("x-step") == "1" then
      kept_lazy = head
      return
    end
    if head:header("x-step") == "2" then
      local _ = head.headers -- this head has its table
      kept_table = head
      return
    end
    head:set_header("x-lazy-read", tostring((pcall(kept_lazy.header, kept_lazy, "x-step"))))
    head:set_header("x-table-read", tostring((pcall(kept_table.header, kept_table, "x-step"))))
    head:set_header("x-table-set", tostring((pcall(kept_table.set_header, kept_table, "x-a", "b"))))
  end })
local kept
app:mount("/stale", relay.proxy { target_base_url = up,
  on_request = function(head)
    if head:header("x-step") == "1" then kept = head; return end
    head:set_header("x-own", "yes")
    kept:set_header("x-stolen", "yes")
  end })
return app
]]):format(origin.port))
    proxy = helpers.start(script)
  end)

  teardown(function()
    origin:stop()
    if proxy then assert.equal(0, proxy:stop(), proxy:log():sub(-3000)) end
  end)
  before_each(function() origin:take(0.05) end)

  it("on_request: reads any spelling, sets, replaces, removes, sends numbers and lists; the rest passes as it came", function()
    for _ = 1, 3 do -- the first call and the compiled ones after it
      local res = proxy:get("/m/x", { ["X-In"] = "v", ["X-Internal-Token"] = "secret", ["X-Twice"] = { "a", "b" },
                                      ["X-Kept-Case"] = "same" })
      assert.equal(200, res.status, proxy:log():sub(-1500))
      local h = origin:heads()[1]:lower() -- names: any spelling (the test client sends them lowercase)
      assert.matches("\r\nx%-saw: v|v\r\n", h)
      assert.matches("\r\nx%-service: main%-app\r\n", h)
      assert.equal(0, count(h, "x-internal-token"))
      assert.equal(1, count(h, "x-twice"))
      assert.matches("\r\nx%-twice: replaced\r\n", h)
      assert.matches("\r\nx%-num: 42\r\n", h)
      assert.matches("\r\nx%-list: l1\r\nx%-list: l2\r\n", h)
      assert.equal(0, count(h, "x-gone-later"))
      assert.matches("\r\nx%-kept%-case: same\r\n", h)
      assert.matches("\r\nx%-in: v\r\n", h)
    end
  end)

  it("on_response: removes and sets on the upstream's head, repeated fields kept", function()
    local res = proxy:get(reply("/m", "X-Debug-Info: secret\r\nX-Up: u1\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"))
    assert.equal(200, res.status, proxy:log():sub(-1500))
    assert.same({}, fields_named(res, "x-debug-info"))
    assert.same({ "u1" }, fields_named(res, "x-resp"))
    assert.same({ "a=1", "b=2" }, fields_named(res, "set-cookie"))
  end)

  it("head.headers read after the methods shows what they did, and the methods act on it after", function()
    for _ = 1, 3 do
      local res = proxy:get("/mixed/x", { ["X-Drop"] = "d", ["X-Keep-Not"] = "k", ["X-Other"] = "o" })
      assert.equal(200, res.status, proxy:log():sub(-1500))
      local h = origin:heads()[1]:lower()
      assert.matches("\r\nx%-saw%-before: b|nil\r\n", h)
      assert.matches("\r\nx%-before: b\r\n", h)
      assert.matches("\r\nx%-after: a\r\n", h)
      assert.equal(0, count(h, "x-drop"))
      assert.equal(0, count(h, "x-keep-not"))
      assert.matches("\r\nx%-other: o\r\n", h)
    end
  end)

  it("head.headers first read where a name repeats (C's table): compared after the hook, every value kept", function()
    for i = 1, 3 do -- the first read is inside the hook; later calls get the table before
      local res = proxy:get(reply("/cookies", "Set-Cookie: a=1\r\nX-Debug-Info: s\r\nSet-Cookie: b=2\r\n"))
      assert.equal(200, res.status, proxy:log():sub(-1500))
      assert.same({ "a=1", "b=2" }, fields_named(res, "set-cookie"), "call " .. i)
      assert.same({ "a=1|b=2" }, fields_named(res, "x-cookies"), "call " .. i)
      assert.same({}, fields_named(res, "x-debug-info"), "call " .. i)
    end
  end)

  it("more fields than the closure's array holds: head.headers is C's table, read back whole", function()
    local res = proxy:get("/many/x")
    assert.equal(200, res.status, proxy:log():sub(-1500))
    local h = origin:heads()[1]
    assert.equal(0, count(h, "x-m01"))
    for i = 2, 70 do assert.equal(1, count(h, ("x-m%02d"):format(i)), "x-m" .. i) end
  end)

  it("a name that is not a token, a value with CR/LF or no value: 500 naming the script's line, nothing sent", function()
    for _, case in ipairs { { "/badname/x", "header bad name is not a token" },
                            { "/badvalue/x", "header x%-inject has a value with control characters" },
                            { "/novalue/x", "header x%-none: no value" } } do
      local res = proxy:get(case[1])
      assert.equal(500, res.status, case[1])
      assert.is_truthy(res.headers["x-request-id"])
      assert.equal(0, #origin:heads(), case[1])
      local log = proxy:log()
      assert.matches("methods%.lua:%d+: head:[a-z_]+: " .. case[2], log)
    end
  end)

  it("a head kept past its hook raises when used in a later request's hook, which changes nothing", function()
    assert.equal(200, proxy:get("/stale/x", { ["X-Step"] = "1" }).status)
    origin:take(0.05)
    local res = proxy:get("/stale/x", { ["X-Step"] = "2" })
    assert.equal(500, res.status)
    assert.equal(0, #origin:heads())
    assert.matches("header x%-stolen belongs to a head whose hook has returned", proxy:log())
    -- and the proxy goes on serving
    assert.equal(200, proxy:get("/m/x").status)
  end)

  it("every method of a kept head raises, with its table built or not", function()
    assert.equal(200, proxy:get("/stale-any/x", { ["X-Step"] = "1" }).status)
    assert.equal(200, proxy:get("/stale-any/x", { ["X-Step"] = "2" }).status)
    origin:take(0.05)
    assert.equal(200, proxy:get("/stale-any/x", { ["X-Step"] = "3" }).status)
    local h = origin:heads()[1]:lower()
    assert.matches("\r\nx%-lazy%-read: false\r\n", h)
    assert.matches("\r\nx%-table%-read: false\r\n", h)
    assert.matches("\r\nx%-table%-set: false\r\n", h)
  end)

  it("a head kept by a hook that then raised cannot change the next request's, however big its head", function()
    assert.equal(500, proxy:get("/raised/x", { ["X-Step"] = "1" }).status)
    origin:take(0.05)
    local many = { ["X-Step"] = "2" }
    for i = 1, 70 do many[("x-f%02d"):format(i)] = "v" end -- more than the closure's array: C's table
    local res = proxy:get("/raised/x", many)
    assert.equal(500, res.status)
    assert.equal(0, #origin:heads())
    assert.matches("header x%-stolen belongs to a head whose hook has returned", proxy:log())
  end)
end)
