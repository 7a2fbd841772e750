/* lua_proxy: relay.proxy{...} mounts as native C proxy routes. The options are read once into
 * an rh_proxy_conf. The access phase (`access`) runs first, as a task of the generation that
 * routed the request, and may wait; the other Lua hooks (on_request, on_response,
 * rewrite_set_cookie_domain) run synchronously on the heads. None ever sees body bytes. */
#include <lauxlib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/head.h"
#include "log/log.h"
#include "lua/bind.h"
#include "lua/gen.h"
#include "lua/runtime.h"
#include "lua/lua_proxy.h"

#define PROXY_MT "relay.proxy"

struct rh_lua_proxy {
  rh_proxy_conf *conf;
  char *mount;             /* the prefix it was built for ("" off a mount) */
  int on_request, on_response, cookie, access; /* registry refs, LUA_NOREF when absent */
  int traceback;           /* registry ref: the hooks' message handler */
  unsigned char eager[2];  /* on_request's, on_response's closure has read head.headers: C fills
                              hook_fields before each call (set by the closure, through the FFI) */
};

/* What a request's hooks need: the generation stays alive while they may run. What the access
 * phase changed is applied to the head before on_request sees it. */
typedef struct {
  rh_gen *gen;
  rh_lua_proxy *p;
  const char *request_id;
  char *method, *target;   /* the access phase's, or NULL */
  rh_lua_proxy *via;       /* the upstream the access phase chose, or NULL: p's */
  size_t pick;             /* or the entry of p's list it chose, from 1 (0: the balancer's) */
  rh_headers headers;
  int has_headers;
} hook_ctx;

#define MAX_SEEN 64 /* fields compared; a larger head takes the full read */

/* The fields a hook's headers table is built from, read by the hooks' closure through the FFI
 * (hooks_wrapper): from a C array its loop makes two strings a field, where the C API costs a
 * call per string and per table store and its collector steps. Synchronous hooks only: the
 * closure has copied them into Lua strings before the hook runs. */
#define HOOK_FIELD_DECL struct rh_hook_field { const char *name, *value; size_t nlen, vlen; }
HOOK_FIELD_DECL;
static struct rh_hook_field hook_fields[MAX_SEEN];

/* head:header, head:set_header, head:del_header and a late head.headers reach the list of the
 * hook running now through these (hook_api, below). Each declaration is written once: the
 * closure's ffi.cdef is the same text (STR). */
#define HOOK_API_DECL                                                                           \
  struct rh_hook_api {                                                                          \
    int (*refill)(void);                                                                        \
    const char *(*get)(const char *name, size_t nlen, size_t *vlen);                            \
    int (*set)(const char *name, size_t nlen, const char *value, size_t vlen, int replace);     \
  }
HOOK_API_DECL;
#define STR_(...) #__VA_ARGS__
#define STR(...) STR_(__VA_ARGS__)

/* ---- reading options ---- */

static double opt_num(lua_State *L, int t, const char *k, double dflt) {
  lua_getfield(L, t, k);
  double v = lua_isnil(L, -1) ? dflt : luaL_checknumber(L, -1);
  lua_pop(L, 1);
  return v;
}

static int opt_bool(lua_State *L, int t, const char *k, int dflt) {
  lua_getfield(L, t, k);
  int v = lua_isnil(L, -1) ? dflt : lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

static const char *opt_str(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  const char *v = lua_tostring(L, -1); /* stays alive: the options table holds it */
  lua_pop(L, 1);
  return v;
}

/* An array of strings into a malloc'd array of pointers into the Lua strings (alive while the
 * options table is). */
static const char **opt_list(lua_State *L, int t, const char *k, size_t *n) {
  lua_getfield(L, t, k);
  *n = 0;
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return NULL; }
  luaL_argcheck(L, lua_istable(L, -1), 1, k);
  size_t len = lua_objlen(L, -1);
  const char **out = calloc(len + 1, sizeof *out);
  if (!out) abort();
  for (size_t i = 1; i <= len; i++) {
    lua_rawgeti(L, -1, (int)i);
    out[(*n)++] = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return out;
}

static int opt_ref(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return LUA_NOREF; }
  if (!lua_isfunction(L, -1)) luaL_error(L, "relay.proxy: %s must be a function", k);
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

static int l_access_done(lua_State *L);

/* done's arguments (access_wrapper): p, the phase's table, the headers table it was given, the
 * fields of the table done reads (read raw by the wrapper: a Lua rawget costs less than a C API
 * lookup), then the phase's results. */
enum { A_P = 1, A_REQ, A_GIVEN, A_METHOD, A_UPSTREAM_PATH, A_HEADERS, A_UPSTREAM, A_STATUS, A_BODY, A_FIELDS };

/* The access phase's task body, made once per mount: a closure over its function, p and done
 * (relay.proxy_access), so that a request pays for no lookup, no require, no new C closure. */
static int access_ref(lua_State *L, rh_lua_proxy *p) {
  lua_getfield(L, 1, "access");
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return LUA_NOREF; }
  if (!lua_isfunction(L, -1)) luaL_error(L, "relay.proxy: access must be a function");
  lua_getfield(L, LUA_REGISTRYINDEX, "relay.proxy_access");
  lua_insert(L, -2);
  lua_pushlightuserdata(L, p);
  lua_pushcfunction(L, l_access_done);
  lua_call(L, 3, 1);
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

static int traceback(lua_State *L);
static const struct rh_hook_api hook_api;
static int l_hook_full(lua_State *L);

/* on_request / on_response, as a closure (relay.proxy_hooks) that builds the head table from
 * its arguments and returns what the hook left in it: a table constructor's constant keys cost
 * less than a lua_setfield (which interns its key) per field, each way. */
static int hook_ref(lua_State *L, const char *k, unsigned char *eager) {
  lua_getfield(L, 1, k);
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return LUA_NOREF; }
  if (!lua_isfunction(L, -1)) luaL_error(L, "relay.proxy: %s must be a function", k);
  lua_getfield(L, LUA_REGISTRYINDEX, "relay.proxy_hooks");
  lua_pushstring(L, k);
  lua_pushvalue(L, -3);
  lua_pushlightuserdata(L, hook_fields);
  lua_pushlightuserdata(L, (void *)&hook_api);
  lua_pushcfunction(L, l_hook_full);
  lua_pushlightuserdata(L, eager);
  lua_call(L, 6, 1);
  lua_replace(L, -2);
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* httpx's Timeout: one number for all four phases, or each (Lilya's default: connect 5, the
 * rest 10). pool: how long a request waits for a connection slot (limits.max_connections). */
static void read_timeouts(lua_State *L, int t, rh_proxy_opts *o) {
  lua_getfield(L, t, "timeout");
  if (lua_isnumber(L, -1)) {
    o->connect_timeout = o->read_timeout = o->write_timeout = o->pool_timeout = lua_tonumber(L, -1);
  } else if (lua_istable(L, -1)) {
    int tt = lua_gettop(L);
    o->connect_timeout = opt_num(L, tt, "connect", 5);
    o->read_timeout = opt_num(L, tt, "read", 10);
    o->write_timeout = opt_num(L, tt, "write", 10);
    o->pool_timeout = opt_num(L, tt, "pool", 10);
  } else {
    o->connect_timeout = 5;
    o->read_timeout = o->write_timeout = o->pool_timeout = 10;
  }
  lua_pop(L, 1);
}

static int opt_list_given(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  int given = !lua_isnil(L, -1);
  lua_pop(L, 1);
  return given;
}

/* A count option: nil (dflt), or a whole number >= 1. */
static size_t opt_count(lua_State *L, int t, const char *k, const char *what, size_t dflt) {
  lua_getfield(L, t, k);
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return dflt; }
  double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 0;
  if (v < 1 || v > 1e9 || v != (double)(size_t)v) luaL_error(L, "relay.proxy: %s must be a whole number >= 1", what);
  lua_pop(L, 1);
  return (size_t)v;
}

