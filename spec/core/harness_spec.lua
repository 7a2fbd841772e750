-- relay.harness (lua/relay/harness.lua): Harness flag configs' evaluation by the SDKs' rules
-- (the ff-proxy spec's §2.4) on small shapes, the SDKs' bucketing test vectors, the
-- cross-SDK fixtures (spec/fixtures/ff-test-cases), and the check of a config's shape. Pure Lua:
-- no host needed.
local evaluator = require "relay.harness"
local harness = evaluator
local json = require "relay.json"

local function bool_flag(extra)
  local f = { feature = "f", kind = "boolean", state = "on", offVariation = "false",
    variations = { { identifier = "true", value = "true" }, { identifier = "false", value = "false" } },
    defaultServe = { variation = "false" } }
  for k, v in pairs(extra or {}) do f[k] = v end
  return f
end

local function eval(flag, target, segments, flags)
  local ctx = { flags = flags or { [flag.feature] = flag }, segments = segments or {} }
  local v, err = evaluator.evaluate(ctx, flag, target)
  assert(v, err)
  return v.identifier
end

local function clause(attribute, op, values) return { attribute = attribute, op = op, values = values } end
local function rule(clauses, variation) return { priority = 1, clauses = clauses, serve = { variation = variation } } end

describe("murmur3 bucketing", function()
  it("matches the SDKs' test vectors", function()
    assert.equal(61, evaluator.bucket("email", "enver.bisevac@harness")) -- go: evaluation/util_test.go
    assert.equal(57, evaluator.bucket("identifier", "test"))              -- node: evaluator.test.ts
  end)
end)

describe("flag evaluation", function()
  local t = { identifier = "u1", name = "U One", attributes = { email = "a@b.io", age = 30, ratio = 0.5, beta = true } }

  it("serves offVariation when off, defaultServe when on", function()
    assert.equal("false", eval(bool_flag { state = "off", defaultServe = { variation = "true" } }, t))
    assert.equal("true", eval(bool_flag { defaultServe = { variation = "true" } }, t))
  end)

  it("ANDs a rule's clauses and takes rules in order", function()
    local f = bool_flag { rules = {
      rule({ clause("email", "ends_with", { "@b.io" }), clause("age", "equal", { "31" }) }, "true"),
      rule({ clause("age", "in", { "29", "30" }) }, "true"),
    } }
    assert.equal("true", eval(f, t))
    f.rules[2].clauses[1].values = { "40" }
    assert.equal("false", eval(f, t))
  end)

  it("implements every operator as Go does", function()
    local cases = {
      { clause("email", "starts_with", { "a@" }), true }, { clause("email", "contains", { "@b" }), true },
      { clause("name", "equal", { "u one" }), true }, { clause("name", "equal_sensitive", { "u one" }), false },
      { clause("age", "gt", { "29" }), true }, { clause("age", "gt", { "4" }), false }, -- string compare
      { clause("email", "match", { "^a@.*%.io$" }), false }, { clause("email", "match", { "^a@\\w+\\.io$" }), true },
      { clause("ratio", "equal", { "0.5" }), true }, { clause("beta", "equal", { "true" }), true },
      { clause("missing", "equal", { "" }), false }, { clause("email", "", { "x" }), false },
      { clause("email", "contains", {}), false },
    }
    for i, c in ipairs(cases) do
      local f = bool_flag { rules = { rule({ c[1] }, "true") } }
      assert.equal(c[2] and "true" or "false", eval(f, t), "case " .. i)
    end
  end)

  it("resolves segments: excluded beats included beats rules; servingRules AND, legacy rules OR", function()
    local segs = {
      s1 = { identifier = "s1", included = { { identifier = "u1" } }, excluded = {} },
      s2 = { identifier = "s2", excluded = { { identifier = "u1" } }, rules = { clause("age", "equal", { "30" }) } },
      s3 = { identifier = "s3", rules = { clause("age", "equal", { "1" }), clause("email", "contains", { "b.io" }) } },
      s4 = { identifier = "s4", servingRules = { { priority = 1, clauses = { clause("age", "equal", { "30" }), clause("email", "contains", { "zz" }) } } },
             rules = { clause("age", "equal", { "30" }) } },
    }
    local function in_seg(ids)
      return eval(bool_flag { rules = { rule({ clause("", "segmentMatch", ids) }, "true") } }, t, segs)
    end
    assert.equal("true", in_seg { "s1" })
    assert.equal("false", in_seg { "s2", "s1" }) -- excluded from the first answers for the list
    assert.equal("true", in_seg { "s3" })
    assert.equal("false", in_seg { "s4" })       -- servingRules win over legacy rules
    assert.equal("false", in_seg { "nope" })
  end)

  it("checks the target map before rules", function()
    local f = bool_flag { variationToTargetMap = { { variation = "true", targets = { { identifier = "u1" } } } },
      rules = { rule({ clause("age", "equal", { "30" }) }, "false") } }
    assert.equal("true", eval(f, t))
  end)

  it("buckets percentage rollouts like the SDKs, falling back to identifier", function()
    local dist = { bucketBy = "email", variations = { { variation = "true", weight = 60 }, { variation = "false", weight = 40 } } }
    local f = bool_flag { defaultServe = { distribution = dist } }
    local target = { identifier = "x", attributes = { email = "enver.bisevac@harness" } } -- bucket 61
    assert.equal("false", eval(f, target))
    dist.variations[1].weight = 61
    assert.equal("true", eval(f, target))
    dist.bucketBy = "nope" -- identifier:test -> 57
    dist.variations[1].weight = 56
    assert.equal("false", eval(f, { identifier = "test" }))
    dist.variations[1].weight = 57
    assert.equal("true", eval(f, { identifier = "test" }))
  end)

  it("serves offVariation when a prerequisite is not met, ignores missing ones, recurses", function()
    local p1 = bool_flag { feature = "p1", defaultServe = { variation = "true" } }
    local p2 = bool_flag { feature = "p2", defaultServe = { variation = "true" },
      prerequisites = { { feature = "p1", variations = { "true" } } } }
    local f = bool_flag { defaultServe = { variation = "true" }, prerequisites = { { feature = "p2", variations = { "true" } },
      { feature = "gone", variations = { "true" } } } }
    local flags = { f = f, p1 = p1, p2 = p2 }
    assert.equal("true", eval(f, t, {}, flags))
    p1.defaultServe.variation = "false" -- p2 itself still serves true, but its own prerequisite fails
    assert.equal("false", eval(f, t, {}, flags))
  end)
end)

describe("Harness JSON (relay.json)", function()
  it("writes empty arrays it read as [] and keeps empty objects", function()
    local v = json.decode('{"rules":[],"attributes":{},"variationToTargetMap":[{"targets":[]}]}')
    local out = json.decode(json.encode(v))
    assert.is_table(out.rules)
    assert.truthy(json.encode(v):find('"rules":[]', 1, true))
    assert.truthy(json.encode(v):find('"attributes":{}', 1, true))
    assert.truthy(json.encode(v):find('"targets":[]', 1, true))
    assert.equal("[]", json.encode(json.array()))
  end)
end)

describe("cross-SDK evaluation cases (spec/fixtures/ff-test-cases)", function()
  it("gives every expected value", function()
    local cjson = require "cjson"
    local p = io.popen("ls spec/fixtures/ff-test-cases/*.json")
    local files = 0
    for path in p:lines() do
      files = files + 1
      local f = assert(io.open(path))
      local cases = cjson.decode(f:read("*a"))
      f:close()
      local ctx, targets = { flags = {}, segments = {} }, {}
      for _, fc in ipairs(cases.flags) do ctx.flags[fc.feature] = fc end
      for _, s in ipairs(cases.segments) do ctx.segments[s.identifier] = s end
      for _, t in ipairs(cases.targets) do targets[t.identifier] = t end
      for _, c in ipairs(cases.tests) do
        local fc = ctx.flags[c.flag]
        local v = assert(evaluator.evaluate(ctx, fc, targets[c.target] or { identifier = c.target }))
        local got = v.value
        if fc.kind == "boolean" then got = got == "true" elseif fc.kind == "int" then got = tonumber(got)
        elseif fc.kind == "json" then got = cjson.decode(got) end
        assert.same(c.expected, got, ("%s: %s for %s"):format(path, c.flag, c.target))
      end
    end
    p:close()
    assert.is_true(files > 0)
  end)
  it("does not recurse for ever through target groups that name each other", function()
    local a = { identifier = "a", rules = { { op = "segmentMatch", attribute = "", values = { "b" } } } }
    local b = { identifier = "b", servingRules = { { clauses = { { op = "segmentMatch", values = { "a" } } } } } }
    local flag = { feature = "f", state = "on", variations = { { identifier = "x", value = "1" }, { identifier = "y", value = "2" } },
      offVariation = "x", defaultServe = { variation = "x" },
      rules = { { clauses = { { op = "segmentMatch", values = { "a" } } }, serve = { variation = "y" } } } }
    local ok, v = pcall(evaluator.evaluate, { flags = { f = flag }, segments = { a = a, b = b } }, flag, { identifier = "t" })
    assert.is_true(ok, tostring(v))
    assert.equal("x", v.identifier)
  end)
end)

describe("flag evaluation of a config no check saw", function()
  it("skips list entries that are not objects instead of raising (fuzz_flag_lua/non-object-rule)", function()
    local null = require("cjson").null
    local f = bool_flag {
      rules = { 0, null, rule({ clause("identifier", "equal", { "u1" }) }, "true") },
      variationToTargetMap = { false, { variation = "true", targets = { 7, { identifier = "u2" } } } },
      prerequisites = { "x", null },
    }
    f.variations[3] = 1
    local ok, v = pcall(evaluator.evaluate, { flags = { f = f }, segments = {} }, f, { identifier = "u1" })
    assert.is_true(ok, tostring(v))
    assert.equal("true", v.identifier) -- by the one rule that is an object
    assert.equal("true", eval(f, { identifier = "u2" })) -- by the target map's object entry
  end)
end)

describe("relay.harness.check", function()
  local cjson = require "cjson"
  local function sample()
    local f = assert(io.open("spec/fixtures/ff-test-cases/sample.json"))
    local cases = cjson.decode(f:read("*a"))
    f:close()
    return { flags = cases.flags, segments = cases.segments, targets = cases.targets }
  end

  it("passes the fixtures' config, and what it passes evaluates to one of each flag's variations", function()
    local data = sample()
    assert.same({ true }, { harness.check(data) })
    local ctx = { flags = {}, segments = {} }
    for _, fc in ipairs(data.flags) do ctx.flags[fc.feature] = fc end
    for _, s in ipairs(data.segments) do ctx.segments[s.identifier] = s end
    for _, fc in ipairs(data.flags) do
      for _, t in ipairs(data.targets) do
        local v = assert(harness.evaluate(ctx, fc, t))
        assert.same({ flag = fc.feature, identifier = v.identifier, kind = fc.kind, value = v.value },
                    harness.evaluation(ctx, fc, t))
      end
    end
  end)

  it("names the source, the item and the field of what does not fit", function()
    local function refused(fn, sources)
      local data = sample()
      fn(data)
      local ok, err = harness.check(data, sources)
      assert.is_nil(ok)
      return err
    end
    assert.equal('feature configs: flag "dark-mode": rules: expected an array, got 5',
      refused(function(d) d.flags[1].rules = 5 end))
    assert.equal('flags.json: flag "dark-mode": defaultServe.variation: expected one of the flag\'s variations, got "maybe"',
      refused(function(d) d.flags[1].defaultServe = { variation = "maybe" } end, { flags = "flags.json" }))
    assert.equal('feature configs: item 2: feature: expected a non-empty string, got nothing',
      refused(function(d) d.flags[2].feature = nil end))
    assert.equal('target groups: target group "beta-testers": rules: expected an array, got 5',
      refused(function(d) d.segments[1].rules = 5 end))
    assert.equal('targets: target "alice": attributes: expected an object, got "x"',
      refused(function(d) d.targets[1].attributes = "x" end))
    assert.equal('target groups: target group "beta-testers": its rules refer back to it through segmentMatch'
      .. ' (beta-testers -> uk-users -> beta-testers)', refused(function(d)
        d.segments[1].rules[1] = { op = "segmentMatch", attribute = "", values = { "uk-users" } }
        d.segments[2].servingRules = { { clauses = { { op = "segmentMatch", values = { "beta-testers" } } } } }
      end))
  end)

  it("fills absent lists with [] and writes lists as [] and objects as {}", function()
    local json = require "relay.json"
    local f = sample().flags[2]
    f.rules, f.prerequisites, f.variationToTargetMap = json.decode("{}"), nil, cjson.null
    local data = { flags = { f }, targets = { { identifier = "t", attributes = json.decode("[]") } } }
    assert.is_true((harness.check(data)))
    local out = json.encode(data)
    for _, want in ipairs { '"rules":[]', '"prerequisites":[]', '"variationToTargetMap":[]', '"segments":[]',
                            '"attributes":{}' } do
      assert.truthy(out:find(want, 1, true), want .. " not in " .. out)
    end
  end)
end)
