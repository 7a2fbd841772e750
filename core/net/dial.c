/* dial: the one way out of the process (see rh_upconn_dial in upconn.h). Resolve, try each
 * address in turn under its share of the time, then (through a proxy) CONNECT, then TLS. */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf/buf.h"
#include "net/proxyenv.h"
#include "net/upconn.h"
#include "sys/sigmask.h"

#define DEFAULT_CONNECT_TIMEOUT 10.0
#define MIN_SHARE_MS 2000 /* Go's dialer: an address gets at least this (or what is left) */
/* The proxy's answer to CONNECT is read here, not by core/http: net sits below http (see
 * tools/layers.table), and all it takes is a status line and a bounded wait for the blank line
 * (the same 64 KiB as RH_COLLECT_MAX_RESPONSE_HEAD). */
#define MAX_PROXY_HEAD (64 * 1024)

/* One dial. Freed when nothing libuv holds points at it any more (refs: the resolve request,
 * the connect request, the timer handle), even when cancelled. */
struct rh_upconn_dialing {
  uv_getaddrinfo_t resolve;
  uv_connect_t connect;
  uv_timer_t timer;        /* the current step's share of the time */
  uv_loop_t *loop;
  rh_upconn *u;            /* the attempt in progress */
  struct addrinfo *addrs, *next;
  uint64_t deadline;       /* uv_now() at which the whole dial has failed */
  int refs, done, timed_out;
  char key[280], host[256];
  int port;
  rh_proxyenv proxy;       /* where we connect when proxied */
  int proxied;
  struct rh_tls_ctx *tls;
  rh_buf answer;           /* the proxy's answer to CONNECT, up to its blank line */
  char err[800];           /* why the last step failed */
  rh_upconn_dial_cb cb;
  void *ud;
};

/* What we connect to: the peer, or the proxy. */
static const char *via_host(const rh_upconn_dialing *d) { return d->proxied ? d->proxy.host : d->host; }
static int via_port(const rh_upconn_dialing *d) { return d->proxied ? d->proxy.port : d->port; }

static void unref(rh_upconn_dialing *d) {
  if (--d->refs) return;
  uv_freeaddrinfo(d->addrs);
  rh_buf_free(&d->answer);
  free(d);
}

static void timer_closed(uv_handle_t *h) { unref(h->data); }

/* Ends the dial: the callback once (unless cancelled), then whatever is still open. */
static void finish(rh_upconn_dialing *d, rh_upconn *u, const char *err) {
  if (d->done) return;
  d->done = 1;
  if (!u && d->u) rh_upconn_close(d->u); /* a connect in flight comes back cancelled */
  d->u = NULL;
  if (d->cb) d->cb(d->ud, u, err);
  else if (u) rh_upconn_close(u);
  uv_close((uv_handle_t *)&d->timer, timer_closed);
}

/* uv_strerror of a code it does not know (0) returns a string it allocates and nobody frees. */
static const char *error_name(int status) { return status < 0 ? uv_strerror(status) : "cancelled"; }

static void fail_step(rh_upconn_dialing *d, const char *what, int status) {
  snprintf(d->err, sizeof d->err, "%s%s %s:%d: %s", d->proxied ? "proxy " : "", what, via_host(d), via_port(d),
           d->timed_out ? "timed out" : error_name(status));
}

static void fail_now(rh_upconn_dialing *d) { finish(d, NULL, d->err); }

static void on_deadline(uv_timer_t *t);

/* The connection is ours: TLS starts, the owner gets it. */
static void connected(rh_upconn_dialing *d) {
  rh_upconn *u = d->u;
  d->u = NULL;
  uv_timer_stop(&d->timer);
  if (d->proxied) { /* it read the proxy's answer: no owner until the caller takes it */
    rh_upconn_pause(u);
    u->owner = NULL;
    u->on_read = NULL;
  }
  if (d->tls) rh_upconn_start_tls(u, d->tls, d->host);
  finish(d, u, NULL);
}

/* ---- through a proxy ---- */

static void proxy_refused(rh_upconn_dialing *d, const char *line, size_t n) {
  char clean[128];
  size_t k = 0;
  for (size_t i = 0; i < n && k + 1 < sizeof clean; i++)
    clean[k++] = line[i] >= 0x20 && line[i] < 0x7f ? line[i] : '?';
  clean[k] = 0;
  snprintf(d->err, sizeof d->err, "proxy %s:%d (%s) refused CONNECT %s:%d: %s", d->proxy.host, d->proxy.port,
           d->proxy.var, d->host, d->port, clean);
}

