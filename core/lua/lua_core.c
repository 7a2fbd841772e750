/* lua_core: relay.core, the C half of the `relay` module: routes, request and response
 * objects, sleeping, timers and logging. the Lua modules under lua/relay wrap it into the public API. */
#include <lauxlib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <unistd.h>

#include "http/head.h"
#include "buf/buf.h"
#include "log/log.h"
#include "lua/bind.h"
#include "lua/gen.h"
#include "lua/lua_proxy.h"

#define EXCHANGE_MT "relay.exchange"

/* ---- routes ---- */

/* Which of a pattern's parameters (bit i: the i-th, as the router numbers them: each "/:name"
 * in order, then a prefix's rest "*") name a secret, to be hidden in the access log (core/log). */
static unsigned secret_params(const char *pattern) {
  unsigned bits = 0, i = 0;
  for (const char *p = pattern; (p = strstr(p, "/:")); i++) {
    const char *name = p + 2, *end = strchr(name, '/');
    if (rh_log_is_secret_key(name, end ? (size_t)(end - name) : strlen(name))) bits |= 1u << i;
    p = name;
  }
  return bits;
}

/* core.route_add(method, pattern, fn or proxy, max_body, websocket_protocols?) */
/* route_add(method, pattern, handler | proxy, max_body?, websocket_protocols?, listener?) */
static int l_route_add(lua_State *L) {
  const char *method = luaL_checkstring(L, 1);
  const char *pattern = luaL_checkstring(L, 2);
  rh_lua_proxy *proxy = rh_lua_to_proxy(L, 3);
  if (!proxy) luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_Number max_body = luaL_optnumber(L, 4, 0);
  const char *listener = luaL_optstring(L, 6, "main");
  rh_gen *g = rh_gen_of(L);
  if (g->retired) return luaL_error(L, "routes can only be added while the script loads");
  const char *err;
  int idx = (int)g->nroutes + 1;
  if (rh_router_add(g->router, method, pattern, idx, &err) < 0)
    return luaL_error(L, "bad route pattern '%s': %s", pattern, err);
  g->routes = realloc(g->routes, (size_t)(idx + 1) * sizeof *g->routes);
  if (!g->routes) abort();
  rh_route_info *ri = &g->routes[idx];
  /* a proxy streams its bodies: no limit unless the mount sets one */
  size_t proxy_limit = proxy && rh_lua_proxy_max_body(proxy) ? rh_lua_proxy_max_body(proxy) : SIZE_MAX;
  ri->max_body = max_body > 0 ? (size_t)max_body : proxy ? proxy_limit : 0;
  ri->proxy = proxy;
  ri->websocket = lua_isstring(L, 5) ? strdup(lua_tostring(L, 5)) : NULL;
  ri->listener = strdup(listener);
  ri->secret_params = secret_params(pattern);
  g->nroutes = (size_t)idx;
  if (!g->handlers_ref) {
    lua_newtable(L);
    g->handlers_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, g->handlers_ref);
  lua_pushvalue(L, 3);
  lua_rawseti(L, -2, idx);
  return 0;
}

