-- What on_request / on_response hooks and the access phase see and leave in head.headers and
-- req.headers (README "Prefix proxy"; issues 17 and 18 read back only what they changed): an
-- unchanged field passes as it came, repeated fields keep every value in order, nil removes,
-- names are case-insensitive, a list value is sent as repeated fields, a new table replaces the
-- head's fields. The origin
-- (spec/fixtures/raw_origin.lua) records what it received and answers /…/reply?r=… with r.
local helpers = require "helpers"
local raw_origin = require "raw_origin"
local start_origin, reply, fields_named = raw_origin.start, raw_origin.reply, raw_origin.fields_named


describe("prefix proxy hook headers", function()
  local origin, proxy

  setup(function()
    origin = start_origin()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/hooks.lua", ([[
local relay = require "relay"
local app = relay.new { name = "hooks" }
local up = "http://127.0.0.1:%d"
app:mount("/edit", relay.proxy { target_base_url = up,
  on_request = function(head)
    local names = {}
    for k in pairs(head.headers) do names[#names + 1] = k end
    table.sort(names)
    head.headers["x-names"] = table.concat(names, ",")
    head.headers["X-Changed"] = (head.headers["X-CHANGED"] or "") .. "+hook"
    head.headers["x-gone"] = nil
    head.headers["x-num"] = 42
    head.headers["x-list"] = { "l1", "l2" }
  end,
  on_response = function(head)
    head.headers["x-debug-info"] = nil
    head.headers["X-Added"] = "yes"
    head.headers["x-seen-cookies"] = table.concat(head.headers:all("set-cookie"), "|")
  end })
app:mount("/cookie", relay.proxy { target_base_url = up,
  on_response = function(head) head.headers["set-cookie"] = "only=1" end })
app:mount("/nums", relay.proxy { target_base_url = up,
  on_request = function(head)
    -- the collector at every allocation: a number's string exists only while it is read back
    collectgarbage("setpause", 0)
    collectgarbage("setstepmul", 100000)
    for i = 1, 40 do head.headers["x-n" .. i] = i + 0.5 end
  end })
app:mount("/acc", relay.proxy { target_base_url = up,
  access = function(req)
    local names = {}
    for k in pairs(req.headers) do names[#names + 1] = k end
    table.sort(names)
    req.headers["x-names"] = table.concat(names, ",")
    req.headers["X-Changed"] = (req.headers["X-CHANGED"] or "") .. "+access"
    req.headers["x-gone"] = nil
    req.headers["x-twice-gone"] = nil
  end,
  on_request = function(head) head.headers["x-on-request-saw"] = head.headers["x-changed"] end })
app:mount("/accfresh", relay.proxy { target_base_url = up,
  access = function(req) req.headers = { ["x-only"] = "1", host = req.headers.host } end })
app:mount("/renamed", relay.proxy { target_base_url = up,
  on_response = function(head)
    -- the origin's names leave the table and are collected; new names, made now, may be given
    -- their addresses: each must still be read as the name it is
    local old = {}
    for k, v in pairs(head.headers) do if k:find("^x%%-tmp") then old[k] = v end end
    for k in pairs(old) do head.headers[k] = nil end
    collectgarbage()
    collectgarbage()
    for k, v in pairs(old) do head.headers[(k:gsub("^x%%-tmp", "x-new"))] = v end
  end })
app:mount("/raise", relay.proxy { target_base_url = up,
  on_response = function(head)
    if head.headers["x-boom"] then error("boom") end
    head.headers["x-new"] = head.headers["x-other"]
    head.headers["x-off"] = false
    head.headers["x-same"] = "s" .. ("ame"):lower()
  end })
app:mount("/many", relay.proxy { target_base_url = up,
  on_response = function(head)
    head.headers["x-f03"] = nil
    head.headers["x-f05"] = "changed"
    head.headers["x-added"] = "a"
  end })
app:mount("/echo", relay.proxy { target_base_url = up,
  on_request = function(head)
    head.headers["x-saw"] = tostring(head.headers["x-v"]) .. "|" .. tostring(head.headers["x-w"])
  end,
  on_response = function(head)
    head.headers["x-saw"] = tostring(head.headers["x-r"]) .. "|" .. tostring(head.headers["x-s"])
  end })
app:mount("/fresh", relay.proxy { target_base_url = up,
  on_request = function(head) head.headers = { ["x-only"] = "1", host = head.headers.host } end })
return app
]]):format(origin.port))
    proxy = helpers.start(dir .. "/hooks.lua")
  end)

  teardown(function()
    origin:stop()
    if proxy then assert.equal(0, proxy:stop(), proxy:log():sub(-3000)) end
  end)
  before_each(function() origin:take(0.05) end)

  it("on_request: reads any spelling, sees every field, changes, removes, adds; the rest passes as it came", function()
    local res = proxy:get("/edit/x", { ["X-Changed"] = "old", ["x-gone"] = "bye", ["X-Kept-Case"] = "same" })
    assert.equal(200, res.status)
    local seen = origin:heads()
    assert.equal(1, #seen)
    local h = seen[1]
    assert.matches("\r\n[Xx]%-[Cc]hanged: old%+hook\r\n", h)
    assert.is_nil(h:lower():find("\r\nx-gone:", 1, true))
    assert.matches("\r\n[Xx]%-[Nn]um: 42\r\n", h)
    assert.matches("\r\n[Xx]%-[Ll]ist: l1\r\n[Xx]%-[Ll]ist: l2\r\n", h)
    assert.matches("\r\n[Xx]%-[Kk]ept%-[Cc]ase: same\r\n", h)
    assert.matches("\r\n[Xx]%-[Nn]ames: [^\r]*x%-changed,[^\r]*x%-gone,[^\r]*x%-kept%-case", h)
    assert.equal(1, select(2, h:lower():gsub("\r\nx%-changed:", "")))
  end)

  it("on_response: repeated fields keep every value in order while others change", function()
    local res = proxy:get(reply("/edit", "Set-Cookie: a=1\r\nX-Debug-Info: secret\r\nSet-Cookie: b=2\r\n"))
    assert.equal(200, res.status, proxy:log():sub(-1500))
    assert.same({ "a=1", "b=2" }, fields_named(res, "set-cookie"))
    assert.same({}, fields_named(res, "x-debug-info"))
    assert.same({ "yes" }, fields_named(res, "x-added"))
    assert.same({ "a=1|b=2" }, fields_named(res, "x-seen-cookies"))
    -- a name repeated in another spelling is the same name
    res = proxy:get(reply("/edit", "Set-Cookie: c=3\r\nX-Debug-Info: secret\r\nset-COOKIE: d=4\r\n"))
    assert.equal(200, res.status, proxy:log():sub(-1500))
    assert.same({ "c=3|d=4" }, fields_named(res, "x-seen-cookies"))
  end)

  it("on_response: a repeated field set to one value goes out once", function()
    local res = proxy:get(reply("/cookie", "Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n"))
    assert.equal(200, res.status)
    assert.same({ "only=1" }, fields_named(res, "set-cookie"))
  end)

  it("on_request: number values come through as the numbers they were, however the collector runs", function()
    local res = proxy:get("/nums/x")
    assert.equal(200, res.status, proxy:log():sub(-1500))
    local h = origin:heads()[1]:lower()
    for i = 1, 40 do assert.truthy(h:find(("\r\nx-n%d: %s\r\n"):format(i, tostring(i + 0.5)), 1, true), "x-n" .. i) end
  end)

  it("access: reads any spelling, sees every field, changes, removes (a field that came twice too), adds; the rest passes as it came; on_request sees the changes", function()
    local res = proxy:get("/acc/x", { ["X-Changed"] = "old", ["x-gone"] = "bye", ["X-Kept-Case"] = "same",
                                      ["X-Twice-Gone"] = { "a", "b" }, ["X-Twice-Kept"] = { "c", "d" } })
    assert.equal(200, res.status, proxy:log():sub(-1500))
    local h = origin:heads()[1]
    assert.matches("\r\n[Xx]%-[Cc]hanged: old%+access\r\n", h)
    assert.matches("\r\n[Xx]%-[Oo]n%-[Rr]equest%-[Ss]aw: old%+access\r\n", h)
    assert.is_nil(h:lower():find("\r\nx-gone:", 1, true))
    assert.is_nil(h:lower():find("\r\nx-twice-gone:", 1, true))
    assert.matches("\r\n[Xx]%-[Tt]wice%-[Kk]ept: c\r\n[Xx]%-[Tt]wice%-[Kk]ept: d\r\n", h)
    assert.matches("\r\n[Xx]%-[Kk]ept%-[Cc]ase: same\r\n", h)
    assert.matches("\r\n[Xx]%-[Nn]ames: [^\r]*x%-changed,[^\r]*x%-gone,[^\r]*x%-kept%-case,x%-twice%-gone,x%-twice%-kept", h)
    assert.equal(1, select(2, h:lower():gsub("\r\nx%-changed:", "")))
  end)

  it("access: fields left alone pass as they came (names spelled as sent) when others change", function()
    local res = proxy:get("/acc/x", { ["X-Kept-Case"] = "same", ["X-Changed"] = "old", ["x-gone"] = "bye" })
    assert.equal(200, res.status)
    local h = origin:heads()[1]
    assert.matches("\r\nX%-Kept%-Case: same\r\n", h)
    assert.matches("\r\n[Xx]%-[Cc]hanged: old%+access\r\n", h)
    assert.is_nil(h:lower():find("\r\nx-gone:", 1, true))
    assert.equal(1, select(2, h:lower():gsub("\r\nx%-changed:", "")))
  end)

  it("access: a new headers table replaces the client's fields", function()
    local res = proxy:get("/accfresh/x", { ["x-client"] = "c" })
    assert.equal(200, res.status)
    local h = origin:heads()[1]
    assert.matches("\r\n[Xx]%-[Oo]nly: 1\r\n", h)
    assert.is_nil(h:lower():find("x-client", 1, true))
  end)

  it("on_response: names removed and collected, then new ones set, go out as the new names", function()
    local fields = {}
    for i = 1, 12 do fields[#fields + 1] = ("X-Tmp-%02d: v%d\r\n"):format(i, i) end
    local res = proxy:get(reply("/renamed", table.concat(fields)))
    assert.equal(200, res.status, proxy:log():sub(-1500))
    for i = 1, 12 do
      assert.same({}, fields_named(res, ("x-tmp-%02d"):format(i)))
      assert.same({ "v" .. i }, fields_named(res, ("x-new-%02d"):format(i)))
    end
  end)

  it("each head's own names and values, where they differ from the last head's in bytes only (same lengths, same places)", function()
    -- the hooks' tables reuse the last head's strings where the bytes are equal: one byte apart must not pass
    for _, case in ipairs { { "X-V", "aaa", "aaa|nil" }, { "X-V", "aab", "aab|nil" }, { "X-W", "aab", "nil|aab" } } do
      local res = proxy:get("/echo/x", { [case[1]] = case[2] })
      assert.equal(200, res.status, proxy:log():sub(-1500))
      assert.matches("\r\n[Xx]%-[Ss]aw: " .. case[3]:gsub("%p", "%%%0") .. "\r\n", origin:heads()[1])
    end
    for _, case in ipairs { { "X-R: 111", "111|nil" }, { "X-R: 112", "112|nil" }, { "X-S: 112", "nil|112" } } do
      local res = proxy:get(reply("/echo", case[1] .. "\r\n"))
      assert.equal(200, res.status, proxy:log():sub(-1500))
      assert.same({ case[2] }, fields_named(res, "x-saw"))
    end
  end)

  it("on_request: a new headers table replaces the client's fields", function()
    local res = proxy:get("/fresh/x", { ["x-client"] = "c" })
    assert.equal(200, res.status)
    local h = origin:heads()[1]
    assert.matches("\r\n[Xx]%-[Oo]nly: 1\r\n", h)
    assert.is_nil(h:lower():find("x-client", 1, true))
  end)

  it("on_response: a hook that raised leaves nothing behind for the next response's changes", function()
    -- the first response's x-new sits where the second's x-other does (the origin's fields in
    -- order): what the hook sets from it must not pass for an unchanged field of the first
    local res = proxy:get(reply("/raise", "X-Boom: 1\r\nX-New: v\r\n"))
    assert.equal(500, res.status)
    res = proxy:get(reply("/raise", "X-Pad: 1\r\nX-Other: v\r\nX-Off: on\r\nX-Same: same\r\n"))
    assert.equal(200, res.status, proxy:log():sub(-1500))
    assert.same({ "v" }, fields_named(res, "x-new"))
    assert.same({ "v" }, fields_named(res, "x-other"))
    assert.same({}, fields_named(res, "x-off")) -- false: no field
    assert.same({ "same" }, fields_named(res, "x-same"))
    local spelled = {}
    for _, f in ipairs(res.raw_headers) do spelled[#spelled + 1] = f[1] end
    assert.truthy(table.concat(spelled, ","):find("X-Same", 1, true)) -- an equal value is left alone: as sent
  end)

  it("on_response: a head of more fields than are compared changes the same way", function()
    local fields = {}
    for i = 1, 70 do fields[#fields + 1] = ("X-F%02d: v%d\r\n"):format(i, i) end
    local res = proxy:get(reply("/many", table.concat(fields)))
    assert.equal(200, res.status, proxy:log():sub(-1500))
    for i = 1, 70 do
      local want = i == 3 and {} or i == 5 and { "changed" } or { "v" .. i }
      assert.same(want, fields_named(res, ("x-f%02d"):format(i)))
    end
    assert.same({ "a" }, fields_named(res, "x-added"))
    fields = {}
    for i = 1, 8 do fields[#fields + 1] = ("X-F%02d: v%d\r\n"):format(i, i) end
    res = proxy:get(reply("/many", table.concat(fields)))
    assert.same({}, fields_named(res, "x-f03"))
    assert.same({ "changed" }, fields_named(res, "x-f05"))
    assert.same({ "v8" }, fields_named(res, "x-f08"))
    assert.same({ "a" }, fields_named(res, "x-added"))
  end)
end)
