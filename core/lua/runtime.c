#include "lua/runtime.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http/router.h"
#include "http/server.h"
#include "log/log.h"
#include "lua/bind.h"
#include "lua/gen.h"
#include "metrics/metrics.h"
#include "sse/sse.h"

int luaopen_cjson(lua_State *L);

static rh_gen *current;
static size_t live_gens, live_tasks;
static int next_gen_id;
static rh_metric *m_generations, *m_tasks, *m_handler_errors;

uv_loop_t *rh_loop(void) { return uv_default_loop(); }
double rh_now(void) { return (double)uv_now(rh_loop()) / 1000.0; }
rh_gen *rh_gen_current(void) { return current; }
int rh_gen_id(const rh_gen *g) { return g->id; }
size_t rh_gen_live(void) { return live_gens; }
size_t rh_task_count(void) { return live_tasks; }

static void register_metrics(void) {
  const char *err;
  if (m_generations) return;
  m_generations = rh_metric_register(RH_GAUGE, "relayhost_generations",
                                     "Lua generations alive (the current one plus draining ones)",
                                     NULL, 0, NULL, 0, &err);
  m_tasks = rh_metric_register(RH_GAUGE, "relayhost_lua_tasks", "Lua coroutines running or parked",
                               NULL, 0, NULL, 0, &err);
  m_handler_errors = rh_metric_register(RH_COUNTER, "relayhost_handler_errors_total",
                                        "Lua handlers and timers that raised an error", NULL, 0,
                                        NULL, 0, &err);
}

/* ---- next-turn calls ---- */

/* An idle handle, not a 0 ms timer: libuv runs a timer started inside a timer callback in the
 * same pass over the timers, so a task that waits for the next turn again and again (relay.sleep(0)
 * in a long loop) would never let the loop poll. An idle handle started now runs on the next
 * turn's idle phase at the earliest, and keeps that turn's poll from blocking. */
struct rh_soon {
  uv_idle_t idle;
  void (*fn)(void *ud);
  void *ud;
};

static void soon_freed(uv_handle_t *h) { free(h->data); }

static void soon_fire(uv_idle_t *h) {
  rh_soon *s = h->data;
  uv_close((uv_handle_t *)h, soon_freed);
  s->fn(s->ud);
}

rh_soon *rh_soon_call(void (*fn)(void *ud), void *ud) {
  rh_soon *s = malloc(sizeof *s);
  if (!s) abort();
  s->fn = fn;
  s->ud = ud;
  s->idle.data = s;
  uv_idle_init(rh_loop(), &s->idle);
  uv_idle_start(&s->idle, soon_fire);
  return s;
}

void rh_soon_cancel(rh_soon *s) { uv_close((uv_handle_t *)&s->idle, soon_freed); }

/* ---- generations ---- */

void rh_gen_ref(rh_gen *g) { g->refs++; }

void rh_gen_unref(rh_gen *g) {
  if (--g->refs > 0) return;
  RH_LOG(RH_LOG_DEBUG, "generation_closed", RH_INT("generation", g->id));
  lua_close(g->L);
  rh_router_free(g->router);
  for (size_t i = 1; g->routes && i <= g->nroutes; i++) { /* from 1: handler indexes */
    free(g->routes[i].websocket);
    free(g->routes[i].listener);
  }
  free(g->routes);
  free(g);
  live_gens--;
  rh_metric_set(m_generations, NULL, (double)live_gens);
}

rh_gen *rh_gen_of(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, "relay.gen");
  rh_gen *g = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return g;
}

static int traceback(lua_State *L) {
  if (lua_type(L, 1) == LUA_TTABLE) return 1; /* a structured error (--help) passes as it is */
  const char *msg = lua_tostring(L, 1);
  luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
  return 1;
}

static const char *lua_dir(void) {
  static char dir[2200];
  const char *env = getenv("RELAYHOST_LUA_PATH");
  if (env && *env) return env;
  char exe[1024];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) {
      *slash = 0;
      /* installed by make install, or into a luarocks tree (rocks/) */
      const char *beside[] = { "share/relayhost/lua", "share/lua/5.1" };
      for (size_t i = 0; i < 2; i++) {
        snprintf(dir, sizeof dir, "%s/../%s/relay/init.lua", exe, beside[i]);
        if (access(dir, R_OK) == 0) {
          snprintf(dir, sizeof dir, "%s/../%s", exe, beside[i]);
          return dir;
        }
      }
    }
  }
  if (access(RELAYHOST_SOURCE_LUA "/relay/init.lua", R_OK) == 0) return RELAYHOST_SOURCE_LUA;
  return RELAYHOST_INSTALL_LUA;
}

