-- relay.schema: the one shape check of decoded JSON and Lua tables. Pure Lua: no host needed.
local S = require "relay.schema"
local cjson = require "cjson"

local function refused(shape, v, ctx)
  local ok, err = S.check(shape, v, ctx)
  assert.is_nil(ok, "passed: " .. tostring(v))
  assert.equal("string", type(err))
  return err
end

describe("relay.schema", function()
  it("checks scalars: types, lengths, patterns, ranges, integers, enums", function()
    assert.is_true(S.check(S.string(), ""))
    assert.equal('expected a string, got 5', refused(S.string(), 5))
    assert.equal('expected a non-empty string, got ""', refused(S.string { min = 1 }, ""))
    assert.equal('expected a string of 1 to 3 bytes, got "abcd"', refused(S.string { min = 1, max = 3 }, "abcd"))
    assert.equal('expected a string matching "^%x+$", got "xyz"', refused(S.string { pattern = "^%x+$" }, "xyz"))
    assert.equal('expected hex, got "xyz"', refused(S.string { pattern = "^%x+$", what = "hex" }, "xyz"))
    assert.is_true(S.check(S.number { min = 0, max = 1 }, 0.5))
    assert.equal("expected a number from 0 to 1, got 2", refused(S.number { min = 0, max = 1 }, 2))
    assert.equal("expected a number, got nan", refused(S.number(), 0 / 0):gsub("-", ""))
    assert.equal("expected an integer >= 1, got 1.5", refused(S.integer { min = 1 }, 1.5))
    assert.equal("expected an integer, got inf", refused(S.integer(), math.huge))
    assert.equal("expected a boolean, got null", refused(S.boolean(), cjson.null))
    assert.equal('expected "on" or "off", got "x"', refused(S.enum { "on", "off" }, "x"))
    assert.equal('expected one of 1, 2, 3, got 4', refused(S.enum { 1, 2, 3 }, 4))
    assert.equal('expected 2, got "2"', refused(S.const(2), "2"))
    assert.is_true(S.check(S.any(), false))
    assert.equal("expected a value, got nothing", refused(S.any(), nil))
  end)

  it("names the exact field: nested objects, array items, map keys", function()
    local shape = S.object {
      rules = S.array(S.object { clauses = S.array(S.object { values = S.array(S.string()) }) }),
      attrs = S.optional(S.map(S.string { pattern = "^%l+$" }, S.number())),
    }
    assert.is_true(S.check(shape, { rules = { { clauses = { { values = { "a" } } } } } }))
    assert.equal("rules[1].clauses[2].values[1]: expected a string, got 7",
      refused(shape, { rules = { { clauses = { { values = {} }, { values = { 7 } } } } } }))
    assert.equal("attrs.b: expected a number, got true", refused(shape, { rules = {}, attrs = { b = true } }))
    assert.equal('attrs["B-1"]: key expected a string matching "^%l+$", got "B-1"', refused(shape, { rules = {}, attrs = { ["B-1"] = 1 } }))
    assert.equal("rules: expected an array, got nothing", refused(shape, {}))
    assert.equal("expected an object, got an array", refused(shape, { 1 }))
    assert.equal("rules: expected an array, got an object", refused(shape, { rules = { a = 1 } }))
  end)

  it("counts items, refuses repeated ids, and refuses or passes unknown fields", function()
    assert.equal("expected a non-empty array, got 0 items", refused(S.array(S.any(), { min = 1 }), {}))
    assert.equal("expected an array of at most 2 items, got more", refused(S.array(S.any(), { max = 2 }), { 1, 2, 3 }))
    local ids = S.array(S.object { id = S.string() }, { unique = "id" })
    assert.equal('[3].id: "a" appears twice', refused(ids, { { id = "a" }, { id = "b" }, { id = "a" } }))
    local strict = S.object({ session_id = S.optional(S.string()) }, { strict = true })
    assert.equal('sesion_id: unknown field (did you mean "session_id"?)', refused(strict, { sesion_id = "x" }))
    assert.is_true(S.check(S.object { session_id = S.optional(S.string()) }, { other = 1 }))
    assert.equal("other: expected a string, got 1",
      refused(S.object({}, { rest = S.string() }), { other = 1 }))
  end)

  it("treats absent as refused unless optional, null as absent only where nullable, and fills defaults", function()
    local shape = S.object { a = S.optional(S.string()), b = S.optional(S.string(), true),
                             c = S.array(S.string(), { default = function() return { "filled" } end, nullable = true }) }
    local v = { b = cjson.null }
    assert.is_true(S.check(shape, v))
    assert.same({ "filled" }, v.c)
    assert.equal("a: expected a string, got null", refused(shape, { a = cjson.null }))
    v = { c = cjson.null }
    assert.is_true(S.check(shape, v))
    assert.same({ "filled" }, v.c)
  end)

  it("runs custom checks with ctx and the parent, after the shape's own; a check that raises refuses", function()
    local known = function(v, ctx) return ctx.ids[v] ~= nil, "one of the known ids" end
    local shape = S.object({ ref = S.string { check = known }, other = S.optional(S.string()) },
                           { check = function(o) return o.ref ~= o.other, "an object whose ref is not other" end })
    assert.is_true(S.check(shape, { ref = "a" }, { ids = { a = true } }))
    assert.equal('ref: expected one of the known ids, got "b"', refused(shape, { ref = "b" }, { ids = { a = true } }))
    assert.equal("expected an object whose ref is not other, got an object", refused(shape, { ref = "a", other = "a" }, { ids = { a = true } }))
    local err = refused(S.string { check = function() error("boom") end }, "x")
    assert.truthy(err:find('expected a string, got "x" (its check failed: ', 1, true), err)
    assert.truthy(err:find("boom", 1, true), err)
    local seen = {}
    assert.is_true(S.check(S.array(S.string { after = function(s) seen[#seen + 1] = s end }), { "x", "y" }))
    assert.same({ "x", "y" }, seen)
  end)

  it("picks a variant by a field, and reports the one_of alternative that nearly fitted", function()
    local frame = S.variant("type", { ping = S.object { seq = S.integer() }, data = S.object { body = S.string() } })
    assert.is_true(S.check(frame, { type = "ping", seq = 1 }))
    assert.equal('type: expected "data" or "ping", got "pong"', refused(frame, { type = "pong" }))
    assert.equal("seq: expected an integer, got 1.5", refused(frame, { type = "ping", seq = 1.5 }))
    local aud = S.one_of { S.string { max = 3 }, S.array(S.string()) }
    assert.is_true(S.check(aud, { "a", "b" }))
    assert.equal("[2]: expected a string, got 2", refused(aud, { "a", 2 }))
    assert.equal("expected a string of at most 3 bytes or an array, got true", refused(aud, true))
  end)

  it("never raises on hostile input, and bounds its depth", function()
    local trap = setmetatable({}, { __index = function() error("read through __index") end })
    local shape = S.object { a = S.optional(S.array(S.map(S.string(), S.any()))) }
    for _, v in ipairs { trap, { a = trap }, { a = { trap } }, { a = { { [trap] = 1 } } }, { a = { { [0 / 0 == 0 / 0 and 1 or 2] = 1 } } },
                         { a = 0 / 0 }, { [("k"):rep(1e5)] = 1 }, { a = { ("\0\n\""):rep(1e5) } }, function() end, coroutine.create(print) } do
      local ok, res = pcall(S.check, shape, v)
      assert.is_true(ok, tostring(res))
    end
    local err = refused(S.object({}, { strict = true }), { [("k\n"):rep(1e4)] = 1 })
    assert.truthy(#err < 200, err) -- a hostile key is cut short in the message
    local deep = S.any()
    for _ = 1, S.MAX_DEPTH + 5 do deep = S.array(deep) end
    local v = 1
    for _ = 1, S.MAX_DEPTH + 5 do v = { v } end
    assert.truthy(refused(deep, v):find("levels of nesting", 1, true))
  end)

  it("allocates nothing to pass a value (per-frame use)", function()
    -- in a fresh interpreter with the JIT off: the JIT's own buffers count as GC memory, its
    -- allocation sinking could hide a table made per call, and busted's state is not ours
    local script = [[
      local S, cjson = require "relay.schema", require "cjson"
      local shape = S.variant("type", {
        e2ee = S.object { sessionId = S.string { pattern = "%S" }, epoch = S.integer { min = 1 }, iv = S.string(),
                          profile = S.enum { "noise-ik", "noise-ikpsk2" }, extra = S.optional(S.object {}),
                          sent = S.optional(S.array(S.number { min = 0 })) },
      })
      local frame = cjson.decode('{"type":"e2ee","sessionId":"s","epoch":3,"iv":"x","profile":"noise-ik","sent":[1,2]}')
      assert(S.check(shape, frame) == true)
      jit.off()
      collectgarbage("collect")
      collectgarbage("stop")
      local before = collectgarbage("count")
      for _ = 1, 20000 do S.check(shape, frame) end
      io.write(collectgarbage("count") - before)
    ]]
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(script)
    f:close()
    local p = assert(io.popen("luajit " .. path))
    local grown = tonumber(p:read("*a"))
    p:close()
    os.remove(path)
    assert.truthy(grown and grown < 1, ("%s KB for 20000 checks"):format(tostring(grown)))
  end)

  it("refuses a misspelled option or a bad shape where the author wrote it (relay.check)", function()
    local ok, err = pcall(S.string, { mni = 1 })
    assert.is_false(ok)
    assert.truthy(err:find("schema_spec.lua:%d+: unknown option 'mni' in relay.schema.string %(did you mean 'max'%?%)"), err)
    ok, err = pcall(S.array, "string")
    assert.truthy(err:find("schema_spec.lua:%d+: relay.schema.array: expects a shape"), err)
    ok, err = pcall(S.string, { pattern = "[" })
    assert.truthy(err:find("pattern must be a valid Lua pattern", 1, true), err)
  end)
end)