/* Lilya's limits (httpx.Limits): max_connections is the cap per upstream, whose excess waits
 * timeout.pool in the queue; max_keepalive_connections the idle ones kept per upstream;
 * keepalive_expiry how long one is kept. A key not given keeps the pool's default (no cap,
 * 1024, 60 s), whether limits is given or not: one set of defaults, not httpx's as well. */
static void read_limits(lua_State *L, int t, rh_proxy_opts *o) {
  o->max_queue = opt_count(L, t, "max_queue", "max_queue", 0);
  lua_getfield(L, t, "limits");
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return; }
  if (!lua_istable(L, -1)) luaL_error(L, "relay.proxy: limits must be a table (max_connections, max_keepalive_connections, keepalive_expiry)");
  int lt = lua_gettop(L);
  o->max_conns = opt_count(L, lt, "max_connections", "limits.max_connections", 0);
  o->max_idle = opt_count(L, lt, "max_keepalive_connections", "limits.max_keepalive_connections", 0);
  o->idle_timeout = opt_num(L, lt, "keepalive_expiry", 0);
  if (o->idle_timeout < 0 || (o->idle_timeout == 0 && opt_list_given(L, lt, "keepalive_expiry")))
    luaL_error(L, "relay.proxy: limits.keepalive_expiry must be > 0 seconds");
  lua_pop(L, 1);
}


static int opt_is_table(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  int is = lua_istable(L, -1);
  lua_pop(L, 1);
  return is;
}

/* retry_on, or Lilya's retry_exceptions (the same, also spelled as its httpx names). */
static void read_retry_on(lua_State *L, int t, rh_proxy_opts *o) {
  size_t n;
  const char **on = opt_list(L, t, "retry_on", &n);
  if (!on) on = opt_list(L, t, "retry_exceptions", &n);
  else if (opt_list_given(L, t, "retry_exceptions")) {
    free(on);
    luaL_error(L, "relay.proxy: give retry_on or retry_exceptions, not both");
  }
  o->retry_on_connect = o->retry_on_timeout = !on; /* the original retries both by default */
  for (size_t i = 0; i < n; i++) {
    if (strcmp(on[i], "connect") == 0 || strcmp(on[i], "ConnectError") == 0) o->retry_on_connect = 1;
    else if (strcmp(on[i], "timeout") == 0 || strcmp(on[i], "ReadTimeout") == 0) o->retry_on_timeout = 1;
    else { free(on); luaL_error(L, "relay.proxy: retry_on takes \"connect\" and \"timeout\" (retry_exceptions also \"ConnectError\", \"ReadTimeout\")"); }
  }
  free(on);
}

/* The list options are checked before anything is allocated, so an error leaks nothing and
 * opt_list never meets a value that is not a string. retry_methods: method names as a request
 * line carries them (case matters: "get" is not GET). */
