/* lua_ws: WebSocket sessions for Lua. Server side: app:websocket routes (the handshake
 * answered here). Client side: relay.ws.connect (core/ws/dial). Either way the frames are
 * C (core/ws over wslay) and the script meets one ws object whose recv() yields until a message
 * arrives; messages that come while the script is busy wait in a bounded queue.
 *
 * A session belongs to the task that opened it (the route's handler, or the task that called
 * connect): it is closed and freed when that task ends. The Lua object may outlive it and then
 * says the session is over. */
#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/head.h"
#include "log/log.h"
#include "lua/bind.h"
#include "lua/gen.h"
#include "net/url.h"
#include "ws/dial.h"
#include "ws/open.h"
#include "tls/tls.h"
#include "ws/ws.h"

#define WS_MT "relay.websocket"
#define QUEUE_MAX_BYTES (16u * 1024 * 1024)
/* Reading from the peer stops while this much waits for the script, and goes on below the low
 * mark: a fast sender is slowed to the script's pace instead of filling memory. */
#define QUEUE_HIGH_BYTES (1024u * 1024)
#define QUEUE_LOW_BYTES (256u * 1024)
/* A C consumer's frames (the hub's, the tunnel's) wait for the end of the loop's turn up to
 * BATCH_MAX bytes; a batch of at least BATCH_SMALL keeps its buffer (BATCH_KEEP holds the
 * largest). */
#define BATCH_MAX (256u * 1024)
#define BATCH_SMALL (64u * 1024)
#define BATCH_KEEP (512u * 1024)

typedef struct msg {
  struct msg *next;
  int opcode;
  size_t len;
  char data[];
} msg;

typedef struct rh_lua_ws_session session;
struct rh_lua_ws_session {
  rh_ws *engine;
  rh_http_req *req;          /* server side: the upgraded request (borrowed from the task) */
  rh_upconn *up;             /* client side: the connection */
  rh_ws_dial *dial;          /* client side, while connecting */
  rh_tls_ctx *own_ctx;       /* client side with a ca_file */
  rh_task *task;
  session *next;             /* in the task's list */
  msg *head, *tail;
  rh_soon *waker;            /* wakes the owner after a foreign call */
  session *pending_next;     /* in pending_list while a C consumer's frames wait (batch_pending) */
  double last_rx;            /* loop time of the last bytes from the peer (pongs included) */
  double last_msg;           /* loop time of the last message from the peer */
  char *close_reason;        /* once closed (at most 123 bytes); NULL before */
  const rh_lua_ws_consumer *consumer; /* a C consumer (the hub, the tunnel), or NULL */
  void *consumer_ud;
  session *gprev, *gnext;    /* in going_away_list while going_ref is set */
  /* Flags and counts packed below pointers: a relay holds thousands of these (168 bytes, one
   * 176-byte malloc chunk, where ints and a side pointer made 208 and 224). */
  uint32_t queued;           /* bytes in the queue, at most QUEUE_MAX_BYTES */
  int close_code, ud_ref;
  int going_ref;             /* server side, or LUA_NOREF: the text of a 1001 close at SIGTERM, a
                              * Lua string (at most 123 bytes) the registry holds, not copied */
  unsigned closed : 1, waiting : 1, connecting : 1;
  unsigned foreign : 1;      /* a call from another task is in progress: wake later, not now */
  unsigned queue_full : 1;   /* over QUEUE_HIGH_BYTES wait for the script, until QUEUE_LOW_BYTES */
  unsigned paused : 1;       /* reading stopped: queue_full, or the engine owes the peer too much */
  unsigned counted : 1;      /* counted open (ws/open.h) on the side server_side says */
  unsigned server_side : 1;
  unsigned pending : 1;      /* in pending_list */
};

/* Server sessions that close with 1001 as soon as the host is told to stop. */
static session *going_away_list;

typedef struct {
  session *s;
} ws_ud;

static void write_out(session *s, const char *p, size_t n) {
  if (!n) return;
  if (s->req) rh_http_write(s->req, p, n);
  else if (s->up) rh_upconn_write(s->up, p, n);
}

/* Reading stops while the script has too much waiting, or while the peer is sent more than
 * it takes (the engine's bound: its pongs count too); asked again after every feed, send and
 * drain. */
static void update_reading(session *s) {
  int paused = s->queue_full || rh_ws_read_paused(s->engine);
  if (s->paused == paused) return;
  s->paused = paused;
  if (s->req) {
    if (paused) rh_http_pause_body(s->req);
    else rh_http_resume_body(s->req);
  } else if (s->up) {
    if (paused) rh_upconn_pause(s->up);
    else rh_upconn_resume(s->up);
  }
}

/* What the engine has for the peer goes out; then whether to read on is decided again. */
static void flush(session *s) {
  rh_buf out = RH_BUF_INIT;
  rh_ws_output(s->engine, &out);
  write_out(s, out.data, out.len);
  rh_buf_free(&out);
  update_reading(s);
}

