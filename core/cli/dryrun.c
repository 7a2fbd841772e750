#include "cli/dryrun.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/clock.h"
#include "log/log.h"
#include "sys/sigmask.h"

/* Closes every socket from fd 3 up: a listener or connection kept open here would hold a
 * client's FIN back. Other descriptors stay: the loop's own (epoll, eventfd, signal pipe), which
 * the rehearsal replaces with uv_loop_fork, are not the host's once replaced, and closing them
 * under libuv would make it abort when the script's load wakes the loop (a resolve, a Redis
 * connect). */
static void close_if_socket(int fd) {
  struct stat st;
  if (fd >= 3 && fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) close(fd);
}

/* Only the descriptors that are open, from /proc/self/fd: trying every number up to the limit
 * cost 20,000 fstat calls (34 ms here) per reload under bench/flag-proxy.sh's ulimit -n. Closing
 * while listing is safe: the listing goes by descriptor number. */
static void close_sockets(void) {
  DIR *dir = opendir("/proc/self/fd");
  if (dir) {
    struct dirent *e;
    while ((e = readdir(dir)))
      if (e->d_name[0] != '.' && atoi(e->d_name) != dirfd(dir)) close_if_socket(atoi(e->d_name));
    closedir(dir);
    return;
  }
  long max = sysconf(_SC_OPEN_MAX); /* no /proc: every number */
  for (int fd = 3; fd < (max > 0 && max < 65536 ? max : 65536); fd++) close_if_socket(fd);
}

/* The child lets go of everything the host holds: its sockets, and its signal handlers, which
 * would wake the host's loop. The result pipe stays where pipe2 put it: moved onto a fixed
 * number (fd 3 once) it replaced whatever held that number, the loop's epoll when the host was
 * started with only 0-2 open, and uv_loop_fork then closed it as the old epoll. */
static void detach(void) {
  close_sockets();
  static const int sigs[] = { SIGHUP, SIGTERM, SIGINT, SIGUSR2, SIGCHLD, SIGPIPE };
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) signal(sigs[i], SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  rh_log_set_level(RH_LOG_ERROR); /* the host logs the load it keeps; this one is a rehearsal */
}

static void child(int out, pid_t parent, rh_dryrun_fn fn, void *ud) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(111); /* the host is already gone */
  detach();
  char *msg = NULL;
  int rc = fn(&msg, ud);
  size_t len = msg ? strlen(msg) : 0;
  if (len > 2000) len = 2000; /* the parent keeps 2 KB of it; a full pipe would block us */
  if (len && write(out, msg, len) < 0) rc = -1;
  _exit(rc == 0 ? 0 : 1);
}

int rh_dryrun_start(rh_dryrun *d, rh_dryrun_fn fn, void *ud, double timeout, char **err) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) {
    *err = strdup(strerror(errno));
    return -1;
  }
  pid_t parent = getpid();
  fflush(NULL);
  /* no host signal handler may run in the child before detach() resets them: it would write to
   * the host loop's own signal pipe, which the child shares */
  sigset_t old;
  rh_sigmask_block_all(&old);
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    child(p[1], parent, fn, ud);
  }
  rh_sigmask_restore(&old);
  close(p[1]);
  if (pid < 0) {
    *err = strdup(strerror(errno));
    close(p[0]);
    return -1;
  }
  fcntl(p[0], F_SETFL, O_NONBLOCK);
  *d = (rh_dryrun){ .pid = pid, .fd = p[0], .deadline = rh_cli_now() + timeout, .timeout = timeout };
  return 0;
}

static void drain(rh_dryrun *d) {
  ssize_t n;
  while (d->len < sizeof d->buf - 1 && (n = read(d->fd, d->buf + d->len, sizeof d->buf - 1 - d->len)) > 0)
    d->len += (size_t)n;
  d->buf[d->len] = 0;
}

static int verdict(rh_dryrun *d, int st, int timed_out, char **out) {
  drain(d);
  close(d->fd);
  d->pid = 0;
  d->fd = -1;
  char msg[2200];
  int rc = 1;
  if (timed_out)
    snprintf(msg, sizeof msg, "the script did not finish loading within %g s (--reload-timeout); nothing was replaced",
             d->timeout);
  else if (WIFSIGNALED(st))
    snprintf(msg, sizeof msg, "loading the script killed its process with signal %d; nothing was replaced", WTERMSIG(st));
  else if (WEXITSTATUS(st) == 0) {
    rc = 0;
    snprintf(msg, sizeof msg, "%s", d->buf);
  } else
    snprintf(msg, sizeof msg, "%s", d->len ? d->buf : "the script failed to load (no message)");
  *out = msg[0] ? strdup(msg) : NULL;
  return rc;
}

int rh_dryrun_poll(rh_dryrun *d, char **out) {
  int st = 0;
  if (!d->pid) return -1;
  drain(d);
  pid_t got = waitpid(d->pid, &st, WNOHANG);
  if (got == d->pid) return verdict(d, st, 0, out);
  if (rh_cli_now() < d->deadline) return -1;
  kill(d->pid, SIGKILL);
  waitpid(d->pid, &st, 0);
  return verdict(d, st, 1, out);
}

void rh_dryrun_cancel(rh_dryrun *d) {
  if (!d->pid) return;
  kill(d->pid, SIGKILL);
  waitpid(d->pid, NULL, 0);
  close(d->fd);
  d->pid = 0;
  d->fd = -1;
}

int rh_dryrun_running(const rh_dryrun *d) { return d->pid != 0; }