void rh_lua_class(lua_State *L, const char *mt, const luaL_Reg *methods, lua_CFunction gc) {
  luaL_newmetatable(L, mt);
  lua_newtable(L);
  luaL_register(L, NULL, methods);
  lua_setfield(L, -2, "__index");
  if (gc) {
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
}

/* The registry keys of what core.set_classes gave: their addresses, as light userdata (a
 * lookup by name interns the name, on every request). */
enum { CLASS_REQUEST, CLASS_RESPONSE, CLASS_HEADERS, CLASS_MULTI, NCLASSES };
static char class_keys[NCLASSES];

static void push_class(lua_State *L, int which) {
  lua_pushlightuserdata(L, &class_keys[which]);
  lua_rawget(L, LUA_REGISTRYINDEX);
}

/* core.set_classes(Request, Response, Headers, multi): metatables for the objects C builds,
 * and the weak table that holds repeated header values. */
static int l_set_classes(lua_State *L) {
  static const char *names[] = { "relay.Request", "relay.Response", "relay.Headers", "relay.multi" };
  for (int i = 0; i < NCLASSES; i++) {
    luaL_checktype(L, i + 1, LUA_TTABLE);
    lua_pushvalue(L, i + 1);
    lua_setfield(L, LUA_REGISTRYINDEX, names[i]);
    lua_pushlightuserdata(L, &class_keys[i]);
    lua_pushvalue(L, i + 1);
    lua_rawset(L, LUA_REGISTRYINDEX);
  }
  return 0;
}

/* ---- headers ---- */

void rh_lua_lower_into(char *dst, const char *src, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = (char)(src[i] >= 'A' && src[i] <= 'Z' ? src[i] + 32 : src[i]);
}

/* Repeated fields keep every value, in order, in the weak side table multi[headers][name]. */
static void add_repeat(lua_State *L, int t, const char *name, size_t nlen, const rh_header *f) {
  push_class(L, CLASS_MULTI);
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return; }
  lua_pushvalue(L, t);
  lua_rawget(L, -2);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, t);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
  }
  lua_pushlstring(L, name, nlen);
  lua_rawget(L, -2);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_createtable(L, 2, 0);
    lua_pushlstring(L, name, nlen);
    lua_rawget(L, t); /* the first value */
    lua_rawseti(L, -2, 1);
    lua_pushlstring(L, name, nlen);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
  }
  lua_pushlstring(L, f->value, f->value_len);
  lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
  lua_pop(L, 3);
}

/* Whether field i's name came before it in h: compared in C for a head of a few fields (a
 * Lua lookup per field costs more), in the table (t, the key on top) past that, so that a head
 * of many fields costs no more than linear time. */
#define FEW_FIELDS 32
static int seen_before(lua_State *L, int t, const rh_headers *h, size_t i) {
  const rh_header *f = &h->items[i];
  if (h->n > FEW_FIELDS) {
    lua_pushvalue(L, -1);
    lua_rawget(L, t);
    int seen = !lua_isnil(L, -1);
    lua_pop(L, 1);
    return seen;
  }
  for (size_t j = 0; j < i; j++)
    if (h->items[j].name_len == f->name_len && strncasecmp(h->items[j].name, f->name, f->name_len) == 0) return 1;
  return 0;
}

void rh_lua_push_headers(lua_State *L, const rh_headers *h) {
  lua_createtable(L, 0, (int)h->n);
  int t = lua_gettop(L);
  char small[128];
  for (size_t i = 0; i < h->n; i++) {
    const rh_header *f = &h->items[i];
    char *name = f->name_len <= sizeof small ? small : malloc(f->name_len);
    if (!name) abort();
    rh_lua_lower_into(name, f->name, f->name_len);
    lua_pushlstring(L, name, f->name_len); /* once: interning a string is most of a field's cost */
    if (seen_before(L, t, h, i)) {
      lua_pop(L, 1);
      add_repeat(L, t, name, f->name_len, f);
    } else {
      lua_pushlstring(L, f->value, f->value_len);
      lua_rawset(L, t);
    }
    if (name != small) free(name);
  }
  push_class(L, CLASS_HEADERS);
  if (lua_istable(L, -1)) lua_setmetatable(L, t);
  else lua_pop(L, 1);
}

static int add_checked(lua_State *L, rh_headers *h, const char *name, size_t nlen, int vidx) {
  size_t vlen;
  const char *v = lua_tolstring(L, vidx, &vlen);
  if (!v) {
    lua_pushfstring(L, "header '%s': value must be a string or number", name);
    return -1;
  }
  if (!rh_http_is_field_value(v, vlen)) {
    lua_pushfstring(L, "header '%s': value contains CR, LF, NUL or another control character", name);
    return -1;
  }
  rh_headers_add(h, name, nlen, v, vlen);
  return 0;
}

/* The side table of repeated values of the headers table at t (see add_repeat), pushed, and its
 * index; 0 (nothing pushed) when the table had no repeated field, the usual case. */
