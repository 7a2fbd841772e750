-- The rockspec: `luarocks make` installs the binary and the relay library (Lua modules and the
-- relay.core C module) into a tree, and a script author's busted specs in a scratch directory,
-- outside this repository, use them: one through relay.test and the binary, one in plain busted
-- with no relayhost process at all.
local helpers = require "helpers"

describe("rocks/relayhost rockspec", function()
  it("installs a tree in which a scratch project's busted spec runs its script", function()
    local tmp = helpers.tmpdir()
    local tree, project = tmp .. "/tree", tmp .. "/project"
    local rockspec = assert(io.popen("ls rocks/relayhost-*.rockspec")):read("*l")
    local ok = os.execute(("luarocks --lua-version=5.1 --tree %q make %q >%q/make.log 2>&1")
      :format(tree, rockspec, tmp))
    assert(ok == 0 or ok == true, "luarocks make failed:\n" .. helpers.read_file(tmp .. "/make.log"))

    os.execute(("mkdir -p %q/spec %q/plain"):format(project, project))
    helpers.write_file(project .. "/hello.lua", [[
local relay = require "relay"
local app = relay.new { name = "hello", flags = { greeting = { default = "hello", env = "GREETING" } } }
app:get("/greet/:who", function(req, res) res:send(200, app.flags.greeting .. " " .. req.params.who) end)
return app
]])
    helpers.write_file(project .. "/spec/hello_spec.lua", [[
local test = require "relay.test"
describe("hello.lua", function()
  local host
  setup(function() host = test.start("hello.lua", { env = { GREETING = "hi" } }) end)
  teardown(function() assert.equal(0, host:stop()) end)
  it("greets", function()
    local res = host:get("/greet/ada")
    assert.equal(200, res.status)
    assert.equal("hi ada", res.body)
  end)
end)
]])
    -- Only the tree: no RELAYHOST_BIN, no LUA_PATH into this repository.
    local cmd = ("cd %q && eval \"$(luarocks --lua-version=5.1 --tree %q path)\" && " ..
      "PATH=%q/bin:$PATH env -u RELAYHOST_BIN -u RELAYHOST_LUA_PATH luajit /usr/bin/busted -o TAP spec >%q/busted.log 2>&1")
      :format(project, tree, tree, tmp)
    local rc = os.execute(cmd)
    local out = helpers.read_file(tmp .. "/busted.log")
    assert(rc == 0 or rc == true, "the scratch spec failed:\n" .. out)
    assert.matches("ok 1 %- hello.lua greets", out)
    assert.matches("1%.%.1", out)

    -- Plain busted: `require "relay"` takes relay.core from the tree's C module. No relayhost on
    -- PATH and no RELAYHOST_BIN: nothing here may start one.
    helpers.write_file(project .. "/plain/hello_plain_spec.lua", [[
local relay = require "relay"
local test = require "relay.test"
local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end
describe("relay without relayhost", function()
  it("takes relay.core from the tree's C module", function()
    assert.matches("/lib/lua/5%.1/relay/core%.so$", package.searchpath("relay.core", package.cpath))
  end)
  it("hashes, encodes and signs", function()
    assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", hex(relay.crypto.sha256("abc")))
    assert.equal("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
                 hex(relay.crypto.hmac_sha256("Jefe", "what do ya want for nothing?")))
    assert.equal("aGVsbG8/Pg==", relay.base64.encode("hello?>"))
    assert.equal("hello?>", relay.base64.decode("aGVsbG8_Pg"))
    local token = relay.jwt.sign({ sub = "ada", exp = relay.time() + 60 }, "s3cret")
    assert.equal("ada", assert(relay.jwt.verify(token, "s3cret")).sub)
    assert.is_nil((relay.jwt.verify(token, "wrong")))
    assert.matches("^%x+%-%x+%-4%x+%-%x+%-%x+$", relay.uuid())
    assert.equal('{"a":[1,2]}', relay.json.encode({ a = { 1, 2 } }))
  end)
  it("loads the script: flags from argv and env, routes recorded, a handler run with stand-ins", function()
    local app = test.load("hello.lua", { "--greeting", "hey" })
    assert.equal("hey", app.flags.greeting)
    assert.equal("hi", test.load("hello.lua").flags.greeting) -- GREETING=hi in the environment
    assert.equal(1, #app._routes)
    assert.equal("GET", app._routes[1].method)
    assert.equal("/greet/:who", app._routes[1].pattern)
    local sent
    app._routes[1].fn({ params = { who = "ada" } }, { send = function(_, status, body) sent = status .. " " .. body end })
    assert.equal("200 hey ada", sent)
  end)
  it("says which functions run only inside relayhost", function()
    local ok, err = pcall(relay.sleep, 0.01)
    assert.is_false(ok)
    assert.matches("relay.core.sleep runs only inside relayhost", err, 1, true)
    ok, err = pcall(relay.http.request, { url = "http://127.0.0.1:9/" })
    assert.is_false(ok)
    assert.matches("relay.core.http_request runs only inside relayhost", err, 1, true)
  end)
end)
]])
    cmd = ("cd %q && eval \"$(luarocks --lua-version=5.1 --tree %q path)\" && GREETING=hi " ..
      "env -u RELAYHOST_BIN -u RELAYHOST_LUA_PATH luajit /usr/bin/busted -o TAP plain >%q/plain.log 2>&1")
      :format(project, tree, tmp)
    rc = os.execute(cmd)
    out = helpers.read_file(tmp .. "/plain.log")
    assert(rc == 0 or rc == true, "the plain busted spec failed:\n" .. out)
    assert.matches("1%.%.4", out)
    assert.not_matches("not ok", out)

    -- the C module is the tree's, links no libluajit (luajit provides Lua) and exports one symbol
    local so = tree .. "/lib/lua/5.1/relay/core.so"
    local ldd = assert(io.popen(("ldd %q 2>&1"):format(so))):read("*a")
    assert.matches("libuv", ldd)
    assert.not_matches("luajit", ldd)
    local exports = assert(io.popen(("nm -D --defined-only %q 2>&1"):format(so))):read("*a")
    assert.matches("^%x+ T luaopen_relay_core\n$", exports)

    -- the installed binary takes its Lua half from the tree, not from this checkout
    helpers.write_file(project .. "/where.lua", 'error("relay is " .. package.searchpath("relay", package.path))\n')
    local where = assert(io.popen(("%q/bin/relayhost check %q/where.lua 2>&1"):format(tree, project))):read("*a")
    assert.matches("relay is " .. tree:gsub("%p", "%%%0") .. "/bin/%.%./share/lua/5%.1/relay/init%.lua", where)
  end)
end)
