/* workers: --workers N. The parent serves nothing: it forks N workers that each bind the same
 * port (SO_REUSEPORT) and run their own loop and Lua generations, restarts a worker that dies,
 * and passes SIGTERM/SIGINT on and waits for everyone. A reload is rehearsed once here, in a
 * child with a deadline (dryrun.h), and only a script that loads goes on to the workers: over a
 * channel each worker has to the parent, with the hash of what was checked, so that a script
 * replaced meanwhile is refused instead of loaded unchecked; the answer `relayhost reload` gets
 * is the workers'. A worker's channel closing, or PR_SET_PDEATHSIG, ends it with its parent.
 * SIGUSR2 starts the binary on disk as a new parent whose workers bind the same port
 * (SO_REUSEPORT); once they accept, ours drain. A plain signal loop, no libuv: the parent has
 * nothing else to do. */
#include "cli/workers.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/clock.h"
#include "cli/dryrun.h"
#include "cli/reload.h"
#include "cli/upgrade.h"
#include "log/log.h"

#define MAX_WORKERS 256

static pid_t pids[MAX_WORKERS];
static int chans[MAX_WORKERS] = { [0 ... MAX_WORKERS - 1] = -1 }; /* our end of each channel */
static double restart_at[MAX_WORKERS]; /* 0: running or not due */

/* In the new worker: it keeps only its own end of its own channel, and dies with its parent. */
static void become_worker(const rh_workers *w, int i, int chan, pid_t parent, const sigset_t *blocked) {
  for (int j = 0; j < MAX_WORKERS; j++)
    if (chans[j] >= 0) close(chans[j]);
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) _exit(1); /* it died before the line above */
  sigprocmask(SIG_UNBLOCK, blocked, NULL);
  _exit(w->run_worker(i, chan, w->ud));
}

static void start_worker(const rh_workers *w, int i, const sigset_t *blocked) {
  int sv[2];
  pid_t parent = getpid(), pid = -1;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0) {
    pid = fork();
    if (pid == 0) {
      close(sv[0]);
      become_worker(w, i, sv[1], parent, blocked);
    }
    close(sv[1]);
    if (pid < 0) close(sv[0]);
  }
  if (pid < 0) {
    RH_LOG(RH_LOG_ERROR, "worker_fork_failed", RH_INT("worker", i), RH_STR("error", strerror(errno)));
    restart_at[i] = rh_cli_now() + 1;
    return;
  }
  fcntl(sv[0], F_SETFL, O_NONBLOCK);
  chans[i] = sv[0];
  pids[i] = pid;
  restart_at[i] = 0;
  RH_LOG(RH_LOG_INFO, "worker_started", RH_INT("worker", i), RH_INT("pid", pid));
}

static void signal_all(int n, int sig) {
  for (int i = 0; i < n; i++)
    if (pids[i] > 0) kill(pids[i], sig);
}

/* ---- reload: rehearsed here, then asked of every worker ---- */

static struct {
  rh_dryrun check;
  rh_reload_ids ids;     /* the requests this reload answers */
  int again;             /* a SIGHUP came during it */
  unsigned seq, done;    /* what the workers are asked (R seq), outcomes so far */
  char waiting[MAX_WORKERS];
  int nwaiting;
  double deadline;
  char *err;             /* the first failure */
  char line[MAX_WORKERS][640];
  size_t len[MAX_WORKERS];
} R;

static int reload_busy(void) { return rh_dryrun_running(&R.check) || R.nwaiting > 0; }

static void reload_begin(const rh_workers *w);

static void reload_finish(const rh_workers *w, char *err) {
  if (err) {
    RH_LOG(RH_LOG_ERROR, "reload_failed", RH_STRN("error", err, rh_log_message_len(err)));
    rh_log_traceback("reload_traceback", err);
  }
  else
    RH_LOG(RH_LOG_INFO, "reloaded", RH_INT("workers", w->n));
  rh_reload_answer(w->pid_file, &R.ids, ++R.done, err);
  R.ids.n = 0;
  free(err);
  free(R.err);
  R.err = NULL;
  if (R.again) {
    R.again = 0;
    reload_begin(w);
  }
}