static int push_repeats(lua_State *L, int t) {
  int top = lua_gettop(L);
  push_class(L, CLASS_MULTI);
  if (lua_istable(L, -1)) {
    lua_pushvalue(L, t);
    lua_rawget(L, -2);
    if (lua_istable(L, -1)) {
      lua_remove(L, -2);
      return top + 1;
    }
  }
  lua_settop(L, top);
  return 0;
}

/* A field that arrived repeated and whose first value is unchanged goes back out with all its
 * values (they live in the side table reps; see add_repeat). Value on top of the stack. */
static int add_repeated(lua_State *L, int reps, rh_headers *h, const char *name, size_t nlen) {
  int top = lua_gettop(L), done = 0;
  lua_pushvalue(L, top - 1); /* the key */
  lua_rawget(L, reps);
  if (lua_istable(L, -1)) {
    lua_rawgeti(L, -1, 1);
    if (lua_rawequal(L, -1, top)) {
      int list = lua_gettop(L) - 1;
      for (int i = 1;; i++) {
        lua_rawgeti(L, list, i);
        if (lua_isnil(L, -1)) { lua_pop(L, 1); break; }
        size_t vlen;
        const char *v = lua_tolstring(L, -1, &vlen);
        rh_headers_add(h, name, nlen, v, vlen);
        lua_pop(L, 1);
      }
      done = 1;
    }
  }
  lua_settop(L, top);
  return done;
}

/* The fields of the table at idx into h; the side table of repeats (reps, 0: none) is on the
 * stack above idx. 0, or -1 with the message on top of the stack. */
static int read_fields(lua_State *L, int idx, int reps, rh_headers *h);

int rh_lua_read_headers(lua_State *L, int idx, rh_headers *h) {
  if (idx < 0) idx = lua_gettop(L) + idx + 1;
  if (lua_isnil(L, idx) || lua_isnone(L, idx)) return 0;
  if (!lua_istable(L, idx)) {
    lua_pushliteral(L, "headers must be a table");
    return -1;
  }
  int reps = push_repeats(L, idx); /* looked up once, not per field */
  int rc = read_fields(L, idx, reps, h);
  if (reps) lua_remove(L, reps); /* under the message, if there is one */
  return rc;
}

static int read_fields(lua_State *L, int idx, int reps, rh_headers *h) {
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t nlen;
    if (lua_type(L, -2) != LUA_TSTRING) { lua_pop(L, 2); continue; }
    const char *name = lua_tolstring(L, -2, &nlen);
    if (!rh_http_is_token(name, nlen)) {
      lua_pop(L, 2);
      lua_pushfstring(L, "header name '%s' is not a valid token", name);
      return -1;
    }
    if (lua_istable(L, -1)) {
      for (int i = 1;; i++) {
        lua_rawgeti(L, -1, i);
        if (lua_isnil(L, -1)) { lua_pop(L, 1); break; }
        if (add_checked(L, h, name, nlen, lua_gettop(L)) < 0) {
          lua_replace(L, -4); /* message replaces the key; drop value table and item */
          lua_pop(L, 2);
          return -1;
        }
        lua_pop(L, 1);
      }
    } else if (lua_type(L, -1) != LUA_TBOOLEAN) {
      if (reps && add_repeated(L, reps, h, name, nlen)) { lua_pop(L, 1); continue; }
      if (add_checked(L, h, name, nlen, lua_gettop(L)) < 0) {
        lua_replace(L, -3);
        lua_pop(L, 1);
        return -1;
      }
    }
    lua_pop(L, 1);
  }
  return 0;
}

/* ---- requests ---- */

static void setfield_l(lua_State *L, const char *k, const char *v, size_t n) {
  lua_pushlstring(L, v, n);
  lua_setfield(L, -2, k);
}

static void push_params(lua_State *L, const rh_route_match *m) {
  lua_createtable(L, 0, (int)m->nparams);
  for (size_t i = 0; i < m->nparams; i++) {
    lua_pushlstring(L, m->params[i].name, m->params[i].name_len);
    lua_pushlstring(L, m->params[i].value, m->params[i].value_len);
    lua_rawset(L, -3);
  }
}