/* The next message, or the close, as recv() returns it. */
static int push_next(lua_State *L, session *s) {
  msg *m = s->head;
  if (m) {
    s->head = m->next;
    if (!s->head) s->tail = NULL;
    s->queued -= m->len;
    if (s->queue_full && s->queued < QUEUE_LOW_BYTES) {
      s->queue_full = 0;
      update_reading(s);
    }
    lua_pushlstring(L, m->data, m->len);
    lua_pushstring(L, m->opcode == RH_WS_BINARY ? "binary" : "text");
    free(m);
    return 2;
  }
  lua_pushnil(L);
  lua_pushliteral(L, "closed");
  lua_pushinteger(L, s->close_code);
  lua_pushstring(L, s->close_reason ? s->close_reason : "");
  return 4;
}

static void wake(session *s);
static void unlist_pending(session *s);

static void waker_fired(void *ud) {
  session *s = ud;
  s->waker = NULL;
  wake(s);
}

/* Resumes a script parked in recv(). Called last by every callback: it may end the session.
 * During a call from another task (ws objects may be shared between handlers) resuming would
 * run this session's task inside that call, so it happens on the next loop turn instead. */
static void wake(session *s) {
  if (!s->waiting || !(s->head || s->closed)) return;
  if (s->foreign) {
    if (!s->waker) s->waker = rh_soon_call(waker_fired, s);
    return;
  }
  s->waiting = 0;
  rh_task_resume(s->task, push_next(rh_task_lua(s->task), s));
}

static const char *side_name(const session *s) { return s->server_side ? "server" : "client"; }

static void count_open(session *s) {
  s->counted = 1;
  rh_ws_open_add(side_name(s), 1);
}

static void set_closed(session *s, int code, const char *reason) {
  if (s->closed) return;
  s->closed = 1;
  if (s->counted) rh_ws_open_add(side_name(s), -1);
  s->counted = 0;
  s->close_code = code;
  s->close_reason = strndup(reason ? reason : "", 123);
  if (!s->close_reason) abort();
  if (s->consumer && s->consumer->on_closed) s->consumer->on_closed(s->consumer_ud, code, s->close_reason);
}

/* Offers a message to the consumer: 1 if it took it. */
static int consumed(session *s, int opcode, const char *p, size_t n) {
  const rh_lua_ws_consumer *c = s->consumer;
  return c && c->on_message && c->on_message(s->consumer_ud, opcode, p, n);
}

static void on_message(void *ud, int opcode, const char *p, size_t n) {
  session *s = ud;
  s->last_msg = rh_now();
  /* only while nothing waits for the script, so a message never overtakes an earlier one */
  if (!s->head && consumed(s, opcode, p, n)) return;
  if (s->queued + n > QUEUE_MAX_BYTES) { /* the script does not keep up */
    rh_ws_close(s->engine, 1008, "handler too slow: queue full");
    return;
  }
  msg *m = malloc(sizeof *m + n);
  if (!m) abort();
  m->next = NULL;
  m->opcode = opcode;
  m->len = n;
  memcpy(m->data, p, n);
  if (s->tail) s->tail->next = m;
  else s->head = m;
  s->tail = m;
  s->queued += n;
  if (s->queued > QUEUE_HIGH_BYTES) s->queue_full = 1;
}

static void on_close(void *ud, int code, const char *reason, size_t n) {
  session *s = ud;
  char r[124];
  snprintf(r, sizeof r, "%.*s", (int)(n < 123 ? n : 123), reason);
  set_closed(s, code, r);
}

/* A dialled session whose closing handshake is done lets its connection go once the close
 * reply is written, not when its task ends: a task that reconnects in a loop (the tunnel
 * client) would keep every old connection open, and the server it closed on would wait for
 * it until its drain timeout. */
static void close_when_done(session *s) {
  if (!s->up || !rh_ws_want_close(s->engine) || s->up->queued) return;
  rh_upconn_close(s->up);
  s->up = NULL;
}

static void feed(session *s, const char *p, size_t n) {
  s->last_rx = rh_now();
  if (s->consumer && s->consumer->on_bytes) s->consumer->on_bytes(s->consumer_ud);
  if (rh_ws_feed(s->engine, p, n) < 0) set_closed(s, rh_ws_close_sent(s->engine), rh_ws_error(s->engine));
  flush(s);
  close_when_done(s);
  wake(s);
}

/* ---- transports ---- */

static void server_bytes(rh_http_req *r, const char *p, size_t n, void *ud) {
  (void)r;
  feed(ud, p, n);
}

static void server_gone(rh_http_req *r, void *ud) {
  (void)r;
  session *s = ud;
  set_closed(s, 1006, "connection lost");
  s->req = NULL;
  wake(s);
}

