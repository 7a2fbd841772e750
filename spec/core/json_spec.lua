-- relay.json (lua/relay/json.lua): one mark for arrays, a metatable. json.array(t) sets it,
-- decode() sets it on every array it reads, encode() writes a marked empty table as []. No text
-- marker is patched in, so no string a peer sends can turn into [] (the flag proxy's random and
-- the workspace relay's fixed marker, the git tunnel's gsub). Pure Lua: no host needed.
local json = require "relay.json"
local cjson = require "cjson"

-- Re-read with cjson so that key order does not matter.
local function same_json(expected, text)
  assert.same(cjson.decode(expected), cjson.decode(text))
  -- and the shape: which empties are arrays (cjson reads [] and {} alike)
  local shape = function(s) return (s:gsub("\\.", ""):gsub('"[^"]*"', ""):gsub("[^%[%]{}]", "")) end
  local a, b = {}, {}
  for c in shape(expected):gmatch(".") do a[c] = (a[c] or 0) + 1 end
  for c in shape(text):gmatch(".") do b[c] = (b[c] or 0) + 1 end
  assert.same(a, b, text)
end

describe("relay.json", function()
  it("writes a table marked with json.array as [], empty or not; an unmarked empty table as {}", function()
    assert.equal("[]", json.encode(json.array()))
    assert.equal("[]", json.encode(json.array({})))
    assert.equal("{}", json.encode({}))
    assert.equal("[1,2]", json.encode(json.array({ 1, 2 })))
    same_json('{"a":[],"b":{},"c":[[],1],"d":{"e":[[[]]]}}',
      json.encode({ a = json.array(), b = {}, c = { json.array(), 1 }, d = { e = { { json.array() } } } }))
    local t = {}
    assert.equal(t, json.array(t))
    assert.is_true(json.is_array(t))
    assert.is_false(json.is_array({}))
  end)

  it("reads every array with the mark, so what it reads is written back as it was", function()
    local text = '{"a":[],"b":{},"c":[[],{}],"d":"[]","e":[1,[],{"x":[ \n]}],"f":[{"g":{}}],"h":null}'
    local v = json.decode(text)
    assert.is_true(json.is_array(v.a))
    assert.is_false(json.is_array(v.b))
    assert.is_true(json.is_array(v.c) and json.is_array(v.c[1]))
    assert.is_false(json.is_array(v.c[2]))
    assert.equal("[]", v.d)
    assert.equal(json.null, v.h)
    same_json(text, json.encode(v))
    assert.equal("[]", json.encode(json.decode("[]")))
    assert.equal("[]", json.encode(json.decode(" [ ] ")))
    assert.equal("{}", json.encode(json.decode("{}")))
  end)

  it("decode_table gives an object or array, else nil and why", function()
    assert.same({ a = 1 }, json.decode_table('{"a":1}'))
    assert.is_true(json.is_array(json.decode_table("[]")))
    local v, why = json.decode_table("{nope")
    assert.is_nil(v)
    assert.is_string(why)
    v, why = json.decode_table('"text"')
    assert.is_nil(v)
    assert.equal("not a JSON object or array", why)
    assert.is_nil((json.decode_table("null")))
    assert.is_nil((json.decode_table("1e999")))
    assert.is_nil((json.decode_table(nil)))
  end)

  it("keeps an array an array when it is emptied after reading", function()
    local v = json.decode('{"rules":[{"x":1}]}')
    table.remove(v.rules)
    assert.equal('{"rules":[]}', json.encode(v))
  end)

  it("is not fooled by brackets, quotes and escapes inside strings and keys", function()
    for _, text in ipairs {
      '{"k\\"[]":[],"q":"a\\\\","r":[  ],"s":"\\"{}\\""}',
      '{"[]":{},"{}":[],"\\u005bx\\u005d":[]}',
      '[["]",[]],{"a]":{}},"[",[]]',
    } do
      same_json(text, json.encode(json.decode(text)))
    end
  end)

  it("reads a repeated key as cjson does: the last one wins, array or object", function()
    assert.equal('{"a":{}}', json.encode(json.decode('{"a":[],"a":{}}')))
    assert.equal('{"a":[]}', json.encode(json.decode('{"a":{},"a":[]}')))
    assert.equal('{"a":{"b":{}}}', json.encode(json.decode('{"a":{"b":[]},"a":{"b":{}}}')))
    assert.equal('{"[]":[]}', json.encode(json.decode('{"[]":{},"\\u005b\\u005d":[]}'))) -- the same key, escaped
  end)

  it("never turns a string into [] (a string equal to an old marker stays a string)", function()
    for _, s in ipairs { "\0empty-array\0", "[]", '"result":{}' } do
      local text = json.encode({ [s] = s, list = json.array(), result = {} })
      local back = cjson.decode(text)
      assert.equal(s, back[s])
      assert.same({}, back.result)
      assert.matches('"result":{}', text, 1, true)
      assert.matches('"list":[]', text, 1, true)
    end
  end)

  it("refuses NaN and Infinity, as literals and as numbers that overflow", function()
    for _, text in ipairs { "NaN", "Infinity", "-Infinity", "[1e999]", '{"a":{"b":[-1e999]}}', "1e999", "0x10",
                            "[1E+0400]", "[2.5e00309]", "[" .. ("9"):rep(400) .. "]", '{"a":[1,{"b":-' .. ("1"):rep(320) .. '.5}]}' } do
      local ok, err = pcall(json.decode, text)
      assert.is_false(ok, text)
      assert.is_string(err)
    end
    assert.matches("Inf or NaN", select(2, pcall(json.decode, '{"n":1e400}')))
    assert.is_false(pcall(json.encode, { n = math.huge }))
    assert.is_false(pcall(json.encode, { json.array(), n = 0 / 0 }))
    assert.equal(1e308, json.decode("1e308"))
    assert.same({ 0, 1e99, 1.5e-300, "1e999" }, json.decode('[1e-999, 1e99, 1.5e-300, "1e999"]'))
    assert.same({ tonumber(("9"):rep(190)) }, json.decode("[" .. ("9"):rep(190) .. "]"))
  end)

  it("raises on text that is not JSON, and on tables JSON cannot hold", function()
    for _, text in ipairs { "", "{", "[1,]", "{'a':1}", "[] x" } do
      assert.is_false(pcall(json.decode, text), text)
    end
    assert.is_false(pcall(json.encode, { f = function() end, e = json.array() }))
    assert.is_false(pcall(json.encode, { [true] = 1, e = json.array() }))
    local ok, err = pcall(json.encode, json.array({ 1, x = json.array() }))
    assert.is_false(ok)
    assert.matches("not an index", err)
    local cycle = { e = json.array() }
    cycle.self = cycle
    assert.is_false(pcall(json.encode, cycle))
  end)

  it("writes arrays with holes as cjson does (null), and refuses very sparse ones", function()
    assert.equal('[1,null,3,[]]', json.encode({ 1, nil, 3, json.array() }))
    assert.is_false(pcall(json.encode, { [1] = json.array(), [100] = 1 }))
    assert.equal('{"1":[],"x":1}', json.encode({ [1] = json.array(), x = 1 }):gsub('^{"x":1,"1":%[%]}$', '{"1":[],"x":1}'))
  end)

  it("keeps cjson's scalars and null", function()
    assert.equal('"a\\"b"', json.encode('a"b'))
    assert.equal("null", json.encode(json.null))
    assert.equal("true", json.encode(true))
    assert.equal(cjson.null, json.null)
    assert.equal("x", json.decode('"x"'))
  end)

  it("canon: equal for equal values whatever the key order, different otherwise", function()
    local a = json.decode('{"x":1,"y":[1,{"p":"q","r":"s"}],"z":"w"}')
    local b = json.decode('{"z":"w","y":[1,{"r":"s","p":"q"}],"x":1}')
    assert.equal(json.canon(a), json.canon(b))
    assert.are_not.equal(json.canon(a), json.canon(json.decode('{"x":1,"y":[1,{"p":"q","r":"t"}],"z":"w"}')))
    assert.are_not.equal(json.canon({ "1" }), json.canon({ 1 }))
  end)

  it("round-trips random documents: every array and object comes back as it was", function()
    math.randomseed(16)
    local chars = { "a", "[", "]", "{", "}", '"', "\\", ",", ":", " ", "\n", "é", "\0", "1e999" }
    local function str()
      local out = {}
      for i = 1, math.random(0, 4) do out[i] = chars[math.random(#chars)] end
      return table.concat(out)
    end
    local function value(depth)
      local r = math.random(depth > 4 and 4 or 7)
      if r == 1 then return str() elseif r == 2 then return math.random(-1000, 1000) / 8
      elseif r == 3 then return math.random(2) == 1 elseif r == 4 then return json.null end
      local t = r == 5 and json.array() or {}
      for i = 1, math.random(0, 4) do
        if r == 5 then t[i] = value(depth + 1) else t[str() .. i] = value(depth + 1) end
      end
      return t
    end
    -- the same value, with every table's kind spelled out (cjson cannot tell an empty one)
    local function kinds(v)
      if type(v) ~= "table" then return v end
      local out = { kind = json.is_array(v) and "array" or "object" }
      for k, x in pairs(v) do out[tostring(k)] = kinds(x) end
      return out
    end
    for _ = 1, 300 do
      local v = { root = value(1), list = json.array({ value(1), value(1) }) }
      local text = json.encode(v)
      local back = json.decode(text)
      assert.same(kinds(v), kinds(back), text)
      assert.equal(#text, #json.encode(back))
      assert.same(cjson.decode(text), cjson.decode(json.encode(back)))
    end
  end)

  it("reads a large text with many empty arrays in one pass (bounded time)", function()
    local items = {}
    for i = 1, 20000 do items[i] = { id = "f" .. i, rules = json.array(), tags = json.array(), o = {} } end
    local text = json.encode({ items = items })
    local t0 = os.clock()
    local v = json.decode(text)
    assert.is_true(os.clock() - t0 < 5)
    assert.is_true(json.is_array(v.items[20000].rules))
    assert.is_false(json.is_array(v.items[20000].o))
    assert.equal(text:len(), json.encode(v):len())
  end)

  it("indents encoded text for people, strings (with quotes, brackets, commas) untouched", function()
    local text = json.encode({ a = json.array({ 1, { b = 'x,"y:[]{}\\' } }), e = json.array(), o = {} })
    local out = json.indent(text)
    assert.same(json.decode(text), json.decode(out))
    assert.truthy(out:find('\n  "a": [\n    1,\n    {\n      "b": "x,\\"y:[]{}\\\\"\n    }\n  ]', 1, true), out)
    assert.truthy(out:find('"e": []', 1, true), out)
    assert.truthy(out:find('"o": {}', 1, true), out)
    assert.equal("5", json.indent("5"))
  end)
end)