/* Pushes req and res for a new task. */
static void push_objects(lua_State *co, rh_task *t, const rh_route_match *m) {
  rh_http_req *r = t->req;
  lua_createtable(co, 0, 12);
  lua_pushstring(co, r->method);
  lua_setfield(co, -2, "method");
  setfield_l(co, "path", r->path, r->path_len);
  setfield_l(co, "query", r->query ? r->query : "", r->query_len);
  setfield_l(co, "target", r->target, r->target_len);
  lua_pushstring(co, r->peer);
  lua_setfield(co, -2, "peer");
  lua_pushstring(co, r->id);
  lua_setfield(co, -2, "id");
  lua_pushstring(co, r->trace.trace_id);
  lua_setfield(co, -2, "trace_id");
  lua_pushstring(co, r->tls ? "https" : "http");
  lua_setfield(co, -2, "scheme");
  lua_pushstring(co, r->http_minor ? "1.1" : "1.0");
  lua_setfield(co, -2, "http_version");
  lua_pushstring(co, rh_http_req_listener(r));
  lua_setfield(co, -2, "listener");
  push_params(co, m);
  lua_setfield(co, -2, "params");
  rh_lua_push_headers(co, &r->headers);
  lua_setfield(co, -2, "headers");

  rh_exchange *ex = lua_newuserdata(co, sizeof *ex);
  ex->task = t;
  t->ex = ex;
  luaL_getmetatable(co, EXCHANGE_MT);
  lua_setmetatable(co, -2);
  lua_pushvalue(co, -1);
  t->ex_ref = luaL_ref(co, LUA_REGISTRYINDEX);
  lua_pushvalue(co, -1);
  lua_setfield(co, -3, "_ex");
  push_class(co, CLASS_REQUEST);
  lua_setmetatable(co, -3);
  /* res = { _ex = ex } */
  lua_createtable(co, 0, 2);
  lua_insert(co, -2);
  lua_setfield(co, -2, "_ex");
  push_class(co, CLASS_RESPONSE);
  lua_setmetatable(co, -2);
}

static void respond_text(rh_http_req *r, int status, const char *text) {
  rh_headers h = RH_HEADERS_INIT;
  rh_headers_add(&h, "Content-Type", 12, "text/plain; charset=utf-8", 25);
  rh_http_respond(r, status, &h, text, strlen(text));
  rh_headers_free(&h);
}

/* A route serves the listener it names; elsewhere its path does not exist. */
static int route_serves(const rh_route_info *ri, const rh_http_req *r) {
  return strcmp(ri->listener, "*") == 0 || strcmp(ri->listener, rh_http_req_listener(r)) == 0;
}

/* Route parameters named as secrets (/hooks/:token, /v1/relay/:key/…) are hidden in the access
 * log, by the rule every log field follows (core/log). */
static void hide_secret_params(rh_http_req *r, const rh_route_info *ri, const rh_route_match *m) {
  unsigned secret = ri->secret_params;
  if (!secret) return;
  size_t at = 0;
  for (size_t i = 0; i < m->nparams; i++) {
    const rh_route_param *p = &m->params[i];
    if (p->value < r->path + at || p->value > r->path + r->path_len) continue;
    if (!(secret & 1u << i)) continue;
    size_t off = (size_t)(p->value - r->path);
    rh_buf_append(&r->log_path, r->path + at, off - at);
    rh_buf_puts(&r->log_path, "[redacted]");
    at = off + p->value_len;
  }
  if (r->log_path.len) rh_buf_append(&r->log_path, r->path + at, r->path_len - at);
}