static void server_drained(rh_http_req *r, void *ud) {
  (void)r;
  update_reading(ud);
}

static const rh_http_req_events server_events = { server_bytes, NULL, server_drained, server_gone };

static void client_read(void *owner, const char *p, ssize_t n, const char *err) {
  session *s = owner;
  if (n > 0) {
    feed(s, p, (size_t)n);
    return;
  }
  set_closed(s, 1006, err);
  rh_upconn_close(s->up);
  s->up = NULL;
  wake(s);
}

static void client_written(void *owner, size_t queued) {
  (void)queued;
  update_reading(owner);
  close_when_done(owner);
}

static size_t transport_queued(void *ud) {
  session *s = ud;
  return s->req ? rh_http_queued(s->req) : s->up ? s->up->queued : 0;
}

/* ---- the ws object ---- */

static session *check_session(lua_State *L) {
  ws_ud *u = luaL_checkudata(L, 1, WS_MT);
  if (!u->s) luaL_error(L, "this WebSocket session is over");
  u->s->foreign = rh_task_current(L) != u->s->task;
  return u->s;
}

/* Ends what check_session began: a foreign call's wake-up, if any, is already scheduled. */
static int done(session *s, int nret) {
  s->foreign = 0;
  return nret;
}

static void cancel_recv(void *op) { ((session *)op)->waiting = 0; }

/* ws:recv() -> data, "text"|"binary" | nil, "closed", code, reason */
static int l_recv(lua_State *L) {
  session *s = check_session(L);
  if (s->head || s->closed) return done(s, push_next(L, s));
  rh_task *t = rh_task_current(L);
  if (t != s->task) return done(s, luaL_error(L, "ws:recv: only inside the task that opened the session"));
  s->waiting = 1;
  return rh_task_yield(L, t, cancel_recv, s);
}

/* ws:send(data, "text"|"binary"?) -> true | nil, err */
/* Queues one frame of opcode and answers as ws:send/ws:ping do: true | nil, err. */
static int send_frame(lua_State *L, session *s, int opcode, const char *p, size_t n, const char *refused) {
  if (s->closed || !(s->req || s->up) || rh_ws_send(s->engine, opcode, p, n) < 0) {
    lua_pushnil(L);
    lua_pushstring(L, s->closed ? "closed" : refused);
    return done(s, 2);
  }
  flush(s);
  lua_pushboolean(L, 1);
  return done(s, 1);
}

static int l_send(lua_State *L) {
  session *s = check_session(L);
  size_t n;
  const char *p = luaL_checklstring(L, 2, &n);
  int binary = strcmp(luaL_optstring(L, 3, "text"), "binary") == 0;
  return send_frame(L, s, binary ? RH_WS_BINARY : RH_WS_TEXT, p, n, "cannot send (text must be UTF-8)");
}

/* ws:close(code?, reason?) */
static int l_close(lua_State *L) {
  session *s = check_session(L);
  int code = (int)luaL_optinteger(L, 2, 1000);
  if (!s->closed) {
    rh_ws_close(s->engine, code, luaL_optstring(L, 3, ""));
    flush(s);
  }
  set_closed(s, code, "closed by this side");
  wake(s);
  return done(s, 0);
}

/* ws:terminate(): drops the connection without a closing handshake (a peer that stopped
 * answering pings, a consumer that stopped reading). */
static int l_terminate(lua_State *L) {
  session *s = check_session(L);
  set_closed(s, 1006, "terminated by this side");
  if (s->req) rh_http_abort(s->req);
  else if (s->up) {
    rh_upconn_close(s->up);
    s->up = NULL;
  }
  wake(s);
  return done(s, 0);
}

/* ws:ping(data?) -> true | nil, err */
static int l_ping(lua_State *L) {
  session *s = check_session(L);
  size_t n;
  const char *p = luaL_optlstring(L, 2, "", &n);
  return send_frame(L, s, RH_WS_PING, p, n, "cannot ping (at most 125 bytes)");
}

/* ws:buffered() -> bytes sent but not yet taken by the peer, pongs included (either side) */
static int l_buffered(lua_State *L) {
  session *s = check_session(L);
  lua_pushnumber(L, (lua_Number)rh_ws_backlog(s->engine));
  return done(s, 1);
}

/* ws:idle() -> seconds since the peer last sent anything (pongs included) */
static int l_idle(lua_State *L) {
  session *s = check_session(L);
  lua_pushnumber(L, rh_now() - s->last_rx);
  return done(s, 1);
}

/* ws:silent() -> seconds since the peer last sent a message (pings and pongs not counted) */
static int l_silent(lua_State *L) {
  session *s = check_session(L);
  lua_pushnumber(L, rh_now() - s->last_msg);
  return done(s, 1);
}