static void check_list(lua_State *L, int t, const char *k, int methods) {
  lua_getfield(L, t, k);
  if (!lua_isnil(L, -1) && !lua_istable(L, -1)) luaL_error(L, "relay.proxy: %s must be a list of strings", k);
  for (size_t i = 1; lua_istable(L, -1) && i <= lua_objlen(L, -1); i++) {
    lua_rawgeti(L, -1, (int)i);
    size_t n;
    const char *m = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
    if (!m) luaL_error(L, "relay.proxy: %s must be a list of strings (item %d is a %s)", k, (int)i, luaL_typename(L, -1));
    if (methods && !rh_http_is_token(m, n)) luaL_error(L, "relay.proxy: retry_methods takes method names (\"GET\", \"PUT\", ...)");
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

static void check_lists(lua_State *L, int t) {
  static const char *const lists[] = { "retry_on", "retry_exceptions", "drop_request_headers", "drop_response_headers",
                                       "allow_request_headers", "allow_response_headers" };
  for (size_t i = 0; i < sizeof lists / sizeof *lists; i++) check_list(L, t, lists[i], 0);
  check_list(L, t, "retry_methods", 1);
  if (opt_is_table(L, t, "target_base_url")) check_list(L, t, "target_base_url", 0); /* or the one URL */
}

/* The gateway options: each off unless the script turns it on (Lilya has none of them). */
static void read_gateway(lua_State *L, int t, rh_proxy_opts *o) {
  o->forwarded_prefix = opt_bool(L, t, "forwarded_prefix", 0);
  o->rewrite_location = opt_bool(L, t, "rewrite_location", 0);
  o->rewrite_cookie_path = opt_bool(L, t, "rewrite_cookie_path", 0);
  o->retry_after = opt_bool(L, t, "retry_after", 0);
}

/* core.proxy_new(opts, mount) -> proxy userdata */
static int l_proxy_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  const char *mount = luaL_optstring(L, 2, "");
  rh_proxy_opts o = { 0 };
  o.mount = mount;
  check_lists(L, 1);
  o.max_fails = (int)opt_num(L, 1, "max_fails", 3);
  o.fail_timeout = opt_num(L, 1, "fail_timeout", 10);
  const char *balance = opt_str(L, 1, "balance");
  if (balance && strcmp(balance, "least_conn") != 0 && strcmp(balance, "round_robin") != 0)
    return luaL_error(L, "relay.proxy: balance is \"round_robin\" or \"least_conn\" (not '%s')", balance);
  o.least_conn = balance && strcmp(balance, "least_conn") == 0;
  o.upstream_prefix = opt_str(L, 1, "upstream_prefix");
  o.preserve_host = opt_bool(L, 1, "preserve_host", 0);
  o.max_retries = (int)opt_num(L, 1, "max_retries", 0);
  o.retry_backoff_factor = opt_num(L, 1, "retry_backoff_factor", 0.2);
  o.max_body = (size_t)opt_num(L, 1, "max_body", 0);
  o.ca_file = opt_str(L, 1, "ca_file");
  o.tls_insecure = opt_bool(L, 1, "tls_insecure", 0);
  o.follow_redirects = opt_bool(L, 1, "follow_redirects", 0);
  read_timeouts(L, 1, &o);
  read_limits(L, 1, &o);
  read_retry_on(L, 1, &o);
  read_gateway(L, 1, &o);
  int statuses[16];
  lua_getfield(L, 1, "retry_statuses");
  if (lua_istable(L, -1)) {
    size_t n = lua_objlen(L, -1);
    for (size_t i = 1; i <= n && i <= 16; i++) {
      lua_rawgeti(L, -1, (int)i);
      statuses[i - 1] = (int)lua_tointeger(L, -1);
      lua_pop(L, 1);
    }
    o.retry_statuses = statuses;
    o.nretry_statuses = n > 16 ? 16 : n;
  }
  lua_pop(L, 1);
  rh_headers extra = RH_HEADERS_INIT;
  lua_getfield(L, 1, "extra_request_headers");
  if (rh_lua_read_headers(L, -1, &extra) < 0) {
    rh_headers_free(&extra);
    return luaL_error(L, "relay.proxy: extra_request_headers: %s", lua_tostring(L, -1));
  }
  lua_pop(L, 1);
  o.extra_request_headers = &extra;
  o.drop_request_headers = opt_list(L, 1, "drop_request_headers", &o.ndrop_request);
  o.drop_response_headers = opt_list(L, 1, "drop_response_headers", &o.ndrop_response);
  o.allow_request_headers = opt_list(L, 1, "allow_request_headers", &o.nallow_request);
  o.allow_response_headers = opt_list(L, 1, "allow_response_headers", &o.nallow_response);
  o.retry_methods = opt_list(L, 1, "retry_methods", &o.nretry_methods);
  if (opt_is_table(L, 1, "target_base_url")) /* a list of upstreams (checked in check_lists) */
    o.target_base_urls = opt_list(L, 1, "target_base_url", &o.ntarget_base_urls);
  else
    o.target_base_url = opt_str(L, 1, "target_base_url");
  char err[300];
  rh_proxy_conf *conf = rh_proxy_conf_new(&o, err, sizeof err);
  rh_headers_free(&extra);
  free((void *)o.drop_request_headers);
  free((void *)o.drop_response_headers);
  free((void *)o.allow_request_headers);
  free((void *)o.allow_response_headers);
  free((void *)o.retry_methods);
  free((void *)o.target_base_urls);
  if (!conf) return luaL_error(L, "relay.proxy: %s", err);

  rh_lua_proxy *p = lua_newuserdata(L, sizeof *p);
  p->conf = conf;
  p->mount = strdup(mount);
  p->on_request = p->on_response = p->cookie = p->access = p->traceback = LUA_NOREF;
  luaL_getmetatable(L, PROXY_MT);
  lua_setmetatable(L, -2);
  p->eager[0] = p->eager[1] = 0;
  p->on_request = hook_ref(L, "on_request", &p->eager[0]);
  p->on_response = hook_ref(L, "on_response", &p->eager[1]);
  p->cookie = opt_ref(L, 1, "rewrite_set_cookie_domain");
  p->access = access_ref(L, p);
  lua_pushcfunction(L, traceback);
  p->traceback = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

static int l_proxy_gc(lua_State *L) {
  rh_lua_proxy *p = luaL_checkudata(L, 1, PROXY_MT);
  if (p->conf) rh_proxy_conf_unref(p->conf);
  p->conf = NULL;
  free(p->mount);
  p->mount = NULL;
  return 0;
}

rh_lua_proxy *rh_lua_to_proxy(lua_State *L, int idx) {
  return lua_type(L, idx) == LUA_TUSERDATA ? luaL_testudata(L, idx, PROXY_MT) : NULL;
}

size_t rh_lua_proxy_max_body(const rh_lua_proxy *p) { return rh_proxy_conf_max_body(p->conf); }

/* ---- hooks ---- */

static int traceback(lua_State *L) {
  luaL_traceback(L, L, lua_tostring(L, 1), 1);
  return 1;
}

/* A hook call's frame: the hooks' message handler, then the hook at ref; the caller pushes the
 * arguments after them. Returns the frame's base (the handler's index). */
static int hook_frame(hook_ctx *h, int ref) {
  lua_State *L = h->gen->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->p->traceback);
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  return lua_gettop(L) - 1;
}

/* Calls the frame at base with what was pushed after it: 0 ok, nresults from base + 1 (the
 * handler stays at base: no value moves), or -1 logged error, the stack back to base - 1. */
static int call_hook(hook_ctx *h, int base, int nresults, const char *which) {
  lua_State *L = h->gen->L;
  rh_watchdog_enter(L);
  int rc = lua_pcall(L, lua_gettop(L) - base - 1, nresults, base);
  rh_watchdog_leave();
  if (rc == 0) return 0;
  RH_LOG(RH_LOG_ERROR, "proxy_hook_error", RH_STR("hook", which), RH_STR("error", lua_tostring(L, -1)),
         RH_STR("request_id", h->request_id));
  lua_settop(L, base - 1);
  return -1;
}

/* 8 bytes with their ASCII capitals made small, all at once: a byte gets 0x20 when it is below
 * 0x80, at least 'A' and not above 'Z' (no carry crosses a byte: each sum stays below 0x100). */
static uint64_t lower8(uint64_t w) {
  uint64_t low7 = w & 0x7f7f7f7f7f7f7f7fu;
  uint64_t upper = (low7 + 0x3f3f3f3f3f3f3f3fu) & ~(low7 + 0x2525252525252525u) & ~w & 0x8080808080808080u;
  return w | upper >> 2;
}

static int word_is_key(const char *k, const char *name) {
  uint64_t a, b;
  memcpy(&a, k, 8);
  memcpy(&b, name, 8);
  return a == lower8(b);
}

/* The table key a pushed field has: its name lowercased (rh_lua_push_headers). A word at a time
 * (the last one overlapping the one before): every key a hook leaves is compared with the head's
 * names. */
static int is_key_of(const char *k, size_t klen, const rh_header *f) {
  if (klen != f->name_len) return 0;
  if (klen >= 8) {
    for (size_t i = 0; i + 8 < klen; i += 8)
      if (!word_is_key(k + i, f->name + i)) return 0;
    return word_is_key(k + klen - 8, f->name + klen - 8);
  }
  for (size_t i = 0; i < klen; i++) {
    char c = f->name[i];
    if (k[i] != (c >= 'A' && c <= 'Z' ? c + 32 : c)) return 0;
  }
  return 1;
}

/* The field of h whose key is k: its index, -1 none, -2 more than one (a repeated field, whose
 * values live in the side table: the full read handles it). */
static long field_of(const rh_headers *h, const char *k, size_t klen) {
  long at = -1;
  for (size_t i = 0; i < h->n; i++) {
    if (!is_key_of(k, klen, &h->items[i])) continue;
    if (at >= 0) return -2;
    at = (long)i;
  }
  return at;
}

/* The table's new and changed fields, pointing into its strings (alive while it is). */
typedef struct {
  const char *k, *v;
  size_t klen, vlen;
} change;


/* One entry of the hook's table (key, value on top) against h: an unchanged field is marked in
 * kept, a valid change goes to ch[*nch]; 0, or -1 for what only the full read decides (a list
 * value, a number, a repeated name, an invalid one: it gives the message). A boolean is no
 * field. A number is not read here: its string would be made on the stack and popped, and ch
 * would point into it after the collector may have freed it (the table holds only the number). */
static int classify(lua_State *L, const rh_headers *h, unsigned char *kept, change *ch, size_t *nch) {
  int vt = lua_type(L, -1);
  if (lua_type(L, -2) != LUA_TSTRING || vt == LUA_TBOOLEAN) return 0;
  if (vt != LUA_TSTRING) return -1;
  change c;
  c.k = lua_tolstring(L, -2, &c.klen);
  c.v = lua_tolstring(L, -1, &c.vlen);
  long at = field_of(h, c.k, c.klen);
  if (at == -2) return -1;
  const rh_header *f = at >= 0 ? &h->items[at] : NULL;
  if (f && f->value_len == c.vlen && memcmp(f->value, c.v, c.vlen) == 0) {
    kept[at] = 1;
    return 0;
  }
  /* the key is a checked field's name lowercased, or checked here: a change goes out marked */
  if (*nch == MAX_SEEN || (!(f && f->checked) && !rh_http_is_token(c.k, c.klen)) ||
      !rh_http_is_field_value(c.v, c.vlen))
    return -1;
  ch[(*nch)++] = c;
  return 0;
}

/* h keeps the fields the table holds unchanged, in order (their bytes stay in its arena), and
 * gets the new and changed ones after them. 0, or -1 (nothing changed) for the full read. */
static int apply_changes(lua_State *L, int t, rh_headers *h) {
  unsigned char kept[MAX_SEEN] = { 0 };
  change ch[MAX_SEEN];
  size_t nch = 0, n = 0;
  if (h->n > MAX_SEEN) return -1;
  lua_pushnil(L);
  while (lua_next(L, t)) {
    int rc = classify(L, h, kept, ch, &nch);
    lua_pop(L, 1);
    if (rc < 0) { lua_pop(L, 1); return -1; }
  }
  for (size_t i = 0; i < h->n; i++)
    if (kept[i]) h->items[n++] = h->items[i];
  h->n = n;
  for (size_t i = 0; i < nch; i++) {
    rh_headers_add(h, ch[i].k, ch[i].klen, ch[i].v, ch[i].vlen);
    h->items[h->n - 1].checked = 1; /* classify checked both: the writer need not again */
  }
  return 0;
}

/* What the hook left in head.headers (at v) back into h. The table pushed (at pushed) is
 * compared with h, so that only what the hook changed is checked and copied: most fields come
 * back as they went (pushed 0: nothing to compare with). A table of its own, a list value or a
 * repeated name takes the full read. */
static void read_back_headers(lua_State *L, int v, int pushed, rh_headers *h) {
  lua_pushvalue(L, v);
  if (pushed && lua_rawequal(L, -1, pushed) && apply_changes(L, pushed, h) == 0) {
    lua_pop(L, 1);
    return;
  }
  rh_headers fresh = RH_HEADERS_INIT;
  if (rh_lua_read_headers(L, -1, &fresh) == 0) {
    rh_headers_free(h);
    *h = fresh;
  } else {
    RH_LOG(RH_LOG_ERROR, "proxy_hook_error", RH_STR("error", lua_tostring(L, -1)));
    lua_pop(L, 1);
    rh_headers_free(&fresh);
  }
  lua_pop(L, 1);
}

/* h's fields into hook_fields, names as the head spells them (the closure lowercases the ones it
 * has not seen at their place); their count, or -1 when C builds the table (more than MAX_SEEN
 * fields, or a repeated name, whose values need the side table). */
static int fill_fields(const rh_headers *h) {
  if (h->n > MAX_SEEN) return -1;
  for (size_t i = 0; i < h->n; i++) {
    const rh_header *f = &h->items[i];
    for (size_t j = 0; j < i; j++)
      if (hook_fields[j].nlen == f->name_len && strncasecmp(hook_fields[j].name, f->name, f->name_len) == 0) return -1;
    hook_fields[i] = (struct rh_hook_field){ f->name, f->value, f->name_len, f->value_len };
  }
  return (int)h->n;
}

/* ---- head:header, head:set_header, head:del_header ----
 * A hook that calls these instead of touching head.headers changes the head's list in place, and
 * no table is built for it (the closure builds head.headers only when the hook reads it). They
 * reach the list of the hook running now through the FFI: hook_cur is set around each call. */
static rh_headers *hook_cur;

/* hook_fields from the list as the methods left it: for a head.headers read after them. */
static int api_refill(void) {
  return hook_cur ? fill_fields(hook_cur) : -1;
}

/* The first value of name, its length at *vlen; NULL when there is none. */
static const char *api_get(const char *name, size_t nlen, size_t *vlen) {
  if (!hook_cur || !rh_http_is_token(name, nlen)) return NULL;
  const rh_header *f = rh_headers_find(hook_cur, name, NULL);
  if (!f) return NULL;
  *vlen = f->value_len;
  return f->value;
}

/* Drops name's fields (replace), then adds name: value (value NULL: none). 0, or what was wrong:
 * -1 a name that is not a token, -2 a value with control bytes, -3 no hook is running. Checked
 * here, so the writer need not look again. */
static int api_set(const char *name, size_t nlen, const char *value, size_t vlen, int replace) {
  if (!hook_cur) return -3;
  if (!rh_http_is_token(name, nlen)) return -1;
  if (value && !rh_http_is_field_value(value, vlen)) return -2;
  if (replace) rh_headers_remove(hook_cur, name);
  if (!value) return 0;
  rh_headers_add(hook_cur, name, nlen, value, vlen);
  hook_cur->items[hook_cur->n - 1].checked = 1;
  return 0;
}

static const struct rh_hook_api hook_api = { api_refill, api_get, api_set };

/* head.headers built by C, when the methods left more fields than hook_fields holds or a
 * repeated name: the hook's table is then read back whole. */
static int l_hook_full(lua_State *L) {
  if (!hook_cur) return 0;
  rh_lua_push_headers(L, hook_cur);
  return 1;
}

/* Runs a hook with its head's list as hook_cur (a hook never runs inside another, but a
 * previous value is kept all the same). */
static int call_on(hook_ctx *h, rh_headers *list, int base, const char *which) {
  rh_headers *prev = hook_cur;
  hook_cur = list;
  int rc = call_hook(h, base, LUA_MULTRET, which);
  hook_cur = prev;
  return rc;
}

/* The changes the closure found (at i: the count m of what follows as name/value pairs, new or
 * changed, then the places from 0 of the fields it dropped or changed, up to the top; see
 * hooks_wrapper) applied to h: the fields left alone stay in order, the new ones come after
 * them. 0, or -1 (h unchanged) when a change is not a valid field: the full read gives the
 * message. */
static int apply_diff(lua_State *L, int i, rh_headers *h) {
  int top = lua_gettop(L), m = (int)lua_tointeger(L, i), pairs_end = i + m;
  unsigned char gone[MAX_SEEN] = { 0 };
  for (int j = i + 1; j < pairs_end; j += 2) {
    size_t klen, vlen;
    const char *k = lua_tolstring(L, j, &klen), *v = lua_tolstring(L, j + 1, &vlen);
    if (!rh_http_is_token(k, klen) || !rh_http_is_field_value(v, vlen)) return -1;
  }
  for (int j = pairs_end + 1; j <= top; j++) {
    lua_Integer at = lua_tointeger(L, j);
    if (at >= 0 && (size_t)at < h->n) gone[at] = 1;
  }
  size_t n = 0;
  for (size_t f = 0; f < h->n; f++)
    if (!gone[f]) h->items[n++] = h->items[f];
  h->n = n;
  for (int j = i + 1; j < pairs_end; j += 2) {
    size_t klen, vlen;
    const char *k = lua_tolstring(L, j, &klen), *v = lua_tolstring(L, j + 1, &vlen);
    rh_headers_add(h, k, klen, v, vlen);
    h->items[h->n - 1].checked = 1; /* checked above: the writer need not again */
  }
  return 0;
}

/* The hook's head.headers (at v) back into h when the closure ran with the count, as the closure
 * answers (left()): true, 0 when no table was built (the methods changed h itself); the table and
 * -1 when C built it in the hook (compared with h); the table and its changes (apply_diff); or
 * the table alone, read again whole (another table, a value not a string). */
static void read_back_built(lua_State *L, int v, rh_headers *h) {
  if (lua_type(L, v) == LUA_TBOOLEAN && lua_gettop(L) > v) return; /* never built: the methods' list */
  if (lua_gettop(L) > v && lua_tointeger(L, v + 1) == -1) return read_back_headers(L, v, v, h);
  if (lua_gettop(L) > v && apply_diff(L, v + 1, h) == 0) return;
  lua_pushvalue(L, v);
  read_back_headers(L, lua_gettop(L), 0, h);
}

/* The access phase's changes: the head the policy (and on_request) starts from. */
static void apply_access(hook_ctx *h, rh_proxy_head *head) {
  if (h->method) { free(head->method); head->method = h->method; h->method = NULL; }
  if (h->target) { free(head->target); head->target = h->target; h->target = NULL; }
  if (h->has_headers) {
    rh_headers_free(head->headers);
    *head->headers = h->headers;
    rh_headers_init(&h->headers);
    h->has_headers = 0;
  }
}

/* on_request's answer (return status, body, headers), its results at r. */
static int hook_answer(hook_ctx *h, rh_proxy_head *head, int r, char **body) {
  lua_State *L = h->gen->L;
  int status = (int)lua_tointeger(L, r);
  *body = strdup(lua_isstring(L, r + 1) ? lua_tostring(L, r + 1) : "");
  if (head->answer && rh_lua_read_headers(L, r + 2, head->answer) < 0) {
    RH_LOG(RH_LOG_ERROR, "proxy_hook_error", RH_STR("hook", "on_request"), RH_STR("error", lua_tostring(L, -1)),
           RH_STR("request_id", h->request_id));
    lua_pop(L, 1);
    rh_headers_clear(head->answer);
    free(*body);
    *body = strdup("Internal Server Error: the on_request hook answered with bad headers ");
    status = 500;
  }
  return status;
}

/* What a hook left in head.method or head.path, when it differs from what it was given (most
 * hooks leave both as they came: no copy then). */
static void replace_str(char **dst, const char *v) {
  if (v && (!*dst || strcmp(*dst, v) != 0)) { free(*dst); *dst = strdup(v); }
}

/* The hook's headers, at pushed and as the closure's last two arguments, three ways. The closure
 * builds the table (1): nil at pushed, then the field count and false (hook_fields not filled: a
 * hook that has never read head.headers may use only the methods; api_refill fills them if it
 * reads it) or nil (filled). Or C built it (0): the table at pushed, then nil and the table (the
 * one at pushed is compared with what the hook leaves). */
static int push_hook_headers(lua_State *L, int pushed, const rh_headers *h, int eager) {
  if (!eager && h->n <= MAX_SEEN) { /* the closure fills them (api_refill) if the hook reads the table */
    lua_pushnil(L);
    lua_replace(L, pushed);
    lua_pushinteger(L, (lua_Integer)h->n);
    lua_pushboolean(L, 0);
    return 1;
  }
  int n = fill_fields(h);
  if (n >= 0) {
    lua_pushnil(L);
    lua_replace(L, pushed);
    lua_pushinteger(L, n);
    lua_pushnil(L);
    return 1;
  }
  rh_lua_push_headers(L, h);
  lua_pushvalue(L, -1);
  lua_replace(L, pushed);
  lua_pushnil(L);
  lua_insert(L, -2);
  return 0;
}

/* head.headers (at v) back into h, as its closure built it (built) or C did (compared with the
 * table at pushed). */
static void read_back(lua_State *L, int v, int pushed, int built, rh_headers *h) {
  if (built) read_back_built(L, v, h);
  else read_back_headers(L, v, pushed, h);
}

static int hook_request(void *ud, rh_proxy_head *head, char **body) {
  hook_ctx *h = ud;
  apply_access(h, head);
  if (h->p->on_request == LUA_NOREF) return 0;
  lua_State *L = h->gen->L;
  int top = lua_gettop(L), pushed = top + 1;
  lua_pushnil(L); /* push_hook_headers' slot */
  int base = hook_frame(h, h->p->on_request);
  lua_pushstring(L, head->method);
  lua_pushstring(L, head->target);
  lua_pushstring(L, head->req->peer);
  lua_pushstring(L, head->req->id);
  int built = push_hook_headers(L, pushed, head->headers, h->p->eager[0]);
  /* results: status, body, answer's headers, head.method, head.path, head.headers, changes */
  if (call_on(h, head->headers, base, "on_request") < 0) {
    *body = strdup("Internal Server Error: the on_request hook failed ");
    lua_settop(L, top);
    return 500;
  }
  int r = base + 1, status = 0;
  if (lua_isnumber(L, r)) {
    status = hook_answer(h, head, r, body);
  } else {
    replace_str(&head->method, lua_tostring(L, r + 3));
    replace_str(&head->target, lua_tostring(L, r + 4));
    read_back(L, r + 5, pushed, built, head->headers);
  }
  lua_settop(L, top);
  return status;
}

static void hook_response(void *ud, rh_proxy_head *head) {
  hook_ctx *h = ud;
  if (h->p->on_response == LUA_NOREF) return;
  lua_State *L = h->gen->L;
  int top = lua_gettop(L), pushed = top + 1;
  lua_pushnil(L); /* push_hook_headers' slot */
  int base = hook_frame(h, h->p->on_response);
  lua_pushinteger(L, head->status);
  lua_pushstring(L, head->req->id);
  int built = push_hook_headers(L, pushed, head->headers, h->p->eager[1]);
  if (call_on(h, head->headers, base, "on_response") == 0) { /* head.status, head.headers, changes */
    if (lua_isnumber(L, base + 1)) head->status = (int)lua_tointeger(L, base + 1);
    read_back(L, base + 2, pushed, built, head->headers);
  } else {
    head->status = -1; /* what it meant to strip must not pass: 500 */
  }
  lua_settop(L, top);
}

static char *hook_cookie(void *ud, const char *cookie) {
  hook_ctx *h = ud;
  if (h->p->cookie == LUA_NOREF) return NULL;
  lua_State *L = h->gen->L;
  int base = hook_frame(h, h->p->cookie);
  lua_pushstring(L, cookie);
  char *out = NULL;
  if (call_hook(h, base, 1, "rewrite_set_cookie_domain") == 0) {
    if (lua_isstring(L, -1)) out = strdup(lua_tostring(L, -1));
    lua_settop(L, base - 1);
  }
  return out;
}

static void hook_release(void *ud) {
  hook_ctx *h = ud;
  rh_gen_unref(h->gen);
  free(h->method);
  free(h->target);
  rh_headers_free(&h->headers);
  free(h);
}

static hook_ctx *new_ctx(rh_gen *g, rh_lua_proxy *p, rh_http_req *req) {
  hook_ctx *h = calloc(1, sizeof *h);
  if (!h) abort();
  h->gen = g;
  h->p = p;
  h->request_id = req->id;
  rh_headers_init(&h->headers);
  rh_gen_ref(g);
  return h;
}

/* Only the hooks that have something to do: without on_request the proxy passes the client's
 * fields on without a copy for a hook to change. */
static void forward(hook_ctx *h, rh_http_req *req) {
  rh_lua_proxy *p = h->p;
  int access_set = h->method || h->target || h->has_headers;
  rh_proxy_hooks hooks = { p->on_request != LUA_NOREF || access_set ? hook_request : NULL,
                           p->on_response != LUA_NOREF ? hook_response : NULL,
                           p->cookie != LUA_NOREF ? hook_cookie : NULL, hook_release, h, h->pick };
  rh_proxy_start(req, (h->via ? h->via : p)->conf, &hooks);
}

static int has_hooks(const rh_lua_proxy *p) {
  return p->on_request != LUA_NOREF || p->on_response != LUA_NOREF || p->cookie != LUA_NOREF;
}

/* ---- the access phase ---- */

/* Where the phase ended: its answer, or the changes the request goes on with. */
typedef struct {
  hook_ctx *ctx;
  rh_http_req *req;
  int status;              /* an answer: status, body, fields */
  char *body;
  rh_headers fields;
} access_end;

/* The request rh_lua_proxy_start is running the phase of right now: a phase that ends without
 * waiting goes on from there, with no loop turn in between. */
static rh_http_req *starting;
static access_end *ended_now;
static access_end ended_here; /* where such a phase ended (copied out at once): not allocated */

static void end_free(access_end *e) {
  free(e->body);
  rh_headers_free(&e->fields);
  if (e != &ended_here) free(e);
}

static void go_on_with(access_end *e);

/* After the phase (or p:forward): the answer, or the request on to the engine. */
static void go_on(void *ud) {
  go_on_with(ud);
  free(ud);
}

static void go_on_with(access_end *e) {
  rh_http_req *req = e->req;
  rh_http_resume_body(req); /* the body was held at the server's buffer while the phase ran */
  if (!req->conn) { /* the client left meanwhile: nothing goes up */
    hook_release(e->ctx);
    rh_http_req_release(req);
  } else if (e->status) {
    rh_proxy_early_answer(req, e->status, e->body, &e->fields);
    e->body = NULL;
    hook_release(e->ctx);
    rh_http_req_release(req);
  } else {
    forward(e->ctx, req);
  }
  free(e->body);
  rh_headers_free(&e->fields);
}

/* done's argument a (A_...) as a malloc'd string, or NULL. */
static char *arg_dup(lua_State *L, int a) { return lua_isstring(L, a) ? strdup(lua_tostring(L, a)) : NULL; }

/* "a", "b" for the message naming the mount's list. */
static void push_urls(lua_State *L, const rh_proxy_conf *c) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < rh_proxy_conf_count(c); i++) {
    if (i) luaL_addstring(&b, ", ");
    luaL_addstring(&b, rh_proxy_conf_url(c, i));
  }
  luaL_pushresult(&b);
}