void rh_runtime_on_request(rh_http_req *r, void *ud) {
  (void)ud;
  rh_gen *g = rh_gen_current();
  rh_route_match m;
  if (!g) {
    respond_text(r, 503, "Service Unavailable: no script is loaded\n");
  } else if (!rh_router_match(g->router, r->method, r->path, r->path_len, &m)) {
    if (m.other_methods) respond_text(r, 405, "Method Not Allowed\n");
    else respond_text(r, 404, "Not Found\n");
  } else if (!route_serves(&g->routes[m.handler], r)) {
    respond_text(r, 404, "Not Found\n");
  } else {
    const rh_route_info *ri = &g->routes[m.handler];
    hide_secret_params(r, ri, &m);
    if (ri->max_body) r->max_body = ri->max_body;
    if (r->content_length != UINT64_MAX && r->content_length > r->max_body) {
      rh_http_reject(r, 413, "request body over the limit");
    } else if (ri->proxy) {
      rh_lua_proxy_start(g, ri->proxy, r); /* takes our reference on r */
      return;
    } else if (!(ri->websocket && rh_lua_ws_refuse(r))) {
      rh_task *t = rh_task_new(g, r); /* takes our reference on r */
      r->ud = t;
      lua_State *co = t->co;
      lua_rawgeti(co, LUA_REGISTRYINDEX, g->handlers_ref);
      lua_rawgeti(co, -1, m.handler);
      lua_remove(co, -2);
      if (ri->websocket) { /* handler(ws, req): req is copied before the 101 frees its fields */
        push_objects(co, t, &m);
        lua_pop(co, 1);
        rh_lua_ws_start(t, ri->websocket);
        lua_insert(co, -2);
      } else {
        push_objects(co, t, &m);
      }
      rh_task_start(t, 2);
      return;
    }
  }
  rh_http_req_release(r);
}

static rh_task *task_of_req(rh_http_req *r) { return r->ud; }

void rh_runtime_on_body(rh_http_req *r, void *ud) {
  (void)ud;
  rh_task *t = task_of_req(r);
  if (!t || !t->waiting_body) return;
  t->waiting_body = 0;
  if (r->body_error) {
    lua_pushnil(t->co);
    lua_pushstring(t->co, r->body_error);
    rh_task_resume(t, 2);
  } else {
    lua_pushlstring(t->co, r->body.data ? r->body.data : "", r->body.len);
    rh_task_resume(t, 1);
  }
}

void rh_runtime_on_drain(rh_http_req *r, void *ud) {
  (void)ud;
  rh_task *t = task_of_req(r);
  if (!t || !t->waiting_drain) return;
  t->waiting_drain = 0;
  lua_pushboolean(t->co, 1);
  rh_task_resume(t, 1);
}

void rh_runtime_on_abort(rh_http_req *r, void *ud) {
  rh_task *t = task_of_req(r);
  if (!t) return;
  if (t->waiting_body) {
    rh_runtime_on_body(r, ud);
  } else if (t->waiting_drain) {
    t->waiting_drain = 0;
    lua_pushnil(t->co);
    lua_pushliteral(t->co, "client closed the connection");
    rh_task_resume(t, 2);
  }
}

/* ---- the exchange: what req and res methods call ---- */

static rh_task *check_exchange(lua_State *L) {
  rh_exchange *ex = luaL_checkudata(L, 1, EXCHANGE_MT);
  if (!ex->task) luaL_error(L, "this request is over: its handler has returned");
  if (!ex->task->req) luaL_error(L, "this request was handed over to an event stream");
  return ex->task;
}

static void cancel_wait(void *op) {
  rh_task *t = op;
  t->waiting_body = t->waiting_drain = 0;
}

static int own_task(lua_State *L, rh_task *t, const char *what) {
  if (rh_task_current(L) != t)
    return luaL_error(L, "%s: only inside the request's own handler", what);
  return 0;
}

/* core.req_body(ex) -> body | nil, err */
static int l_req_body(lua_State *L) {
  rh_task *t = check_exchange(L);
  rh_http_req *r = t->req;
  int rc = rh_http_want_body(r);
  if (rc == 1) {
    lua_pushlstring(L, r->body.data ? r->body.data : "", r->body.len);
    return 1;
  }
  if (rc < 0) {
    lua_pushnil(L);
    lua_pushstring(L, r->body_error);
    return 2;
  }
  own_task(L, t, "req:body()");
  t->waiting_body = 1;
  return rh_task_yield(L, t, cancel_wait, t);
}

static int push_fail(lua_State *L, const char *why) {
  lua_pushnil(L);
  lua_pushstring(L, why);
  return 2;
}

static int check_status(lua_State *L, int idx) {
  lua_Integer status = luaL_checkinteger(L, idx);
  if (status < 100 || status > 999) luaL_argerror(L, idx, "status must be 100..999");
  return (int)status;
}