static const luaL_Reg ws_methods[] = { { "recv", l_recv },           { "send", l_send },
                                       { "close", l_close },         { "terminate", l_terminate },
                                       { "ping", l_ping },           { "buffered", l_buffered },
                                       { "idle", l_idle },           { "silent", l_silent },
                                       { NULL, NULL } };

/* ---- a session's life ---- */

static void push_object(lua_State *L, session *s) {
  ws_ud *u = lua_newuserdata(L, sizeof *u);
  u->s = s;
  luaL_getmetatable(L, WS_MT);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  s->ud_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

static void let_go(session *s) {
  const rh_lua_ws_consumer *c = s->consumer;
  void *ud = s->consumer_ud;
  s->consumer = NULL;
  s->consumer_ud = NULL;
  if (c && c->on_end) c->on_end(ud);
}

static void end_session(rh_task *t, session *s) {
  if ((s->req || s->up) && !rh_ws_want_close(s->engine)) {
    int code = t->cancelled ? 1001 : t->failed ? 1011 : 1000;
    rh_ws_close(s->engine, code, t->cancelled ? "going away" : t->failed ? "handler error" : "");
    flush(s);
  }
  set_closed(s, 1001, "session ended");
  let_go(s);
  if (s->req) {
    s->req->events = NULL;
    rh_http_finish(s->req); /* closes once what is queued is written */
  }
  if (s->dial) rh_ws_dial_cancel(s->dial);
  if (s->up) rh_upconn_close(s->up);
  while (s->head) {
    msg *m = s->head;
    s->head = m->next;
    free(m);
  }
  if (s->engine) rh_ws_free(s->engine);
  if (s->own_ctx) rh_tls_ctx_free(s->own_ctx);
  if (s->waker) rh_soon_cancel(s->waker);
  unlist_pending(s);
  if (s->going_ref != LUA_NOREF) {
    if (s->gprev) s->gprev->gnext = s->gnext;
    else going_away_list = s->gnext;
    if (s->gnext) s->gnext->gprev = s->gprev;
  }
  lua_State *L = t->gen->L; /* the object may outlive the session: it must know it is over */
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->ud_ref);
  ws_ud *u = lua_touserdata(L, -1);
  if (u) u->s = NULL;
  lua_pop(L, 1);
  luaL_unref(L, LUA_REGISTRYINDEX, s->ud_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, s->going_ref);
  free(s->close_reason);
  free(s);
}

/* The task ended (returned, failed or was cancelled): every session it opened says goodbye. */
static void ws_end(rh_task *t) {
  session *s = t->ext;
  t->ext = NULL;
  while (s) {
    session *next = s->next;
    end_session(t, s);
    s = next;
  }
}

static session *session_new(rh_task *t, int is_server, size_t max_message) {
  session *s = calloc(1, sizeof *s);
  if (!s) abort();
  rh_ws_handlers wh = { .on_message = on_message, .on_close = on_close, .ud = s, .queued = transport_queued };
  s->engine = rh_ws_new(is_server, max_message, &wh);
  s->last_rx = s->last_msg = rh_now();
  s->server_side = is_server != 0;
  s->task = t;
  s->ud_ref = s->going_ref = LUA_NOREF;
  s->next = t->ext;
  t->ext = s;
  t->on_end = ws_end;
  return s;
}

/* ---- for other bindings (lua_hub.c, lua_tunnel.c): see gen.h ---- */

rh_lua_ws_session *rh_lua_ws_check(lua_State *L, int idx, int live) {
  ws_ud *u = luaL_checkudata(L, idx, WS_MT);
  if (!u->s || (live && u->s->closed)) luaL_error(L, "this WebSocket session is over");
  return u->s;
}

int rh_lua_ws_send(rh_lua_ws_session *s, int opcode, const char *p, size_t n) {
  return rh_lua_ws_send_parts(s, opcode, NULL, 0, p, n);
}

/* A session's batch of frames goes out in one write; its buffer is kept while batches are big
 * (at most BATCH_KEEP), and given back after a small one. From the loop, or from a send of
 * another task: a failed write may end the connection, so its task wakes on the next turn. */
static void flush_batch(session *s) {
  size_t n;
  const char *p = rh_ws_output_peek(s->engine, &n);
  s->foreign = 1;
  write_out(s, p, n);
  rh_ws_output_done(s->engine, n >= BATCH_SMALL ? BATCH_KEEP : 0);
  update_reading(s);
  s->foreign = 0;
}

/* Sessions a C consumer sent on in this turn of the loop. They are written in the check phase,
 * after the turn's reads: a daemon's read of ten frames for one client is one write to it, not
 * ten (write(2) and the loopback's wakeup were most of the relay's time). The prepare phase
 * writes what was sent after the check (a close callback's send), before the loop sleeps.
 * Both handles run only while the list is not empty, and never keep the loop alive alone. */
