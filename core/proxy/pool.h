/* pool: idle keep-alive connections to upstreams, keyed by "host:port". Process-wide, so they
 * survive reloads. An idle connection is watched: if the upstream closes it or sends anything,
 * it leaves the pool; after idle_timeout it is closed. */
#ifndef RH_POOL_H
#define RH_POOL_H

#include <stddef.h>
#include <uv.h>

typedef struct rh_upconn rh_upconn;
typedef void (*rh_upconn_read_cb)(void *owner, ssize_t n, const uv_buf_t *buf);

/* A connection to an upstream. It keeps reading all its life (switching reading on and off
 * costs a syscall each way): bytes go to its current owner, and while it is idle in the pool
 * anything that arrives closes it. Freed by rh_upconn_close once its handles are closed. */
struct rh_upconn {
  uv_tcp_t tcp;              /* tcp.data is the rh_upconn itself */
  uv_timer_t idle_timer;
  char key[280];
  rh_upconn *next;           /* in the pool's idle list */
  unsigned long long served; /* requests answered on it */
  struct rh_tls *tls;        /* for https upstreams: owned, freed with the connection */
  void *owner;
  rh_upconn_read_cb on_read;
  int in_pool, closing, reading;
};

rh_upconn *rh_upconn_new(uv_loop_t *loop, const char *key);
/* Bytes from now on go to cb(owner); starts reading if it was not. */
void rh_upconn_read(rh_upconn *u, void *owner, rh_upconn_read_cb cb);
/* Backpressure: stop reading until the next rh_upconn_read. */
void rh_upconn_pause(rh_upconn *u);
void rh_upconn_close(rh_upconn *u);
/* An idle connection for key, or NULL. */
rh_upconn *rh_pool_take(const char *key);
/* Parks u for reuse (closes it instead when max_idle are already parked for its key). */
void rh_pool_put(rh_upconn *u, double idle_timeout, size_t max_idle);
size_t rh_pool_idle(void);
void rh_pool_close_all(void);

#endif
