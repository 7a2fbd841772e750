/* lua_sse: relay.sse, the Lua face of core/sse (event-stream fan-out held in C). */
#include <lauxlib.h>

#include "lua/bind.h"
#include "lua/gen.h"
#include "sse/sse.h"

/* core.sse_hold(ex, channel, headers?, first?, heartbeat?) -> true | nil, err. The request leaves
 * its handler: the stream lives on in C (across reloads) until the client or a close ends it. */
static int l_hold(lua_State *L) {
  rh_exchange *ex = luaL_checkudata(L, 1, "relay.exchange");
  const char *channel = luaL_checkstring(L, 2);
  size_t first_len = 0;
  const char *first = luaL_optlstring(L, 4, "", &first_len);
  double heartbeat = luaL_optnumber(L, 5, 15);
  rh_task *t = ex->task;
  if (!t || !t->req) return luaL_error(L, "relay.sse.hold: this request is over");
  if (t->req->head_sent) return luaL_error(L, "relay.sse.hold: the response has already started");
  rh_headers h = RH_HEADERS_INIT;
  if (!lua_isnoneornil(L, 3) && rh_lua_read_headers(L, 3, &h) < 0) {
    rh_headers_free(&h);
    return lua_error(L);
  }
  rh_http_req *r = t->req;
  t->req = NULL; /* the task's reference moves to the stream */
  r->ud = NULL;
  int rc = rh_sse_hold(rh_loop(), r, channel, &h, first, first_len, heartbeat);
  rh_headers_free(&h);
  if (rc < 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "client closed the connection");
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* core.sse_publish(channel or nil, bytes) -> streams written */
static int l_publish(lua_State *L) {
  const char *channel = luaL_optstring(L, 1, NULL);
  size_t n;
  const char *p = luaL_checklstring(L, 2, &n);
  lua_pushnumber(L, (lua_Number)rh_sse_publish(channel, p, n));
  return 1;
}

/* core.sse_close(channel or nil) -> streams closed */
static int l_close(lua_State *L) {
  lua_pushnumber(L, (lua_Number)rh_sse_close(luaL_optstring(L, 1, NULL)));
  return 1;
}

/* core.sse_count(channel or nil) -> streams held */
static int l_count(lua_State *L) {
  lua_pushnumber(L, (lua_Number)rh_sse_count(luaL_optstring(L, 1, NULL)));
  return 1;
}

void rh_lua_register_sse(lua_State *L) {
  static const luaL_Reg fns[] = { { "sse_hold", l_hold }, { "sse_publish", l_publish },
                                  { "sse_close", l_close }, { "sse_count", l_count }, { NULL, NULL } };
  luaL_register(L, NULL, fns);
}
