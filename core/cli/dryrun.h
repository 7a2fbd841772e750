/* dryrun: a reload's script is loaded first in a forked child with a deadline. A Lua state cannot
 * be built on another thread, and LuaJIT runs no hook inside a compiled loop, so a script that
 * never returns can only be stopped by ending the process it runs in: the child, not the host.
 * The host loads it itself only after the child succeeded. The child closes every descriptor it
 * inherited (listeners, connections, the loop's) but its verdict pipe, runs no loop, and ends
 * with _exit; it dies with its parent. */
#ifndef RH_DRYRUN_H
#define RH_DRYRUN_H

#include <stddef.h>
#include <sys/types.h>

/* In the child: 0 and a malloc'd result (or NULL) in *out, or -1 and a malloc'd message. */
typedef int (*rh_dryrun_fn)(char **out, void *ud);

typedef struct {
  pid_t pid;        /* 0: none running */
  int fd;           /* the child's verdict */
  double deadline;  /* monotonic seconds */
  double timeout;
  size_t len;
  char buf[2048];
} rh_dryrun;

/* Starts fn in a child that is killed after timeout seconds. 0, or -1 with a malloc'd message. */
int rh_dryrun_start(rh_dryrun *d, rh_dryrun_fn fn, void *ud, double timeout, char **err);
/* Never blocks for long: -1 still running; 0 it succeeded (*out: its result, malloc'd, or
 * NULL); 1 it failed, crashed or ran out of time (*out: why, malloc'd). Then d is idle again. */
int rh_dryrun_poll(rh_dryrun *d, char **out);
/* Kills a running child (shutdown). */
void rh_dryrun_cancel(rh_dryrun *d);
int rh_dryrun_running(const rh_dryrun *d);

#endif