static session *pending_list;
static uv_check_t pending_check;
static uv_prepare_t pending_prepare;

static void write_pending(void) {
  while (pending_list) {
    session *s = pending_list;
    pending_list = s->pending_next;
    s->pending_next = NULL;
    s->pending = 0;
    flush_batch(s);
  }
  uv_check_stop(&pending_check);
  uv_prepare_stop(&pending_prepare);
}

static void pending_checked(uv_check_t *h) { (void)h, write_pending(); }
static void pending_prepared(uv_prepare_t *h) { (void)h, write_pending(); }

static void batch_pending(session *s) {
  if (s->pending) return;
  if (!pending_check.loop) {
    uv_check_init(rh_loop(), &pending_check);
    uv_prepare_init(rh_loop(), &pending_prepare);
    uv_unref((uv_handle_t *)&pending_check);
    uv_unref((uv_handle_t *)&pending_prepare);
  }
  if (!pending_list) {
    uv_check_start(&pending_check, pending_checked);
    uv_prepare_start(&pending_prepare, pending_prepared);
  }
  s->pending = 1;
  s->pending_next = pending_list;
  pending_list = s;
}

/* A session that ends (or is dropped) while listed leaves the list; its output is written or
 * dropped by the caller. */
static void unlist_pending(session *s) {
  if (!s->pending) return;
  session **p = &pending_list;
  while (*p != s) p = &(*p)->pending_next;
  *p = s->pending_next;
  s->pending_next = NULL;
  s->pending = 0;
}

/* A C consumer's frames wait for the end of the loop's turn (up to BATCH_MAX), so the frames of
 * one turn go out in one write, and one wakeup of the peer. */
int rh_lua_ws_send_parts(rh_lua_ws_session *s, int opcode, const char *head, size_t hl, const char *p, size_t n) {
  if (s->closed || !(s->req || s->up) || rh_ws_send_parts(s->engine, opcode, head, hl, p, n) < 0) return -1;
  size_t queued;
  rh_ws_output_peek(s->engine, &queued);
  if (queued >= BATCH_MAX) flush_batch(s);
  else batch_pending(s);
  return 0;
}

size_t rh_lua_ws_queued(rh_lua_ws_session *s) { return rh_ws_backlog(s->engine); }

/* ---- server side ---- */

/* A request on a WebSocket route that is not a valid upgrade: 426 (or 400), no handler.
 * Returns 1 when it answered. */
int rh_lua_ws_refuse(rh_http_req *r) {
  const char *why;
  if (rh_ws_check_upgrade(&r->headers, r->method, &why) == 0) return 0;
  rh_headers h = RH_HEADERS_INIT;
  rh_headers_add(&h, "Content-Type", 12, "text/plain; charset=utf-8", 25);
  int version = strcmp(why, RH_WS_WHY_VERSION) == 0;
  if (version) rh_headers_add(&h, "Sec-WebSocket-Version", 21, "13", 2);
  char body[160];
  snprintf(body, sizeof body, "WebSocket upgrade required: %s\n", why);
  int status = version || !rh_headers_find(&r->headers, "upgrade", NULL) ? 426 : 400;
  rh_http_respond(r, status, &h, body, strlen(body));
  rh_headers_free(&h);
  return 1;
}

/* The first subprotocol the client offers that the route speaks (comma list; "*": whatever
 * the client offers first, as node ws servers do by default), into out. */
static int pick_protocol(const rh_headers *h, const char *route, char *out, size_t outlen) {
  if (!route || !*route) return 0;
  if (strcmp(route, "*") == 0) {
    const rh_header *offer = rh_headers_find(h, "sec-websocket-protocol", NULL);
    if (!offer) return 0;
    size_t n = strcspn(offer->value, ", ");
    if (n > offer->value_len) n = offer->value_len;
    if (n == 0 || n >= outlen) return 0;
    memcpy(out, offer->value, n);
    out[n] = 0;
    return 1;
  }
  char list[300];
  snprintf(list, sizeof list, ",%s,", route);
  size_t from = 0;
  const rh_header *offer;
  while ((offer = rh_headers_find(h, "sec-websocket-protocol", &from))) {
    char *save = NULL, *copy = strndup(offer->value, offer->value_len);
    for (char *p = strtok_r(copy, ", ", &save); p; p = strtok_r(NULL, ", ", &save)) {
      char needle[140];
      snprintf(needle, sizeof needle, ",%s,", p);
      if (strstr(list, needle)) {
        snprintf(out, outlen, "%s", p);
        free(copy);
        return 1;
      }
    }
    free(copy);
  }
  return 0;
}

