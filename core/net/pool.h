/* pool: idle keep-alive connections to upstreams, keyed by "host:port" (and how TLS is
 * verified). Process-wide, so they survive reloads. An idle connection is watched: if the
 * upstream closes it or sends anything, it leaves the pool; after idle_timeout it is closed. */
#ifndef RH_POOL_H
#define RH_POOL_H

#include <stddef.h>
#include "net/upconn.h"

/* An idle connection for key, or NULL. */
rh_upconn *rh_pool_take(const char *key);
/* Parks u for reuse (closes it instead when max_idle are already parked for its key). */
void rh_pool_put(rh_upconn *u, double idle_timeout, size_t max_idle);
size_t rh_pool_idle(void);
/* fn(key, idle, ud) for every upstream key the pool has seen (for the status page). */
void rh_pool_each(void (*fn)(const char *key, size_t idle, void *ud), void *ud);
void rh_pool_close_all(void);

#endif
