/* lua_ws: app:websocket routes. The handshake and the frames are C (core/ws over wslay); the
 * handler runs in its task's coroutine and meets a ws object whose recv() yields until a
 * message arrives. Messages that arrive while the handler is busy wait in a bounded queue. */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "log/log.h"
#include "lua/bind.h"
#include "lua/gen.h"
#include "ws/ws.h"

#define WS_MT "relay.websocket"
#define QUEUE_MAX_BYTES (16u * 1024 * 1024)

typedef struct msg {
  struct msg *next;
  int opcode;
  size_t len;
  char data[];
} msg;

/* One WebSocket session, owned by its task (freed in ws_end). The userdata holds a pointer
 * that is cleared when the session ends. */
typedef struct {
  rh_ws *engine;
  rh_http_req *req;
  rh_task *task;
  msg *head, *tail;
  size_t queued;
  int closed, close_code, waiting;
  char close_reason[124];
} session;

typedef struct {
  session *s;
} ws_ud;

static void flush(session *s) {
  if (!s->req) return;
  rh_buf out = RH_BUF_INIT;
  rh_ws_output(s->engine, &out);
  if (out.len) rh_http_write(s->req, out.data, out.len);
  rh_buf_free(&out);
}

/* Resumes a handler parked in recv() with the next message or the close. */
static int push_next(lua_State *L, session *s) {
  msg *m = s->head;
  if (m) {
    s->head = m->next;
    if (!s->head) s->tail = NULL;
    s->queued -= m->len;
    lua_pushlstring(L, m->data, m->len);
    lua_pushstring(L, m->opcode == RH_WS_BINARY ? "binary" : "text");
    free(m);
    return 2;
  }
  lua_pushnil(L);
  lua_pushliteral(L, "closed");
  lua_pushinteger(L, s->close_code);
  lua_pushstring(L, s->close_reason);
  return 4;
}

static void wake(session *s) {
  if (!s->waiting) return;
  s->waiting = 0;
  rh_task_resume(s->task, push_next(rh_task_lua(s->task), s));
}