/* "HTTP/1.x 2xx …": the tunnel is open (RFC 9110 9.3.6: any 2xx). */
static int tunnel_open(const char *line, size_t n) {
  return n >= 12 && memcmp(line, "HTTP/1.", 7) == 0 && line[8] == ' ' && line[9] == '2' &&
         line[10] >= '0' && line[10] <= '9' && line[11] >= '0' && line[11] <= '9';
}

static void answer_done(rh_upconn_dialing *d, const char *end) {
  const char *a = d->answer.data;
  size_t line = strcspn(a, "\r\n");
  if (!tunnel_open(a, line)) proxy_refused(d, a, line);
  else if (end + 4 != a + d->answer.len) snprintf(d->err, sizeof d->err, "proxy %s:%d sent bytes after its answer to CONNECT", d->proxy.host, d->proxy.port);
  else {
    connected(d);
    return;
  }
  fail_now(d);
}

static void proxy_read(void *owner, const char *p, ssize_t n, const char *err) {
  rh_upconn_dialing *d = owner;
  if (n < 0) {
    snprintf(d->err, sizeof d->err, "proxy %s:%d before answering CONNECT: %s", d->proxy.host, d->proxy.port, err);
    fail_now(d);
    return;
  }
  size_t from = d->answer.len > 3 ? d->answer.len - 3 : 0; /* a trickled answer is scanned once */
  rh_buf_append(&d->answer, p, (size_t)n);
  const char *end = memmem(d->answer.data + from, d->answer.len - from, "\r\n\r\n", 4);
  if (end) answer_done(d, end);
  else if (d->answer.len > MAX_PROXY_HEAD) {
    snprintf(d->err, sizeof d->err, "proxy %s:%d: answer to CONNECT over 64 KiB", d->proxy.host, d->proxy.port);
    fail_now(d);
  }
}

/* Asks the proxy for a tunnel to host:port; the rest of the time is the proxy's to answer in. */
static void send_connect(rh_upconn_dialing *d) {
  char req[1500];
  const char *fmt = strchr(d->host, ':') ? "[%s]:%d" : "%s:%d";
  char authority[300];
  snprintf(authority, sizeof authority, fmt, d->host, d->port);
  int n = snprintf(req, sizeof req, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s%s%s\r\n", authority, authority,
                   d->proxy.basic[0] ? "Proxy-Authorization: Basic " : "", d->proxy.basic, d->proxy.basic[0] ? "\r\n" : "");
  uint64_t now = uv_now(d->loop);
  uv_timer_start(&d->timer, on_deadline, d->deadline > now ? d->deadline - now : 0, 0);
  rh_upconn_own(d->u, d, proxy_read, NULL);
  rh_upconn_write(d->u, req, (size_t)n);
}

/* ---- addresses ---- */

static void try_next(rh_upconn_dialing *d);

static void on_connect(uv_connect_t *cr, int status) {
  rh_upconn_dialing *d = cr->data;
  if (d->done) {
    unref(d);
    return;
  }
  d->refs--; /* the timer is still open: d lives on */
  if (status < 0 || !d->u) {
    fail_step(d, "connect", status);
    d->timed_out = 0;
    if (d->u) rh_upconn_close(d->u);
    d->u = NULL;
    try_next(d);
    return;
  }
  uv_tcp_nodelay(&d->u->tcp, 1);
  if (d->proxied) send_connect(d);
  else connected(d);
}

/* This address's time is up: its connect comes back cancelled and the next one is tried. */
static void on_share_over(uv_timer_t *t) {
  rh_upconn_dialing *d = t->data;
  d->timed_out = 1;
  rh_upconn_close(d->u);
  d->u = NULL;
}

/* The time for the whole dial is up (resolving, or the proxy's answer). */
static void on_deadline(uv_timer_t *t) {
  rh_upconn_dialing *d = t->data;
  d->timed_out = 1;
  if (!d->addrs) snprintf(d->err, sizeof d->err, "%sresolve %s: timed out", d->proxied ? "proxy " : "", via_host(d));
  else snprintf(d->err, sizeof d->err, "proxy %s:%d (%s) did not answer CONNECT in time", d->proxy.host, d->proxy.port, d->proxy.var);
  fail_now(d);
}

static uint64_t share_ms(rh_upconn_dialing *d, const struct addrinfo *ai) {
  uint64_t now = uv_now(d->loop), left = d->deadline > now ? d->deadline - now : 0, n = 0;
  for (; ai; ai = ai->ai_next) n += ai->ai_family == AF_INET || ai->ai_family == AF_INET6;
  uint64_t share = left / (n ? n : 1);
  return share >= MIN_SHARE_MS ? share : (left < MIN_SHARE_MS ? left : MIN_SHARE_MS);
}

