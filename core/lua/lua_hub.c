/* lua_hub: relay.core.hub_new for the workspace relay (core/hub): the script taps a daemon's
 * WebSocket so its E2EE frames reach their owners in C, registers client WebSockets as peers,
 * and tells the hub who owns which session.
 *
 *   local hub = core.hub_new(daemon_frames_per_minute, max_pending_bytes)
 *   hub:tap(daemon_ws, scope, claimed_profile?)   hub:peer(client_ws)
 *   hub:own(scope, session_id, client_ws | nil)   hub:clear(scope)
 *   hub:allow(scope) -> bool                       hub:stats() -> frames, bytes */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "hub/hub.h"
#include "lua/bind.h"
#include "lua/gen.h"
#include "ws/ws.h"

#define HUB_MT "relay.hub"

typedef struct {
  rh_hub *hub;
} hub_ud;

/* What a daemon session's tap knows; freed when the session ends. */
typedef struct {
  rh_hub *hub;
  char *scope, *profile;
} tap_ctx;

/* A client session as a peer; freed when the session ends. */
typedef struct {
  rh_hub *hub;
  rh_hub_peer *peer;
} peer_ctx;

static int ws_send(void *conn, const char *p, size_t n) { return rh_lua_ws_send(conn, RH_WS_TEXT, p, n); }
static size_t ws_queued(void *conn) { return rh_lua_ws_queued(conn); }

static rh_hub *check_hub(lua_State *L) { return ((hub_ud *)luaL_checkudata(L, 1, HUB_MT))->hub; }

static int tap_frame(void *ud, int opcode, const char *p, size_t n) {
  tap_ctx *t = ud;
  return opcode == RH_WS_TEXT && rh_hub_daemon_frame(t->hub, t->scope, t->profile, p, n, rh_now());
}

static void tap_gone(void *ud) {
  tap_ctx *t = ud;
  free(t->scope);
  free(t->profile);
  free(t);
}

static void peer_gone(void *ud) {
  peer_ctx *c = ud;
  rh_hub_peer_gone(c->hub, c->peer);
  free(c);
}

static const rh_lua_ws_consumer tap_consumer = { tap_frame, NULL, NULL, tap_gone };
static const rh_lua_ws_consumer peer_consumer = { NULL, NULL, NULL, peer_gone };

static int l_tap(lua_State *L) {
  rh_hub *h = check_hub(L);
  rh_lua_ws_session *s = rh_lua_ws_check(L, 2, 0);
  tap_ctx *t = malloc(sizeof *t);
  if (!t) abort();
  t->hub = h;
  t->scope = strdup(luaL_checkstring(L, 3));
  t->profile = lua_isstring(L, 4) ? strdup(lua_tostring(L, 4)) : NULL;
  rh_lua_ws_consume(s, &tap_consumer, t);
  return 0;
}

static int l_peer(lua_State *L) {
  rh_hub *h = check_hub(L);
  rh_lua_ws_session *s = rh_lua_ws_check(L, 2, 0);
  peer_ctx *c = malloc(sizeof *c);
  if (!c) abort();
  c->hub = h;
  c->peer = rh_hub_peer_new(h, s);
  rh_lua_ws_consume(s, &peer_consumer, c);
  return 0;
}

/* hub:own(scope, session, ws|nil): ws must have been made a peer of this hub. */
static int l_own(lua_State *L) {
  rh_hub *h = check_hub(L);
  const char *scope = luaL_checkstring(L, 2), *session = luaL_checkstring(L, 3);
  rh_hub_peer *peer = NULL;
  if (!lua_isnoneornil(L, 4)) {
    peer_ctx *c = rh_lua_ws_consumer_ud(rh_lua_ws_check(L, 4, 0), &peer_consumer);
    if (!c || c->hub != h) return luaL_error(L, "hub:own: that WebSocket is not a peer of this hub");
    peer = c->peer;
  }
  rh_hub_own(h, scope, session, peer);
  return 0;
}

static int l_clear(lua_State *L) {
  rh_hub_clear_scope(check_hub(L), luaL_checkstring(L, 2));
  return 0;
}

static int l_allow(lua_State *L) {
  lua_pushboolean(L, rh_hub_daemon_allow(check_hub(L), luaL_checkstring(L, 2), rh_now()));
  return 1;
}

static int l_stats(lua_State *L) {
  uint64_t frames, bytes;
  rh_hub_stats(check_hub(L), &frames, &bytes);
  lua_pushnumber(L, (lua_Number)frames);
  lua_pushnumber(L, (lua_Number)bytes);
  return 2;
}

static int l_gc(lua_State *L) {
  hub_ud *u = luaL_checkudata(L, 1, HUB_MT);
  rh_hub_free(u->hub);
  u->hub = NULL;
  return 0;
}

static int l_hub_new(lua_State *L) {
  static const rh_hub_ops ops = { ws_send, ws_queued };
  double per_minute = luaL_checknumber(L, 1), max_pending = luaL_checknumber(L, 2);
  luaL_argcheck(L, per_minute > 0, 1, "daemon frames per minute must be positive");
  luaL_argcheck(L, max_pending >= 0, 2, "max pending bytes must not be negative");
  hub_ud *u = lua_newuserdata(L, sizeof *u);
  u->hub = rh_hub_new(&ops, per_minute, (size_t)max_pending);
  luaL_getmetatable(L, HUB_MT);
  lua_setmetatable(L, -2);
  return 1;
}

void rh_lua_register_hub(lua_State *L) {
  static const luaL_Reg methods[] = { { "tap", l_tap },     { "peer", l_peer },   { "own", l_own },
                                      { "clear", l_clear }, { "allow", l_allow }, { "stats", l_stats },
                                      { NULL, NULL } };
  rh_lua_class(L, HUB_MT, methods, l_gc);
  lua_pushcfunction(L, l_hub_new);
  lua_setfield(L, -2, "hub_new");
}