static int read_headers_or_error(lua_State *L, int idx, rh_headers *h) {
  if (rh_lua_read_headers(L, idx, h) < 0) {
    rh_headers_free(h);
    return lua_error(L);
  }
  return 0;
}

/* core.res_send(ex, status, body?, headers?) -> true | nil, err */
static int l_res_send(lua_State *L) {
  rh_task *t = check_exchange(L);
  int status = check_status(L, 2);
  size_t len = 0;
  const char *body = luaL_optlstring(L, 3, "", &len);
  rh_headers h = RH_HEADERS_INIT;
  read_headers_or_error(L, 4, &h);
  if (t->req->head_sent) { rh_headers_free(&h); return push_fail(L, "response already sent"); }
  int rc = rh_http_respond(t->req, status, &h, body, len);
  rh_headers_free(&h);
  if (rc < 0) return push_fail(L, "client closed the connection");
  lua_pushboolean(L, 1);
  return 1;
}

/* core.res_start(ex, status, headers?) */
static int l_res_start(lua_State *L) {
  rh_task *t = check_exchange(L);
  int status = check_status(L, 2);
  rh_headers h = RH_HEADERS_INIT;
  read_headers_or_error(L, 3, &h);
  if (t->req->head_sent) { rh_headers_free(&h); return push_fail(L, "response already started"); }
  int rc = rh_http_start(t->req, status, &h);
  rh_headers_free(&h);
  if (rc == RH_HTTP_BAD_LENGTH) return luaL_error(L, "res:start: content-length must be a number of bytes");
  if (rc < 0) return push_fail(L, "client closed the connection");
  lua_pushboolean(L, 1);
  return 1;
}

/* core.res_write(ex, chunk): yields while the client's queue is over the high-water mark */
static int l_res_write(lua_State *L) {
  rh_task *t = check_exchange(L);
  size_t n;
  const char *p = luaL_checklstring(L, 2, &n);
  if (!t->req->head_sent) return luaL_error(L, "res:write before res:start");
  int rc = rh_http_write(t->req, p, n);
  if (rc < 0 && t->req->overrun) return push_fail(L, "body longer than its content-length: the rest was dropped");
  if (rc < 0) return push_fail(L, t->req->finished ? "response already finished" : "client closed the connection");
  if (rc == 0 || rh_task_current(L) != t) {
    lua_pushboolean(L, 1);
    return 1;
  }
  t->waiting_drain = 1;
  return rh_task_yield(L, t, cancel_wait, t);
}

static int l_res_finish(lua_State *L) {
  rh_task *t = check_exchange(L);
  if (!t->req->head_sent) return luaL_error(L, "res:finish before res:start");
  if (rh_http_finish(t->req) < 0) return push_fail(L, "client closed the connection");
  lua_pushboolean(L, 1);
  return 1;
}

/* core.res_state(ex) -> head_sent, finished */
static int l_res_state(lua_State *L) {
  rh_task *t = check_exchange(L);
  lua_pushboolean(L, t->req->head_sent);
  lua_pushboolean(L, t->req->finished);
  return 2;
}

/* ---- time ---- */

typedef struct {
  uv_timer_t timer;
  rh_task *task;
} sleep_op;

static void free_handle(uv_handle_t *h) { free(h); }

static void sleep_done(uv_timer_t *timer) {
  sleep_op *op = (sleep_op *)timer;
  rh_task *t = op->task;
  uv_close((uv_handle_t *)timer, free_handle);
  rh_task_resume(t, 0);
}

static void sleep_cancel(void *p) {
  sleep_op *op = p;
  uv_close((uv_handle_t *)&op->timer, free_handle);
}

static void sleep_woken(void *ud) { rh_task_resume(ud, 0); }

static void sleep_soon_cancel(void *op) { rh_soon_cancel(op); }

/* relay.sleep(seconds). Under a millisecond it waits for the next loop turn (rh_soon_call), behind
 * whatever else is ready: a 0 ms timer would run again in the same pass over the timers. */
