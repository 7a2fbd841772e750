/* sigmask: the one way to start a thread (or fork) that must never take the process's signals.
 *
 * A thread inherits its creator's mask. Blocking every signal around pthread_create, fork or a
 * call that may start libuv's thread pool means signals reach the loop's thread only: a SIGTERM
 * taken elsewhere in the moment shutdown restores its default action would kill the exit. */
#ifndef RH_SYS_SIGMASK_H
#define RH_SYS_SIGMASK_H

#include <signal.h>

/* Blocks every signal in the calling thread; *old receives the mask to restore. */
void rh_sigmask_block_all(sigset_t *old);
/* Puts back the mask rh_sigmask_block_all saved. */
void rh_sigmask_restore(const sigset_t *old);

#endif
