/* lua_tunnel: relay.tunnel, the git tunnel's streams (core/tunnel) on a WebSocket session.
 *
 * A script accepts or dials the WebSocket itself (its checks, its backoff), then attaches a
 * tunnel to it: from then on the session's messages are frames handled in C. On the server,
 * tun:relay(target) hands the running request to a new stream and yields until the exchange is
 * over; on the client, streams the server opens are executed against base_url in C. Body bytes
 * never enter Lua.
 *
 * The tunnel struct belongs to its Lua object (freed by __gc); the rh_tun inside lives while
 * the session does. */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "lua/bind.h"
#include "lua/gen.h"
#include "tls/tls.h"
#include "tunnel/relay.h"
#include "tunnel/tunnel.h"
#include "ws/ws.h"

#define TUN_MT "relay.tunnel"

typedef struct {
  rh_tun *tun;               /* NULL once the session is over */
  rh_tfwd *fwd;              /* a forwarder: tun is its near end, there is no session */
  rh_soon *wake;             /* a pending resume of the waiter */
  rh_lua_ws_session *ws;
  rh_task *waiter;           /* parked in tun:wait() */
  char why[128];             /* why it ended */
  int is_server;
  /* client: how streams are executed */
  char *base_url;
  char **allow;
  size_t nallow;
  rh_tls_ctx *tls;
} tunnel;

typedef struct {
  tunnel *t;
} tun_ud;

/* ---- the session underneath ---- */

static int sink_message(void *ud, int opcode, const char *p, size_t n) {
  tunnel *t = ud;
  if (!t->tun) return 1;
  if (opcode != RH_WS_BINARY) {
    rh_lua_ws_close(t->ws, 1003, "tunnel frames are binary messages");
    return 1;
  }
  rh_tun_input(t->tun, p, n);
  return 1;
}

/* The waiter is resumed from the loop, not from inside the session's callbacks: its handler
 * returning ends the session, which must not happen under the session's own feet. */
static void wakeup_fire(void *ud) {
  tunnel *t = ud;
  t->wake = NULL;
  if (!t->waiter) return;
  rh_task *task = t->waiter;
  t->waiter = NULL;
  lua_pushstring(rh_task_lua(task), t->why);
  rh_task_resume(task, 1);
}

static void sink_closed(void *ud, int code, const char *reason) {
  tunnel *t = ud;
  snprintf(t->why, sizeof t->why, "%d %s", code, reason);
  rh_tun *tun = t->tun;
  t->tun = NULL;
  t->ws = NULL;
  if (tun) rh_tun_free(tun, t->why);
  if (t->waiter && !t->wake) t->wake = rh_soon_call(wakeup_fire, t);
}

static void sink_bytes(void *ud) {
  tunnel *t = ud;
  if (t->tun) rh_tun_touch(t->tun);
}

static const rh_lua_ws_consumer sink = { sink_message, sink_closed, sink_bytes, NULL };

static int tr_send(void *ud, const char *head, size_t hl, const char *p, size_t n) {
  tunnel *t = ud;
  return t->ws ? rh_lua_ws_send_parts(t->ws, RH_WS_BINARY, head, hl, p, n) : -1;
}

static void tr_open(void *ud, rh_tstream *s, const char *method, const char *target, const rh_headers *h) {
  tunnel *t = ud;
  rh_texec_conf c = { t->base_url, (const char *const *)t->allow, t->nallow, t->tls, 0 };
  rh_texec_open(rh_loop(), &c, s, method, target, h);
}

static void tr_fail(void *ud, int code, const char *reason) {
  tunnel *t = ud;
  if (t->ws) rh_lua_ws_close(t->ws, code, reason);
}

/* The heartbeat is a WebSocket ping: the peer's WebSocket layer answers it, and its pong (any
 * byte, really) reaches rh_tun_touch through sink_bytes. */
static void tr_ping(void *ud) {
  tunnel *t = ud;
  if (t->ws) rh_lua_ws_send(t->ws, RH_WS_PING, "hb", 2);
}

/* What the peer has not read yet, for the tunnel's bound and its held PONGs: the session's
 * backlog on either side (a dialled one counts its connection's write queue too). */
static size_t tr_queued(void *ud) {
  tunnel *t = ud;
  return t->ws ? rh_lua_ws_queued(t->ws) : 0;
}

