/* sentinel: a Redis client that finds its primary through Redis Sentinel, on top of rh_redis.
 * It asks the sentinels in turn (SENTINEL get-master-addr-by-name), dials the primary the first
 * answer names and checks with ROLE that it is a master (else asks again after a short wait),
 * listens on every sentinel for +switch-master and dials the new primary at once, and asks again
 * whenever the primary's connection is lost. The login in the URL is the primary's; sentinels
 * are asked without one.
 *
 * Commands go to the primary only once ROLE has confirmed it. Those asked before the first round
 * of asking has ended wait for it (as a single node's wait for its first dial); after that, while
 * there is no primary (a failover), they fail at once with why ("redis-sentinel: no primary for
 * 'x' (…)"), as a single node's commands do while it is down. Blocking commands (BLPOP, XREAD BLOCK, …)
 * get a connection of their own, subscriptions one shared connection that moves to each new
 * primary and subscribes again. Each callback runs exactly once, as rh_redis's do. */
#ifndef RH_REDIS_SENTINEL_H
#define RH_REDIS_SENTINEL_H

#include <stddef.h>
#include <uv.h>

#include "redis/redis.h"

typedef struct rh_redis_sentinel rh_redis_sentinel;
typedef struct rh_redis_sentinel_op rh_redis_sentinel_op;

/* redis-sentinel://[[user]:password@]host[:port],host[:port]/mastername[?socket_timeout=S] (port
 * 26379 when not written; the reply timeout applies to the sentinels and the primary). NULL plus
 * err for a bad URL (the message leaves the password out). */
rh_redis_sentinel *rh_redis_sentinel_new(uv_loop_t *loop, const char *url, char *err, size_t errlen);
void rh_redis_sentinel_free(rh_redis_sentinel *s);
/* NULL plus err when there is no confirmed primary to send it to. */
rh_redis_sentinel_op *rh_redis_sentinel_command(rh_redis_sentinel *s, int argc, const char **argv,
                                                const size_t *lens, rh_redis_cb cb, void *ud, char *err,
                                                size_t errlen);
/* The callback will not be called (a blocking command's own connection is closed). */
void rh_redis_sentinel_cancel(rh_redis_sentinel_op *op);
/* Every connection's reply timeout from now on (rh_redis_set_timeout). */
void rh_redis_sentinel_set_timeout(rh_redis_sentinel *s, int ms);
/* How long the primary has owed an answer (rh_redis_stalled_ms); 0 without one. */
uint64_t rh_redis_sentinel_stalled_ms(const rh_redis_sentinel *s);
/* A primary is confirmed and connected. */
int rh_redis_sentinel_ready(const rh_redis_sentinel *s);
int rh_redis_sentinel_subscribe(rh_redis_sentinel *s, const char *channel, rh_redis_message_cb cb, void *ud);

#endif
