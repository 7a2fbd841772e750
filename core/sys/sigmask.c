#include "sys/sigmask.h"

#include <pthread.h>

void rh_sigmask_block_all(sigset_t *old) {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, old);
}

void rh_sigmask_restore(const sigset_t *old) {
  pthread_sigmask(SIG_SETMASK, old, NULL);
}
