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
 * shutdown), cancel_op(op) runs instead: it must release the operation without resuming. */
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

#endif
