/* upconn: an outbound connection, plain or TLS, as every client in the core uses it (the proxy,
 * relay.http, relay.ws.connect, relay.redis, the tunnel): dial (resolve, try every address,
 * connect, start TLS), write application bytes, read application bytes. The connection owns its
 * writes, so an owner can go away at any time; it is freed by rh_upconn_close once libuv is done
 * with it. */
#ifndef RH_UPCONN_H
#define RH_UPCONN_H

#include <stddef.h>
#include <uv.h>

struct rh_tls_ctx;
typedef struct rh_upconn rh_upconn;

/* n > 0: application bytes; n < 0: the connection is over, err says why ("upstream closed the
 * connection", "TLS: certificate verify failed: …", a socket error). Paused or not: once a write
 * fails the connection is read to its end (what the kernel holds), so a paused owner still
 * learns at once that its peer is gone, after what the peer sent before it went. */
typedef void (*rh_upconn_read_cb)(void *owner, const char *p, ssize_t n, const char *err);
/* A write finished; queued is what is still waiting to go out. Always from the loop, never from
 * inside rh_upconn_write (owners set timers after writing). */
typedef void (*rh_upconn_write_cb)(void *owner, size_t queued);

/* It keeps reading all its life (switching reading on and off costs a syscall each way): bytes
 * go to its current owner, and while it has none (idle in the pool) anything that arrives
 * closes it. */
struct rh_upconn {
  uv_tcp_t tcp;              /* tcp.data is the rh_upconn itself */
  uv_timer_t idle_timer;     /* used by the pool */
  uint64_t idle_until;       /* the pool's: loop time this idle connection closes at */
  uv_idle_t written;         /* reports writes that went out at once, from the loop */
  char key[280];             /* the pool it belongs to */
  rh_upconn *next;           /* in one of the pool's idle lists */
  unsigned long long served; /* requests answered on it */
  struct rh_tls *tls;        /* https/wss: owned */
  void *owner;
  rh_upconn_read_cb on_read;
  rh_upconn_write_cb on_write;
  size_t queued;             /* bytes handed to libuv, not yet written */
  int in_pool, closing, reading;
  int write_failed;          /* the peer is gone: read to the end, paused or not */
};

/* The one dialer. It resolves host and tries every address it gets (IPv6 and IPv4, in the
 * resolver's order) until one connects. connect_timeout bounds all of it, resolving included,
 * and is shared out as Go's dialer does: each address gets what is left divided by the addresses
 * left, but at least 2 s (or what is left), so one silent address cannot eat the time of the
 * others. via_proxy: an outbound client, for which HTTPS_PROXY/HTTP_PROXY/NO_PROXY apply
 * (net/proxyenv.h); the connection then goes to the proxy, which is asked to CONNECT to
 * host:port, and TLS (if any) runs inside that tunnel, still verified against host. */
typedef struct {
  const char *key;        /* the pool the connection will belong to */
  const char *host;       /* a name or an IP literal (no brackets) */
  int port;
  struct rh_tls_ctx *tls; /* NULL: plain; else TLS with SNI, verified against host */
  double connect_timeout; /* seconds; <= 0: 10 */
  int via_proxy;
} rh_upconn_target;

typedef struct rh_upconn_dialing rh_upconn_dialing;
/* u is connected (and its TLS handshake started), or NULL with err ("resolve HOST: …",
 * "connect HOST:PORT: …" naming the last address's failure, "proxy HOST:PORT …"). */
typedef void (*rh_upconn_dial_cb)(void *ud, rh_upconn *u, const char *err);

/* cb runs once, later (never from inside this call), unless rh_upconn_dial_cancel came first. */
rh_upconn_dialing *rh_upconn_dial(uv_loop_t *loop, const rh_upconn_target *t, rh_upconn_dial_cb cb, void *ud);
void rh_upconn_dial_cancel(rh_upconn_dialing *d);

/* What on_read's err is when the peer closed the connection cleanly (compare the pointer). */
extern const char rh_upconn_closed[];

/* For the dialer: a connection not yet connected, and the start of its TLS (the ClientHello
 * goes now; application writes wait inside rh_tls until the handshake is done). */
rh_upconn *rh_upconn_new(uv_loop_t *loop, const char *key);
void rh_upconn_start_tls(rh_upconn *u, struct rh_tls_ctx *ctx, const char *host);

/* Bytes from now on go to owner's callbacks; starts reading if it was not. */
void rh_upconn_own(rh_upconn *u, void *owner, rh_upconn_read_cb on_read, rh_upconn_write_cb on_write);
/* Backpressure: until the next rh_upconn_resume (or a failed write, see rh_upconn_read_cb). */
void rh_upconn_pause(rh_upconn *u);
void rh_upconn_resume(rh_upconn *u);
/* Application bytes (encrypted on TLS). -1 if the connection is closing. */
int rh_upconn_write(rh_upconn *u, const char *p, size_t n);
void rh_upconn_close(rh_upconn *u);

#endif
