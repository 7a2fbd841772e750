/* lua_metrics: counters, gauges and histograms for Lua, over the process-wide registry.
 *
 * A metric userdata holds the rh_metric*; its environment table keeps the family's name and
 * label names, which the C registry does not expose, so label tables keyed by name can be
 * resolved and errors can name what is wrong. Families outlive generations: no __gc. */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "lua/bind.h"
#include "metrics/metrics.h"

#define METRIC_MT "relay.metric"

static const char *const kind_names[] = { "counter", "gauge", "histogram", NULL };
static const rh_metric_kind kinds[] = { RH_COUNTER, RH_GAUGE, RH_HISTOGRAM };

static const char *kind_name(rh_metric_kind k) {
  return k == RH_COUNTER ? "counter" : k == RH_GAUGE ? "gauge" : "histogram";
}

static rh_metric *check_metric(lua_State *L) {
  return *(rh_metric **)luaL_checkudata(L, 1, METRIC_MT);
}

/* Pushes field `what` ("name" or "labels") of the metric's environment table. */
static void push_env_field(lua_State *L, const char *what) {
  lua_getfenv(L, 1);
  lua_getfield(L, -1, what);
  lua_remove(L, -2);
}

static const char *metric_name(lua_State *L) {
  push_env_field(L, "name");
  const char *name = lua_tostring(L, -1); /* the env table keeps the string alive */
  lua_pop(L, 1);
  return name ? name : "?";
}

/* ---- registration ---- */

/* The strings of array t (at idx), into a scratch array left on the stack. */
static const char **read_label_names(lua_State *L, int idx, size_t *n) {
  *n = lua_isnoneornil(L, idx) ? 0 : lua_objlen(L, idx);
  const char **names = lua_newuserdata(L, (*n ? *n : 1) * sizeof *names);
  for (size_t i = 0; i < *n; i++) {
    lua_rawgeti(L, idx, (int)i + 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_argerror(L, idx, lua_pushfstring(L, "label names must be strings (entry %d is %s)",
                                            (int)i + 1, luaL_typename(L, -1)));
    names[i] = lua_tostring(L, -1); /* still referenced by the labels table */
    lua_pop(L, 1);
  }
  return names;
}

static const double *read_buckets(lua_State *L, int idx, size_t *n) {
  *n = lua_isnoneornil(L, idx) ? 0 : lua_objlen(L, idx);
  double *b = lua_newuserdata(L, (*n ? *n : 1) * sizeof *b);
  for (size_t i = 0; i < *n; i++) {
    lua_rawgeti(L, idx, (int)i + 1);
    if (lua_type(L, -1) != LUA_TNUMBER)
      luaL_argerror(L, idx, lua_pushfstring(L, "buckets must be numbers (entry %d is %s)",
                                            (int)i + 1, luaL_typename(L, -1)));
    b[i] = lua_tonumber(L, -1);
    lua_pop(L, 1);
  }
  return *n ? b : NULL;
}

/* The environment: { name = name, labels = { copies of the label names } }. */
static void push_env(lua_State *L, const char *name, const char **labels, size_t n) {
  lua_createtable(L, 0, 2);
  lua_pushstring(L, name);
  lua_setfield(L, -2, "name");
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushstring(L, labels[i]);
    lua_rawseti(L, -2, (int)i + 1);
  }
  lua_setfield(L, -2, "labels");
}

