-- relay.fs (lua/relay/fs.lua over core/lua/lua_fs.c): a directory's names through libc's
-- readdir in C, where the flag proxy declared glibc's struct dirent to LuaJIT's FFI; mkdir,
-- read and write beside it; relay.terminate() ends the process as SIGTERM does. The checks run
-- inside the host (`relayhost check` runs on_init), where relay.core is the host's own.
local helpers = require "helpers"

local CHECKS = [=[
local relay = require "relay"
local fs = require "relay.fs"
local dir = assert(os.getenv("FS_DIR"))
local app = relay.new {}

local function fails(want, ...)
  local v, err = ...
  assert(v == nil, "succeeded: " .. tostring(v))
  assert(tostring(err):find(want, 1, true), "error " .. tostring(err) .. " lacks " .. want)
end

app:on_init(function()
  assert(relay.fs == fs)
  -- list: sorted, without . and .., every kind of entry, names as they are
  local empty = dir .. "/empty"
  assert(fs.mkdir(empty) == true)
  assert(#assert(fs.list(empty)) == 0)
  local d = dir .. "/d"
  assert(fs.mkdir(d, tonumber("700", 8)))
  local names = { "b.json", "a.json", "Z", ".hidden", "with space", ("n"):rep(255), "é" }
  for _, n in ipairs(names) do assert(fs.write(d .. "/" .. n, n) == true) end
  assert(fs.mkdir(d .. "/sub"))
  table.insert(names, "sub")
  table.sort(names)
  local got = assert(fs.list(d))
  assert(#got == #names, #got .. " names, not " .. #names)
  for i = 1, #names do assert(got[i] == names[i], tostring(got[i]) .. " ~= " .. names[i]) end
  -- many entries: every one, in order
  local many = dir .. "/many"
  assert(fs.mkdir(many))
  for i = 1, 3000 do assert(fs.write(("%s/f%05d"):format(many, i), "")) end
  got = assert(fs.list(many))
  assert(#got == 3000 and got[1] == "f00001" and got[3000] == "f03000", #got)
  -- errors name the path and why
  fails("cannot read directory " .. dir .. "/absent: No such file or directory", fs.list(dir .. "/absent"))
  fails("cannot read directory " .. d .. "/a.json: Not a directory", fs.list(d .. "/a.json"))
  -- mkdir: an existing directory is fine, a file in the way is not
  assert(fs.mkdir(d) == true)
  fails("cannot create " .. d .. "/a.json: Not a directory", fs.mkdir(d .. "/a.json"))
  fails("cannot create " .. dir .. "/absent/x: No such file or directory", fs.mkdir(dir .. "/absent/x"))
  -- read/write: bytes as they are
  local bytes = "a\0b\r\n\255" .. ("x"):rep(100000)
  assert(fs.write(d .. "/bin", bytes) == true)
  assert(fs.read(d .. "/bin") == bytes)
  fails("cannot read " .. dir .. "/absent", fs.read(dir .. "/absent"))
  fails("cannot write " .. dir .. "/absent/x", fs.write(dir .. "/absent/x", "x"))
  fails("cannot read " .. d, fs.read(d))
end)
return app
]=]

describe("relay.fs", function()
  it("lists, makes, reads and writes, with errors that name the path", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/fs_check.lua", CHECKS)
    local rc, out, err = helpers.run({ "check", dir .. "/fs_check.lua" }, { FS_DIR = dir })
    assert.equal(0, rc, out .. err)
  end)

  it("relay.terminate() ends the process as SIGTERM does: a drain, exit 0", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/term.lua", [[
      local relay = require "relay"
      local app = relay.new { name = "term" }
      app:get("/stop", function(_, res) res:send(200, "bye"); relay.terminate() end)
      return app
    ]])
    local host = helpers.start(dir .. "/term.lua")
    assert.equal("bye", host:get("/stop").body)
    helpers.wait_until(function() return host:exited() end, 10, "the host to exit")
    assert.equal(0, host:exited())
    assert.matches("SIGTERM", host:log())
  end)
end)