/* A reload that failed before any worker was asked: each worker counts it in its
 * relayhost_reload_failures_total, the metric /metrics shows. */
static void tell_failed(const rh_workers *w) {
  for (int i = 0; i < w->n; i++)
    if (pids[i] > 0 && chans[i] >= 0 && write(chans[i], "F\n", 2) != 2) { /* it is dying: reaped soon */ }
}

static void reload_begin(const rh_workers *w) {
  if (reload_busy()) {
    R.again = 1; /* its requests came after this reload took its own */
    return;
  }
  R.again = rh_reload_take(w->pid_file, &R.ids);
  char *err = NULL;
  if (rh_dryrun_start(&R.check, w->rehearse, w->ud, w->reload_timeout, &err) < 0) {
    tell_failed(w);
    reload_finish(w, err);
  }
}

/* The first failure is the one reported. */
static void worker_failed(int i, const char *why) {
  if (R.err) return;
  size_t n = strlen(why) + 32;
  R.err = malloc(n);
  snprintf(R.err, n, "worker %d: %s", i, why);
}

static void answered(const rh_workers *w, int i, const char *why) {
  if (!R.waiting[i]) return;
  R.waiting[i] = 0;
  if (why) worker_failed(i, why);
  if (--R.nwaiting == 0) {
    char *err = R.err;
    R.err = NULL;
    reload_finish(w, err);
  }
}

static void ask_workers(const rh_workers *w, const char *hash) {
  char msg[100];
  int n = snprintf(msg, sizeof msg, "R %u %s\n", ++R.seq, hash);
  for (int i = 0; i < w->n; i++) {
    if (pids[i] <= 0 || chans[i] < 0) continue; /* being restarted: it loads the script from disk */
    if (write(chans[i], msg, (size_t)n) != n) {
      worker_failed(i, "could not be asked to reload");
      continue;
    }
    R.waiting[i] = 1;
    R.nwaiting++;
  }
  R.deadline = rh_cli_now() + 2 * w->reload_timeout + 5; /* their own load, two at a time per core */
  if (R.nwaiting == 0) { /* none to wait for */
    char *err = R.err;
    R.err = NULL;
    reload_finish(w, err);
  }
}

/* Lines "SEQ ok" / "SEQ failed MESSAGE" from worker i; an older SEQ is a late answer, ignored. */
static void read_answers(const rh_workers *w, int i) {
  ssize_t n = read(chans[i], R.line[i] + R.len[i], sizeof R.line[i] - 1 - R.len[i]);
  if (n <= 0) return;
  R.len[i] += (size_t)n;
  R.line[i][R.len[i]] = 0;
  char *nl;
  while ((nl = strchr(R.line[i], '\n'))) {
    *nl = 0;
    char *sp = strchr(R.line[i], ' ');
    if (sp && strtoul(R.line[i], NULL, 10) == R.seq)
      answered(w, i, strncmp(sp + 1, "ok", 2) == 0 ? NULL : strncmp(sp + 1, "failed ", 7) == 0 ? sp + 8 : sp + 1);
    R.len[i] -= (size_t)(nl + 1 - R.line[i]);
    memmove(R.line[i], nl + 1, R.len[i] + 1);
  }
  if (R.len[i] == sizeof R.line[i] - 1) R.len[i] = 0;
}

static void reload_step(const rh_workers *w) {
  char *res = NULL;
  int rc = rh_dryrun_poll(&R.check, &res);
  if (rc == 1) {
    tell_failed(w);
    reload_finish(w, res);
  }
  if (rc == 0) {
    ask_workers(w, res ? res : "");
    free(res);
  }
  for (int i = 0; R.nwaiting > 0 && i < w->n; i++)
    if (R.waiting[i]) read_answers(w, i);
  for (int i = 0; R.nwaiting > 0 && rh_cli_now() > R.deadline && i < w->n; i++)
    if (R.waiting[i]) answered(w, i, "gave no answer in time");
}

