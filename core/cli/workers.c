/* workers: --workers N. The parent serves nothing: it forks N workers that each bind the same
 * port (SO_REUSEPORT) and run their own loop and Lua generations, restarts a worker that dies,
 * checks a reload once before passing SIGHUP on (so `relayhost reload` gets one answer), and
 * passes SIGTERM/SIGINT on and waits for everyone. SIGUSR2 starts the binary on disk as a new
 * parent whose workers bind the same port (SO_REUSEPORT); once they accept, ours drain. A plain signal loop, no libuv: the parent
 * has nothing else to do. */
#include "cli/workers.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/reload.h"
#include "cli/upgrade.h"
#include "log/log.h"

#define MAX_WORKERS 256

static pid_t pids[MAX_WORKERS];
static double restart_at[MAX_WORKERS]; /* 0: running or not due */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void start_worker(const rh_workers *w, int i, const sigset_t *blocked) {
  pid_t pid = fork();
  if (pid == 0) {
    sigprocmask(SIG_UNBLOCK, blocked, NULL);
    _exit(w->run_worker(i, w->ud));
  }
  if (pid < 0) {
    RH_LOG(RH_LOG_ERROR, "worker_fork_failed", RH_INT("worker", i), RH_STR("error", strerror(errno)));
    restart_at[i] = now_s() + 1;
    return;
  }
  pids[i] = pid;
  restart_at[i] = 0;
  RH_LOG(RH_LOG_INFO, "worker_started", RH_INT("worker", i), RH_INT("pid", pid));
}

static void signal_all(int n, int sig) {
  for (int i = 0; i < n; i++)
    if (pids[i] > 0) kill(pids[i], sig);
}

/* A reload is checked here once; only a script that loads goes on to the workers. */
static void reload(const rh_workers *w, unsigned *seq) {
  char *err = NULL;
  int rc = w->validate(&err, w->ud);
  ++*seq;
  if (rc < 0) {
    RH_LOG(RH_LOG_ERROR, "reload_failed", RH_STR("error", err));
    rh_reload_status_write(w->pid_file, *seq, err);
  } else {
    signal_all(w->n, SIGHUP);
    RH_LOG(RH_LOG_INFO, "reloaded", RH_INT("workers", w->n));
    rh_reload_status_write(w->pid_file, *seq, NULL);
  }
  free(err);
}

/* Collects exited workers; while serving, a dead worker is restarted after a second. Only our
 * workers: an upgrade's successor is reaped by rh_upgrade_poll. */
static int reap(const rh_workers *w, int stopping) {
  int alive = 0, st;
  for (int i = 0; i < w->n; i++) {
    pid_t pid = pids[i];
    if (pid <= 0 || waitpid(pid, &st, WNOHANG) != pid) continue;
    pids[i] = 0;
    if (!stopping) {
      RH_LOG(RH_LOG_WARN, "worker_exited", RH_INT("worker", i), RH_INT("pid", pid),
             RH_INT("status", WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st)));
      restart_at[i] = now_s() + 1;
    }
  }
  for (int i = 0; i < w->n; i++) alive += pids[i] > 0;
  return alive;
}

/* An upgrade in flight: the new parent, and the pipe on which it says its workers accept. */
static pid_t successor;
static int successor_ready = -1;

static void upgrade_start(const rh_workers *w, unsigned *seq) {
  char err[300];
  if (successor_ready >= 0) return;
  successor_ready = rh_upgrade_spawn(NULL, 0, w->upgrade_env, &successor, err, sizeof err);
  if (successor_ready >= 0) {
    RH_LOG(RH_LOG_INFO, "upgrade_started", RH_INT("successor", successor));
    return;
  }
  rh_upgrade_failed(w->pid_file, ++*seq, err);
}

/* 1 when the successor serves (time for ours to drain), else 0. */
static int upgrade_check(const rh_workers *w, unsigned *seq) {
  char err[300];
  if (successor_ready < 0) return 0;
  int rc = rh_upgrade_poll(successor_ready, successor, err, sizeof err);
  if (rc == 0) return 0;
  close(successor_ready);
  successor_ready = -1;
  if (rc > 0) {
    RH_LOG(RH_LOG_INFO, "upgraded", RH_INT("successor", successor));
    return 1;
  }
  rh_upgrade_failed(w->pid_file, ++*seq, err);
  return 0;
}

int rh_workers_supervise(const rh_workers *w) {
  if (w->n > MAX_WORKERS) return 2;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGUSR2);
  sigprocmask(SIG_BLOCK, &set, NULL);
  for (int i = 0; i < w->n; i++) start_worker(w, i, &set);
  if (w->started) w->started(w->ud);
  unsigned seq = 0;
  int stopping = 0;
  for (;;) {
    struct timespec tick = { 0, 200 * 1000 * 1000 };
    int sig = sigtimedwait(&set, NULL, &tick);
    if (sig == SIGHUP && !stopping) reload(w, &seq);
    if (sig == SIGUSR2 && !stopping) upgrade_start(w, &seq);
    int upgraded = upgrade_check(w, &seq);
    if ((sig == SIGTERM || sig == SIGINT || upgraded) && !stopping) {
      stopping = 1;
      RH_LOG(RH_LOG_INFO, "shutdown", RH_STR("signal", upgraded ? "upgrade" : sig == SIGINT ? "SIGINT" : "SIGTERM"),
             RH_INT("workers", w->n));
      signal_all(w->n, SIGTERM);
    }
    int alive = reap(w, stopping);
    if (stopping && alive == 0) break;
    for (int i = 0; !stopping && i < w->n; i++)
      if (restart_at[i] > 0 && now_s() >= restart_at[i]) start_worker(w, i, &set);
  }
  return 0;
}