char *rh_resolve_script(const char *arg) {
  char path[2048];
  if (access(arg, R_OK) == 0) return realpath(arg, NULL);
  const char *dirs[] = { RELAYHOST_SOURCE_SCRIPTS, RELAYHOST_INSTALL_SCRIPTS };
  for (size_t i = 0; i < 2; i++) {
    snprintf(path, sizeof path, "%s/%s.lua", dirs[i], arg);
    if (access(path, R_OK) == 0) return realpath(path, NULL);
    snprintf(path, sizeof path, "%s/%s", dirs[i], arg);
    if (access(path, R_OK) == 0 && strstr(arg, ".lua")) return realpath(path, NULL);
  }
  return NULL;
}

static void set_package_path(lua_State *L, const char *script) {
  char *dir = strdup(script);
  char *slash = strrchr(dir, '/');
  if (slash) *slash = 0;
  else strcpy(dir, ".");
  const char *lib = lua_dir();
  lua_getglobal(L, "package");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s/?.lua;%s/?/init.lua;", lib, lib, dir, dir);
  lua_getfield(L, -2, "path");
  lua_concat(L, 2);
  lua_setfield(L, -2, "path");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, rh_lua_open_core);
  lua_setfield(L, -2, "relay.core");
  lua_pushcfunction(L, luaopen_cjson);
  lua_setfield(L, -2, "cjson");
  lua_pop(L, 2);
  free(dir);
}

static void copy_setting(lua_State *L, int t, const char *key, char *out, size_t outlen) {
  lua_getfield(L, t, key);
  const char *v = lua_tostring(L, -1);
  if (v) snprintf(out, outlen, "%s", v);
  lua_pop(L, 1);
}

static double num_setting(lua_State *L, int t, const char *key, double dflt) {
  lua_getfield(L, t, key);
  double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : dflt;
  lua_pop(L, 1);
  return v;
}