/* req.upstream as an entry of the mount's own list: its index (from 1) or its URL as written.
 * 1 chosen, 0 not such a value, -1 not in the list (a message naming it, and where the phase
 * set it, on top). */
static int read_pick(lua_State *L, int t, hook_ctx *h) {
  const rh_proxy_conf *c = h->p->conf;
  int type = lua_type(L, -1);
  if (type != LUA_TNUMBER && type != LUA_TSTRING) return 0;
  double n = lua_tonumber(L, -1);
  size_t i = type == LUA_TSTRING ? rh_proxy_conf_find(c, lua_tostring(L, -1))
             : n >= 1 && n <= (double)rh_proxy_conf_count(c) && n == (double)(size_t)n ? (size_t)n : 0;
  if (i) {
    h->pick = i;
    lua_pop(L, 1);
    return 1;
  }
  lua_getfield(L, t, "_upstream_at"); /* "file:line: " of the assignment (relay.http) */
  if (!lua_isstring(L, -1)) {
    lua_pop(L, 1);
    lua_pushliteral(L, "");
  }
  lua_pushfstring(L, "req.upstream = %s%s%s is not one of this mount's upstreams (", type == LUA_TSTRING ? "'" : "",
                  lua_tostring(L, -2), type == LUA_TSTRING ? "'" : "");
  push_urls(L, c);
  lua_pushliteral(L, ", or 1..N for them in order)");
  lua_concat(L, 4);
  lua_replace(L, -2);
  return -1;
}

