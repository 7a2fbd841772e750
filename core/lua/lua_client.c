/* lua_client: relay.http.request{method, url, headers, body, timeout, max_body} for Lua.
 *
 * A waiting primitive (see runtime.h): the task parks while the C client works on the loop,
 * and is resumed with res{status, headers, body} or nil, err. The client copies the request,
 * so nothing from the Lua side has to outlive the call that starts it. */
#include <lauxlib.h>
#include <stdint.h>

#include "http/client.h"
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

static int l_http_request(lua_State *L) {
  rh_task *t = rh_task_current(L);
  if (!t) return luaL_error(L, FN ": only inside a handler or timer");
  luaL_checktype(L, 1, LUA_TTABLE);

  rh_client_req req = { 0 };
  if (opt_field(L, "method", LUA_TSTRING)) req.method = lua_tostring(L, -1);
  if (!opt_field(L, "url", LUA_TSTRING)) return luaL_error(L, FN ": url is required");
  req.url = lua_tostring(L, -1);
  if (opt_field(L, "body", LUA_TSTRING)) req.body = lua_tolstring(L, -1, &req.body_len);
  if (opt_field(L, "ca_file", LUA_TSTRING)) req.ca_file = lua_tostring(L, -1);
  if (opt_field(L, "timeout", LUA_TNUMBER)) req.timeout = lua_tonumber(L, -1);
  if (opt_field(L, "max_body", LUA_TNUMBER)) req.max_body = to_max_body(L, -1);
  int has_headers = opt_field(L, "headers", LUA_TTABLE);
  int headers_idx = lua_gettop(L);

  /* Last, because from here on an error must free the list before it is raised. */
  rh_headers h = RH_HEADERS_INIT;
  if (has_headers && rh_lua_read_headers(L, headers_idx, &h) != 0) {
    rh_headers_free(&h);
    return lua_error(L);
  }
  req.headers = &h;
  rh_client_op *op = rh_client_request(rh_loop(), &req, on_done, t);
  rh_headers_free(&h);
  return rh_task_yield(L, t, cancel_request, op);
}

void rh_lua_register_client(lua_State *L) {
  lua_pushcfunction(L, l_http_request);
  lua_setfield(L, -2, "http_request");
}