/* metric_register(kind, name, help?, labels?, buckets?) */
static int l_metric_register(lua_State *L) {
  lua_settop(L, 5); /* absent arguments become nil slots before scratch space is pushed */
  rh_metric_kind kind = kinds[luaL_checkoption(L, 1, NULL, kind_names)];
  const char *name = luaL_checkstring(L, 2);
  const char *help = luaL_optstring(L, 3, "");
  if (!lua_isnoneornil(L, 4)) luaL_checktype(L, 4, LUA_TTABLE);
  if (!lua_isnoneornil(L, 5)) {
    luaL_checktype(L, 5, LUA_TTABLE);
    if (kind != RH_HISTOGRAM) luaL_argerror(L, 5, "buckets apply only to histograms");
  }
  size_t nlabels, nbuckets;
  const char **labels = read_label_names(L, 4, &nlabels);
  const double *buckets = read_buckets(L, 5, &nbuckets);
  const char *err = "invalid metric";
  rh_metric *m = rh_metric_register(kind, name, help, labels, nlabels, buckets, nbuckets, &err);
  if (!m) return luaL_error(L, "metric_register '%s': %s", name, err);

  rh_metric **ud = lua_newuserdata(L, sizeof *ud);
  *ud = m;
  luaL_getmetatable(L, METRIC_MT);
  lua_setmetatable(L, -2);
  push_env(L, name, labels, nlabels);
  lua_setfenv(L, -2);
  return 1;
}

/* ---- label values ---- */

/* Pushes the value of label i (called label) from the table at tbl, by position or by name,
 * and returns it as a string; raises if it is missing or of another type. */
static const char *push_label_value(lua_State *L, int tbl, int positional, int i, const char *label) {
  if (positional) lua_rawgeti(L, tbl, i + 1);
  else lua_getfield(L, tbl, label);
  int t = lua_type(L, -1);
  if (t == LUA_TNIL)
    luaL_error(L, "%s: missing value for label '%s'", metric_name(L), label);
  if (t != LUA_TSTRING && t != LUA_TNUMBER)
    luaL_error(L, "%s: label '%s' must be a string or number, got %s", metric_name(L), label,
               luaL_typename(L, -1));
  return lua_tostring(L, -1); /* converts a number in place; the slot stays on the stack */
}

/* Keyed tables must not carry names the family does not have: that is a typo, not data. */
static void check_no_unknown_labels(lua_State *L, int tbl, int names) {
  lua_pushnil(L);
  while (lua_next(L, tbl)) {
    lua_pop(L, 1);
    int known = 0;
    if (lua_type(L, -1) == LUA_TSTRING) {
      for (int i = 1; !known && i <= (int)lua_objlen(L, names); i++) {
        lua_rawgeti(L, names, i);
        known = lua_rawequal(L, -1, -2);
        lua_pop(L, 1);
      }
    }
    if (!known && lua_type(L, -1) == LUA_TSTRING)
      luaL_error(L, "%s: unknown label '%s'", metric_name(L), lua_tostring(L, -1));
    if (!known)
      luaL_error(L, "%s: label keys must be names, got %s", metric_name(L), luaL_typename(L, -1));
  }
}

/* The label values from the table at idx (nil: none), in declared order. The values and their
 * strings stay on the stack until the caller returns. */
static const char *const *read_label_values(lua_State *L, int idx) {
  rh_metric *m = check_metric(L);
  size_t n = rh_metric_nlabels(m);
  if (lua_gettop(L) < idx) lua_settop(L, idx); /* so idx is not taken by what we push below */
  if (!lua_isnoneornil(L, idx) && lua_type(L, idx) != LUA_TTABLE)
    luaL_argerror(L, idx, lua_pushfstring(L, "labels must be a table, got %s", luaL_typename(L, idx)));
  luaL_checkstack(L, (int)n + 4, "too many labels");
  push_env_field(L, "labels");
  int names = lua_gettop(L);
  const char **vals = lua_newuserdata(L, (n ? n : 1) * sizeof *vals);
  if (lua_isnoneornil(L, idx)) {
    if (n) {
      lua_rawgeti(L, names, 1);
      luaL_error(L, "%s: missing value for label '%s'", metric_name(L), lua_tostring(L, -1));
    }
    return vals;
  }
  int positional = lua_objlen(L, idx) > 0;
  if (positional && lua_objlen(L, idx) > n)
    luaL_error(L, "%s: %d label values given, %d expected", metric_name(L), (int)lua_objlen(L, idx),
               (int)n);
  if (!positional) check_no_unknown_labels(L, idx, names);
  for (size_t i = 0; i < n; i++) {
    lua_rawgeti(L, names, (int)i + 1);
    const char *label = lua_tostring(L, -1);
    vals[i] = push_label_value(L, idx, positional, (int)i, label);
  }
  return vals;
}