/* Incremental steps of the collector at each upgrade. A socket is held long after the garbage of
 * its handshake and admission (request tables, the admission call, JSON) is made, and LuaJIT's
 * allocator keeps the pages that garbage filled: left to the pause alone, a wave of upgrades
 * grows the heap to twice what stays live before a cycle runs, and RSS stays there. Each step
 * costs a bounded amount of work; one step kept the collector going, COLLECT_STEPS keep it
 * nearer the garbage a workspace client's admission makes (see the commit for the figures). */
#define COLLECT_STEPS 4
static void collect_step(lua_State *L) {
  for (int i = 0; i < COLLECT_STEPS; i++) lua_gc(L, LUA_GCSTEP, 0);
}

/* Answers the upgrade (101) with extra response headers and pushes the ws object on L (the
 * task's stack). */
static session *start_server(rh_task *t, lua_State *L, const char *protocols, const rh_headers *extra,
                             size_t max_message, size_t max_queued) {
  rh_http_req *r = t->req;
  session *s = session_new(t, 1, max_message);
  count_open(s);
  if (max_queued) rh_ws_set_max_queued(s->engine, max_queued);
  s->req = r;
  const rh_header *key = rh_headers_find(&r->headers, "sec-websocket-key", NULL);
  char accept[29], proto[128];
  rh_ws_accept_key(key->value, key->value_len, accept);
  rh_headers h = RH_HEADERS_INIT;
  rh_headers_add(&h, "Upgrade", 7, "websocket", 9);
  rh_headers_add(&h, "Connection", 10, "Upgrade", 7);
  rh_headers_add(&h, "Sec-WebSocket-Accept", 20, accept, strlen(accept));
  if (pick_protocol(&r->headers, protocols, proto, sizeof proto))
    rh_headers_add(&h, "Sec-WebSocket-Protocol", 22, proto, strlen(proto));
  for (size_t i = 0; extra && i < extra->n; i++)
    rh_headers_add(&h, extra->items[i].name, extra->items[i].name_len, extra->items[i].value, extra->items[i].value_len);
  rh_http_tunnel(r, 101, &h, &server_events, s);
  rh_headers_free(&h);
  push_object(L, s);
  collect_step(L);
  return s;
}

void rh_lua_ws_start(rh_task *t, const char *protocols) { start_server(t, t->co, protocols, NULL, 0, 0); }

/* core.ws_accept(protocols?, {headers, max_message, max_queued, going_away}?) -> ws | nil, err
 * (max_queued: the bytes this connection may owe its client before it is no longer read; see
 * rh_ws_read_paused). Upgrades the
 * request of the running handler (a plain route) once the script has decided to take it: checks
 * that need the request (and may wait, e.g. for an admission call or a token) run before the 101,
 * which carries opts.headers. */
static int l_ws_accept(lua_State *L) {
  rh_task *t = rh_task_current(L);
  if (!t || !t->req) return luaL_error(L, "ws_accept: only inside a request handler");
  if (t->req->head_sent || !t->req->conn) {
    lua_pushnil(L);
    lua_pushstring(L, t->req->conn ? "already answered" : "client gone");
    return 2;
  }
  if (rh_lua_ws_refuse(t->req)) {
    lua_pushnil(L);
    lua_pushliteral(L, "not a WebSocket upgrade");
    return 2;
  }
  const char *protocols = luaL_optstring(L, 1, "");
  size_t max_message = 0, max_queued = 0;
  const char *going = NULL;
  rh_headers h = RH_HEADERS_INIT;
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "headers");
    if (lua_istable(L, -1) && rh_lua_read_headers(L, lua_gettop(L), &h) < 0) {
      rh_headers_free(&h);
      return lua_error(L);
    }
    lua_getfield(L, 2, "max_message");
    max_message = (size_t)luaL_optnumber(L, -1, 0);
    lua_getfield(L, 2, "going_away");
    going = lua_tostring(L, -1);
    lua_getfield(L, 2, "max_queued");
    max_queued = (size_t)luaL_optnumber(L, -1, 0);
    lua_pop(L, 4);
  }
  session *s = start_server(t, L, protocols, &h, max_message, max_queued);
  rh_headers_free(&h);
  if (going && *going) {
    lua_pushlstring(L, going, strlen(going) < 123 ? strlen(going) : 123);
    s->going_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    s->gnext = going_away_list;
    if (going_away_list) going_away_list->gprev = s;
    going_away_list = s;
  }
  return 1;
}

/* The text a session closes with at SIGTERM (the registry keeps the string alive). */
static const char *going_away_text(session *s) {
  lua_State *L = s->task->gen->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->going_ref);
  const char *text = lua_tostring(L, -1);
  lua_pop(L, 1);
  return text ? text : "";
}

void rh_lua_ws_going_away(void) {
  for (session *s = going_away_list; s; s = s->gnext) {
    s->foreign = 1; /* not inside any task: wake-ups wait for the next loop turn */
    if (!s->closed && s->req && rh_ws_close(s->engine, 1001, going_away_text(s)) == 0) flush(s);
    s->foreign = 0;
  }
}

