/* lua_dict: named dictionaries for Lua, shaped like OpenResty's ngx.shared.DICT.
 *
 * A userdata holds only the rh_dict*: dictionaries live in the process-wide registry and
 * outlive every generation, so there is no __gc. Values keep their Lua type (string, number,
 * boolean); time is the loop clock, rh_now(). */
#include <lauxlib.h>
#include <string.h>

#include "cache/dict.h"
#include "lua/bind.h"
#include "lua/runtime.h"

#define DICT_MT "relay.dict"
#define KEYS_DEFAULT_MAX 1024 /* as ngx.shared.DICT:get_keys: a full listing must be asked for */

static rh_dict *check_dict(lua_State *L) {
  return *(rh_dict **)luaL_checkudata(L, 1, DICT_MT);
}

/* Numbers are accepted and used in their string form, as Lua does for table keys in shdicts. */
static const char *check_key(lua_State *L, int idx, size_t *len) {
  int t = lua_type(L, idx);
  if (t != LUA_TSTRING && t != LUA_TNUMBER)
    luaL_argerror(L, idx, lua_pushfstring(L, "key must be a string, got %s", luaL_typename(L, idx)));
  return lua_tolstring(L, idx, len);
}

static void check_value(lua_State *L, int idx, rh_val *v) {
  memset(v, 0, sizeof *v);
  switch (lua_type(L, idx)) {
  case LUA_TNONE:
  case LUA_TNIL: v->type = RH_VAL_NIL; break;
  case LUA_TSTRING: v->type = RH_VAL_STR; v->str = lua_tolstring(L, idx, &v->len); break;
  case LUA_TNUMBER: v->type = RH_VAL_NUM; v->num = lua_tonumber(L, idx); break;
  case LUA_TBOOLEAN: v->type = RH_VAL_BOOL; v->boolean = lua_toboolean(L, idx); break;
  default:
    luaL_argerror(L, idx, lua_pushfstring(L, "value must be a string, number, boolean or nil, got %s",
                                          luaL_typename(L, idx)));
  }
}

/* Seconds; absent, nil or 0 mean no expiry. */
static double opt_ttl(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return 0;
  if (lua_type(L, idx) != LUA_TNUMBER)
    luaL_argerror(L, idx, lua_pushfstring(L, "ttl must be a number, got %s", luaL_typename(L, idx)));
  double ttl = lua_tonumber(L, idx);
  if (!(ttl >= 0)) luaL_argerror(L, idx, "ttl must not be negative");
  return ttl;
}

static double opt_number(lua_State *L, int idx, double def, const char *what) {
  if (lua_isnoneornil(L, idx)) return def;
  if (lua_type(L, idx) != LUA_TNUMBER)
    luaL_argerror(L, idx, lua_pushfstring(L, "%s must be a number, got %s", what, luaL_typename(L, idx)));
  return lua_tonumber(L, idx);
}

static void push_value(lua_State *L, const rh_val *v) {
  switch (v->type) {
  case RH_VAL_STR: lua_pushlstring(L, v->str, v->len); break;
  case RH_VAL_NUM: lua_pushnumber(L, v->num); break;
  case RH_VAL_BOOL: lua_pushboolean(L, v->boolean); break;
  default: lua_pushnil(L);
  }
}

static int push_fail(lua_State *L, const char *err) {
  lua_pushnil(L);
  lua_pushstring(L, err);
  return 2;
}

/* dict_open(name, max_items?) */
static int l_dict_open(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  lua_Integer max = luaL_optinteger(L, 2, 0);
  if (max < 0) luaL_argerror(L, 2, "max_items must not be negative");
  rh_dict *d = rh_dict_open(name, (size_t)max);
  rh_dict **ud = lua_newuserdata(L, sizeof *ud);
  *ud = d;
  luaL_getmetatable(L, DICT_MT);
  lua_setmetatable(L, -2);
  return 1;
}

static int l_get(lua_State *L) {
  rh_dict *d = check_dict(L);
  size_t klen;
  const char *key = check_key(L, 2, &klen);
  rh_val v;
  if (!rh_dict_get(d, key, klen, rh_now(), &v)) lua_pushnil(L);
  else push_value(L, &v);
  return 1;
}

static int l_set(lua_State *L) {
  rh_dict *d = check_dict(L);
  size_t klen;
  const char *key = check_key(L, 2, &klen);
  rh_val v;
  check_value(L, 3, &v);
  rh_dict_set(d, key, klen, &v, opt_ttl(L, 4), rh_now());
  lua_pushboolean(L, 1);
  return 1;
}

