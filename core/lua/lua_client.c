/* lua_client: relay.http.request{method, url, headers, body, timeout, max_body} for Lua.
 *
 * A waiting primitive (see runtime.h): the task parks while the C client works on the loop,
 * and is resumed with res{status, headers, body} or nil, err. The client copies the request,
 * so nothing from the Lua side has to outlive the call that starts it. */
#include <lauxlib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/client.h"
#include "buf/buf.h"
#include "lua/bind.h"
#include "lua/runtime.h"

#define FN "relay.http.request"

static void on_done(void *ud, const char *err, const rh_client_resp *resp) {
  rh_task *t = ud;
  lua_State *L = rh_task_lua(t);
  if (err) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    rh_task_resume(t, 2);
    return;
  }
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, resp->status);
  lua_setfield(L, -2, "status");
  rh_lua_push_headers(L, &resp->headers);
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, resp->body, resp->body_len);
  lua_setfield(L, -2, "body");
  rh_task_resume(t, 1);
}

/* The task is gone (drain timeout, shutdown): drop the exchange without resuming anyone. */
static void cancel_request(void *op) { rh_client_cancel(op); }

/* Pushes opts[name] and checks its type; nil is always allowed. Leaves the value on the
 * stack so strings stay anchored until the client has copied them. */
static int opt_field(lua_State *L, const char *name, int type) {
  lua_getfield(L, 1, name);
  int got = lua_type(L, -1);
  if (got != LUA_TNIL && got != type)
    luaL_error(L, FN ": %s must be a %s, got %s", name, lua_typename(L, type), luaL_typename(L, -1));
  return got != LUA_TNIL;
}

static size_t to_max_body(lua_State *L, int idx) {
  double v = lua_tonumber(L, idx);
  if (!(v >= 0)) luaL_error(L, FN ": max_body must not be negative");
  return v >= (double)SIZE_MAX ? SIZE_MAX : (size_t)v; /* 0 keeps the client's default */
}

/* Reads opts (at 1) into req; strings stay anchored on the stack. h must be freed by the caller. */
static void read_request(lua_State *L, rh_client_req *req, rh_headers *h) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (opt_field(L, "method", LUA_TSTRING)) req->method = lua_tostring(L, -1);
  if (!opt_field(L, "url", LUA_TSTRING)) luaL_error(L, FN ": url is required");
  req->url = lua_tostring(L, -1);
  if (opt_field(L, "body", LUA_TSTRING)) req->body = lua_tolstring(L, -1, &req->body_len);
  if (opt_field(L, "ca_file", LUA_TSTRING)) req->ca_file = lua_tostring(L, -1);
  if (opt_field(L, "timeout", LUA_TNUMBER)) req->timeout = lua_tonumber(L, -1);
  if (opt_field(L, "max_body", LUA_TNUMBER)) req->max_body = to_max_body(L, -1);
  int has_headers = opt_field(L, "headers", LUA_TTABLE);
  int headers_idx = lua_gettop(L);

  /* Last, because from here on an error must free the list before it is raised. */
  if (has_headers && rh_lua_read_headers(L, headers_idx, h) != 0) {
    rh_headers_free(h);
    lua_error(L);
  }
  req->headers = h;
}

static int l_http_request(lua_State *L) {
  rh_task *t = rh_task_current(L);
  if (!t) return luaL_error(L, FN ": only inside a handler or timer");
  rh_client_req req = { 0 };
  rh_headers h = RH_HEADERS_INIT;
  read_request(L, &req, &h);
  rh_client_op *op = rh_client_request(rh_loop(), &req, on_done, t);
  rh_headers_free(&h);
  return rh_task_yield(L, t, cancel_request, op);
}

/* ---- relay.http.stream: a response body read as it arrives (an upstream SSE feed) ---- */

#define STREAM_MT "relay.http.stream"
#define STREAM_MAX_PENDING ((size_t)8 << 20)

/* Userdata owned by Lua; the op is cancelled by close or __gc, so no callback outlives it. */
typedef struct {
  rh_client_op *op;          /* NULL once ended or closed */
  rh_task *waiter;           /* parked in open (head) or read */
  int self_ref;              /* registry ref on the userdata while the head is awaited */
  rh_buf pending;            /* body bytes no reader has taken yet */
  int ended;
  char err[192];             /* why it ended ("" when cleanly) */
  rh_soon *wake;             /* close() from another task: the reader wakes on the next turn */
} http_stream;

static void stream_wake_reader(http_stream *s) {
  rh_task *t = s->waiter;
  if (!t) return;
  s->waiter = NULL;
  lua_State *L = rh_task_lua(t);
  if (s->pending.len) {
    lua_pushlstring(L, s->pending.data, s->pending.len);
    s->pending.len = 0;
    rh_task_resume(t, 1);
  } else {
    lua_pushnil(L);
    lua_pushstring(L, s->err[0] ? s->err : "closed");
    rh_task_resume(t, 2);
  }
}

