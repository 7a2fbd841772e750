-- The rockspec: `luarocks make` installs the binary and the relay library into a tree, and a
-- script author's busted spec in a scratch directory, outside this repository, uses them.
local helpers = require "helpers"

describe("rocks/relayhost rockspec", function()
  it("installs a tree in which a scratch project's busted spec runs its script", function()
    local tmp = helpers.tmpdir()
    local tree, project = tmp .. "/tree", tmp .. "/project"
    local rockspec = assert(io.popen("ls rocks/relayhost-*.rockspec")):read("*l")
    local ok = os.execute(("luarocks --lua-version=5.1 --tree %q make %q >%q/make.log 2>&1")
      :format(tree, rockspec, tmp))
    assert(ok == 0 or ok == true, "luarocks make failed:\n" .. helpers.read_file(tmp .. "/make.log"))

    os.execute(("mkdir -p %q/spec"):format(project))
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

    -- the installed binary takes its Lua half from the tree, not from this checkout
    helpers.write_file(project .. "/where.lua", 'error("relay is " .. package.searchpath("relay", package.path))\n')
    local where = assert(io.popen(("%q/bin/relayhost check %q/where.lua 2>&1"):format(tree, project))):read("*a")
    assert.matches("relay is " .. tree:gsub("%p", "%%%0") .. "/bin/%.%./share/lua/5%.1/relay/init%.lua", where)
  end)
end)
