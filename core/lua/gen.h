/* gen: the inside of generations and tasks, shared by runtime.c and the relay.core bindings.
 * Not for the protocol layers: they only see runtime.h. */
#ifndef RH_GEN_H
#define RH_GEN_H

#include <lua.h>
#include <stddef.h>
#include <uv.h>

#include "http/router.h"
#include "http/server.h"
#include "lua/runtime.h"

typedef struct rh_exchange rh_exchange;
typedef struct rh_gtimer rh_gtimer;

/* What the host knows of a route besides its handler function. Owned by the generation. */
typedef struct {
  size_t max_body;           /* 0: the server default */
  struct rh_lua_proxy *proxy; /* a native proxy route, or NULL */
  char *websocket;           /* subprotocols of a WebSocket route ("" for none), or NULL for
                                plain HTTP routes */
  char *listener;            /* serve only requests that came in on this listener ("*": any) */
  /* Which of the route's parameters (bit i: the i-th) name a secret, worked out when it is
   * added: the names are the pattern's, and the check is ~800 instructions a request. */
  unsigned secret_params;
} rh_route_info;

/* Coroutines of ended tasks a generation keeps, reset, for its next tasks: few, as a kept one
 * keeps the stack its deepest run grew (a phase that does not wait needs one). */
#define RH_IDLE_COROUTINES 16

/* One LuaJIT state and what was built from it. refs: 1 while current, plus one per task, per
 * timer handle and for the drain timer; freed (lua_close) when they are all gone. */
struct rh_gen {
  lua_State *L;
  int id, refs, retired;
  rh_router *router;
  rh_route_info *routes;     /* by route handler index (from 1) */
  size_t nroutes;
  int handlers_ref;          /* registry: array of route handler functions */
  int retire_ref;            /* registry: run as a task when a reload replaces this generation
                                (app:on_retire), or 0 */
  rh_task *tasks;            /* live tasks, for drain cancellation */
  size_t ntasks;
  struct { lua_State *co; int ref; } idle[RH_IDLE_COROUTINES]; /* runtime.c: for the next tasks */
  size_t nidle;
  rh_gtimer *timers;         /* relay.after / relay.every timers */
  uv_timer_t drain_timer;
  int drain_timer_active;
  rh_gen *next_draining;     /* in runtime.c's list of replaced generations still draining */
};

/* One coroutine run. Owns a registry ref to its coroutine (and to its exchange userdata) and
 * one ref on its request; both are dropped in task_free when the coroutine ends or is
 * cancelled. */
struct rh_task {
  rh_gen *gen;
  lua_State *co;
  int co_ref, ex_ref;
  rh_exchange *ex;
  rh_http_req *req;          /* NULL for timer tasks */
  rh_task *prev, *next;
  rh_wait_cancel_fn cancel;  /* set while parked on a waiting primitive */
  void *op;
  int parked;
  int waiting_body, waiting_drain;
  int cancelled, failed;     /* how it ended, for on_end */
  void *ext;                 /* sessions the task opened (WebSockets), freed by on_end */
  void (*on_end)(rh_task *t);
};

/* The userdata req/res objects hold: valid while task is non-NULL. */
struct rh_exchange {
  rh_task *task;
};

rh_gen *rh_gen_of(lua_State *L);   /* the generation a Lua state belongs to */
void rh_gen_ref(rh_gen *g);
void rh_gen_unref(rh_gen *g);
void rh_gen_stop_timers(rh_gen *g);
void rh_gen_run_retire(rh_gen *g);  /* lua_core.c: app:on_retire's function, as a task */
void rh_gen_tasks_gone(rh_gen *g);
rh_task *rh_task_new(rh_gen *g, rh_http_req *req); /* coroutine on top of nothing: push fn+args */
void rh_task_start(rh_task *t, int nargs);          /* runs fn on t->co with nargs */
void rh_task_cancel(rh_task *t);

/* lua_ws.c: WebSocket routes; going_away closes the sessions accepted with a going_away reason */
void rh_lua_ws_going_away(void);
int rh_lua_ws_refuse(rh_http_req *r);
void rh_lua_ws_start(rh_task *t, const char *protocols);
/* lua_ws.c, for other bindings (the hub, the tunnel): the session behind the ws object at idx
 * (a Lua error when there is none, or with live set when it is closed); a message to it (0, or
 * -1 when closed: the messages sent this way in one turn of the loop go out in one write at its
 * end); the bytes it has not taken (those waiting included). */
typedef struct rh_lua_ws_session rh_lua_ws_session;
rh_lua_ws_session *rh_lua_ws_check(lua_State *L, int idx, int live);
int rh_lua_ws_send(rh_lua_ws_session *s, int opcode, const char *p, size_t n);
/* The same with the payload in two parts (rh_ws_send_parts): the tunnel's frames. */
int rh_lua_ws_send_parts(rh_lua_ws_session *s, int opcode, const char *head, size_t hl, const char *p, size_t n);
size_t rh_lua_ws_queued(rh_lua_ws_session *s);
/* A consumer in C of a session's messages (the hub's routing, the tunnel's frames): it sees
 * each message before the script's recv() would, as long as none waits for the script (so a
 * message never overtakes an earlier one). One per session; setting another lets the previous
 * one go. Every callback may be NULL. */
typedef struct {
  int (*on_message)(void *ud, int opcode, const char *p, size_t n); /* 1: taken; 0: for recv() */
  void (*on_closed)(void *ud, int code, const char *reason);        /* the connection closed */
  void (*on_bytes)(void *ud);  /* anything came from the peer (a pong too) */
  void (*on_end)(void *ud);    /* let go: the session ended or another consumer took over */
} rh_lua_ws_consumer;
/* Sets c (NULL: none) with ud; messages already waiting for the script are offered to it first. */
void rh_lua_ws_consume(rh_lua_ws_session *s, const rh_lua_ws_consumer *c, void *ud);
/* ud if c is the session's consumer, else NULL. */
void *rh_lua_ws_consumer_ud(rh_lua_ws_session *s, const rh_lua_ws_consumer *c);
void rh_lua_ws_close(rh_lua_ws_session *s, int code, const char *reason);

void rh_watchdog_enter(lua_State *L);
void rh_watchdog_leave(void);

#endif