static int l_sleep(lua_State *L) {
  double s = luaL_checknumber(L, 1);
  rh_task *t = rh_task_current(L);
  if (!t) return luaL_error(L, "relay.sleep: only inside a handler or timer");
  double ms = s > 1e12 ? 1e15 : s > 0 ? s * 1000 : 0; /* NaN: 0 */
  if (ms < 1) return rh_task_yield(L, t, sleep_soon_cancel, rh_soon_call(sleep_woken, t));
  sleep_op *op = malloc(sizeof *op);
  if (!op) abort();
  op->task = t;
  uv_timer_init(rh_loop(), &op->timer);
  uv_timer_start(&op->timer, sleep_done, (uint64_t)ms, 0);
  return rh_task_yield(L, t, sleep_cancel, op);
}

struct rh_gtimer {
  uv_timer_t timer;
  rh_gen *gen;
  int fn_ref, repeat;
  rh_gtimer *next;
};

static void gtimer_closed(uv_handle_t *h) {
  rh_gtimer *gt = (rh_gtimer *)h;
  rh_gen_unref(gt->gen);
  free(gt);
}

static void gtimer_remove(rh_gtimer *gt) {
  rh_gen *g = gt->gen;
  for (rh_gtimer **p = &g->timers; *p; p = &(*p)->next)
    if (*p == gt) { *p = gt->next; break; }
  luaL_unref(g->L, LUA_REGISTRYINDEX, gt->fn_ref);
  uv_close((uv_handle_t *)&gt->timer, gtimer_closed);
}

static void gtimer_fire(uv_timer_t *timer) {
  rh_gtimer *gt = (rh_gtimer *)timer;
  rh_gen *g = gt->gen;
  rh_task *t = rh_task_new(g, NULL);
  lua_rawgeti(t->co, LUA_REGISTRYINDEX, gt->fn_ref);
  if (!gt->repeat) gtimer_remove(gt); /* before running: the callback may add timers */
  rh_task_start(t, 0);
}

void rh_gen_stop_timers(rh_gen *g) {
  while (g->timers) gtimer_remove(g->timers);
}

/* core.timer(seconds, repeat, fn) */
static int l_timer(lua_State *L) {
  double s = luaL_checknumber(L, 1);
  int repeat = lua_toboolean(L, 2);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  rh_gen *g = rh_gen_of(L);
  if (g->retired) return luaL_error(L, "timers cannot be added to a generation that was replaced");
  if (repeat && s <= 0) return luaL_argerror(L, 1, "relay.every needs an interval > 0");
  rh_gtimer *gt = calloc(1, sizeof *gt);
  if (!gt) abort();
  gt->gen = g;
  gt->repeat = repeat;
  lua_pushvalue(L, 3);
  gt->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  gt->next = g->timers;
  g->timers = gt;
  rh_gen_ref(g);
  uv_timer_init(rh_loop(), &gt->timer);
  /* at least 1 ms: a 0 ms timer armed from a timer's callback runs in the same pass over the
   * timers, so a relay.after(0) chain would never let the loop poll (and relay.every would not
   * repeat) */
  double d = s > 1e12 ? 1e15 : s * 1000;
  uint64_t ms = d >= 1 ? (uint64_t)d : 1;
  uv_timer_start(&gt->timer, gtimer_fire, ms, repeat ? ms : 0);
  return 0;
}

/* core.on_retire(fn): fn runs once, as a task of this generation, when a reload replaces it
 * (so that background work it started, such as an upstream feed, stops at once instead of
 * running on until the drain deadline). */
static int l_on_retire(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  rh_gen *g = rh_gen_of(L);
  if (g->retire_ref) luaL_unref(L, LUA_REGISTRYINDEX, g->retire_ref);
  lua_pushvalue(L, 1);
  g->retire_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

void rh_gen_run_retire(rh_gen *g) {
  if (!g->retire_ref) return;
  rh_task *t = rh_task_new(g, NULL);
  lua_rawgeti(t->co, LUA_REGISTRYINDEX, g->retire_ref);
  rh_task_start(t, 0);
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, rh_now());
  return 1;
}

