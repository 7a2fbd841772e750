-- relay/core.so (core/lua/module.c): relay.core as a C module for a plain LuaJIT, outside
-- relayhost, taken from the build tree beside $RELAYHOST_BIN. It links no libluajit (the lua_*
-- symbols come from the luajit that loads it) and exports only luaopen_relay_core; in a plain
-- luajit every function of its table returns or raises a Lua error, never crashes, and the ones
-- that need the host's loop raise an error that names them.
local helpers = require "helpers"

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("*a")
  p:close()
  return out
end

local build = helpers.bin():match("^(.*)/[^/]+$")
local module = build and build .. "/relay/core.so"

-- An ASan build's module needs the sanitizer runtime loaded first in a luajit that has none.
local function preload_for(so)
  local asan = sh(("ldd %q"):format(so)):match("(/%S*libasan%.so[%.%d]*)")
  return asan and ("LD_PRELOAD=%q "):format(asan) or ""
end

-- What runs without the host (core/lua/module.c's list), the rest raises.
local hostless = {
  set_classes = true, sha256 = true, hmac_sha256 = true, random = true, constant_time_equal = true,
  base64_encode = true, base64_decode = true, uuid = true, jws_verify = true, time = true, pid = true,
  log = true, metric_register = true, metrics_render = true, dict_open = true, fs_list = true, url_parse = true,
}

describe("relay/core.so", function()
  setup(function()
    assert(module and io.open(module), "no relay/core.so beside $RELAYHOST_BIN (" .. helpers.bin() .. ")")
  end)

  it("links no libluajit and exports only luaopen_relay_core; lua_* come from the executable", function()
    local ldd = sh(("ldd %q"):format(module))
    assert.not_matches("luajit", ldd)
    assert.matches("libuv", ldd)
    local defined = {}
    for name in sh(("nm -D --defined-only %q"):format(module)):gmatch("%x+ [TDBR] ([%w_]+)") do
      if not name:match("^_") then defined[#defined + 1] = name end
    end
    assert.same({ "luaopen_relay_core" }, defined)
    local undefined = sh(("nm -D --undefined-only %q"):format(module))
    assert.matches(" U lua_pushstring\n", undefined)
    assert.matches(" U luaL_register\n", undefined)
  end)

  it("answers every function with a result or a Lua error in a plain luajit, never a crash", function()
    local tmp = helpers.tmpdir()
    local cmd = ("cd %q && %sLUA_CPATH=%q LUA_PATH=%q luajit %q >%q/out 2>%q/err; echo $?"):format(
      helpers.root, preload_for(module), build .. "/?.so;;",
      helpers.root .. "/lua/?.lua;" .. helpers.root .. "/lua/?/init.lua;;",
      helpers.fixture("core_every_function.lua"), tmp, tmp)
    local rc = sh(cmd):match("%d+")
    local out, err = helpers.read_file(tmp .. "/out"), helpers.read_file(tmp .. "/err")
    assert.equal("0", rc, "luajit exited " .. tostring(rc) .. ":\n" .. out .. err)
    local total = tonumber(out:match("\ndone (%d+)%s*$"))
    assert.truthy(total and total > 80, out)

    local seen, fns = {}, 0
    for kind, name, what, rest in out:gmatch("(%a+) (%S+) (%a+) ([^\n]*)\n") do
      if kind == "fn" then
        fns, seen[name] = fns + 1, what
        if hostless[name] then
          if name ~= "set_classes" then assert.equal("ok", what, name .. ": " .. rest) end
        else
          assert.equal("raised", what, name)
          assert.matches("relay.core." .. name .. " runs only inside relayhost", rest, 1, true)
          assert.matches("relay.test", rest, 1, true)
        end
      end
    end
    assert.truthy(fns >= 35, out)
    for _, name in ipairs { "sleep", "timer", "route_add", "http_request", "ws_connect", "redis_open",
                            "sse_publish", "tunnel_attach", "hub_new", "proxy_new", "now", "generation" } do
      assert.equal("raised", seen[name], name)
    end
    for name in pairs(hostless) do assert.truthy(seen[name], name) end
    assert.not_matches("AddressSanitizer", err)
    assert.not_matches("runtime error", err)
  end)
end)
