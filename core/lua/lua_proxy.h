/* lua_proxy: proxy routes made by relay.proxy{...}. */
#ifndef RH_LUA_PROXY_H
#define RH_LUA_PROXY_H

#include <lua.h>
#include "lua/gen.h"
#include "proxy/proxy.h"

typedef struct rh_lua_proxy rh_lua_proxy;

void rh_lua_register_proxy(lua_State *L);
rh_lua_proxy *rh_lua_to_proxy(lua_State *L, int idx); /* NULL if idx is not a proxy */
size_t rh_lua_proxy_max_body(const rh_lua_proxy *p);
/* Forwards req (taking the caller's reference) with p's settings and hooks from g. */
void rh_lua_proxy_start(rh_gen *g, rh_lua_proxy *p, rh_http_req *req);

#endif
