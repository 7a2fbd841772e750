/* watchdog: a thread that notices a Lua handler running too long without yielding.
 *
 * LuaJIT runs no debug hooks inside compiled loops, so this works in two steps: past the limit
 * it sets a hook that fails the handler with an error naming file:line (which works wherever
 * the code is interpreted); past twice the limit the loop is taken as lost, and the process
 * logs and exits with status 70 so that its supervisor restarts it. */
#include <lauxlib.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "log/log.h"
#include "lua/gen.h"
#include "sys/sigmask.h"

/* The loop thread pays two atomic stores per handler, no lock and no clock: enter and leave
 * bump seq (odd while a handler runs), and the watch thread times a handler from the first poll
 * that saw its seq (so up to one poll late). Setting the hook is the only step that needs the
 * lock: the watcher raises hooked, then checks that seq has not moved; leave bumps seq, then
 * looks at hooked. Both are sequentially consistent, so one of them sees the other: either the
 * watcher backs off, or leave waits on the lock for the hook to be set and clears it. So the
 * hook is never set on a state that has left (and may be closed). */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(lua_State *) running;
static atomic_uint seq;
static atomic_int hooked;
static atomic_int stop_flag;
static double limit = 10;
static pthread_t thread;
static int started;

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "watchdog: handler ran over %f seconds without yielding", limit);
}

void rh_watchdog_enter(lua_State *L) {
  if (!started) return;
  atomic_store_explicit(&running, L, memory_order_relaxed);
  atomic_fetch_add(&seq, 1); /* odd: L runs; publishes running with it */
}

void rh_watchdog_leave(void) {
  if (!started) return;
  atomic_fetch_add(&seq, 1);
  if (!atomic_load(&hooked)) return;
  pthread_mutex_lock(&lock); /* the watcher may be setting it right now */
  lua_sethook(atomic_load_explicit(&running, memory_order_relaxed), NULL, 0, 0);
  atomic_store(&hooked, 0);
  pthread_mutex_unlock(&lock);
}

/* Sets the hook on the handler of seq s, unless it has left meanwhile. */
static void hook_handler(unsigned s) {
  pthread_mutex_lock(&lock);
  atomic_store(&hooked, 1);
  lua_State *L = atomic_load(&running);
  if (atomic_load(&seq) == s) lua_sethook(L, hook, LUA_MASKCOUNT | LUA_MASKLINE | LUA_MASKCALL, 1);
  else atomic_store(&hooked, 0);
  pthread_mutex_unlock(&lock);
}

static void watchdog_exit(double ran) {
  char msg[200];
  int n = snprintf(msg, sizeof msg,
                   "{\"level\":\"error\",\"event\":\"watchdog_exit\",\"seconds\":%.1f,"
                   "\"message\":\"a Lua handler never yielded (compiled loop); exiting for "
                   "the supervisor to restart\"}\n", ran);
  ssize_t w = write(2, msg, (size_t)n);
  (void)w;
  _exit(70);
}

static void *watch(void *arg) {
  (void)arg;
  unsigned last = 0;
  long long first_ms = now_ms();
  useconds_t poll = limit < 0.4 ? (useconds_t)(limit * 250000) : 100000; /* a quarter of a short limit */
  while (!atomic_load(&stop_flag)) {
    usleep(poll);
    unsigned s = atomic_load(&seq);
    long long now = now_ms();
    if (s != last || !(s & 1)) { last = s; first_ms = now; continue; }
    double ran = (double)(now - first_ms) / 1000.0;
    if (ran > limit && !atomic_load(&hooked)) hook_handler(s);
    if (ran > 2 * limit) watchdog_exit(ran);
  }
  return NULL;
}

/* A fork (a worker, a reload's rehearsal) while the watch thread held the lock would leave the
 * child a lock that nobody releases, and no watch thread: the child may start its own. */
static void fork_prepare(void) { pthread_mutex_lock(&lock); }
static void fork_parent(void) { pthread_mutex_unlock(&lock); }
static void fork_child(void) {
  pthread_mutex_unlock(&lock);
  started = 0;
}
static void watchdog_atfork(void) { pthread_atfork(fork_prepare, fork_parent, fork_child); }

void rh_watchdog_start(double seconds) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  if (seconds <= 0 || started) return;
  limit = seconds;
  pthread_once(&once, watchdog_atfork);
  /* The thread inherits a mask with every signal blocked, so signals reach the loop's thread
   * only: a SIGTERM taken here while shutdown restores its default action would kill the exit. */
  sigset_t old;
  rh_sigmask_block_all(&old);
  started = pthread_create(&thread, NULL, watch, NULL) == 0;
  rh_sigmask_restore(&old);
}

void rh_watchdog_stop(void) {
  if (!started) return;
  atomic_store(&stop_flag, 1);
  pthread_join(thread, NULL);
  started = 0;
}
