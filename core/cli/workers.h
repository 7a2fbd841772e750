/* workers: the parent of --workers N (see workers.c). */
#ifndef RH_WORKERS_H
#define RH_WORKERS_H

typedef struct {
  int n;
  /* in the forked child: serve; its exit status. chan: its end of the channel to the parent,
   * on which it is asked "R SEQ HASH\n" (reload the script if its SHA-256 is HASH) and answers
   * "SEQ ok\n" or "SEQ failed MESSAGE\n", or told "F\n" (a reload failed before reaching the
   * workers: count it); EOF on it means the parent is gone. */
  int (*run_worker)(int index, int chan, void *ud);
  int (*rehearse)(char **out, void *ud);       /* a reload's check, in a child (dryrun.h): the hash */
  const char *pid_file;                        /* where reload outcomes are written */
  void (*started)(void *ud);                   /* once, after the first workers are forked */
  const char *const *upgrade_env;              /* SIGUSR2: given to the successor's environment */
  double reload_timeout;                       /* seconds the check may take */
  double upgrade_timeout;                      /* seconds a successor gets to be ready */
  void *ud;
} rh_workers;

/* Runs until SIGTERM/SIGINT has stopped every worker. Returns the exit status. */
int rh_workers_supervise(const rh_workers *w);

#endif