/* req.upstream: an entry of this mount's list (read_pick), or another relay.proxy value, built
 * for this mount's prefix (its engine() makes and keeps one per prefix, alive with the
 * generation). 0, or -1 with a message on top. */
static int read_upstream(lua_State *L, int t, hook_ctx *h) {
  lua_pushvalue(L, A_UPSTREAM); /* req.upstream = v is kept in _upstream (AccessRequest's __newindex) */
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return 0; }
  int picked = read_pick(L, t, h);
  if (picked) return picked > 0 ? 0 : -1;
  if (lua_istable(L, -1)) lua_getfield(L, -1, "engine");
  else lua_pushnil(L);
  if (!lua_isfunction(L, -1)) {
    lua_pop(L, 2);
    lua_getfield(L, t, "_upstream_at");
    lua_pushfstring(L, "%sreq.upstream must be one of this mount's upstreams (its URL or its place in the list) or a "
                    "relay.proxy{...} value", lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
    lua_replace(L, -2);
    return -1;
  }
  lua_insert(L, -2);
  lua_pushstring(L, h->p->mount);
  if (lua_pcall(L, 2, 1, 0) != 0) return -1;
  h->via = rh_lua_to_proxy(L, -1);
  lua_pop(L, 1);
  return 0;
}

/* req.headers (on top) into h->headers: as a diff against the client's fields when it is still
 * the table the phase was given (at pushed), so that the fields it left alone are copied, not
 * read back and checked again (apply_changes); a table of its own, a list value or a repeated
 * name takes the full read. 0, or -1 with the message on top. */
