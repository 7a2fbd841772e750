-- relay.flag.validate: the one check of a flag config against the shape the SDKs and the
-- evaluator rely on (issue 14.11), relay.harness's check plus key hashes, sources and the
-- no-flags refusal. Pure Lua: no host needed.
local validate = require "relay.flag.validate"
local evaluator = require "relay.harness"
local cjson = require "cjson"
local json = require "relay.json"

local function read(path) local f = assert(io.open(path)); local s = f:read("*a"); f:close(); return s end
local SAMPLE = cjson.decode(read("spec/fixtures/ff-test-cases/sample.json"))
local KEY_HASH = ("ab"):rep(32)

local function copy(v) return cjson.decode(cjson.encode(v)) end

-- The sample config with one flag (by id) changed by fn; checked as feature_config.json.
local function check_flag(feature, fn, data)
  data = data or { flags = copy(SAMPLE.flags), segments = copy(SAMPLE.segments), targets = copy(SAMPLE.targets), keys = { KEY_HASH } }
  for _, f in ipairs(data.flags) do if f.feature == feature then fn(f) end end
  data.sources = { flags = "env-x/feature_config.json", segments = "env-x/segments.json" }
  return validate.envs({ x = data })
end

describe("relay.flag.validate", function()
  it("accepts every fixture config, and filling in nothing they carry", function()
    local p = io.popen("ls spec/fixtures/ff-test-cases/*.json")
    for path in p:lines() do
      local cases = cjson.decode(read(path))
      local data = { flags = cases.flags, segments = cases.segments, targets = cases.targets, keys = { KEY_HASH } }
      local before = cjson.encode(data)
      assert.same({ true }, { validate.envs({ e = data }) }, path)
      assert.equal(#cjson.decode(before).flags, #data.flags)
    end
    p:close()
    assert.is_true((validate.envs({ x = { flags = copy(SAMPLE.flags) } })))
  end)

  it("names the file, the flag and the field of what does not fit", function()
    local cases = {
      { "dark-mode", function(f) f.rules = 5 end, 'env-x/feature_config.json: flag "dark-mode": rules: expected an array, got 5' },
      { "dark-mode", function(f) f.variations = nil end, 'flag "dark-mode": variations: expected a non-empty array, got nothing' },
      { "dark-mode", function(f) f.variations = {} end, 'flag "dark-mode": variations: expected a non-empty array, got 0 items' },
      { "dark-mode", function(f) f.defaultServe = nil end, 'flag "dark-mode": defaultServe: expected an object, got nothing' },
      { "dark-mode", function(f) f.defaultServe = {} end, 'flag "dark-mode": defaultServe: expected a variation or a distribution, got an empty object or array' },
      { "dark-mode", function(f) f.defaultServe.variation = "maybe" end,
        'flag "dark-mode": defaultServe.variation: expected one of the flag\'s variations, got "maybe"' },
      { "dark-mode", function(f) f.offVariation = nil end, 'flag "dark-mode": offVariation: expected a non-empty string, got nothing' },
      { "dark-mode", function(f) f.state = "enabled" end, 'flag "dark-mode": state: expected "on" or "off", got "enabled"' },
      { "dark-mode", function(f) f.kind = "bool" end, 'flag "dark-mode": kind: expected one of "boolean", "int", "string", "json", got "bool"' },
      { "dark-mode", function(f) f.rules[1].clauses[1].values = "beta-testers" end,
        'flag "dark-mode": rules[1].clauses[1].values: expected an array, got "beta-testers"' },
      { "dark-mode", function(f) f.rules[1].clauses[1].values = { 7 } end,
        'flag "dark-mode": rules[1].clauses[1].values[1]: expected a string, got 7' },
      { "dark-mode", function(f) f.rules[1].clauses[1].op = nil end,
        'flag "dark-mode": rules[1].clauses[1].op: expected a non-empty string, got nothing' },
      { "dark-mode", function(f) f.rules[1].serve = "true" end, 'flag "dark-mode": rules[1].serve: expected an object, got "true"' },
      { "dark-mode", function(f) f.variationToTargetMap[1].targets = { "alice" } end,
        'flag "dark-mode": variationToTargetMap[1].targets[1]: expected an object, got "alice"' },
      { "dark-mode", function(f) f.prerequisites = { { feature = "x", variations = "true" } } end,
        'flag "dark-mode": prerequisites[1].variations: expected an array, got "true"' },
      { "dark-mode", function(f) f.variations[2].identifier = "true" end,
        'flag "dark-mode": variations[2].identifier: "true" appears twice' },
      { "theme-config", function(f) f.variations[1].value = "{not json" end, 'flag "theme-config": variations[1].value: expected JSON text (kind json), got "{not json"' },
      { "max-items", function(f) f.variations[1].value = "ten" end, 'flag "max-items": variations[1].value: expected a number (kind int), got "ten"' },
      { "rollout-percent", function(f) f.defaultServe.distribution.variations[1].weight = "50" end,
        'flag "rollout-percent": defaultServe.distribution.variations[1].weight: expected a number >= 0, got "50"' },
      { "rollout-percent", function(f) f.defaultServe.distribution.variations = {} end,
        'flag "rollout-percent": defaultServe.distribution.variations: expected a non-empty array, got 0 items' },
    }
    for _, c in ipairs(cases) do
      local ok, err = check_flag(c[1], c[2])
      assert.is_nil(ok, c[3])
      assert.truthy(err:find(c[3], 1, true), ("want %s\n got %s"):format(c[3], err))
    end
  end)

  it("names items without an id, repeated ids, and bad target groups, targets and keys", function()
    local function with(fn)
      local data = { flags = copy(SAMPLE.flags), segments = copy(SAMPLE.segments), targets = copy(SAMPLE.targets), keys = { KEY_HASH },
                     sources = { flags = "F", segments = "S", targets = "T", keys = "K" } }
      fn(data)
      local ok, err = validate.envs({ x = data })
      assert.is_nil(ok)
      return err
    end
    assert.equal('F: item 2: feature: expected a non-empty string, got nothing', with(function(d) d.flags[2].feature = nil end))
    assert.equal('F: item 1: expected an object, got 1', with(function(d) d.flags[1] = 1 end))
    assert.equal('F: expected an array, got an object', with(function(d) d.flags = { a = 1 } end))
    assert.equal('F: item 2: feature: "banner-text" appears twice', with(function(d) d.flags[1].feature = "banner-text" end))
    assert.equal('S: target group "beta-testers": rules: expected an array, got 5', with(function(d) d.segments[1].rules = 5 end))
    assert.equal('S: target group "beta-testers": included[1].identifier: expected a non-empty string, got nothing',
      with(function(d) d.segments[1].included = { {} } end))
    assert.equal('S: target group "uk-users": servingRules[1].clauses: expected an array, got "x"',
      with(function(d) d.segments[2].servingRules = { { clauses = "x" } } end))
    assert.equal('S: target group "beta-testers": its rules refer back to it through segmentMatch (beta-testers -> uk-users -> beta-testers)',
      with(function(d)
        d.segments[1].rules[1] = { op = "segmentMatch", attribute = "", values = { "uk-users" } }
        d.segments[2].servingRules = { { clauses = { { op = "segmentMatch", values = { "beta-testers" } } } } }
      end))
    assert.equal('T: target "alice": attributes: expected an object, got "x"', with(function(d) d.targets[1].attributes = "x" end))
    assert.equal('K: item 1: expected a sha256 hex string (64 hex digits), got "k"', with(function(d) d.keys = { "k" } end))
  end)

  it("refuses a config with no flags at all unless allow_empty, counting other environments", function()
    local ok, err = validate.envs({ x = { flags = {} } }, { where = "/config" })
    assert.is_nil(ok)
    assert.truthy(err:find("/config: no flags at all", 1, true), err)
    assert.truthy(err:find("ALLOW_EMPTY", 1, true), err)
    assert.is_nil((validate.envs({})))
    assert.is_true((validate.envs({ x = { flags = {} } }, { allow_empty = true })))
    assert.is_true((validate.envs({ x = { flags = {} } }, { flags_elsewhere = 3 })))
  end)

  it("fills absent or null lists with [] (the SDKs iterate them)", function()
    local f = copy(SAMPLE.flags[2])
    f.rules, f.prerequisites, f.variationToTargetMap = nil, cjson.null, nil
    local data = { flags = { f }, segments = { { identifier = "s" } } }
    assert.is_true((validate.envs({ x = data })))
    assert.same({}, f.rules); assert.same({}, f.prerequisites); assert.same({}, f.variationToTargetMap)
    assert.same({}, data.segments[1].included); assert.same({}, data.segments[1].rules)
    assert.same({}, data.targets); assert.same({}, data.keys)
  end)

  it("decides what is written back: lists as [] even when empty or read as {}, objects as {} even when read as []", function()
    local data = json.decode(('{"flags":[%s],"targets":[{"identifier":"t","attributes":[]}],"keys":[]}')
      :format(cjson.encode(SAMPLE.flags[2])))
    local f = data.flags[1]
    f.rules, f.prerequisites, f.variationToTargetMap = json.decode("{}"), nil, cjson.null
    assert.is_true((validate.envs({ x = data })))
    local out = json.encode(data)
    for _, want in ipairs { '"rules":[]', '"prerequisites":[]', '"variationToTargetMap":[]', '"segments":[]',
                            '"keys":[]', '"attributes":{}' } do
      assert.truthy(out:find(want, 1, true), want .. " not in " .. out)
    end
  end)

  it("passes only flags that evaluate to one of their variations", function()
    local data = { flags = copy(SAMPLE.flags), segments = copy(SAMPLE.segments) }
    assert.is_true((validate.envs({ x = data })))
    local ctx = { flags = {}, segments = {} }
    for _, f in ipairs(data.flags) do ctx.flags[f.feature] = f end
    for _, s in ipairs(data.segments) do ctx.segments[s.identifier] = s end
    for _, f in ipairs(data.flags) do
      for _, t in ipairs(SAMPLE.targets) do assert.truthy(evaluator.evaluate(ctx, f, t), f.feature) end
    end
  end)
end)