/* ---- relay.tunnel.attach(ws, opts) ---- */

static double opt_num(lua_State *L, int idx, const char *name) {
  lua_getfield(L, idx, name);
  double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 0;
  lua_pop(L, 1);
  return v;
}

static tun_ud *new_object(lua_State *L) {
  tun_ud *u = lua_newuserdata(L, sizeof *u);
  u->t = calloc(1, sizeof *u->t);
  if (!u->t) abort();
  luaL_getmetatable(L, TUN_MT);
  lua_setmetatable(L, -2);
  return u;
}

/* Client options in the table at idx: base_url (required), allow_hosts (array), ca_file. A Lua
 * error if bad. */
static void client_opts(lua_State *L, int idx, tunnel *t) {
  lua_getfield(L, idx, "base_url");
  if (!lua_isstring(L, -1)) luaL_error(L, "tunnel: a client needs base_url");
  t->base_url = strdup(lua_tostring(L, -1));
  lua_getfield(L, idx, "allow_hosts");
  size_t n = lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
  t->allow = calloc(n + 1, sizeof *t->allow);
  if (!t->base_url || !t->allow) abort();
  for (size_t i = 0; i < n; i++) {
    lua_rawgeti(L, -1, (int)i + 1);
    t->allow[t->nallow++] = strdup(luaL_checkstring(L, -1));
    lua_pop(L, 1);
  }
  lua_getfield(L, idx, "ca_file");
  if (lua_isstring(L, -1)) {
    char err[200];
    t->tls = rh_tls_client_ctx(lua_tostring(L, -1), 1, err, sizeof err);
    if (!t->tls) luaL_error(L, "tunnel: %s", err);
  }
  lua_pop(L, 3);
}

static int l_attach(lua_State *L) {
  rh_lua_ws_session *ws = rh_lua_ws_check(L, 1, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_getfield(L, 2, "role");
  const char *role = luaL_optstring(L, -1, "server");
  int is_server = strcmp(role, "server") == 0;
  if (!is_server && strcmp(role, "client") != 0) return luaL_error(L, "tunnel: role must be server or client");
  lua_pop(L, 1);
  tunnel *t = new_object(L)->t;
  t->is_server = is_server;
  if (!is_server) client_opts(L, 2, t);
  rh_tun_opts o = { opt_num(L, 2, "ping_interval"), opt_num(L, 2, "stall_timeout"), opt_num(L, 2, "head_timeout") };
  rh_tun_transport tr = { tr_send, tr_open, tr_fail, tr_ping, t, tr_queued };
  t->ws = ws;
  t->tun = rh_tun_new(rh_loop(), is_server, &tr, &o);
  rh_lua_ws_consume(ws, &sink, t);
  return 1;
}


/* relay.tunnel.forwarder{base_url, ca_file}: a server-side tunnel object whose streams are
 * executed in this process against base_url (another server), for tun:relay(). */
static int l_forwarder(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  tunnel *t = new_object(L)->t;
  client_opts(L, 1, t);
  t->is_server = 1;
  rh_texec_conf c = { t->base_url, (const char *const *)t->allow, t->nallow, t->tls, 1 };
  t->fwd = rh_tfwd_new(rh_loop(), &c);
  t->tun = rh_tfwd_tun(t->fwd);
  return 1;
}

/* ---- methods ---- */

static tunnel *check_tun(lua_State *L) { return ((tun_ud *)luaL_checkudata(L, 1, TUN_MT))->t; }

static void wait_cancel(void *op) { ((tunnel *)op)->waiter = NULL; }

/* tun:wait() -> why: yields until the tunnel is over */
static int l_wait(lua_State *L) {
  tunnel *t = check_tun(L);
  if (!t->tun) {
    lua_pushstring(L, t->why);
    return 1;
  }
  rh_task *task = rh_task_current(L);
  if (!task) return luaL_error(L, "tun:wait: only inside a handler or timer");
  if (t->waiter) return luaL_error(L, "tun:wait: another task waits already");
  t->waiter = task;
  lua_pushvalue(L, 1); /* keeps the object alive while parked */
  return rh_task_yield(L, task, wait_cancel, t);
}

typedef struct {
  rh_task *task;
  rh_trelay *r;
} relay_op;

static void relay_done(void *ud, int status, const char *err) {
  relay_op *op = ud;
  lua_State *co = rh_task_lua(op->task);
  rh_task *task = op->task;
  free(op);
  lua_pushinteger(co, status);
  if (err) lua_pushstring(co, err);
  else lua_pushnil(co);
  rh_task_resume(task, 2);
}

static void relay_cancel(void *p) {
  relay_op *op = p;
  rh_trelay_cancel(op->r);
  free(op);
}

/* tun:relay(target, headers?) -> status, err: relays the running request (headers added to
 * it); yields until it is over. status is what the client got (0 if its connection was cut);
 * nil, err if the tunnel is gone. */
static int l_relay(lua_State *L) {
  tunnel *t = check_tun(L);
  const char *target = luaL_checkstring(L, 2);
  rh_headers extra = RH_HEADERS_INIT;
  if (lua_istable(L, 3) && rh_lua_read_headers(L, 3, &extra) < 0) {
    rh_headers_free(&extra);
    return lua_error(L);
  }
  rh_task *task = rh_task_current(L);
  if (!task || !task->req || task->req->head_sent || !t->is_server) {
    rh_headers_free(&extra);
    return luaL_error(L, "tun:relay: only on a server tunnel, in a request handler that has not answered");
  }
  relay_op *op = calloc(1, sizeof *op);
  if (!op) abort();
  op->task = task;
  op->r = t->tun ? rh_trelay_start(t->tun, task->req, target, &extra, relay_done, op) : NULL;
  rh_headers_free(&extra);
  if (!op->r) {
    free(op);
    lua_pushnil(L);
    lua_pushliteral(L, "tunnel closed");
    return 2;
  }
  return rh_task_yield(L, task, relay_cancel, op);
}

static void set_num(lua_State *L, const char *name, double v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, name);
}

