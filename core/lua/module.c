/* module: relay.core as a Lua C module, relay/core.so, so that `require "relay"` works from a
 * plain LuaJIT (a script author's busted specs, outside relayhost; rocks/ installs it).
 *
 * Why a file of its own: the host preloads relay.core (runtime.c) into states it builds, each
 * with a generation and the event loop behind it. A plain luajit has neither: rh_gen_of() is
 * NULL there, nothing runs the loop, and the main chunk is not a coroutine a binding could park.
 * So this opens the very same table (rh_lua_open_core: one definition of it) and replaces every
 * function that is not in `hostless` below with one that raises a Lua error naming it; the
 * hostless ones only compute, or touch process-wide state that needs no loop.
 *
 * The module is built outside relaycore (CMakeLists.txt) and links no libluajit: the lua_*
 * symbols come from the executable that loads it (Debian's luajit exports them), since a second
 * copy of the VM in one process would not work. */
#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "lua/bind.h"

int luaopen_relay_core(lua_State *L);

/* What works without the host. set_classes: relay.http hands over its metatables when loaded.
 * metric_register/metrics_render and dict_open: process-wide registries (a dictionary's TTLs
 * count on the loop clock, which stands still here). fs_list only reads (not fs_mkdir: the spec
 * that calls every function with assorted arguments would make directories). Not now: it is the
 * loop clock too (relay.time is the wall clock). */
static const char *const hostless[] = {
  "set_classes", "sha256", "hmac_sha256", "random", "constant_time_equal", "base64_encode",
  "base64_decode", "uuid", "jws_verify", "time", "pid", "log", "metric_register",
  "metrics_render", "dict_open", "fs_list", NULL,
};

static int is_hostless(const char *name) {
  for (size_t i = 0; hostless[i]; i++)
    if (strcmp(hostless[i], name) == 0) return 1;
  return 0;
}

/* upvalue 1: the function's name in relay.core */
static int host_only(lua_State *L) {
  luaL_where(L, 2); /* the Lua line that called it (a script, or relay's own wrapper) */
  lua_pushfstring(L,
                  "relay.core.%s runs only inside relayhost: there is no event loop in a plain Lua "
                  "(start the script with `relayhost SCRIPT`, or from a spec with relay.test)",
                  lua_tostring(L, lua_upvalueindex(1)));
  lua_concat(L, 2);
  return lua_error(L);
}

int luaopen_relay_core(lua_State *L) {
  rh_lua_open_core(L);
  int t = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, t)) { /* assigning to fields that exist is allowed during the traversal */
    if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TFUNCTION &&
        !is_hostless(lua_tostring(L, -2))) {
      lua_pushvalue(L, -2);
      lua_pushvalue(L, -1);
      lua_pushcclosure(L, host_only, 1);
      lua_rawset(L, t);
    }
    lua_pop(L, 1);
  }
  return 1;
}
