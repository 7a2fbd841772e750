/* lua_redis: relay.redis(url) -> r; r:call("GET", k) yields until the reply. One connection
 * per object, pipelined; the object belongs to the generation that made it (closed with it).
 * relay.redis("host:port,host:port") (or a redis:// URL with several hosts, or { cluster =
 * true }) is a Redis Cluster client instead (core/redis/cluster.h): one connection per node.
 * relay.redis("redis-sentinel://host:port,host:port/mastername") finds its primary through
 * Redis Sentinel and follows failovers (core/redis/sentinel.h). */
#include <hiredis/hiredis.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lua/bind.h"
#include "lua/gen.h"
#include "redis/cluster.h"
#include "redis/redis.h"
#include "redis/sentinel.h"

#define REDIS_MT "relay.redis"

typedef struct {
  rh_redis *r;          /* one Redis, or */
  rh_redis_cluster *c;  /* a Cluster, or */
  rh_redis_sentinel *s; /* a primary found through Sentinel */
} redis_ud;

typedef struct {
  rh_task *task;
  rh_redis_cmd *cmd;
  rh_redis_cluster_op *op;
  rh_redis_sentinel_op *sop;
} wait_op;

/* A single-node client that is answered MOVED talks to a Cluster member: say so. */
static void push_error(lua_State *co, const wait_op *op, const char *msg) {
  if (op->cmd && strncmp(msg, "MOVED ", 6) == 0)
    lua_pushfstring(co, "%s (this Redis is a Cluster node: give relay.redis the cluster's seeds, "
                        "\"host:port,host:port\", or { cluster = true })", msg);
  else lua_pushstring(co, msg);
}

/* Replies as Lua values: strings and status as strings, integers as numbers, nil as nil,
 * arrays as tables (a nil element as false, to keep the array whole). */
static void push_reply(lua_State *L, const redisReply *rep) {
  switch (rep->type) {
  case REDIS_REPLY_STRING:
  case REDIS_REPLY_STATUS: lua_pushlstring(L, rep->str, rep->len); break;
  case REDIS_REPLY_INTEGER: lua_pushnumber(L, (lua_Number)rep->integer); break;
  case REDIS_REPLY_ARRAY:
    lua_createtable(L, (int)rep->elements, 0);
    for (size_t i = 0; i < rep->elements; i++) {
      if (rep->element[i]->type == REDIS_REPLY_NIL) lua_pushboolean(L, 0);
      else push_reply(L, rep->element[i]);
      lua_rawseti(L, -2, (int)i + 1);
    }
    break;
  default: lua_pushnil(L);
  }
}

static void on_reply(void *ud, redisReply *rep, const char *err) {
  wait_op *op = ud;
  rh_task *t = op->task;
  lua_State *co = rh_task_lua(t);
  if (err || rep->type == REDIS_REPLY_ERROR) {
    lua_pushnil(co);
    push_error(co, op, err ? err : rep->str);
  } else {
    push_reply(co, rep);
    lua_pushnil(co);
  }
  free(op);
  rh_task_resume(t, 2);
}

static void cancel(void *p) {
  wait_op *op = p;
  if (op->cmd) rh_redis_cancel(op->cmd);
  if (op->op) rh_redis_cluster_cancel(op->op);
  if (op->sop) rh_redis_sentinel_cancel(op->sop);
  free(op);
}