static void read_settings(lua_State *L, int t, rh_host_settings *s) {
  memset(s, 0, sizeof *s);
  copy_setting(L, t, "listen", s->listen, sizeof s->listen);
  copy_setting(L, t, "listen_from", s->listen_from, sizeof s->listen_from);
  copy_setting(L, t, "admin_listen", s->admin_listen, sizeof s->admin_listen);
  lua_getfield(L, t, "listeners"); /* { {name=, listen=}, ... }, checked by relay.init */
  for (int i = 1; lua_istable(L, -1) && s->nlisteners < RH_MAX_LISTENERS; i++) {
    lua_rawgeti(L, -1, i);
    if (!lua_istable(L, -1)) { lua_pop(L, 1); break; }
    rh_listener_setting *ls = &s->listeners[s->nlisteners++];
    copy_setting(L, lua_gettop(L), "name", ls->name, sizeof ls->name);
    copy_setting(L, lua_gettop(L), "listen", ls->listen, sizeof ls->listen);
    copy_setting(L, lua_gettop(L), "from", ls->from, sizeof ls->from);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  copy_setting(L, t, "pid_file", s->pid_file, sizeof s->pid_file);
  copy_setting(L, t, "log_level", s->log_level, sizeof s->log_level);
  copy_setting(L, t, "log_format", s->log_format, sizeof s->log_format);
  copy_setting(L, t, "tls_cert", s->tls_cert, sizeof s->tls_cert);
  copy_setting(L, t, "tls_key", s->tls_key, sizeof s->tls_key);
  copy_setting(L, t, "trusted_proxies", s->trusted_proxies, sizeof s->trusted_proxies);
  s->workers = (int)num_setting(L, t, "workers", 1);
  s->drain_timeout = num_setting(L, t, "drain_timeout", 30);
  s->watchdog = num_setting(L, t, "watchdog", 10);
  s->max_head = num_setting(L, t, "max_head", 16384);
  s->head_timeout = num_setting(L, t, "head_timeout", 10);
  s->body_timeout = num_setting(L, t, "body_timeout", 30);
  s->keepalive_timeout = num_setting(L, t, "keepalive_timeout", 75);
  s->send_timeout = num_setting(L, t, "send_timeout", 60);
  lua_getfield(L, t, "help");
  if (lua_isstring(L, -1)) {
    s->help = 1;
    s->help_text = strdup(lua_tostring(L, -1));
  }
  lua_pop(L, 1);
}

static char *error_text(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  return strdup(msg ? msg : "unknown error (error object is not a string)");
}

static void cancel_all(rh_gen *g);

/* A generation that failed to load never serves: the timers and tasks its script started while
 * loading (presence refreshes, Redis subscribers) stop now instead of running on in a dead
 * generation, and it is freed once their handles have closed. */
static void abandon(rh_gen *g) {
  g->retired = 1;
  rh_gen_stop_timers(g);
  cancel_all(g);
  rh_gen_unref(g);
}

/* Loading runs most code a few times: traces compiled then are mostly waste, and each costs
 * mprotect calls on the machine code (440 per flag proxy reload, ~20 ms on the benchmark machine,
 * twice per SIGHUP: rehearsal child and host). So while the script loads only a loop that runs
 * ~60,000 times is compiled (a load that never returns still is, for the watchdog's exit). */
static void jit_hotloop(lua_State *L, const char *opt) {
  int top = lua_gettop(L);
  lua_getglobal(L, "jit");
  if (lua_istable(L, -1)) lua_getfield(L, -1, "opt");
  if (lua_istable(L, -1)) lua_getfield(L, -1, "start");
  if (lua_isfunction(L, -1)) {
    lua_pushstring(L, opt);
    lua_pcall(L, 1, 0, 0);
  }
  lua_settop(L, top);
}

rh_gen *rh_gen_build(const char *script, int argc, char **argv, rh_host_settings *settings,
                     char **err) {
  register_metrics();
  lua_State *L = luaL_newstate();
  if (!L) { *err = strdup("cannot create a Lua state (out of memory)"); return NULL; }
  rh_gen *g = calloc(1, sizeof *g);
  if (!g) abort();
  g->L = L;
  g->id = ++next_gen_id;
  g->refs = 1;
  g->router = rh_router_new();
  live_gens++;
  rh_metric_set(m_generations, NULL, (double)live_gens);
  luaL_openlibs(L);
  jit_hotloop(L, "hotloop=30000");
  lua_pushlightuserdata(L, g);
  lua_setfield(L, LUA_REGISTRYINDEX, "relay.gen");
  set_package_path(L, script);

  lua_pushcfunction(L, traceback);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "relay.host");
  int rc = lua_pcall(L, 1, 1, 1);
  if (rc == 0) {
    lua_getfield(L, -1, "load");
    lua_pushstring(L, script);
    lua_createtable(L, argc, 0);
    for (int i = 0; i < argc; i++) {
      lua_pushstring(L, argv[i]);
      lua_rawseti(L, -2, i + 1);
    }
    rh_watchdog_enter(L);
    rc = lua_pcall(L, 2, 1, 1);
    rh_watchdog_leave();
  }
  jit_hotloop(L, "hotloop=56"); /* LuaJIT's default: serving code runs hot */
  if (rc != 0) {
    *err = error_text(L);
    abandon(g);
    return NULL;
  }
  if (settings) read_settings(L, lua_gettop(L), settings);
  lua_settop(L, 0);
  return g;
}

static void on_drain_timeout(uv_timer_t *t);

/* Replaced generations whose drain timer runs: shutdown cuts their drain short too. */
static rh_gen *draining;

static void close_drain_timer(uv_handle_t *h) {
  rh_gen *g = h->data;
  for (rh_gen **p = &draining; *p; p = &(*p)->next_draining)
    if (*p == g) { *p = g->next_draining; break; }
  rh_gen_unref(g);
}

/* The old generation serves no new work: its timers stop, its tasks get drain_timeout to
 * finish, and it is freed with its last task. */
static void retire(rh_gen *g, double drain_timeout, int replaced) {
  g->retired = 1;
  rh_gen_stop_timers(g);
  if (replaced) rh_gen_run_retire(g); /* not at shutdown: everything stops then */
  if (g->tasks) {
    rh_gen_ref(g);
    uv_timer_init(rh_loop(), &g->drain_timer);
    g->drain_timer.data = g;
    g->drain_timer_active = 1;
    g->next_draining = draining;
    draining = g;
    uv_timer_start(&g->drain_timer, on_drain_timeout, (uint64_t)(drain_timeout * 1000), 0);
  }
  rh_gen_unref(g);
}