static int read_access_headers(lua_State *L, int pushed, const rh_http_req *req, rh_headers *h) {
  if (lua_rawequal(L, -1, pushed) && req->headers.n <= MAX_SEEN) {
    for (size_t i = 0; i < req->headers.n; i++) rh_headers_add_field(h, &req->headers.items[i]);
    if (apply_changes(L, pushed, h) == 0) return 0;
    rh_headers_clear(h);
  }
  return rh_lua_read_headers(L, -1, h);
}

/* What the phase left in its table (method, upstream_path, headers, upstream) into the hooks'
 * context. */
static int read_changes(lua_State *L, const rh_http_req *req, hook_ctx *h) {
  if (read_upstream(L, A_REQ, h) < 0) return -1;
  h->method = arg_dup(L, A_METHOD);
  h->target = arg_dup(L, A_UPSTREAM_PATH);
  lua_pushvalue(L, A_HEADERS);
  h->has_headers = 1;
  int rc = read_access_headers(L, A_GIVEN, req, &h->headers);
  if (rc < 0) lua_remove(L, -2); /* the message stays on top */
  else lua_pop(L, 1);
  return rc;
}

/* The phase's results (done's arguments, A_...) into e: NULL, or what was wrong. */
static const char *read_result(lua_State *L, const rh_http_req *req, access_end *e) {
  int bad;
  if (!lua_isnumber(L, A_STATUS)) {
    bad = read_changes(L, req, e->ctx) < 0;
  } else {
    e->status = (int)lua_tointeger(L, A_STATUS);
    e->body = strdup(lua_isstring(L, A_BODY) ? lua_tostring(L, A_BODY) : "");
    if (e->status < 200 || e->status > 599) return "status out of range (200..599)";
    bad = rh_lua_read_headers(L, A_FIELDS, &e->fields) < 0;
  }
  if (!bad) return NULL;
  return lua_isstring(L, -1) ? lua_tostring(L, -1) : "(error object is not a string)";
}

/* Where the phase ends: ended_here for the request being started now, else its own. */
static access_end *new_end(const rh_http_req *req) {
  access_end *e = &ended_here;
  if (req != starting) e = malloc(sizeof *e);
  if (!e) abort();
  memset(e, 0, sizeof *e);
  rh_headers_init(&e->fields);
  return e;
}

/* The phase's last call, from its coroutine: done(p, req, ..., status?, body?, headers?) (A_...). The
 * request leaves the task here (so its end does not answer it) and goes on after the
 * coroutine has ended. */
static int l_access_done(lua_State *L) {
  rh_task *t = rh_task_current(L);
  if (!t || !t->req) return luaL_error(L, "relay.proxy: access phase ended outside its task");
  rh_lua_proxy *p = lua_touserdata(L, A_P);
  access_end *e = new_end(t->req);
  e->ctx = new_ctx(t->gen, p, t->req);
  const char *why = read_result(L, t->req, e);
  if (why) {
    hook_release(e->ctx);
    end_free(e);
    return luaL_error(L, "relay.proxy access: %s", why); /* a handler error: 500 with the id */
  }
  e->req = t->req;
  t->req = NULL;
  e->req->ud = NULL;
  if (e->req == starting) ended_now = e;
  else rh_soon_call(go_on, e);
  return 0;
}

/* The client's request as it came, as the task body's arguments (it builds the phase's table:
 * a table constructor's constant keys cost less than lua_setfield's). */
static int push_access_req(lua_State *co, const rh_http_req *r) {
  lua_pushstring(co, r->method);
  lua_pushlstring(co, r->path, r->path_len);
  lua_pushlstring(co, r->query ? r->query : "", r->query_len);
  lua_pushstring(co, r->peer);
  lua_pushstring(co, r->id);
  lua_pushstring(co, r->tls ? "https" : "http");
  rh_lua_push_headers(co, &r->headers);
  return 7;
}

/* Runs the access phase as a task: its body (access_ref) with the request's fields. */
static void start_access(rh_gen *g, rh_lua_proxy *p, rh_http_req *req) {
  /* only a body is held: pausing stops reading, and a bodiless request keeps reading so that a
   * client that resets the connection is seen (and nothing goes up for it) */
  int has_body = (req->content_length != UINT64_MAX && req->content_length > 0) ||
                 rh_headers_find(&req->headers, "transfer-encoding", NULL);
  if (has_body) rh_http_pause_body(req);
  rh_task *t = rh_task_new(g, req); /* takes our reference on req */
  req->ud = t;
  lua_State *co = t->co;
  lua_rawgeti(co, LUA_REGISTRYINDEX, p->access);
  int nargs = push_access_req(co, req);
  starting = req;
  ended_now = NULL;
  rh_task_start(t, nargs);
  starting = NULL;
  if (ended_now) {
    access_end e = *ended_now; /* going on may start another phase, which would reuse ended_here */
    ended_now = NULL;
    go_on_with(&e);
  }
}

