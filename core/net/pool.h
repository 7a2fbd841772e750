/* pool: the connections to each upstream, keyed by "host:port" (and how TLS is verified).
 * Process-wide, so they survive reloads.
 *
 * Idle keep-alive connections: an idle connection is watched; if the upstream closes it or
 * sends anything, it leaves the pool; after idle_timeout it is closed.
 *
 * Slots: the connections in use per key (HAProxy's maxconn, httpx's max_connections). A user
 * holds a slot from rh_pool_acquire's grant to rh_pool_release; one that finds its cap reached
 * waits in the key's FIFO queue, bounded by max_queue, until a release hands it the slot. */
#ifndef RH_POOL_H
#define RH_POOL_H

#include <stddef.h>
#include "net/upconn.h"

/* An idle connection for key, or NULL: the most recently parked, except that one parked in an
 * earlier loop turn goes before one parked in this turn (pool.c says why). */
rh_upconn *rh_pool_take(const char *key);
/* Parks u for reuse (closes it instead when max_idle are already parked for its key). */
void rh_pool_put(rh_upconn *u, double idle_timeout, size_t max_idle);
size_t rh_pool_idle(void);
/* fn(key, idle, ud) for every upstream key the pool has seen (for the status page). */
void rh_pool_each(void (*fn)(const char *key, size_t idle, void *ud), void *ud);
/* Closes the idle connections and forgets every key; waiters still queued are dropped from
 * their queues (their owners' later release or leave does nothing). */
void rh_pool_close_all(void);

typedef struct rh_pool_waiter rh_pool_waiter;
struct rh_pool_waiter {
  size_t max;                              /* the cap it waits under (its own mount's) */
  void (*granted)(rh_pool_waiter *w);      /* the slot is its own now: called inside a release */
  rh_pool_waiter *next, *prev;             /* the pool's, while queued */
  void *queue;                             /* the pool's, while queued; NULL otherwise */
};

typedef enum { RH_POOL_GRANTED, RH_POOL_QUEUED, RH_POOL_FULL } rh_pool_slot;

/* A slot at key under cap max (0: none, always granted at once). Queued: w->granted follows
 * unless rh_pool_leave comes first. Full: max_queue are waiting already, nothing changed. */
rh_pool_slot rh_pool_acquire(const char *key, size_t max, size_t max_queue, rh_pool_waiter *w);
/* Leaves the queue (a waiter whose time ran out, or whose client went away). */
void rh_pool_leave(rh_pool_waiter *w);
/* Gives a granted slot back; the first waiter the freed slot fits is granted it. */
void rh_pool_release(const char *key);

#endif
