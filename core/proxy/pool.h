/* pool: idle keep-alive connections to upstreams, keyed by "host:port". Process-wide, so they
 * survive reloads. An idle connection is watched: if the upstream closes it or sends anything,
 * it leaves the pool; after idle_timeout it is closed. */
#ifndef RH_POOL_H
#define RH_POOL_H

#include <stddef.h>
#include <uv.h>

typedef struct rh_upconn rh_upconn;

/* A connection to an upstream. tcp.data belongs to whoever uses the connection; the pool sets
 * it while the connection is idle. Freed by rh_upconn_close once its handles are closed. */
struct rh_upconn {
  uv_tcp_t tcp;
  uv_timer_t idle_timer;
  char key[280];
  rh_upconn *next;           /* in the pool's idle list */
  unsigned long long served; /* requests answered on it */
  struct rh_tls *tls;        /* for https upstreams: owned, freed with the connection */
  int in_pool, closing;
};

rh_upconn *rh_upconn_new(uv_loop_t *loop, const char *key);
void rh_upconn_close(rh_upconn *u);
/* An idle connection for key, or NULL. */
rh_upconn *rh_pool_take(const char *key);
/* Parks u for reuse (closes it instead when max_idle are already parked for its key). */
void rh_pool_put(rh_upconn *u, double idle_timeout, size_t max_idle);
size_t rh_pool_idle(void);
void rh_pool_close_all(void);

#endif