static void stream_on_data(void *ud, const char *p, size_t n, const char *err) {
  http_stream *s = ud;
  if (!p) {
    s->ended = 1;
    s->op = NULL;
    if (err) snprintf(s->err, sizeof s->err, "%s", err);
  } else if (s->pending.len + n > STREAM_MAX_PENDING) {
    snprintf(s->err, sizeof s->err, "reader too slow: over %zu bytes pending", STREAM_MAX_PENDING);
    s->ended = 1;
    rh_client_cancel(s->op);
    s->op = NULL;
  } else {
    rh_buf_append(&s->pending, p, n);
  }
  stream_wake_reader(s);
}

static void stream_on_head(void *ud, const char *err, const rh_client_resp *resp) {
  http_stream *s = ud;
  rh_task *t = s->waiter;
  s->waiter = NULL;
  lua_State *L = rh_task_lua(t);
  if (err) {
    s->op = NULL;
    s->ended = 1;
    luaL_unref(L, LUA_REGISTRYINDEX, s->self_ref);
    s->self_ref = LUA_NOREF;
    lua_pushnil(L);
    lua_pushstring(L, err);
    rh_task_resume(t, 2);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->self_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, s->self_ref);
  s->self_ref = LUA_NOREF;
  lua_pushinteger(L, resp->status);
  rh_lua_push_headers(L, &resp->headers);
  rh_task_resume(t, 3);
}

static void stream_cancel_wait(void *op) {
  http_stream *s = op;
  if (s->self_ref != LUA_NOREF) /* waiting for the head: nothing else holds the stream */
    luaL_unref(rh_task_lua(s->waiter), LUA_REGISTRYINDEX, s->self_ref);
  s->self_ref = LUA_NOREF;
  s->waiter = NULL;
  if (s->wake) rh_soon_cancel(s->wake);
  s->wake = NULL;
  if (s->op) rh_client_cancel(s->op);
  s->op = NULL;
  s->ended = 1;
}

/* core.http_stream{url, method, headers, body, timeout (each silence), ca_file} -> stream,
 * status, headers | nil, err */
static int l_http_stream(lua_State *L) {
  rh_task *t = rh_task_current(L);
  if (!t) return luaL_error(L, "relay.http.stream: only inside a handler or timer");
  rh_client_req req = { 0 };
  rh_headers h = RH_HEADERS_INIT;
  read_request(L, &req, &h);
  req.on_data = stream_on_data;
  http_stream *s = lua_newuserdata(L, sizeof *s);
  memset(s, 0, sizeof *s);
  luaL_getmetatable(L, STREAM_MT);
  lua_setmetatable(L, -2);
  s->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  s->waiter = t;
  s->op = rh_client_request(rh_loop(), &req, stream_on_head, s);
  rh_headers_free(&h);
  return rh_task_yield(L, t, stream_cancel_wait, s);
}

/* stream:read() -> bytes | nil, "closed" or why it failed */
static int l_stream_read(lua_State *L) {
  http_stream *s = luaL_checkudata(L, 1, STREAM_MT);
  if (s->pending.len) {
    lua_pushlstring(L, s->pending.data, s->pending.len);
    s->pending.len = 0;
    return 1;
  }
  if (s->ended || !s->op) {
    lua_pushnil(L);
    lua_pushstring(L, s->err[0] ? s->err : "closed");
    return 2;
  }
  rh_task *t = rh_task_current(L);
  if (!t) return luaL_error(L, "stream:read: only inside a handler or timer");
  if (s->waiter) return luaL_error(L, "stream:read: another task is already reading");
  s->waiter = t;
  return rh_task_yield(L, t, stream_cancel_wait, s);
}

static void stream_woken(void *ud) {
  http_stream *s = ud;
  s->wake = NULL;
  stream_wake_reader(s);
}

/* stream:close(): a task parked in read() (another one: the reader is parked) gets nil,
 * "closed" on the next loop turn. */
static int l_stream_close(lua_State *L) {
  http_stream *s = luaL_checkudata(L, 1, STREAM_MT);
  if (s->op) rh_client_cancel(s->op);
  s->op = NULL;
  s->ended = 1;
  if (!s->err[0]) snprintf(s->err, sizeof s->err, "closed");
  if (s->waiter && !s->wake) s->wake = rh_soon_call(stream_woken, s);
  return 0;
}

static int l_stream_gc(lua_State *L) {
  http_stream *s = luaL_checkudata(L, 1, STREAM_MT);
  if (s->wake) rh_soon_cancel(s->wake);
  s->wake = NULL;
  if (s->op) rh_client_cancel(s->op);
  s->op = NULL;
  rh_buf_free(&s->pending);
  return 0;
}

void rh_lua_register_client(lua_State *L) {
  static const luaL_Reg methods[] = { { "read", l_stream_read }, { "close", l_stream_close }, { NULL, NULL } };
  luaL_newmetatable(L, STREAM_MT);
  lua_newtable(L);
  luaL_register(L, NULL, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_stream_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_http_request);
  lua_setfield(L, -2, "http_request");
  lua_pushcfunction(L, l_http_stream);
  lua_setfield(L, -2, "http_stream");
}
