/* lua_url: relay.url.parse, core/net/url for scripts, so that a script reads a URL (a Redis
 * address with a password, a redirect target) the way the core's own clients do. */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "buf/buf.h"
#include "lua/bind.h"
#include "net/url.h"

static void set_string(lua_State *L, const char *key, const char *v) {
  if (!v) return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, key);
}

static void push_url(lua_State *L, const rh_url *u) {
  lua_createtable(L, 0, 8);
  set_string(L, "scheme", u->scheme);
  set_string(L, "user", u->user);
  set_string(L, "password", u->password);
  set_string(L, "host", u->host);
  set_string(L, "path", u->path);
  set_string(L, "query", u->query);
  set_string(L, "fragment", u->fragment);
  if (u->port) lua_pushinteger(L, u->port), lua_setfield(L, -2, "port");
}

/* The schemes argument: nil, "a b" or {"a", "b"}, as the space-separated list url.h takes. */
static const char *scheme_list(lua_State *L, int idx, rh_buf *b) {
  if (lua_isnoneornil(L, idx)) return NULL;
  if (lua_type(L, idx) == LUA_TSTRING) return lua_tostring(L, idx);
  luaL_checktype(L, idx, LUA_TTABLE);
  for (int i = 1;; i++) {
    lua_rawgeti(L, idx, i);
    const char *s = lua_tostring(L, -1);
    if (s) rh_buf_printf(b, "%s%s", i > 1 ? " " : "", s);
    lua_pop(L, 1);
    if (!s) break;
  }
  rh_buf_append(b, "", 1);
  return b->data;
}

/* url_parse(s, schemes?) -> {scheme, user, password, host, port, path, query, fragment} | nil, err */
static int l_url_parse(lua_State *L) {
  const char *s = luaL_checkstring(L, 1);
  rh_buf list = RH_BUF_INIT;
  const char *schemes = scheme_list(L, 2, &list); /* before the allocation: it may raise */
  rh_url *u = malloc(sizeof *u);
  if (!u) abort();
  const char *err = rh_url_parse(s, schemes, u);
  if (err) lua_pushnil(L), lua_pushstring(L, err);
  else push_url(L, u);
  free(u);
  rh_buf_free(&list);
  return err ? 2 : 1;
}

void rh_lua_register_url(lua_State *L) {
  lua_pushcfunction(L, l_url_parse);
  lua_setfield(L, -2, "url_parse");
}