/* ---- methods ---- */

static void check_kind(lua_State *L, rh_metric *m, const char *method, int a, int b) {
  rh_metric_kind k = rh_metric_kind_of(m);
  if ((int)k != a && (int)k != b)
    luaL_error(L, "%s: not available on %s '%s'", method, kind_name(k), metric_name(L));
}

/* inc/dec accept (labels) alone as well as (by, labels). */
static int by_and_labels(lua_State *L, double *by) {
  if (lua_type(L, 2) == LUA_TTABLE) {
    *by = 1;
    return 2;
  }
  *by = luaL_optnumber(L, 2, 1);
  return 3;
}

static int l_inc(lua_State *L) {
  rh_metric *m = check_metric(L);
  check_kind(L, m, "inc", RH_COUNTER, RH_GAUGE);
  double by;
  int li = by_and_labels(L, &by);
  if (rh_metric_kind_of(m) == RH_COUNTER && !(by >= 0))
    luaL_argerror(L, 2, lua_pushfstring(L, "counter '%s' cannot be decreased", metric_name(L)));
  const char *const *vals = read_label_values(L, li);
  rh_metric_add(m, vals, by);
  return 0;
}

static int l_dec(lua_State *L) {
  rh_metric *m = check_metric(L);
  check_kind(L, m, "dec", RH_GAUGE, RH_GAUGE);
  double by;
  int li = by_and_labels(L, &by);
  const char *const *vals = read_label_values(L, li);
  rh_metric_add(m, vals, -by);
  return 0;
}

static int l_set(lua_State *L) {
  rh_metric *m = check_metric(L);
  check_kind(L, m, "set", RH_GAUGE, RH_GAUGE);
  double v = luaL_checknumber(L, 2);
  rh_metric_set(m, read_label_values(L, 3), v);
  return 0;
}

static int l_observe(lua_State *L) {
  rh_metric *m = check_metric(L);
  check_kind(L, m, "observe", RH_HISTOGRAM, RH_HISTOGRAM);
  double v = luaL_checknumber(L, 2);
  if (v != v) luaL_argerror(L, 2, "cannot observe NaN");
  rh_metric_observe(m, read_label_values(L, 3), v);
  return 0;
}

/* Counters and gauges: the value; histograms: the observation count. */
static int l_value(lua_State *L) {
  rh_metric *m = check_metric(L);
  lua_pushnumber(L, rh_metric_value(m, read_label_values(L, 2)));
  return 1;
}

static int l_tostring(lua_State *L) {
  check_metric(L);
  lua_pushfstring(L, METRIC_MT ": %s", metric_name(L));
  return 1;
}

static int l_metrics_render(lua_State *L) {
  size_t len;
  char *text = rh_metrics_render(&len);
  lua_pushlstring(L, text, len);
  free(text);
  return 1;
}

static const luaL_Reg metric_methods[] = {
  { "inc", l_inc }, { "dec", l_dec }, { "set", l_set }, { "observe", l_observe },
  { "value", l_value }, { NULL, NULL },
};

void rh_lua_register_metrics(lua_State *L) {
  luaL_newmetatable(L, METRIC_MT);
  lua_newtable(L);
  luaL_register(L, NULL, metric_methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);

  lua_pushcfunction(L, l_metric_register);
  lua_setfield(L, -2, "metric_register");
  lua_pushcfunction(L, l_metrics_render);
  lua_setfield(L, -2, "metrics_render");
}
