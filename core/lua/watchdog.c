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

/* running/since/hooked change under lock, so the hook is never set on a state that has
 * already left (and may be closed) */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static lua_State *running;
static long long since_ms;
static int hooked;
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
  pthread_mutex_lock(&lock);
  hooked = 0;
  since_ms = now_ms();
  running = L;
  pthread_mutex_unlock(&lock);
}

void rh_watchdog_leave(void) {
  if (!started) return;
  pthread_mutex_lock(&lock);
  if (running && hooked) lua_sethook(running, NULL, 0, 0);
  running = NULL;
  pthread_mutex_unlock(&lock);
}

static void *watch(void *arg) {
  (void)arg;
  while (!atomic_load(&stop_flag)) {
    usleep(100 * 1000);
    pthread_mutex_lock(&lock);
    double ran = running ? (double)(now_ms() - since_ms) / 1000.0 : 0;
    if (running && ran > limit && !hooked) {
      hooked = 1;
      lua_sethook(running, hook, LUA_MASKCOUNT | LUA_MASKLINE | LUA_MASKCALL, 1);
    }
    pthread_mutex_unlock(&lock);
    if (ran > 2 * limit) {
      char msg[200];
      int n = snprintf(msg, sizeof msg,
                       "{\"level\":\"error\",\"event\":\"watchdog_exit\",\"seconds\":%.1f,"
                       "\"message\":\"a Lua handler never yielded (compiled loop); exiting for "
                       "the supervisor to restart\"}\n", ran);
      ssize_t w = write(2, msg, (size_t)n);
      (void)w;
      _exit(70);
    }
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