static void on_message(void *ud, int opcode, const char *p, size_t n) {
  session *s = ud;
  if (s->queued + n > QUEUE_MAX_BYTES) { /* the handler does not keep up */
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
}

static void on_close(void *ud, int code, const char *reason, size_t n) {
  session *s = ud;
  s->closed = 1;
  s->close_code = code;
  snprintf(s->close_reason, sizeof s->close_reason, "%.*s", (int)(n < 123 ? n : 123), reason);
}

/* The handler is resumed last: it may end the session, and s with it. */
static void on_bytes(rh_http_req *r, const char *p, size_t n, void *ud) {
  (void)r;
  session *s = ud;
  if (rh_ws_feed(s->engine, p, n) < 0 && !s->closed) {
    s->closed = 1;
    s->close_code = rh_ws_close_sent(s->engine);
    snprintf(s->close_reason, sizeof s->close_reason, "%s", rh_ws_error(s->engine));
  }
  flush(s);
  if (s->head || s->closed) wake(s);
}

static void on_gone(rh_http_req *r, void *ud) {
  (void)r;
  session *s = ud;
  if (!s->closed) {
    s->closed = 1;
    s->close_code = 1006;
    snprintf(s->close_reason, sizeof s->close_reason, "connection lost");
  }
  s->req = NULL;
  wake(s);
}

static const rh_http_req_events ws_events = { on_bytes, NULL, NULL, on_gone };

/* ---- the ws object ---- */

static session *check_session(lua_State *L) {
  ws_ud *u = luaL_checkudata(L, 1, WS_MT);
  if (!u->s) luaL_error(L, "this WebSocket session is over");
  return u->s;
}

/* ws:recv() -> data, "text"|"binary" | nil, "closed", code, reason */
static int l_recv(lua_State *L) {
  session *s = check_session(L);
  if (s->head || s->closed) return push_next(L, s);
  rh_task *t = rh_task_current(L);
  if (t != s->task) return luaL_error(L, "ws:recv: only inside the session's own handler");
  s->waiting = 1;
  return rh_task_yield(L, t, NULL, NULL);
}

/* ws:send(data, "text"|"binary"?) -> true | nil, err */
static int l_send(lua_State *L) {
  session *s = check_session(L);
  size_t n;
  const char *p = luaL_checklstring(L, 2, &n);
  const char *kind = luaL_optstring(L, 3, "text");
  int opcode = strcmp(kind, "binary") == 0 ? RH_WS_BINARY : RH_WS_TEXT;
  if (s->closed || !s->req || rh_ws_send(s->engine, opcode, p, n) < 0) {
    lua_pushnil(L);
    lua_pushstring(L, s->closed ? "closed" : "cannot send (text must be UTF-8)");
    return 2;
  }
  flush(s);
  lua_pushboolean(L, 1);
  return 1;
}

/* ws:close(code?, reason?) */
static int l_close(lua_State *L) {
  session *s = check_session(L);
  int code = (int)luaL_optinteger(L, 2, 1000);
  const char *reason = luaL_optstring(L, 3, "");
  if (!s->closed) {
    rh_ws_close(s->engine, code, reason);
    flush(s);
  }
  s->closed = 1;
  if (!s->close_code) s->close_code = code;
  return 0;
}

static const luaL_Reg ws_methods[] = { { "recv", l_recv }, { "send", l_send }, { "close", l_close }, { NULL, NULL } };

void rh_lua_register_ws(lua_State *L) {
  luaL_newmetatable(L, WS_MT);
  lua_newtable(L);
  luaL_register(L, NULL, ws_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

/* ---- a session's life ---- */

/* The task ended (returned, failed or cancelled): say goodbye properly and free. */
static void ws_end(rh_task *t) {
  session *s = t->ext;
  t->ext = NULL;
  if (s->req && !rh_ws_want_close(s->engine)) {
    int code = t->cancelled ? 1001 : t->failed ? 1011 : 1000;
    rh_ws_close(s->engine, code, t->cancelled ? "going away" : t->failed ? "handler error" : "");
    flush(s);
  }
  if (s->req) {
    s->req->events = NULL;
    rh_http_finish(s->req);
  }
  while (s->head) {
    msg *m = s->head;
    s->head = m->next;
    free(m);
  }
  rh_ws_free(s->engine);
  /* the ws object may outlive the session in Lua: it must know it is over */
  lua_State *L = t->gen->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->ext_ref);
  ws_ud *u = lua_touserdata(L, -1);
  if (u) u->s = NULL;
  lua_pop(L, 1);
  free(s);
}

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

/* The first subprotocol the client offers that the route speaks (comma list), into out. */
static int pick_protocol(const rh_headers *h, const char *route, char *out, size_t outlen) {
  if (!route || !*route) return 0;
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

/* Answers the upgrade (101) and pushes the ws object for the handler on the task's stack. */
void rh_lua_ws_start(rh_task *t, const char *protocols) {
  rh_http_req *r = t->req;
  session *s = calloc(1, sizeof *s);
  if (!s) abort();
  rh_ws_handlers wh = { on_message, on_close, s };
  s->engine = rh_ws_new(1, 0, &wh);
  s->req = r;
  s->task = t;
  t->ext = s;
  t->on_end = ws_end;
  const rh_header *key = rh_headers_find(&r->headers, "sec-websocket-key", NULL);
  char accept[29], proto[128];
  rh_ws_accept_key(key->value, key->value_len, accept);
  rh_headers h = RH_HEADERS_INIT;
  rh_headers_add(&h, "Upgrade", 7, "websocket", 9);
  rh_headers_add(&h, "Connection", 10, "Upgrade", 7);
  rh_headers_add(&h, "Sec-WebSocket-Accept", 20, accept, strlen(accept));
  if (pick_protocol(&r->headers, protocols, proto, sizeof proto))
    rh_headers_add(&h, "Sec-WebSocket-Protocol", 22, proto, strlen(proto));
  rh_http_tunnel(r, 101, &h, &ws_events, s);
  rh_headers_free(&h);
  lua_State *co = t->co;
  ws_ud *u = lua_newuserdata(co, sizeof *u);
  u->s = s;
  luaL_getmetatable(co, WS_MT);
  lua_setmetatable(co, -2);
  lua_pushvalue(co, -1);
  t->ext_ref = luaL_ref(co, LUA_REGISTRYINDEX);
}