static int l_time(lua_State *L) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  lua_pushnumber(L, (double)tv.tv_sec + (double)tv.tv_usec / 1e6);
  return 1;
}

static int l_pid(lua_State *L) {
  lua_pushinteger(L, getpid()); /* which worker answered, under --workers */
  return 1;
}

static int l_generation(lua_State *L) {
  lua_pushinteger(L, rh_gen_of(L)->id);
  return 1;
}

/* ---- logging ---- */

/* core.log(level, event, key1, value1, ...): values are strings, numbers or booleans (the
 * Lua side encodes anything else). Redaction happens in rh_log. */
static int l_log(lua_State *L) {
  const char *level = luaL_checkstring(L, 1);
  const char *event = luaL_checkstring(L, 2);
  rh_log_level lv;
  if (rh_log_parse_level(level, &lv) < 0) return luaL_argerror(L, 1, "debug, info, warn or error");
  if (!rh_log_enabled(lv)) return 0;
  rh_field fields[64];
  size_t n = 0;
  for (int i = 3; i + 1 <= lua_gettop(L) && n < 64; i += 2) {
    const char *key = lua_tostring(L, i);
    if (!key) continue;
    switch (lua_type(L, i + 1)) {
    case LUA_TNUMBER: fields[n++] = RH_NUM(key, lua_tonumber(L, i + 1)); break;
    case LUA_TBOOLEAN: fields[n++] = RH_BOOL(key, lua_toboolean(L, i + 1)); break;
    case LUA_TSTRING: {
      size_t len;
      const char *v = lua_tolstring(L, i + 1, &len);
      fields[n++] = len ? RH_STRN(key, v, len) : RH_STR(key, "");
      break;
    }
    default: fields[n++] = RH_STR(key, NULL);
    }
  }
  rh_log(lv, event, fields, n);
  return 0;
}

/* core.log_clean(key, value): value as a log line would show it under key (the one redaction
 * rule of core/log), for the parts of a table the Lua side encodes itself. */
static int l_log_clean(lua_State *L) {
  size_t klen, vlen;
  const char *key = luaL_checklstring(L, 1, &klen);
  if (rh_log_is_secret_key(key, klen)) { lua_pushliteral(L, "[redacted]"); return 1; }
  const char *v = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &vlen) : NULL;
  rh_buf clean = RH_BUF_INIT;
  if (v && rh_log_redact_value(v, vlen, &clean)) lua_pushlstring(L, clean.data, clean.len);
  else lua_pushvalue(L, 2);
  rh_buf_free(&clean);
  return 1;
}

static const luaL_Reg core_fns[] = {
  { "route_add", l_route_add }, { "set_classes", l_set_classes }, { "req_body", l_req_body },
  { "res_send", l_res_send },   { "res_start", l_res_start },     { "res_write", l_res_write },
  { "res_finish", l_res_finish }, { "res_state", l_res_state },   { "sleep", l_sleep },
  { "timer", l_timer },         { "now", l_now },                 { "time", l_time },
  { "generation", l_generation }, { "log", l_log },               { "pid", l_pid },
  { "on_retire", l_on_retire }, { "log_clean", l_log_clean },
  { NULL, NULL },
};

/* The relay.core table: the host preloads it (runtime.c); core/lua/module.c opens it as the C
 * module relay/core.so for a plain LuaJIT. */
int rh_lua_open_core(lua_State *L) {
  luaL_newmetatable(L, EXCHANGE_MT);
  lua_pop(L, 1);
  lua_newtable(L);
  luaL_register(L, NULL, core_fns);
  lua_pushstring(L, RELAYHOST_VERSION);
  lua_setfield(L, -2, "version");
  rh_lua_register_dict(L);
  rh_lua_register_metrics(L);
  rh_lua_register_client(L);
  rh_lua_register_proxy(L);
  rh_lua_register_ws(L);
  rh_lua_register_hub(L);
  rh_lua_register_redis(L);
  rh_lua_register_crypto(L);
  rh_lua_register_sse(L);
  rh_lua_register_tunnel(L);
  rh_lua_register_fs(L);
  rh_lua_register_url(L);
  return 1;
}
