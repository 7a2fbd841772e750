/* runtime: generations (one LuaJIT state each) and tasks (one coroutine each).
 *
 * A generation is built whole from the script on disk (rh_gen_build) before it becomes
 * current; it is freed when it is no longer current and its last task has ended. A task is
 * one run of a Lua function in its own coroutine: a request handler, a timer callback. It holds
 * a reference on its generation, so a reload never pulls the state from under it.
 *
 * Waiting primitives (sleep, body read, HTTP client, …) follow one shape, from a lua_CFunction:
 *
 *     rh_task *t = rh_task_current(L);
 *     if (!t) return luaL_error(L, "relay.sleep: only inside a handler or timer");
 *     op = start_the_operation(..., on_done, t);
 *     return rh_task_yield(L, t, cancel_op, op);
 *
 * and when the operation completes, push the results on rh_task_lua(t) and call
 * rh_task_resume(t, nresults). If the task is cancelled while parked (drain timeout,
 * shutdown), cancel_op(op) runs instead: it must release the operation without resuming. Where
 * LuaJIT cannot yield (the call came through a C function: a table.sort comparator, a string.gsub
 * callback), rh_task_yield runs cancel_op(op) at once and raises a Lua error naming the call; so
 * every wait needs a cancel_op that undoes what it started, even a flag it set. */
#ifndef RH_RUNTIME_H
#define RH_RUNTIME_H

#include <lua.h>
#include <uv.h>

typedef struct rh_gen rh_gen;
typedef struct rh_task rh_task;
typedef void (*rh_wait_cancel_fn)(void *op);

uv_loop_t *rh_loop(void);
double rh_now(void); /* loop time in seconds (monotonic) */

rh_task *rh_task_current(lua_State *L);
lua_State *rh_task_lua(rh_task *t);
int rh_task_yield(lua_State *L, rh_task *t, rh_wait_cancel_fn cancel, void *op);
void rh_task_resume(rh_task *t, int nargs);

/* Calls fn(ud) from the loop instead of now, behind what is already due (a poll for I/O comes
 * between two such calls made one from the other): for a wake-up that comes from inside another
 * task's call, a callback that must not see the woken task run under its feet, or a task giving
 * others a turn (relay.sleep(0)). The handle is valid until fn has been called or rh_soon_cancel
 * was; it frees itself either way. */
typedef struct rh_soon rh_soon;
rh_soon *rh_soon_call(void (*fn)(void *ud), void *ud);
void rh_soon_cancel(rh_soon *s);

/* ---- generations (used by the CLI) ---- */

/* A listener a script adds beside --listen (app:listener): its routes name it. */
#define RH_MAX_LISTENERS 4
typedef struct {
  char name[32];
  char listen[256];
  char from[128];            /* the flag (and env var) that sets listen, or "" */
} rh_listener_setting;

/* What the script and the command line settle for the host; read after a build. */
typedef struct {
  char listen[256];
  char listen_from[128];     /* the flag (and env var) that sets listen, for a bind error */
  rh_listener_setting listeners[RH_MAX_LISTENERS];
  int nlisteners;
  char admin_listen[256];
  char pid_file[1024];
  char log_level[16];
  char log_format[16];
  char tls_cert[1024], tls_key[1024];
  char trusted_proxies[1024];
  int workers;
  double drain_timeout;
  double watchdog;
  double max_head;
  double head_timeout, body_timeout, keepalive_timeout, send_timeout;
  int help;                  /* --help was given: help_text holds the text */
  char *help_text;           /* malloc'd */
} rh_host_settings;

/* Builds a generation from script with the command-line args. NULL plus a malloc'd message
 * ("file:line: message") in *err. settings may be NULL. */
rh_gen *rh_gen_build(const char *script, int argc, char **argv, rh_host_settings *settings,
                     char **err);
/* Makes gen the one new requests go to; the previous one drains (drain_timeout seconds). */
void rh_gen_activate(rh_gen *gen, double drain_timeout);
rh_gen *rh_gen_current(void);
int rh_gen_id(const rh_gen *gen);
/* Drops the current generation (shutdown). Tasks still running are cancelled. */
void rh_gen_shutdown(void);
size_t rh_gen_live(void);
size_t rh_task_count(void);

/* The HTTP handlers that route requests into the current generation. */
struct rh_http_req;
void rh_runtime_on_request(struct rh_http_req *req, void *ud);
void rh_runtime_on_body(struct rh_http_req *req, void *ud);
void rh_runtime_on_drain(struct rh_http_req *req, void *ud);
void rh_runtime_on_abort(struct rh_http_req *req, void *ud);

/* SIGTERM: what scripts hold open and would never end by itself is ended now instead of at the
 * drain deadline: held event streams (relay.sse; SDKs reconnect), and WebSocket sessions
 * accepted with a going_away reason (closed 1001 with it). */
void rh_runtime_going_away(void);

/* Resolves a script argument: a path, or a bundled personality's name. malloc'd or NULL. */
char *rh_resolve_script(const char *arg);
/* The watchdog thread: a handler running longer than seconds without yielding is failed
 * where LuaJIT lets us (interpreted code); at twice that the process exits (status 70). */
void rh_watchdog_start(double seconds);
void rh_watchdog_stop(void);

#endif