void rh_gen_activate(rh_gen *g, double drain_timeout) {
  rh_gen *old = current;
  current = g;
  if (old) retire(old, drain_timeout, 1);
}

static void cancel_all(rh_gen *g) {
  while (g->tasks) rh_task_cancel(g->tasks);
}

static void on_drain_timeout(uv_timer_t *t) {
  rh_gen *g = t->data;
  if (g->tasks)
    RH_LOG(RH_LOG_WARN, "generation_drain_timeout", RH_INT("generation", g->id),
           RH_INT("cancelled_tasks", (long long)g->ntasks));
  g->drain_timer_active = 0; /* closed here, not again when the last task goes */
  cancel_all(g);
  uv_close((uv_handle_t *)&g->drain_timer, close_drain_timer);
}

/* A generation whose tasks all ended before its drain timer fired: stop waiting. */
void rh_gen_tasks_gone(rh_gen *g) {
  if (g->retired && g->drain_timer_active) {
    g->drain_timer_active = 0;
    uv_close((uv_handle_t *)&g->drain_timer, close_drain_timer);
  }
}

void rh_gen_shutdown(void) {
  /* generations a reload replaced end now too, not at their own drain deadline */
  for (rh_gen *d = draining; d; d = d->next_draining)
    if (d->drain_timer_active) {
      uv_timer_stop(&d->drain_timer);
      on_drain_timeout(&d->drain_timer);
    }
  rh_gen *g = current;
  current = NULL;
  if (!g) return;
  rh_gen_ref(g);
  retire(g, 0, 0);
  cancel_all(g);
  if (g->drain_timer_active) {
    uv_timer_stop(&g->drain_timer);
    g->drain_timer_active = 0;
    uv_close((uv_handle_t *)&g->drain_timer, close_drain_timer);
  }
  rh_gen_unref(g);
}

/* ---- tasks ---- */

rh_task *rh_task_current(lua_State *L) {
  rh_task *t = lua_getexdata(L);
  return t && t->co == L ? t : NULL;
}

lua_State *rh_task_lua(rh_task *t) { return t->co; }

/* A task's coroutine: an ended task's, reset (task_idle), or a new one. */
static void task_coroutine(rh_task *t, rh_gen *g) {
  if (g->nidle) {
    g->nidle--;
    t->co = g->idle[g->nidle].co;
    t->co_ref = g->idle[g->nidle].ref;
    return;
  }
  t->co = lua_newthread(g->L);
  t->co_ref = luaL_ref(g->L, LUA_REGISTRYINDEX);
}

/* A coroutine whose task has ended (returned or raised, so it is not running) is kept for the
 * next task, up to RH_IDLE_COROUTINES: a new thread and its registry ref are most of a task's
 * fixed cost. Nothing of this task may reach the next: lua_resetthread clears the stack and
 * closes the upvalues still open on it (a closure over a local of a handler that raised) --
 * those of its first argument's thread, so it is given t->co twice (given the main state it
 * would close the main thread's instead) -- and the thread's environment (setfenv(0, ...)) is
 * set back to the globals as lua_newthread would. */
static int task_idle(rh_task *t) {
  rh_gen *g = t->gen;
  if (g->nidle == RH_IDLE_COROUTINES || g->retired) return 0;
  lua_resetthread(t->co, t->co);
  lua_pushvalue(g->L, LUA_GLOBALSINDEX);
  lua_xmove(g->L, t->co, 1);
  lua_replace(t->co, LUA_GLOBALSINDEX);
  g->idle[g->nidle].co = t->co;
  g->idle[g->nidle].ref = t->co_ref;
  g->nidle++;
  return 1;
}

rh_task *rh_task_new(rh_gen *g, rh_http_req *req) {
  rh_task *t = calloc(1, sizeof *t);
  if (!t) abort();
  t->gen = g;
  task_coroutine(t, g);
  t->ex_ref = LUA_NOREF;
  lua_setexdata(t->co, t);
  t->req = req;
  t->next = g->tasks;
  if (g->tasks) g->tasks->prev = t;
  g->tasks = t;
  g->ntasks++;
  rh_gen_ref(g);
  live_tasks++;
  rh_metric_set(m_tasks, NULL, (double)live_tasks);
  return t;
}