/* ---- client side: relay.ws.connect ---- */

static void connected(void *ud, rh_upconn *u, const char *protocol, const char *rest, size_t n,
                      const char *err, int timed_out) {
  session *s = ud;
  lua_State *co = rh_task_lua(s->task);
  s->dial = NULL;
  s->connecting = 0;
  if (!u) {
    set_closed(s, 1006, err);
    lua_pushnil(co);
    lua_pushstring(co, timed_out ? "timeout" : err);
    rh_task_resume(s->task, 2);
    return;
  }
  s->up = u;
  count_open(s);
  rh_upconn_own(u, s, client_read, client_written);
  if (n) { /* what came with the 101; a close among it is answered, and the connection let go */
    if (rh_ws_feed(s->engine, rest, n) < 0) set_closed(s, rh_ws_close_sent(s->engine), rh_ws_error(s->engine));
    flush(s);
    close_when_done(s);
  }
  lua_rawgeti(co, LUA_REGISTRYINDEX, s->ud_ref);
  if (protocol) lua_pushstring(co, protocol);
  else lua_pushnil(co);
  rh_task_resume(s->task, 2);
}

static void cancel_connect(void *op) {
  session *s = op;
  if (s->dial) rh_ws_dial_cancel(s->dial);
  s->dial = NULL;
}

/* What ws_connect needs of its url, read by core/net/url. */
typedef struct {
  int tls;
  const char *host;      /* into url */
  int port;
  char authority[RH_HOST_MAX + 9]; /* host[:port]: the Host field */
  size_t authority_len;
  char target[RH_URL_MAX + 2];     /* path and query */
  rh_url url;
} ws_url;

static const char *parse_ws_url(const char *url, ws_url *u) {
  const char *why = rh_url_parse(url, "ws wss", &u->url);
  if (!why && u->url.user) why = rh_url_refuse(&u->url, "userinfo"); /* never sent: say so */
  if (why) return why;
  u->tls = u->url.tls, u->host = u->url.host, u->port = u->url.port;
  rh_url_authority(&u->url, u->authority, sizeof u->authority);
  u->authority_len = strlen(u->authority);
  snprintf(u->target, sizeof u->target, "%s%s%s", u->url.path, u->url.query ? "?" : "", u->url.query ? u->url.query : "");
  return NULL;
}

/* Fields the handshake owns: a script's headers do not replace them. */
static int handshake_owned(const rh_header *f) {
  return rh_header_name_eq(f, "host") || rh_header_name_eq(f, "upgrade") || rh_header_name_eq(f, "connection") ||
         (f->name_len > 14 && strncasecmp(f->name, "sec-websocket-", 14) == 0);
}

/* The list at the top of the stack, comma-separated into list: NULL, or what was wrong. */
static const char *protocol_list(lua_State *L, rh_buf *list) {
  for (int i = 1;; i++) {
    lua_rawgeti(L, -1, i);
    size_t n;
    const char *p = lua_tolstring(L, -1, &n);
    int ok = !p || rh_http_is_token(p, n);
    if (p && ok) rh_buf_printf(list, "%s%.*s", i > 1 ? ", " : "", (int)n, p);
    lua_pop(L, 1);
    if (!p) return NULL;
    if (!ok) return "invalid token";
  }
}

/* opts.protocols (a list of tokens, or one string as the field's value) as a field. */
static const char *protocols_field(lua_State *L, rh_buf *b) {
  lua_getfield(L, 2, "protocols");
  rh_buf list = RH_BUF_INIT;
  const char *err = NULL;
  if (lua_istable(L, -1)) {
    err = protocol_list(L, &list);
  } else if (lua_isstring(L, -1)) {
    size_t n;
    const char *p = lua_tolstring(L, -1, &n);
    rh_buf_append(&list, p, n);
  }
  lua_pop(L, 1);
  if (!err && list.len) err = rh_head_field(b, "Sec-WebSocket-Protocol", 22, list.data, list.len);
  rh_buf_free(&list);
  return err;
}

/* A head writer's error, with the part it was in, as build_head's message: -1. */
static int bad_part(lua_State *L, const char *err, const char *part) {
  lua_pushfstring(L, "%s in %s", err, part);
  return -1;
}

/* The handshake request from its parts, each checked as it is written (http/head.h): the
 * request line, Host, the handshake's own fields, the subprotocols, then the caller's headers.
 * 0, or -1 with a message naming the bad part on the stack. */
