-- luarocks make rocks/relayhost-0.1.0-1.rockspec  (from the repository's top directory)
-- Installs, for script authors who run busted on their own scripts outside this repository:
--   bin/relayhost                   the host (relay.test starts it for a spec)
--   share/lua/5.1/relay/...         the Lua half of the `relay` library (relay, relay.test, ...)
--   lib/lua/5.1/relay/core.so       its C half, relay.core, for a plain luajit: `require "relay"`
--                                   works in busted without a relayhost process. Outside the host
--                                   the pure functions work (crypto, base64, uuid, jwt, time, log,
--                                   metrics, shared dictionaries) and relay.new/app:get record flags
--                                   and routes; what needs the event loop (sleep, timers, HTTP,
--                                   WebSockets, Redis, SSE, tunnels, proxies) raises an error
--                                   naming it. The module links no libluajit: luajit provides Lua.
-- Build dependencies are Debian's: run tools/deps first.
rockspec_format = "3.0"
package = "relayhost"
version = "0.1.0-1"
source = {
  url = "git+file:///nonexistent/relayhost", -- `luarocks make` builds the checkout it runs in
}
description = {
  summary = "A relay host in C, scripted in Lua",
  detailed = [[
relayhost serves HTTP/1.1, WebSocket and TLS from a libuv loop and runs Lua scripts for routing,
policies and state; scripts reload on SIGHUP without dropping connections. This rock installs the
relayhost binary and the relay library (its Lua modules and the relay.core C module), including
relay.test for busted specs.]],
}
-- From Debian, not listed here because luarocks would try to fetch them from the rocks server
-- (tools/deps installs both): lua-cjson (`require "cjson"`, which relay needs in a plain Lua; the
-- host has it built in) and lua-socket (luasocket, for relay.test).
dependencies = {
  "lua ~> 5.1", -- LuaJIT
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    RELAYHOST_LUADIR = "$(LUADIR)",
    RELAYHOST_LIBDIR = "$(LIBDIR)",
    RELAYHOST_TESTS = "OFF",
  },
}
