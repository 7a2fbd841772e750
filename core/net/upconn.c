#include "net/upconn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf/buf.h"
#include "tls/tls.h"

static char read_buf[65536]; /* one loop, one read at a time: shared */

/* ---- the connection ---- */

const char rh_upconn_closed[] = "upstream closed the connection";

rh_upconn *rh_upconn_new(uv_loop_t *loop, const char *key) {
  rh_upconn *u = calloc(1, sizeof *u);
  if (!u) abort();
  snprintf(u->key, sizeof u->key, "%s", key);
  uv_tcp_init(loop, &u->tcp);
  uv_timer_init(loop, &u->idle_timer);
  uv_idle_init(loop, &u->written);
  u->tcp.data = u->idle_timer.data = u->written.data = u;
  return u;
}

/* Every handle points at u; the last close callback frees it (after every write callback). */
static void after_close(uv_handle_t *h) {
  rh_upconn *u = h->data;
  if (++u->closing < 4) return;
  if (u->tls) rh_tls_free(u->tls);
  free(u);
}

void rh_upconn_close(rh_upconn *u) {
  if (u->closing) return;
  u->closing = 1;
  u->on_read = NULL;
  u->on_write = NULL;
  uv_close((uv_handle_t *)&u->tcp, after_close);
  uv_close((uv_handle_t *)&u->idle_timer, after_close);
  uv_close((uv_handle_t *)&u->written, after_close);
}

typedef struct {
  uv_write_t w;
  rh_upconn *u;
  size_t len;
  char data[];
} up_write;

/* A write failed: the peer is gone (reset), so nothing more will arrive. A paused connection
 * would never find out (nothing reads it), so it reads again, for good: what is left is only
 * what the kernel holds (bounded), then the read side reports the loss, from the loop, after
 * whatever the peer sent before it went (an answer the owner has not taken yet). */
static void write_failed(rh_upconn *u) {
  u->write_failed = 1;
  rh_upconn_resume(u);
}

static void after_write(uv_write_t *w, int status) {
  up_write *uw = (up_write *)w;
  rh_upconn *u = uw->u;
  u->queued -= uw->len;
  free(uw);
  if (u->closing) return;
  if (status < 0) write_failed(u);
  else if (u->on_write) u->on_write(u->owner, u->queued);
}

static void report_written(uv_idle_t *h) {
  rh_upconn *u = h->data;
  uv_idle_stop(h);
  if (!u->closing && u->on_write) u->on_write(u->owner, u->queued);
}

/* A direct write first: most requests go out whole, with no copy and no uv_write (whose
 * completion costs an epoll_ctl per write in libuv 1.44). What remains is queued. */
static int raw_write(rh_upconn *u, const char *p, size_t n) {
  if (u->closing) return -1;
  if (!n) return 0;
  if (u->queued == 0) {
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int w = uv_try_write((uv_stream_t *)&u->tcp, &b, 1);
    if (w > 0) { p += w; n -= (size_t)w; }
    else if (w != UV_EAGAIN && w != UV_ENOSYS) {
      write_failed(u);
      return -1;
    }
    if (n == 0) {
      uv_idle_start(&u->written, report_written);
      return 0;
    }
  }
  up_write *uw = malloc(sizeof *uw + n);
  if (!uw) abort();
  memcpy(uw->data, p, n);
  uw->u = u;
  uw->len = n;
  uv_buf_t b = uv_buf_init(uw->data, (unsigned)n);
  u->queued += n;
  int rc = uv_write(&uw->w, (uv_stream_t *)&u->tcp, &b, 1, after_write);
  if (rc < 0) {
    u->queued -= n;
    free(uw);
    write_failed(u);
    return -1;
  }
  return 0;
}

/* What the TLS engine wants sent (handshake, alerts). */
static void flush_tls(rh_upconn *u) {
  rh_buf out = RH_BUF_INIT;
  rh_tls_pending(u->tls, &out);
  raw_write(u, out.data, out.len);
  rh_buf_free(&out);
}

int rh_upconn_write(rh_upconn *u, const char *p, size_t n) {
  if (!u->tls) return raw_write(u, p, n);
  rh_buf out = RH_BUF_INIT;
  int rc = rh_tls_write(u->tls, p, n, &out);
  if (rc == 0) rc = raw_write(u, out.data, out.len);
  rh_buf_free(&out);
  return rc;
}

static void alloc_cb(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  (void)h;
  (void)size;
  *buf = uv_buf_init(read_buf, sizeof read_buf);
}

static void deliver(rh_upconn *u, const char *p, ssize_t n, const char *err) {
  if (u->on_read) u->on_read(u->owner, p, n, err);
  else rh_upconn_close(u); /* idle: anything at all means it cannot be reused */
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  rh_upconn *u = s->data;
  if (n == 0) return;
  if (n < 0) {
    deliver(u, NULL, -1, n == UV_EOF ? rh_upconn_closed : uv_strerror((int)n));
    return;
  }
  if (!u->tls) { deliver(u, buf->base, n, NULL); return; }
  rh_buf plain = RH_BUF_INIT;
  int rc = rh_tls_read(u->tls, buf->base, (size_t)n, &plain);
  flush_tls(u);
  if (rc < 0) {
    char why[300];
    snprintf(why, sizeof why, "TLS: %s", rh_tls_error(u->tls));
    deliver(u, NULL, -1, why);
  } else if (plain.len) {
    deliver(u, plain.data, (ssize_t)plain.len, NULL);
  }
  rh_buf_free(&plain);
}

void rh_upconn_resume(rh_upconn *u) {
  if (!u->reading && !u->closing) u->reading = uv_read_start((uv_stream_t *)&u->tcp, alloc_cb, read_cb) == 0;
}

void rh_upconn_own(rh_upconn *u, void *owner, rh_upconn_read_cb on_read, rh_upconn_write_cb on_write) {
  u->owner = owner;
  u->on_read = on_read;
  u->on_write = on_write;
  rh_upconn_resume(u);
}

void rh_upconn_pause(rh_upconn *u) {
  if (u->write_failed) return; /* read to the end: see write_failed */
  if (u->reading) uv_read_stop((uv_stream_t *)&u->tcp);
  u->reading = 0;
}

void rh_upconn_start_tls(rh_upconn *u, struct rh_tls_ctx *ctx, const char *host) {
  u->tls = rh_tls_new(ctx, host);
  flush_tls(u);
}