void rh_lua_proxy_start(rh_gen *g, rh_lua_proxy *p, rh_http_req *req) {
  if (p->access != LUA_NOREF) start_access(g, p, req);
  else if (!has_hooks(p)) rh_proxy_start(req, p->conf, NULL); /* no Lua to keep: no context */
  else forward(new_ctx(g, p, req), req);
}

/* ---- forwarding from a handler ---- */

static int named_in(const rh_headers *set, const rh_header *f) {
  for (size_t i = 0; i < set->n; i++)
    if (set->items[i].name_len == f->name_len && strncasecmp(set->items[i].name, f->name, f->name_len) == 0) return 1;
  return 0;
}

/* The client's fields with the handler's set over them (each name replaced). */
static int forward_headers(lua_State *L, int idx, const rh_http_req *r, rh_headers *out) {
  rh_headers set = RH_HEADERS_INIT;
  if (rh_lua_read_headers(L, idx, &set) < 0) {
    rh_headers_free(&set);
    return -1;
  }
  for (size_t i = 0; i < r->headers.n; i++) {
    const rh_header *f = &r->headers.items[i];
    if (!named_in(&set, f)) rh_headers_add(out, f->name, f->name_len, f->value, f->value_len);
  }
  for (size_t i = 0; i < set.n; i++)
    rh_headers_add(out, set.items[i].name, set.items[i].name_len, set.items[i].value, set.items[i].value_len);
  rh_headers_free(&set);
  return 0;
}

/* core.proxy_forward(proxy, ex, path?, headers?): the handler's request goes to the C engine
 * (streaming, retries, timeouts, WebSocket pass-through as on a mount). It leaves the task now
 * and is forwarded on the next turn, outside the handler's coroutine. */
static int l_proxy_forward(lua_State *L) {
  rh_lua_proxy *p = luaL_checkudata(L, 1, PROXY_MT);
  rh_exchange *ex = luaL_checkudata(L, 2, "relay.exchange");
  rh_task *t = ex->task;
  if (!t || !t->req) return luaL_error(L, "p:forward: this request is over");
  if (t->req->head_sent) return luaL_error(L, "p:forward: the response has already started");
  hook_ctx *h = new_ctx(t->gen, p, t->req);
  if (!lua_isnoneornil(L, 4)) {
    h->has_headers = 1;
    if (forward_headers(L, 4, t->req, &h->headers) < 0) {
      hook_release(h);
      return lua_error(L);
    }
  }
  if (lua_isstring(L, 3)) h->target = strdup(lua_tostring(L, 3));
  access_end *e = calloc(1, sizeof *e);
  if (!e) abort();
  rh_headers_init(&e->fields);
  e->ctx = h;
  e->req = t->req;
  t->req = NULL; /* the task's reference moves to the engine */
  e->req->ud = NULL;
  rh_soon_call(go_on, e);
  lua_pushboolean(L, 1);
  return 1;
}

/* Makes a mount's access task body: the phase's results go to done as its last call. */
static const char access_wrapper[] =
    "local fn, p, done = ...\n"
    "local setmetatable, rawget, AccessRequest = setmetatable, rawget, require('relay.http').AccessRequest\n"
    "return function(method, path, query, peer, id, scheme, headers)\n"
    "  local req = setmetatable({ method = method, path = path, query = query, peer = peer, id = id,\n"
    "                             scheme = scheme, headers = headers }, AccessRequest)\n"
    "  local status, body, fields = fn(req)\n"
    "  return done(p, req, headers, rawget(req, 'method'), rawget(req, 'upstream_path'), rawget(req, 'headers'),\n"
    "              rawget(req, '_upstream'), status, body, fields)\n"
    "end\n";

/* Makes a mount's on_request or on_response closure (hook_ref), called with the head's fields
 * and its headers as n (the closure builds the table from hook_fields, at F) or t (a table C
 * built). What it built it compares after the hook and returns after head.headers: the count of
 * new or changed name/value values, those pairs, then the places (from 0) of the fields the hook
 * dropped or changed; nothing when only C's full read can tell (a value not a string, over 64
 * changes, another table in head.headers). A loop over the table here costs less than C's
 * lua_next per field, and the C array less than a C API call per string and per store.
 * ks/vs/pos are kept from call to call (no garbage): pos[name] may be a place from an earlier
 * call, which ks tells (a place counts only where ks holds that name), and is renewed every 64
 * calls so that names not seen again do not pile up; a hook that raised leaves them in use
 * (busy), so the next call takes new ones. A value with the bytes of the string vs holds at its
 * place is that string (as), and a name with the bytes rs holds there (the name as the last head
 * spelled it) is ks's lowercase one (key): a memcmp through the FFI costs less than ffi.string's
 * hash and intern, and most heads repeat the last one's fields. Its table has room for two
 * fields more than the head's (hooks mostly add one, or set one the head lacks to nil, which
 * makes a key too), so that the first addition does not rehash it. head is made in run(), apart
 * from the loops, so that the compiler can leave it unallocated. The head's methods (Head) change
 * the C list itself through hook_api while no table is built; head.headers is then built on its
 * first read, and before every later call of a hook that has read it once (eager). */
