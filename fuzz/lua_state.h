/* lua_state: the LuaJIT state of the Lua-facing targets (fuzz_flag_lua, fuzz_headers_lua): the
 * standard libraries, relay.core (and whatever else the target names) preloaded from the C
 * library, the real lua/relay modules found in the source tree, and Lua line coverage fed to
 * libFuzzer. Include after check.h (FAIL names FUZZ_TARGET). */
#ifndef RH_FUZZ_LUA_STATE_H
#define RH_FUZZ_LUA_STATE_H

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <luajit.h>
#include <stdint.h>
#include <stdlib.h>

#ifndef RELAYHOST_SOURCE_LUA
#error "RELAYHOST_SOURCE_LUA comes with relaycore's compile definitions"
#endif

#include "lua/bind.h" /* rh_lua_open_core */

/* Coverage of the Lua code for libFuzzer: a line hook bumps a counter per (chunk, line) in
 * libFuzzer's extra-counters section, so the mutator sees progress inside the Lua modules too.
 * Hooks do not run in JIT-compiled code, so the JIT is off in this state. */
__attribute__((section("__libfuzzer_extra_counters"))) static uint8_t lua_lines[8192];

static void line_hook(lua_State *S, lua_Debug *ar) {
  if (!lua_getinfo(S, "S", ar)) return;
  uintptr_t h = (uintptr_t)ar->source * 2654435761u;
  lua_lines[(h ^ (uintptr_t)ar->currentline * 40503u) % sizeof lua_lines]++;
}

static lua_State *opened;

/* LuaJIT's heap is not malloc's, so LSan cannot see C buffers (cjson's) referenced from it:
 * closing the state at exit frees them. */
static void close_opened(void) { lua_close(opened); }

/* The state for the whole run, closed at exit. `extra` lists modules to preload besides
 * relay.core ({NULL, NULL}-terminated; NULL for none). */
static inline lua_State *fuzz_lua_open(const luaL_Reg *extra) {
  lua_State *L = luaL_newstate();
  if (!L) FAIL("luaL_newstate");
  opened = L;
  atexit(close_opened);
  luaL_openlibs(L);
  luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
  lua_sethook(L, line_hook, LUA_MASKLINE, 0);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, rh_lua_open_core);
  lua_setfield(L, -2, "relay.core");
  for (const luaL_Reg *m = extra; m && m->name; m++) {
    lua_pushcfunction(L, m->func);
    lua_setfield(L, -2, m->name);
  }
  lua_pop(L, 1);
  lua_pushstring(L, RELAYHOST_SOURCE_LUA "/?.lua;" RELAYHOST_SOURCE_LUA "/?/init.lua");
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
  return L;
}

/* Runs the target's Lua side (`len` bytes of `chunk`, named `name`) and keeps what it returns:
 * its registry reference. */
static inline int fuzz_lua_load(lua_State *L, const char *chunk, size_t len, const char *name) {
  if (luaL_loadbuffer(L, chunk, len, name) || lua_pcall(L, 0, 1, 0))
    FAIL("loading the Lua side: %s", lua_tostring(L, -1));
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* Calls the Lua side kept at ref with the whole input as one string; its error is the target's
 * failure. A GC step per input keeps the state's heap from growing over a long run. */
static inline void fuzz_lua_run(lua_State *L, int ref, const uint8_t *data, size_t size) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 0, 0) != 0) FAIL("%s", lua_tostring(L, -1));
  lua_gc(L, LUA_GCSTEP, 0);
}

/* A target whose whole Lua side is one chunk: fuzz_lua_target at LLVMFuzzerInitialize opens the
 * state and keeps the chunk's function; fuzz_lua_input runs it on each input. */
static int target_ref = LUA_NOREF;

static inline void fuzz_lua_target(const luaL_Reg *extra, const char *chunk, size_t len, const char *name) {
  target_ref = fuzz_lua_load(fuzz_lua_open(extra), chunk, len, name);
}

static inline void fuzz_lua_input(const uint8_t *data, size_t size) { fuzz_lua_run(opened, target_ref, data, size); }

#endif