static int l_add(lua_State *L) {
  rh_dict *d = check_dict(L);
  size_t klen;
  const char *key = check_key(L, 2, &klen);
  rh_val v;
  check_value(L, 3, &v);
  if (v.type == RH_VAL_NIL) luaL_argerror(L, 3, "value must not be nil");
  if (rh_dict_add(d, key, klen, &v, opt_ttl(L, 4), rh_now()) == RH_DICT_EXISTS)
    return push_fail(L, "exists");
  lua_pushboolean(L, 1);
  return 1;
}

/* d:incr(key, by?, init?, init_ttl?): init_ttl applies only when init creates the key. */
static int l_incr(lua_State *L) {
  rh_dict *d = check_dict(L);
  size_t klen;
  const char *key = check_key(L, 2, &klen);
  double by = opt_number(L, 3, 1, "increment");
  double init = opt_number(L, 4, 0, "init");
  double ttl = opt_ttl(L, 5);
  double out = 0;
  int rc = rh_dict_incr(d, key, klen, by, lua_isnoneornil(L, 4) ? NULL : &init, ttl, rh_now(), &out);
  if (rc == RH_DICT_NOTFOUND) return push_fail(L, "not found");
  if (rc == RH_DICT_NOTNUM) return push_fail(L, "not a number");
  lua_pushnumber(L, out);
  return 1;
}

static int l_delete(lua_State *L) {
  rh_dict *d = check_dict(L);
  size_t klen;
  const char *key = check_key(L, 2, &klen);
  lua_pushboolean(L, rh_dict_delete(d, key, klen));
  return 1;
}

/* Seconds left, 0 for no expiry (as OpenResty), or nil, "not found". */
static int l_ttl(lua_State *L) {
  rh_dict *d = check_dict(L);
  size_t klen;
  const char *key = check_key(L, 2, &klen);
  double left = rh_dict_ttl(d, key, klen, rh_now());
  if (left == -2) return push_fail(L, "not found");
  lua_pushnumber(L, left == -1 ? 0 : left);
  return 1;
}

struct keys_ctx {
  lua_State *L;
  int n;
};

static void push_key(void *ud, const char *key, size_t klen) {
  struct keys_ctx *c = ud;
  lua_pushlstring(c->L, key, klen);
  lua_rawseti(c->L, -2, ++c->n);
}

/* d:keys(max?): most recent first; max defaults to 1024, 0 lists every key. */
static int l_keys(lua_State *L) {
  rh_dict *d = check_dict(L);
  lua_Integer max = luaL_optinteger(L, 2, KEYS_DEFAULT_MAX);
  if (max < 0) luaL_argerror(L, 2, "max must not be negative");
  struct keys_ctx c = { L, 0 };
  lua_newtable(L);
  rh_dict_keys(d, rh_now(), (size_t)max, push_key, &c);
  return 1;
}

static int l_flush(lua_State *L) {
  rh_dict_flush(check_dict(L));
  return 0;
}

static void set_num(lua_State *L, const char *field, double v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, field);
}

static int l_stats(lua_State *L) {
  rh_dict *d = check_dict(L);
  rh_dict_stats st;
  rh_dict_get_stats(d, rh_now(), &st);
  lua_createtable(L, 0, 7);
  set_num(L, "items", (double)st.items);
  set_num(L, "max_items", (double)st.max_items);
  set_num(L, "bytes", (double)st.bytes);
  set_num(L, "hits", (double)st.hits);
  set_num(L, "misses", (double)st.misses);
  set_num(L, "evictions", (double)st.evictions);
  set_num(L, "expirations", (double)st.expirations);
  return 1;
}

static int l_name(lua_State *L) {
  lua_pushstring(L, rh_dict_name(check_dict(L)));
  return 1;
}

/* Each dict_open returns a fresh userdata; two handles on one dictionary compare equal. */
static int l_eq(lua_State *L) {
  lua_pushboolean(L, check_dict(L) == *(rh_dict **)luaL_checkudata(L, 2, DICT_MT));
  return 1;
}

static int l_tostring(lua_State *L) {
  lua_pushfstring(L, DICT_MT ": %s", rh_dict_name(check_dict(L)));
  return 1;
}

static const luaL_Reg dict_methods[] = {
  { "get", l_get },       { "set", l_set },     { "add", l_add },
  { "incr", l_incr },     { "delete", l_delete }, { "ttl", l_ttl },
  { "keys", l_keys },     { "flush", l_flush }, { "stats", l_stats },
  { "name", l_name },     { NULL, NULL },
};

void rh_lua_register_dict(lua_State *L) {
  luaL_newmetatable(L, DICT_MT);
  lua_newtable(L);
  luaL_register(L, NULL, dict_methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_eq);
  lua_setfield(L, -2, "__eq");
  lua_pushcfunction(L, l_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);

  lua_pushcfunction(L, l_dict_open);
  lua_setfield(L, -2, "dict_open");
}
