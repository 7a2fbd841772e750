/* own: connections of their own for blocking readers (BLPOP, XREAD BLOCK, …), shared by the
 * Cluster and Sentinel clients. A blocking reader ties up its connection until it is answered,
 * so it gets one of its own: an idle spare of the pool's, else a new one. Answered, the
 * connection goes back among the spares (at most RH_REDIS_MAX_SPARE; it redials by itself if
 * it was lost), or is closed. A pool serves one server; when that server changes (a new
 * primary), rh_redis_pool_forget closes the spares, and connections still in use are closed
 * when they are done instead of coming back. */
#ifndef RH_REDIS_OWN_H
#define RH_REDIS_OWN_H

#include "redis/redis.h"

#define RH_REDIS_MAX_SPARE 4
#define RH_REDIS_MAX_OWN 64 /* in use at once: one each for a flood of BLPOPs would use up the
                             * server's clients and our descriptors */

/* Embedded in a command: r is its connection while it has one. */
typedef struct rh_redis_own {
  rh_redis *r;
  unsigned gen;
  struct rh_redis_own *prev, *next; /* in the pool's in_use while r is set */
} rh_redis_own;

typedef struct {
  rh_redis *spare[RH_REDIS_MAX_SPARE];
  int n_spare;
  unsigned gen;         /* the server's: bumped by rh_redis_pool_forget */
  rh_redis_own *in_use;
  int n_in_use;
} rh_redis_pool;

typedef rh_redis *(*rh_redis_open_fn)(void *ud);

/* o's own connection (a spare, else open(ud)), which o->r holds until it is given back; NULL
 * when RH_REDIS_MAX_OWN are in use (rh_redis_pool_full). */
int rh_redis_pool_full(const rh_redis_pool *p);
rh_redis *rh_redis_pool_take(rh_redis_pool *p, rh_redis_own *o, rh_redis_open_fn open, void *ud);
/* o done: its connection back among the spares if keep and there is room and the server is the
 * same, else closed. Nothing when o has none. */
void rh_redis_pool_give(rh_redis_pool *p, rh_redis_own *o, int keep);
/* o's connection closed now, which fails its command (a BLPOP answered after nobody waits
 * would pop an element that is then lost). Nothing when o has none. */
void rh_redis_pool_close(rh_redis_pool *p, rh_redis_own *o);
/* The server has changed: the spares are closed, those in use not kept. */
void rh_redis_pool_forget(rh_redis_pool *p);
/* Every connection closed: those in use fail their commands. */
void rh_redis_pool_free(rh_redis_pool *p);

#endif