/* ended: the coroutine returned or raised (task_run), and may be kept for the next task. */
static void task_free(rh_task *t, int ended) {
  rh_gen *g = t->gen;
  if (t->prev) t->prev->next = t->next;
  else g->tasks = t->next;
  if (t->next) t->next->prev = t->prev;
  g->ntasks--;
  if (t->cancel) t->cancel(t->op); /* a wait must never outlive its task */
  t->cancel = NULL;
  if (t->on_end) t->on_end(t);
  if (t->ex) t->ex->task = NULL;
  lua_setexdata(t->co, NULL);
  if (!ended || !task_idle(t)) luaL_unref(g->L, LUA_REGISTRYINDEX, t->co_ref);
  luaL_unref(g->L, LUA_REGISTRYINDEX, t->ex_ref);
  if (t->req) {
    t->req->ud = NULL;
    rh_http_req_release(t->req);
  }
  free(t);
  live_tasks--;
  rh_metric_set(m_tasks, NULL, (double)live_tasks);
  if (!g->tasks) rh_gen_tasks_gone(g);
  rh_gen_unref(g);
}

/* A WebSocket session took the request over (101): it says goodbye in its own way, in on_end.
 * A plain handler that only opened client sessions still answers its request. */
static int taken_over(rh_task *t) { return t->ext && t->req && t->req->status == 101; }

static void answer_error(rh_task *t) {
  rh_http_req *r = t->req;
  if (!r || taken_over(t)) return;
  if (!r->head_sent) {
    char body[160];
    snprintf(body, sizeof body, "Internal Server Error (request id %s)\n", r->id);
    rh_headers h = RH_HEADERS_INIT;
    rh_headers_add(&h, "Content-Type", 12, "text/plain; charset=utf-8", 25);
    rh_headers_add(&h, "X-Request-Id", 12, r->id, strlen(r->id));
    rh_http_respond(r, 500, &h, body, strlen(body));
    rh_headers_free(&h);
  } else if (!r->finished) {
    rh_http_abort(r); /* a streamed response cannot be turned into an error any more */
  }
}

static void task_failed(rh_task *t) {
  t->failed = 1;
  lua_State *co = t->co;
  const char *msg = lua_tostring(co, -1);
  luaL_traceback(t->gen->L, co, msg ? msg : "(error object is not a string)", 0);
  const char *tb = lua_tostring(t->gen->L, -1);
  rh_metric_add(m_handler_errors, NULL, 1);
  RH_LOG(RH_LOG_ERROR, t->req ? "handler_error" : "timer_error", RH_STR("error", msg),
         RH_STR("traceback", tb), RH_STR("request_id", t->req ? t->req->id : NULL),
         RH_INT("generation", t->gen->id));
  lua_pop(t->gen->L, 1);
  answer_error(t);
}

static void task_returned(rh_task *t) {
  rh_http_req *r = t->req;
  if (!r || taken_over(t)) return;
  if (r->head_sent && !r->finished) { rh_http_finish(r); return; }
  if (r->head_sent) return;
  RH_LOG(RH_LOG_ERROR, "handler_error", RH_STR("error", "handler returned without a response"),
         RH_STR("request_id", r->id), RH_INT("generation", t->gen->id));
  rh_metric_add(m_handler_errors, NULL, 1);
  answer_error(t);
}

/* Runs the task until it parks or ends. */
static void task_run(rh_task *t, int nargs) {
  t->parked = 0;
  rh_watchdog_enter(t->co);
  int st = lua_resume(t->co, nargs);
  rh_watchdog_leave();
  if (st == LUA_YIELD && t->parked) return;
  if (st == LUA_YIELD) {
    lua_settop(t->co, 0);
    lua_pushliteral(t->co, "coroutine.yield() at the top of a handler: use relay's waiting "
                           "functions (relay.sleep, req:body(), relay.http.request, …)");
    st = LUA_ERRRUN;
  }
  if (st == 0) task_returned(t);
  else task_failed(t);
  task_free(t, 1);
}

void rh_task_start(rh_task *t, int nargs) { task_run(t, nargs); }

/* Whether a Lua function comes from relay's own library (a wrapper such as Request:body). */
static int in_library(lua_Debug *ar) {
  const char *dir = lua_dir();
  size_t n = strlen(dir);
  return ar->source[0] == '@' && strncmp(ar->source + 1, dir, n) == 0 && ar->source[1 + n] == '/';
}

/* Pushes the name of the public function at the running level (relay.sleep, relay.http.request)
 * from the relay module's table, if it is there (at most two deep); returns 1 if found. */