/* r:call(cmd, args...) -> reply | nil, err */
static int l_call(lua_State *L) {
  redis_ud *u = luaL_checkudata(L, 1, REDIS_MT);
  int argc = lua_gettop(L) - 1;
  if (argc < 1) return luaL_error(L, "r:call: a command is needed");
  if (argc > 64) return luaL_error(L, "r:call: at most 64 arguments");
  if (u->r && rh_redis_subscriber(u->r))
    return luaL_error(L, "r:call: this connection subscribes (Redis allows nothing else on it): use another relay.redis for commands");
  rh_task *t = rh_task_current(L);
  if (!t) return luaL_error(L, "r:call: only inside a handler or timer");
  const char *argv[64];
  size_t lens[64];
  for (int i = 0; i < argc; i++) {
    argv[i] = lua_tolstring(L, i + 2, &lens[i]);
    if (!argv[i]) return luaL_argerror(L, i + 2, "strings and numbers only");
  }
  wait_op *op = calloc(1, sizeof *op);
  if (!op) abort();
  op->task = t;
  char err[300] = "redis: not connected";
  if (u->c) op->op = rh_redis_cluster_command(u->c, argc, argv, lens, on_reply, op, err, sizeof err);
  else if (u->s) op->sop = rh_redis_sentinel_command(u->s, argc, argv, lens, on_reply, op, err, sizeof err);
  else if (!(op->cmd = rh_redis_command(u->r, argc, argv, lens, on_reply, op))) rh_redis_why_down(u->r, err, sizeof err);
  if (!op->cmd && !op->op && !op->sop) {
    free(op);
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  return rh_task_yield(L, t, cancel, op);
}

/* A message for a subscription: its function runs in a task of the generation that
 * subscribed (dropped once that generation has been replaced: the new one subscribes anew). */
typedef struct {
  rh_gen *gen;
  int fn_ref;
} subscription;

static void on_message(void *ud, const char *channel, const char *msg, size_t len) {
  subscription *sub = ud;
  if (sub->gen->retired) return;
  rh_task *t = rh_task_new(sub->gen, NULL);
  lua_rawgeti(t->co, LUA_REGISTRYINDEX, sub->fn_ref);
  lua_pushlstring(t->co, msg, len);
  lua_pushstring(t->co, channel);
  rh_task_start(t, 2);
}

/* r:subscribe(channel, fn(message, channel)) */
static int l_subscribe(lua_State *L) {
  redis_ud *u = luaL_checkudata(L, 1, REDIS_MT);
  const char *channel = luaL_checkstring(L, 2);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  subscription *sub = lua_newuserdata(L, sizeof *sub); /* kept alive by the object's table below */
  sub->gen = rh_gen_of(L);
  lua_pushvalue(L, 3);
  sub->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_getfenv(L, 1);
  lua_pushvalue(L, -2);
  luaL_ref(L, -2);
  lua_pop(L, 2);
  if (u->c) rh_redis_cluster_subscribe(u->c, channel, on_message, sub);
  else if (u->s) rh_redis_sentinel_subscribe(u->s, channel, on_message, sub);
  else rh_redis_subscribe(u->r, channel, on_message, sub);
  return 0;
}

/* r:stalled() -> seconds Redis has owed an answer without a word (a stopped server, a
 * partition), or nil: what /health wants to say before the reply timeout fails the command. */
static int l_stalled(lua_State *L) {
  redis_ud *u = luaL_checkudata(L, 1, REDIS_MT);
  uint64_t ms = u->c   ? rh_redis_cluster_stalled_ms(u->c)
                : u->s ? rh_redis_sentinel_stalled_ms(u->s)
                       : rh_redis_stalled_ms(u->r);
  if (ms) lua_pushnumber(L, (lua_Number)ms / 1000);
  else lua_pushnil(L);
  return 1;
}

static int l_ready(lua_State *L) {
  redis_ud *u = luaL_checkudata(L, 1, REDIS_MT);
  lua_pushboolean(L, u->c ? rh_redis_cluster_ready(u->c) : u->s ? rh_redis_sentinel_ready(u->s) : rh_redis_ready(u->r));
  return 1;
}

static int l_gc(lua_State *L) {
  redis_ud *u = luaL_checkudata(L, 1, REDIS_MT);
  if (u->r) rh_redis_free(u->r);
  if (u->c) rh_redis_cluster_free(u->c);
  if (u->s) rh_redis_sentinel_free(u->s);
  *u = (redis_ud){ 0 };
  return 0;
}

/* opts.socket_timeout (seconds, as in the URL's query, which it overrides) on the new client;
 * -1 with err when it is not a number of seconds. */
static int set_timeout(lua_State *L, const redis_ud *r, char *err, size_t errlen) {
  if (lua_type(L, 2) != LUA_TTABLE) return 0;
  lua_getfield(L, 2, "socket_timeout");
  int ms, given = !lua_isnil(L, -1);
  const char *why = given ? rh_redis_parse_timeout(lua_tostring(L, -1), &ms, err, errlen) : NULL;
  lua_pop(L, 1);
  if (!given || why) return why ? -1 : 0;
  if (r->c) rh_redis_cluster_set_timeout(r->c, ms);
  else if (r->s) rh_redis_sentinel_set_timeout(r->s, ms);
  else rh_redis_set_timeout(r->r, ms);
  return 0;
}

/* A comma list of seeds, or opts.cluster: a Cluster. */
static int wants_cluster(lua_State *L, const char *url) {
  if (strchr(url, ',')) return 1;
  if (lua_type(L, 2) != LUA_TTABLE) return 0;
  lua_getfield(L, 2, "cluster");
  int yes = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return yes;
}

/* core.redis_open(url [, { cluster = true, socket_timeout = S }]); a bare host:port is
 * redis://host:port. */
static int l_open(lua_State *L) {
  const char *url = luaL_checkstring(L, 1);
  char err[300];
  redis_ud r = { 0 };
  if (strncasecmp(url, "redis-sentinel://", 17) == 0) r.s = rh_redis_sentinel_new(rh_loop(), url, err, sizeof err);
  else if (wants_cluster(L, url)) r.c = rh_redis_cluster_new(rh_loop(), url, err, sizeof err);
  else if (strstr(url, "://")) r.r = rh_redis_new(rh_loop(), url, err, sizeof err);
  else r.r = rh_redis_new(rh_loop(), lua_pushfstring(L, "redis://%s", url), err, sizeof err);
  if (!r.r && !r.c && !r.s) return luaL_error(L, "relay.redis: %s", err);
  redis_ud *u = lua_newuserdata(L, sizeof *u);
  *u = r;
  luaL_getmetatable(L, REDIS_MT);
  lua_setmetatable(L, -2); /* collected (and closed) if the option is refused */
  if (set_timeout(L, u, err, sizeof err) < 0) return luaL_error(L, "relay.redis: %s", err);
  lua_newtable(L); /* the subscriptions this object keeps alive */
  lua_setfenv(L, -2);
  return 1;
}

void rh_lua_register_redis(lua_State *L) {
  static const luaL_Reg methods[] = { { "call", l_call }, { "subscribe", l_subscribe }, { "ready", l_ready },
                                       { "stalled", l_stalled },
                                       { NULL, NULL } };
  rh_lua_class(L, REDIS_MT, methods, l_gc);
  lua_pushcfunction(L, l_open);
  lua_setfield(L, -2, "redis_open");
}