static const char hooks_wrapper[] =
    "local kind, fn, fields, api, full, eager_at = ...\n"
    "local ffi = require 'ffi'\n"
    "if not pcall(ffi.typeof, 'struct rh_hook_field') then ffi.cdef '" STR(HOOK_FIELD_DECL) ";' end\n"
    "if not pcall(ffi.typeof, 'struct rh_hook_api') then ffi.cdef '" STR(HOOK_API_DECL) ";' end\n"
    "if not pcall(function() return ffi.C.memcmp end) then\n"
    "  ffi.cdef 'int memcmp(const void *, const void *, size_t);'\n"
    "end\n"
    "local F, A, C = ffi.cast('const struct rh_hook_field *', fields), ffi.cast('const struct rh_hook_api *', api), ffi.C\n"
    "local str, lower, tnew, Headers = ffi.string, string.lower, require 'table.new', require('relay.http').Headers\n"
    "local setmetatable, next, rawget, rawset, type, unpack, tostring, error =\n"
    "  setmetatable, next, rawget, rawset, type, unpack, tostring, error\n"
    "local ks, vs, rs, pos, out, busy, calls = {}, {}, {}, {}, {}, false, 0\n"
    "local function is(p, len, s) return s and len == #s and C.memcmp(p, s, len) == 0 end\n"
    "local function as(p, len, s)\n"
    "  if is(p, len, s) then return s end\n"
    "  return str(p, len)\n"
    "end\n"
    "local function key(i, f)\n"
    "  if is(f.name, f.nlen, rs[i]) then return ks[i] end\n"
    "  local r = str(f.name, f.nlen)\n"
    "  rs[i] = r\n"
    "  return lower(r)\n"
    "end\n"
    "local function begin()\n"
    "  calls = calls + 1\n"
    "  if busy then ks, vs, rs = {}, {}, {} end\n"
    "  if busy or calls > 64 then pos, calls = {}, 0 end\n"
    "  busy = true\n"
    "end\n"
    "local function build(n)\n"
    "  local t = tnew(0, n + 2)\n"
    "  for i = 1, n do\n"
    "    local f = F[i - 1]\n"
    "    local k, v = key(i, f), as(f.value, f.vlen, vs[i])\n"
    "    ks[i] = k; vs[i] = v; pos[k] = i; t[k] = v\n"
    "  end\n"
    "  setmetatable(t, Headers) -- not a tail call: that one the compiler cannot return from (NYI)\n"
    "  return t\n"
    "end\n"
    "local function changes(t, built, n)\n"
    "  busy = false\n"
    "  if t ~= built then return end\n"
    "  local kept, m = 0, 0\n"
    "  for k, v in next, t do\n"
    "    local p = pos[k]\n"
    "    if p and p <= n and ks[p] == k and vs[p] == v then kept = kept + 1\n"
    "    elseif type(k) == 'string' and type(v) ~= 'boolean' then\n"
    "      if type(v) ~= 'string' or m >= 128 then return end\n"
    "      out[m + 1] = k; out[m + 2] = v; m = m + 2\n"
    "    end\n"
    "  end\n"
    "  local r = m\n"
    "  if kept < n then\n"
    "    for i = 1, n do if rawget(t, ks[i]) ~= vs[i] then r = r + 1; out[r] = i - 1 end end\n"
    "  end\n"
    "  return m, unpack(out, 1, r)\n"
    "end\n"
    "-- The call in progress: its request id (cur: a head whose id is not cur belongs to a call that\n"
    "-- has returned, and its methods raise), the count of the fields in hook_fields (changed: a method\n"
    "-- has changed the list since C filled them), the table built (by C when compare: a repeated\n"
    "-- name, or more fields than hook_fields holds). A hook that has read head.headers once gets\n"
    "-- it built before every call (eager): built inside __index it cost 4.6 k more instructions per\n"
    "-- request (table policy, tools/perf/per-request).\n"
    "local cur, cur_n, changed, compare, built = nil, 0, false, false, nil\n"
    "local eager = ffi.cast('uint8_t *', eager_at) -- [0] = 1: C fills hook_fields before each call\n"
    "local Head = {}\n"
    "-- The table from the list as it is now (C builds it for a repeated name, whose values the\n"
    "-- Headers side table holds: compared with the list after the hook).\n"
    "local function build_now()\n"
    "  if changed then cur_n, changed = A.refill(), false end\n"
    "  local n = cur_n\n"
    "  if n < 0 then compare = true; return full() end\n"
    "  return build(n)\n"
    "end\n"
    "local function headers_of(head)\n"
    "  if rawget(head, 'id') ~= cur then return nil end\n"
    "  eager[0] = 1\n"
    "  built = build_now()\n"
    "  rawset(head, 'headers', built)\n"
    "  return built\n"
    "end\n"
    "Head.__index = function(head, k)\n"
    "  if k == 'headers' then return headers_of(head) end\n"
    "  return Head[k]\n"
    "end\n"
    "local WRONG = { [-1] = 'is not a token', [-2] = 'has a value with control characters',\n"
    "                [-3] = 'belongs to a head whose hook has returned' }\n"
    "local vlen = ffi.new('size_t[1]')\n"
    "function Head.header(head, name)\n"
    "  local t = rawget(head, 'headers')\n"
    "  if t and rawget(head, 'id') == cur then return t[name] end\n"
    "  if rawget(head, 'id') ~= cur then error('head:header: header ' .. tostring(name) .. ' ' .. WRONG[-3], 2) end\n"
    "  if type(name) ~= 'string' then return nil end\n"
    "  local p = A.get(name, #name, vlen)\n"
    "  if p == nil then return nil end\n"
    "  return str(p, vlen[0])\n"
    "end\n"
    "local function put(name, v, replace, what)\n"
    "  if type(v) == 'number' then v = tostring(v) end\n"
    "  if v ~= nil and type(v) ~= 'string' then\n"
    "    error(('%s: header %s: the value must be a string, a number or a list of them, not %s'):format(what, name, type(v)), 4)\n"
    "  end\n"
    "  local rc = A.set(name, #name, v, v and #v or 0, replace)\n"
    "  if rc ~= 0 then error(('%s: header %s %s'):format(what, name, WRONG[rc]), 4) end\n"
    "end\n"
    "-- head.headers[name] = value when the table was built (read back after the hook, as ever),\n"
    "-- else the list itself: a list value is one field per entry, in order.\n"
    "local function set(head, name, value, what)\n"
    "  if rawget(head, 'id') ~= cur then error(what .. ': header ' .. tostring(name) .. ' ' .. WRONG[-3], 3) end\n"
    "  local t = rawget(head, 'headers')\n"
    "  if t then t[name] = value; return end\n"
    "  if type(name) ~= 'string' then error(what .. ': the header name must be a string', 3) end\n"
    "  changed = true\n"
    "  if type(value) ~= 'table' then put(name, value, 1, what); return end -- not a tail call: the levels\n"
    "  put(name, nil, 1, what)\n"
    "  for i = 1, #value do put(name, value[i], 0, what) end\n"
    "end\n"
    "function Head.set_header(head, name, value)\n"
    "  if value == nil then error('head:set_header: header ' .. tostring(name) .. ': no value (head:del_header removes one)', 2) end\n"
    "  set(head, name, value, 'head:set_header')\n"
    "end\n"
    "function Head.del_header(head, name) set(head, name, nil, 'head:del_header') end\n"
    "-- What the hook left: nothing to read back when head.headers was never built (the methods\n"
    "-- changed the list itself), else the table and what changed in it.\n"
    "local function left(t)\n"
    "  if t == nil and not built then busy = false; return true, 0 end\n"
    "  if compare and t == built then busy = false; return t, -1 end\n"
    "  return t, changes(t, built, cur_n)\n"
    "end\n"
    "-- A new call: the table its head starts with (nil: built when read). The head is made in run\n"
    "-- and known by its id, not kept: dead before changes' loop, it need not be allocated (kept as\n"
    "-- an upvalue it was: 1.6 k instructions a request). Its constructor names headers even when\n"
    "-- nil, so that its hash has room for the key a read adds.\n"
    "-- t: nil when C filled hook_fields (an eager hook), false when it did not.\n"
    "local function start(n, t)\n"
    "  begin()\n"
    "  cur_n, changed, compare, built = n, t == false, false, nil\n"
    "  if t == nil then built = build(n) end\n"
    "  return built\n"
    "end\n"
    "if kind == 'on_request' then\n"
    "  local function run(method, path, peer, id, t)\n"
    "    local head = setmetatable({ method = method, path = path, peer = peer, id = id, headers = t }, Head)\n"
    "    cur = id -- every call: a raised hook's id must not pass for a later one\n"
    "    local status, body, answer = fn(head)\n"
    "    cur = nil\n"
    "    return status, body, answer, head.method, head.path, rawget(head, 'headers')\n"
    "  end\n"
    "  return function(method, path, peer, id, n, t)\n"
    "    if not n then return run(method, path, peer, id, t) end\n"
    "    local status, body, answer, m, p, h = run(method, path, peer, id, start(n, t))\n"
    "    return status, body, answer, m, p, left(h)\n"
    "  end\n"
    "end\n"
    "local function run(status, id, t)\n"
    "  local head = setmetatable({ status = status, id = id, headers = t }, Head)\n"
    "  cur = id\n"
    "  fn(head)\n"
    "  cur = nil\n"
    "  return head.status, rawget(head, 'headers')\n"
    "end\n"
    "return function(status, id, n, t)\n"
    "  if not n then return run(status, id, t) end\n"
    "  local st, h = run(status, id, start(n, t))\n"
    "  return st, left(h)\n"
    "end\n";

void rh_lua_register_proxy(lua_State *L) {
  if (luaL_loadbuffer(L, access_wrapper, sizeof access_wrapper - 1, "=relay.proxy access") != 0) lua_error(L);
  lua_setfield(L, LUA_REGISTRYINDEX, "relay.proxy_access");
  if (luaL_loadbuffer(L, hooks_wrapper, sizeof hooks_wrapper - 1, "=relay.proxy hooks") != 0) lua_error(L);
  lua_setfield(L, LUA_REGISTRYINDEX, "relay.proxy_hooks");
  luaL_newmetatable(L, PROXY_MT);
  lua_pushcfunction(L, l_proxy_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_proxy_new);
  lua_setfield(L, -2, "proxy_new");
  lua_pushcfunction(L, l_proxy_forward);
  lua_setfield(L, -2, "proxy_forward");
}
