/* workers: the parent of --workers N (see workers.c). */
#ifndef RH_WORKERS_H
#define RH_WORKERS_H

typedef struct {
  int n;
  int (*run_worker)(int index, void *ud);      /* in the forked child: serve; its exit status */
  int (*validate)(char **err, void *ud);       /* a reload: load the script once; 0 or -1 + err */
  const char *pid_file;                        /* where reload outcomes are written */
  void (*started)(void *ud);                   /* once, after the first workers are forked */
  const char *const *upgrade_env;              /* SIGUSR2: given to the successor's environment */
  void *ud;
} rh_workers;

/* Runs until SIGTERM/SIGINT has stopped every worker. Returns the exit status. */
int rh_workers_supervise(const rh_workers *w);

#endif