/* tun:stats() -> {open, streams, streams_total, resets_total, bytes_in, bytes_out, buffered} */
static int l_stats(lua_State *L) {
  tunnel *t = check_tun(L);
  rh_tun_stats st = { 0 };
  if (t->tun) rh_tun_get_stats(t->tun, &st);
  lua_createtable(L, 0, 7);
  lua_pushboolean(L, t->tun != NULL);
  lua_setfield(L, -2, "open");
  set_num(L, "streams", (double)st.streams_open);
  set_num(L, "streams_total", (double)st.streams_opened);
  set_num(L, "resets_total", (double)st.streams_reset);
  set_num(L, "bytes_in", (double)st.bytes_in);
  set_num(L, "bytes_out", (double)st.bytes_out);
  set_num(L, "buffered", (double)st.buffered);
  return 1;
}

static int l_close(lua_State *L) {
  tunnel *t = check_tun(L);
  if (t->ws) rh_lua_ws_close(t->ws, (int)luaL_optinteger(L, 2, 1000), luaL_optstring(L, 3, ""));
  return 0;
}

static int l_gc(lua_State *L) {
  tun_ud *u = luaL_checkudata(L, 1, TUN_MT);
  tunnel *t = u->t;
  if (!t) return 0;
  u->t = NULL;
  if (t->wake) rh_soon_cancel(t->wake);
  if (t->ws) rh_lua_ws_consume(t->ws, NULL, NULL);
  if (t->fwd) rh_tfwd_free(t->fwd);
  else if (t->tun) rh_tun_free(t->tun, "tunnel object collected");
  for (size_t i = 0; i < t->nallow; i++) free(t->allow[i]);
  free(t->allow);
  free(t->base_url);
  if (t->tls) rh_tls_ctx_free(t->tls);
  free(t);
  return 0;
}

static const luaL_Reg methods[] = { { "wait", l_wait }, { "relay", l_relay }, { "stats", l_stats },
                                    { "close", l_close }, { NULL, NULL } };

void rh_lua_register_tunnel(lua_State *L) {
  luaL_newmetatable(L, TUN_MT);
  lua_newtable(L);
  luaL_register(L, NULL, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_attach);
  lua_setfield(L, -2, "tunnel_attach");
  lua_pushcfunction(L, l_forwarder);
  lua_setfield(L, -2, "tunnel_forwarder");
}
