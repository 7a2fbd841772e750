#include "cli/upgrade.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/clock.h"
#include "cli/reload.h"
#include "log/log.h"

static char exe[PATH_MAX];
static char **args;
static int ready_out = -1; /* in a successor: the pipe the old process waits on */
static int predecessor;    /* in a successor: the process it replaces */

void rh_upgrade_init(int argc, char **argv) {
  (void)argc;
  args = argv;
  const char *fd = getenv("RELAYHOST_UPGRADE_FD");
  if (fd && (ready_out = atoi(fd)) > 2) {
    fcntl(ready_out, F_SETFD, FD_CLOEXEC);
    predecessor = (int)getppid();
  } else {
    ready_out = -1;
  }
  unsetenv("RELAYHOST_UPGRADE_FD");
  /* The path, not the inode: a package upgrade renames a new file into place, and that new
   * file is what we want to run. */
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) exe[n] = 0;
  else snprintf(exe, sizeof exe, "%s", argv[0]);
}

static void exec_successor(const int *fds, int nfds, const char *const *env, int ready_w) {
  char list[256] = "", num[16];
  for (int i = 0; i < nfds; i++) {
    fcntl(fds[i], F_SETFD, 0); /* keep it across exec */
    snprintf(num, sizeof num, i ? ",%d" : "%d", fds[i]);
    strncat(list, num, sizeof list - strlen(list) - 1);
  }
  fcntl(ready_w, F_SETFD, 0);
  snprintf(num, sizeof num, "%d", ready_w);
  if (nfds) setenv("RELAYHOST_LISTEN_FDS", list, 1);
  setenv("RELAYHOST_UPGRADE_FD", num, 1);
  for (; env && *env; env++) putenv((char *)*env);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  execv(exe, args);
  fprintf(stderr, "relayhost: upgrade: exec %s: %s\n", exe, strerror(errno));
  _exit(127);
}

int rh_upgrade_spawn(rh_upgrade *u, const int *fds, int nfds, const char *const *env, double timeout, char *err,
                     size_t errlen) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) {
    snprintf(err, errlen, "pipe: %s", strerror(errno));
    return -1;
  }
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    exec_successor(fds, nfds, env, p[1]);
  }
  close(p[1]);
  if (pid < 0) {
    snprintf(err, errlen, "fork: %s", strerror(errno));
    close(p[0]);
    return -1;
  }
  fcntl(p[0], F_SETFL, O_NONBLOCK);
  *u = (rh_upgrade){ .pid = pid, .ready_fd = p[0], .timeout = timeout, .deadline = rh_cli_now() + timeout };
  return 0;
}

static void done(rh_upgrade *u) {
  close(u->ready_fd);
  u->ready_fd = -1;
}

/* Past the deadline: the new process is killed (its workers follow it, PR_SET_PDEATHSIG). */
static int expired(rh_upgrade *u, char *err, size_t errlen) {
  kill(u->pid, SIGKILL);
  waitpid(u->pid, NULL, 0);
  done(u);
  snprintf(err, errlen, "the new binary was not ready within %g s (--upgrade-timeout); it was killed", u->timeout);
  return -1;
}

int rh_upgrade_poll(rh_upgrade *u, char *err, size_t errlen) {
  char buf[16];
  ssize_t n = read(u->ready_fd, buf, sizeof buf);
  if (n > 0) {
    done(u);
    return 1;
  }
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return rh_cli_now() < u->deadline ? 0 : expired(u, err, errlen);
  /* EOF: it exited (or exec'd something that closed the pipe) before serving */
  int st = 0;
  for (int i = 0; i < 100 && waitpid(u->pid, &st, WNOHANG) == 0; i++) {
    struct timespec ms = { 0, 10 * 1000 * 1000 };
    nanosleep(&ms, NULL);
  }
  done(u);
  if (WIFEXITED(st))
    snprintf(err, errlen, "the new binary exited with status %d before serving (see its log)", WEXITSTATUS(st));
  else
    snprintf(err, errlen, "the new binary was killed by signal %d before serving", WTERMSIG(st));
  return -1;
}

int rh_upgrade_running(const rh_upgrade *u) { return u->ready_fd >= 0; }

void rh_upgrade_busy(const rh_upgrade *u) {
  RH_LOG(RH_LOG_WARN, "upgrade_in_progress", RH_INT("successor", u->pid),
         RH_STR("why", "one upgrade at a time: this SIGUSR2 is ignored"));
}

void rh_upgrade_succeeded(const char *pid_file, const rh_upgrade *u) {
  RH_LOG(RH_LOG_INFO, "upgraded", RH_INT("successor", u->pid));
  rh_reload_status_write(pid_file, NULL);
}

void rh_upgrade_failed(const char *pid_file, const char *why) {
  char msg[600];
  /* the new process may have written the pid file before it failed: it is ours again */
  if (pid_file && pid_file[0] && rh_pid_file_read(pid_file) != (int)getpid()) rh_pid_file_write(pid_file);
  snprintf(msg, sizeof msg, "upgrade failed: %s", why);
  RH_LOG(RH_LOG_ERROR, "upgrade_failed", RH_STR("error", why));
  rh_reload_status_write(pid_file, msg);
}

void rh_upgrade_ready(void) {
  if (ready_out < 0) return;
  if (write(ready_out, "ready\n", 6) < 0) { /* the old process is gone: nothing to tell */ }
  rh_upgrade_child();
}

void rh_upgrade_child(void) {
  if (ready_out >= 0) close(ready_out);
  ready_out = -1;
}

int rh_upgrade_predecessor(void) { return predecessor; }

/* An upgrade's outcome: the old process records it once the new one serves, or why it failed. */
static int upgraded(const char *pid_file, int old, const char *id, long before) {
  (void)id;
  char msg[2048];
  if (rh_reload_status_read(pid_file, msg, sizeof msg) <= before) return -1;
  if (strncmp(msg, "failed ", 7) == 0) {
    fprintf(stderr, "%s\n", msg + 7);
    return 1;
  }
  printf("relayhost upgrade: pid %d serves; pid %d drains and exits\n", rh_pid_file_read(pid_file), old);
  return 0;
}

int rh_upgrade_command(int argc, char **argv) { return rh_signal_host("upgrade", argc, argv, SIGUSR2, upgraded); }
