/* bind: the pieces of the `relay.core` C module, one register function per file, and the
 * helpers they share. Each rh_lua_register_* adds its functions to the table on top of the
 * stack. */
#ifndef RH_LUA_BIND_H
#define RH_LUA_BIND_H

#include <lauxlib.h>
#include <lua.h>
#include "http/headers.h"

int rh_lua_open_core(lua_State *L);         /* lua_core.c: pushes the whole relay.core table */
void rh_lua_register_core(lua_State *L);    /* lua_core.c: req/res, sleep, timers, log, gen */
void rh_lua_register_dict(lua_State *L);    /* lua_dict.c: shared dictionaries */
void rh_lua_register_metrics(lua_State *L); /* lua_metrics.c: counters, gauges, histograms */
void rh_lua_register_client(lua_State *L);  /* lua_client.c: the HTTP client */
void rh_lua_register_proxy(lua_State *L);   /* lua_proxy.c: relay.proxy routes */
void rh_lua_register_ws(lua_State *L);      /* lua_ws.c: WebSocket sessions */
void rh_lua_register_redis(lua_State *L);   /* lua_redis.c: relay.redis */
void rh_lua_register_crypto(lua_State *L);  /* lua_crypto.c: hashes, base64, uuid */
void rh_lua_register_sse(lua_State *L);     /* lua_sse.c: event-stream fan-out (core/sse) */
void rh_lua_register_tunnel(lua_State *L);  /* lua_tunnel.c: relay.tunnel (git tunnel streams) */
void rh_lua_register_hub(lua_State *L);     /* lua_hub.c: the workspace relay's C routing */
void rh_lua_register_fs(lua_State *L);      /* lua_fs.c: directory listing, mkdir, terminate */
void rh_lua_register_url(lua_State *L);     /* lua_url.c: relay.url.parse (core/net/url) */

/* Registers metatable mt with methods as __index and gc as __gc (may be NULL); leaves the stack
 * as it was. */
void rh_lua_class(lua_State *L, const char *mt, const luaL_Reg *methods, lua_CFunction gc);

/* Pushes a headers table: lowercase name -> first value, with the generation's headers
 * metatable (case-insensitive lookup, h:all(name) -> every value in order). */
void rh_lua_push_headers(lua_State *L, const rh_headers *h);
/* n bytes of src into dst with ASCII capitals made small: a headers table's key for a name. */
void rh_lua_lower_into(char *dst, const char *src, size_t n);
/* Reads a Lua table at idx of name -> string | number | {string, …} into h (appending).
 * Returns 0, or -1 with an error message pushed. */
int rh_lua_read_headers(lua_State *L, int idx, rh_headers *h);

#endif