static int public_name(lua_State *L, int fn, int tbl, const char *prefix, int depth) {
  for (lua_pushnil(L); lua_next(L, tbl); lua_pop(L, 1)) {
    if (lua_type(L, -2) != LUA_TSTRING) continue;
    if (lua_rawequal(L, -1, fn)) {
      lua_pushfstring(L, "%s.%s", prefix, lua_tostring(L, -2));
      lua_insert(L, -3);
      lua_pop(L, 2);
      return 1;
    }
    if (depth > 1 && lua_istable(L, -1)) {
      lua_pushfstring(L, "%s.%s", prefix, lua_tostring(L, -2));
      int found = public_name(L, fn, lua_gettop(L) - 1, lua_tostring(L, -1), depth - 1);
      if (found) {
        lua_insert(L, -4);
        lua_pop(L, 3);
        return 1;
      }
      lua_pop(L, 1);
    }
  }
  return 0;
}

/* The call the script made, for an error: the level above relay's own wrappers; its public name,
 * or the name it was called by. Pushes the text, returns the level. */
static int push_call_name(lua_State *L) {
  lua_Debug ar, up;
  int level = 0;
  while (lua_getstack(L, level + 1, &up) && lua_getinfo(L, "S", &up) && in_library(&up)) level++;
  if (!lua_getstack(L, level, &ar) || !lua_getinfo(L, "nf", &ar)) {
    lua_pushliteral(L, "this call");
    return level;
  }
  int fn = lua_gettop(L);
  lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED"); /* package.loaded, which a script may hide */
  lua_getfield(L, -1, "relay");
  int found = lua_istable(L, -1) && public_name(L, fn, lua_gettop(L), "relay", 2);
  if (!found) lua_pushfstring(L, "'%s'", ar.name ? ar.name : "?");
  lua_replace(L, fn);
  lua_settop(L, fn);
  return level;
}

/* LuaJIT cannot yield across a C call: inside a table.sort comparator, a string.gsub callback, a
 * metamethod a C function calls. lua_yield would raise there, after the binding has started its
 * operation, and that operation would later resume a task that had ended. So the operation is
 * cancelled now and the error names the call. */
static int cannot_wait(lua_State *L, rh_wait_cancel_fn cancel, void *op) {
  if (cancel) cancel(op);
  luaL_checkstack(L, 20, "cannot wait here");
  int level = push_call_name(L);
  luaL_where(L, level + 1);
  lua_pushvalue(L, -2);
  lua_pushliteral(L, " cannot wait here: called across a C boundary (table.sort comparator, "
                     "string.gsub callback, metamethod …)");
  lua_concat(L, 3);
  return lua_error(L);
}

int rh_task_yield(lua_State *L, rh_task *t, rh_wait_cancel_fn cancel, void *op) {
  if (!lua_isyieldable(L)) return cannot_wait(L, cancel, op);
  t->cancel = cancel;
  t->op = op;
  t->parked = 1;
  return lua_yield(L, 0);
}

void rh_task_resume(rh_task *t, int nargs) {
  t->cancel = NULL;
  t->op = NULL;
  task_run(t, nargs);
}

void rh_task_cancel(rh_task *t) {
  /* logged before answering, so whoever sees the 503 finds the line; a task with no request (a
   * timer's loop, a background client) ends this way at every shutdown: no warning for that */
  if (t->req)
    RH_LOG(RH_LOG_WARN, "task_cancelled", RH_INT("generation", t->gen->id), RH_STR("request_id", t->req->id));
  else
    RH_LOG(RH_LOG_DEBUG, "task_cancelled", RH_INT("generation", t->gen->id));
  if (t->cancel) t->cancel(t->op);
  t->cancel = NULL;
  t->cancelled = 1;
  if (t->req && !t->req->finished && !taken_over(t)) {
    if (!t->req->head_sent) {
      rh_headers h = RH_HEADERS_INIT;
      rh_headers_add(&h, "Content-Type", 12, "text/plain; charset=utf-8", 25);
      static const char body[] = "Service Unavailable: the handler was cancelled (reload drain timeout or shutdown)\n";
      t->req->keep_alive = 0;
      rh_http_respond(t->req, 503, &h, body, sizeof body - 1);
      rh_headers_free(&h);
    } else {
      rh_http_abort(t->req);
    }
  }
  task_free(t, 0);
}

void rh_runtime_going_away(void) {
  rh_sse_close(NULL);
  rh_lua_ws_going_away();
}
