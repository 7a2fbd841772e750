/* cluster: a Redis Cluster client on top of rh_redis. It reads the slot map (CLUSTER SLOTS)
 * from any node, routes each command to the primary of its key's slot (core/redis/slot.h) over
 * one pipelined connection per node, follows MOVED (the map is read again and the command goes
 * where it was sent) and ASK (ASKING, then the command, on the node named, once), and sends a
 * command without a key to any node. Each command's callback runs exactly once, as rh_redis's
 * do. A lost node or a redirection makes it read the map again (one read at a time), so it
 * follows resharding and failover. */
#ifndef RH_REDIS_CLUSTER_H
#define RH_REDIS_CLUSTER_H

#include <stddef.h>
#include <uv.h>

#include "redis/redis.h"

typedef struct rh_redis_cluster rh_redis_cluster;
typedef struct rh_redis_cluster_op rh_redis_cluster_op;

/* seeds: "host:port,host:port" (ff-proxy's REDIS_ADDRESS) or
 * "redis[s]://[user:password@]host:port,host:port" (the userinfo and TLS apply to every node).
 * NULL plus err when a seed is not an address (the message leaves the password out). */
rh_redis_cluster *rh_redis_cluster_new(uv_loop_t *loop, const char *seeds, char *err, size_t errlen);
void rh_redis_cluster_free(rh_redis_cluster *c);
/* NULL plus err: an unknown command, keys in different slots, or no node to send it to. */
rh_redis_cluster_op *rh_redis_cluster_command(rh_redis_cluster *c, int argc, const char **argv,
                                              const size_t *lens, rh_redis_cb cb, void *ud, char *err,
                                              size_t errlen);
void rh_redis_cluster_cancel(rh_redis_cluster_op *op);
/* Every node's reply timeout from now on (rh_redis_set_timeout). */
void rh_redis_cluster_set_timeout(rh_redis_cluster *c, int ms);
/* The longest any node has owed an answer (rh_redis_stalled_ms). */
uint64_t rh_redis_cluster_stalled_ms(const rh_redis_cluster *c);
/* The slot map has been read and a node is connected. */
int rh_redis_cluster_ready(const rh_redis_cluster *c);
/* Classic pub/sub reaches every node of a cluster: one connection of its own subscribes. */
int rh_redis_cluster_subscribe(rh_redis_cluster *c, const char *channel, rh_redis_message_cb cb, void *ud);

#endif
