-- luarocks make rocks/relayhost-0.1.0-1.rockspec  (from the repository's top directory)
-- Installs the relayhost binary (the C half of the `relay` module: relay.core lives in the host)
-- and the Lua half (relay, relay.test, ...), so that script authors can run busted on their own
-- scripts outside this repository. Build dependencies are Debian's: run tools/deps first.
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
relayhost binary and the relay Lua library, including relay.test for busted specs.]],
}
-- relay.test also needs luasocket: Debian's lua-socket (tools/deps installs it). It is not listed
-- here because luarocks would try to fetch it from the rocks server.
dependencies = {
  "lua ~> 5.1", -- LuaJIT
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    RELAYHOST_LUADIR = "$(LUADIR)",
    RELAYHOST_TESTS = "OFF",
  },
}