static void try_next(rh_upconn_dialing *d) {
  struct addrinfo *ai = d->next;
  while (ai && ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ai = ai->ai_next;
  if (!ai) {
    if (!d->err[0]) snprintf(d->err, sizeof d->err, "resolve %s: no usable address", via_host(d));
    fail_now(d);
    return;
  }
  d->next = ai->ai_next;
  uint64_t share = share_ms(d, ai);
  if (!share) {
    d->timed_out = 1;
    fail_step(d, "connect", 0);
    fail_now(d);
    return;
  }
  uv_timer_start(&d->timer, on_share_over, share, 0);
  d->u = rh_upconn_new(d->loop, d->key);
  d->connect.data = d;
  d->refs++;
  int rc = uv_tcp_connect(&d->connect, &d->u->tcp, ai->ai_addr, on_connect);
  if (rc < 0) on_connect(&d->connect, rc);
}

static void on_resolved(uv_getaddrinfo_t *rq, int status, struct addrinfo *res) {
  rh_upconn_dialing *d = rq->data;
  if (d->done) {
    uv_freeaddrinfo(res);
    unref(d);
    return;
  }
  d->refs--;
  if (status < 0) {
    uv_freeaddrinfo(res);
    snprintf(d->err, sizeof d->err, "%sresolve %s: %s", d->proxied ? "proxy " : "", via_host(d), error_name(status));
    fail_now(d);
    return;
  }
  d->addrs = d->next = res;
  try_next(d);
}

/* ---- start and cancel ---- */

/* A request may start libuv's thread pool (the first one, and the first in a forked worker: libuv
 * starts the pool again after a fork), whose threads inherit this thread's signal mask: all blocked
 * there, so a SIGTERM is taken by the loop's thread only, never by a pool thread in the moment
 * shutdown has restored its default action. Two syscalls a dial, not a request (pooled). */
static int resolve(rh_upconn_dialing *d, const char *port, const struct addrinfo *hints) {
  sigset_t old;
  rh_sigmask_block_all(&old);
  int rc = uv_getaddrinfo(d->loop, &d->resolve, on_resolved, via_host(d), port, hints);
  rh_sigmask_restore(&old);
  return rc;
}

/* NULL, or why it cannot even start (then the callback says so, from the loop). */
static const char *start(rh_upconn_dialing *d, const rh_upconn_target *t) {
  if (t->via_proxy) {
    d->proxied = rh_proxyenv_pick(t->host, t->port, t->tls != NULL, &d->proxy, d->err, sizeof d->err);
    if (d->proxied < 0) return d->err;
  }
  char port[8];
  snprintf(port, sizeof port, "%d", via_port(d));
  struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
  d->resolve.data = d;
  int rc = resolve(d, port, &hints);
  if (rc < 0) {
    snprintf(d->err, sizeof d->err, "resolve %s: %s", via_host(d), error_name(rc));
    return d->err;
  }
  d->refs++;
  return NULL;
}

static void fail_later(uv_timer_t *t) { fail_now(t->data); }

rh_upconn_dialing *rh_upconn_dial(uv_loop_t *loop, const rh_upconn_target *t, rh_upconn_dial_cb cb, void *ud) {
  rh_upconn_dialing *d = calloc(1, sizeof *d);
  if (!d) abort();
  d->loop = loop;
  snprintf(d->key, sizeof d->key, "%s", t->key);
  snprintf(d->host, sizeof d->host, "%s", t->host);
  d->port = t->port;
  d->tls = t->tls;
  d->cb = cb;
  d->ud = ud;
  uv_timer_init(loop, &d->timer);
  d->timer.data = d;
  d->refs = 1;
  double seconds = t->connect_timeout > 0 ? t->connect_timeout : DEFAULT_CONNECT_TIMEOUT;
  d->deadline = uv_now(loop) + (uint64_t)(seconds * 1000);
  if (start(d, t)) uv_timer_start(&d->timer, fail_later, 0, 0);
  else uv_timer_start(&d->timer, on_deadline, (uint64_t)(seconds * 1000), 0);
  return d;
}

void rh_upconn_dial_cancel(rh_upconn_dialing *d) {
  if (d->done) return;
  d->cb = NULL;
  if (d->refs > 1 && !d->addrs) uv_cancel((uv_req_t *)&d->resolve); /* on_resolved still runs */
  finish(d, NULL, NULL);
}
