/* upgrade: replacing the running binary without closing the listening sockets (nginx's
 * SIGUSR2). The old process forks and execs the binary it was started from with the same
 * arguments, handing its listening sockets over by fd number (RELAYHOST_LISTEN_FDS); the new
 * process adopts them (net/net.h), and once it serves it says so on a pipe
 * (RELAYHOST_UPGRADE_FD). Only then does the old process stop accepting and drain. A new binary
 * that fails to start changes nothing: the old one keeps serving and reports why. */
#ifndef RH_UPGRADE_H
#define RH_UPGRADE_H

#include <sys/types.h>

/* At start-up, before anything can replace the binary on disk: remembers the executable's
 * path and the command line to run again. */
void rh_upgrade_init(int argc, char **argv);

/* An upgrade in flight: the new process, the read end of its readiness pipe, its deadline. */
typedef struct {
  int pid;
  int ready_fd;       /* -1: none in flight */
  double deadline;    /* monotonic seconds */
  double timeout;
} rh_upgrade;
#define RH_UPGRADE_NONE { .pid = 0, .ready_fd = -1 }

/* Starts the successor with fds[0..nfds) handed over (nfds may be 0) and extra "NAME=value"
 * environment entries (NULL-terminated, may be NULL); it gets timeout seconds to be ready.
 * 0, or -1 with a message in err. */
int rh_upgrade_spawn(rh_upgrade *u, const int *fds, int nfds, const char *const *env, double timeout, char *err,
                     size_t errlen);

/* Polls the readiness pipe without blocking: 1 the successor serves, 0 not yet, -1 it exited or
 * closed the pipe without being ready, or its deadline passed and it was killed (reaped here;
 * why in err). Not 0: u is idle again. */
int rh_upgrade_poll(rh_upgrade *u, char *err, size_t errlen);
int rh_upgrade_running(const rh_upgrade *u);
/* A SIGUSR2 during an upgrade: logged and ignored. */
void rh_upgrade_busy(const rh_upgrade *u);
/* Logs the upgrade and records it (ok) in the status file, for `relayhost upgrade`. */
void rh_upgrade_succeeded(const char *pid_file, const rh_upgrade *u);
/* In a successor: the pid of the process it replaces (0 when not an upgrade). */
int rh_upgrade_predecessor(void);

/* Logs a failed upgrade and records it in the pid file's status file, where
 * `relayhost upgrade` reads it; the pid file names this process again. */
void rh_upgrade_failed(const char *pid_file, const char *why);

/* In the successor, once it serves: tells the old process. No-op when not an upgrade. */
void rh_upgrade_ready(void);
/* In a process forked from the successor (a worker): lets go of the pipe, so that only the
 * successor itself can say it is ready or, by exiting, that it failed. */
void rh_upgrade_child(void);

/* `relayhost upgrade --pid-file F [--timeout S]`: 0 when a new pid serves (the old one says so), 1 when the upgrade
 * failed (message printed), 2 on usage or no running host. */
int rh_upgrade_command(int argc, char **argv);

#endif