/* Shutdown: a reload still under way is answered, not left hanging. */
static void reload_stop(const rh_workers *w) {
  if (!reload_busy()) return;
  rh_dryrun_cancel(&R.check);
  R.again = 0;
  for (int i = 0; i < w->n; i++) R.waiting[i] = 0;
  R.nwaiting = 0;
  free(R.err);
  R.err = NULL;
  reload_finish(w, strdup("the host is shutting down; nothing was replaced"));
}

/* Collects exited workers; while serving, a dead worker is restarted after a second. Only our
 * workers: an upgrade's successor is reaped by rh_upgrade_poll. */
static int reap(const rh_workers *w, int stopping) {
  int alive = 0, st;
  for (int i = 0; i < w->n; i++) {
    pid_t pid = pids[i];
    if (pid <= 0 || waitpid(pid, &st, WNOHANG) != pid) continue;
    pids[i] = 0;
    close(chans[i]);
    chans[i] = -1;
    R.len[i] = 0;
    answered(w, i, "it exited during the reload");
    if (!stopping) {
      RH_LOG(RH_LOG_WARN, "worker_exited", RH_INT("worker", i), RH_INT("pid", pid),
             RH_INT("status", WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st)));
      restart_at[i] = rh_cli_now() + 1;
    }
  }
  for (int i = 0; i < w->n; i++) alive += pids[i] > 0;
  return alive;
}

/* ---- upgrade: the new parent, and the pipe on which it says its workers accept ---- */

static rh_upgrade up = RH_UPGRADE_NONE;

static void upgrade_start(const rh_workers *w) {
  char err[300];
  if (rh_upgrade_running(&up)) {
    rh_upgrade_busy(&up);
    return;
  }
  if (rh_upgrade_spawn(&up, NULL, 0, w->upgrade_env, w->upgrade_timeout, err, sizeof err) < 0) {
    rh_upgrade_failed(w->pid_file, err);
    return;
  }
  RH_LOG(RH_LOG_INFO, "upgrade_started", RH_INT("successor", up.pid));
}

/* 1 when the successor serves (time for ours to drain), else 0. */
static int upgrade_check(const rh_workers *w) {
  char err[300];
  if (!rh_upgrade_running(&up)) return 0;
  int rc = rh_upgrade_poll(&up, err, sizeof err);
  if (rc > 0) rh_upgrade_succeeded(w->pid_file, &up);
  if (rc < 0) rh_upgrade_failed(w->pid_file, err);
  return rc > 0;
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
  int stopping = 0;
  for (;;) {
    int busy = reload_busy() || rh_upgrade_running(&up);
    struct timespec tick = { 0, (busy ? 20 : 200) * 1000 * 1000 };
    int sig = sigtimedwait(&set, NULL, &tick);
    if (sig == SIGHUP && !stopping) reload_begin(w);
    if (sig == SIGUSR2 && !stopping) upgrade_start(w);
    reload_step(w);
    int upgraded = upgrade_check(w);
    if ((sig == SIGTERM || sig == SIGINT || upgraded) && !stopping) {
      stopping = 1;
      RH_LOG(RH_LOG_INFO, "shutdown", RH_STR("signal", upgraded ? "upgrade" : sig == SIGINT ? "SIGINT" : "SIGTERM"),
             RH_INT("workers", w->n));
      reload_stop(w);
      signal_all(w->n, SIGTERM);
    }
    int alive = reap(w, stopping);
    if (stopping && alive == 0) break;
    for (int i = 0; !stopping && i < w->n; i++)
      if (restart_at[i] > 0 && rh_cli_now() >= restart_at[i]) start_worker(w, i, &set);
  }
  return 0;
}