static int build_head(lua_State *L, const ws_url *u, const char *key, rh_buf *b) {
  rh_buf target = RH_BUF_INIT;
  if (u->target[0] == '?') rh_buf_append(&target, "/", 1);
  rh_buf_puts(&target, u->target);
  const char *err = rh_head_request_line(b, "GET", 3, target.data, target.len);
  rh_buf_free(&target);
  if (err) return bad_part(L, err, "the url");
  if ((err = rh_head_field(b, "Host", 4, u->authority, u->authority_len))) return bad_part(L, err, "the url's host");
  if ((err = rh_ws_dial_fields(b, key))) return bad_part(L, err, "the key");
  if ((err = protocols_field(L, b))) return bad_part(L, err, "protocols");
  rh_headers h = RH_HEADERS_INIT;
  lua_getfield(L, 2, "headers");
  if (rh_lua_read_headers(L, -1, &h) < 0) {
    rh_headers_free(&h);
    return -1; /* message on the stack */
  }
  lua_pop(L, 1);
  err = rh_head_fields(b, &h, handshake_owned);
  rh_headers_free(&h);
  if (err) return bad_part(L, err, "headers");
  rh_head_end(b);
  return 0;
}

/* core.ws_connect(url, {headers, protocols, timeout, ca_file, max_queued}) -> ws, protocol | nil, err
 * (max_queued as for core.ws_accept). A url or a head part that is not one is nil and an error
 * naming it, and nothing is sent. */
static int l_ws_connect(lua_State *L) {
  const char *url = luaL_checkstring(L, 1);
  lua_settop(L, 2); /* opts may be left out: then an empty table stands in at 2 */
  if (lua_isnil(L, 2)) lua_newtable(L), lua_replace(L, 2);
  luaL_checktype(L, 2, LUA_TTABLE);
  rh_task *t = rh_task_current(L);
  if (!t) return luaL_error(L, "relay.ws.connect: only inside a handler or timer");
  ws_url u;
  const char *why = parse_ws_url(url, &u);
  if (why) {
    lua_pushnil(L);
    lua_pushstring(L, why);
    return 2;
  }
  char key[25];
  rh_ws_client_key(key);
  rh_buf head = RH_BUF_INIT;
  if (build_head(L, &u, key, &head) < 0) { /* nothing is sent: a bad part is no head at all */
    rh_buf_free(&head);
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  lua_getfield(L, 2, "timeout");
  double timeout = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 10;
  lua_getfield(L, 2, "ca_file");
  const char *ca_file = lua_tostring(L, -1);
  session *s = session_new(t, 0, 0);
  lua_getfield(L, 2, "max_queued");
  if (lua_isnumber(L, -1)) rh_ws_set_max_queued(s->engine, (size_t)lua_tonumber(L, -1));
  lua_pop(L, 1);
  rh_tls_ctx *ctx = NULL;
  if (u.tls) {
    char err[200];
    ctx = ca_file ? (s->own_ctx = rh_tls_client_ctx(ca_file, 1, err, sizeof err)) : rh_tls_default_client();
    if (!ctx) {
      rh_buf_free(&head);
      set_closed(s, 1006, "tls");
      return luaL_error(L, "relay.ws.connect: %s", ca_file ? err : "no usable CA store");
    }
  }
  lua_pop(L, 2);
  push_object(L, s);
  lua_pop(L, 1);
  rh_upconn_target peer = { .key = "websocket", .host = u.host, .port = u.port, .tls = ctx,
                            .connect_timeout = timeout, .via_proxy = 1 }; /* an outbound client */
  s->dial = rh_ws_dial_start(rh_loop(), &peer, head.data, head.len, key, timeout, connected, s);
  rh_buf_free(&head);
  s->connecting = 1;
  return rh_task_yield(L, t, cancel_connect, s);
}

/* ---- for C consumers (the hub, the tunnel) ---- */

void rh_lua_ws_consume(rh_lua_ws_session *s, const rh_lua_ws_consumer *c, void *ud) {
  let_go(s);
  s->consumer = c;
  s->consumer_ud = ud;
  while (s->head && consumed(s, s->head->opcode, s->head->data, s->head->len)) {
    msg *m = s->head; /* what came before the consumer goes first */
    s->head = m->next;
    if (!s->head) s->tail = NULL;
    s->queued -= m->len;
    free(m);
  }
}

void *rh_lua_ws_consumer_ud(rh_lua_ws_session *s, const rh_lua_ws_consumer *c) {
  return s->consumer == c ? s->consumer_ud : NULL;
}

void rh_lua_ws_close(rh_lua_ws_session *s, int code, const char *reason) {
  if (s->closed) return;
  rh_ws_close(s->engine, code, reason);
  flush(s);
  set_closed(s, code, reason);
}

void rh_lua_register_ws(lua_State *L) {
  rh_ws_open_register();
  luaL_newmetatable(L, WS_MT);
  lua_newtable(L);
  luaL_register(L, NULL, ws_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_ws_connect);
  lua_setfield(L, -2, "ws_connect");
  lua_pushcfunction(L, l_ws_accept);
  lua_setfield(L, -2, "ws_accept");
}
