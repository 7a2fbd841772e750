/* seeds: several addresses in one URL, "[scheme://[userinfo@]]host:port,host:port[/path][?query]":
 * the seed nodes of a Redis Cluster (ff-proxy's REDIS_ADDRESS is "host:port,host:port") and the
 * sentinels of a Sentinel setup (redis-sentinel://host:port,host:port/mastername). */
#ifndef RH_REDIS_SEEDS_H
#define RH_REDIS_SEEDS_H

/* Each address as a URL of its own, for core/net/url to read: the scheme ("redis://" when none is
 * written) and the userinfo before it, the path and query after. fn returns 0, or -1 (having said why through
 * ud), which ends the walk: then -1. */
typedef int (*rh_redis_seed_fn)(void *ud, const char *url);
int rh_redis_each_seed(const char *seeds, rh_redis_seed_fn fn, void *ud);

#endif
