#include "proxy/pool.h"

#include <stdlib.h>
#include <string.h>

#include "tls/tls.h"

typedef struct pool {
  char key[280];
  rh_upconn *idle;
  size_t nidle;
  struct pool *next;
} pool;

static pool *pools;
static size_t total_idle;
static char read_buf[65536]; /* one loop, one read at a time: shared */

static pool *find_pool(const char *key, int create) {
  for (pool *p = pools; p; p = p->next)
    if (strcmp(p->key, key) == 0) return p;
  if (!create) return NULL;
  pool *p = calloc(1, sizeof *p);
  if (!p) abort();
  snprintf(p->key, sizeof p->key, "%s", key);
  p->next = pools;
  pools = p;
  return p;
}

static void unlink_idle(rh_upconn *u) {
  if (!u->in_pool) return;
  pool *p = find_pool(u->key, 0);
  for (rh_upconn **q = &p->idle; *q; q = &(*q)->next)
    if (*q == u) { *q = u->next; break; }
  p->nidle--;
  total_idle--;
  u->in_pool = 0;
  uv_timer_stop(&u->idle_timer);
}

rh_upconn *rh_upconn_new(uv_loop_t *loop, const char *key) {
  rh_upconn *u = calloc(1, sizeof *u);
  if (!u) abort();
  snprintf(u->key, sizeof u->key, "%s", key);
  uv_tcp_init(loop, &u->tcp);
  uv_timer_init(loop, &u->idle_timer);
  u->tcp.data = u->idle_timer.data = u;
  return u;
}

/* Both handles point at u while closing; the second close callback frees it. */
static void after_close(uv_handle_t *h) {
  rh_upconn *u = h->data;
  if (++u->closing < 3) return;
  if (u->tls) rh_tls_free(u->tls);
  free(u);
}

void rh_upconn_close(rh_upconn *u) {
  if (u->closing) return;
  unlink_idle(u);
  u->closing = 1;
  u->on_read = NULL;
  uv_close((uv_handle_t *)&u->tcp, after_close);
  uv_close((uv_handle_t *)&u->idle_timer, after_close);
}

rh_upconn *rh_pool_take(const char *key) {
  pool *p = find_pool(key, 0);
  if (!p || !p->idle) return NULL;
  rh_upconn *u = p->idle;
  unlink_idle(u);
  return u;
}

static void conn_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  (void)h;
  (void)size;
  *buf = uv_buf_init(read_buf, sizeof read_buf);
}

/* To the owner; anything from an idle upstream (bytes or EOF) means it is no longer reusable. */
static void conn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  rh_upconn *u = s->data;
  if (u->on_read) u->on_read(u->owner, n, buf);
  else if (n != 0) rh_upconn_close(u);
}

void rh_upconn_read(rh_upconn *u, void *owner, rh_upconn_read_cb cb) {
  u->owner = owner;
  u->on_read = cb;
  if (!u->reading && !u->closing) u->reading = uv_read_start((uv_stream_t *)&u->tcp, conn_alloc, conn_read) == 0;
}

void rh_upconn_pause(rh_upconn *u) {
  if (u->reading) uv_read_stop((uv_stream_t *)&u->tcp);
  u->reading = 0;
}

static void idle_expired(uv_timer_t *t) { rh_upconn_close(t->data); }

void rh_pool_put(rh_upconn *u, double idle_timeout, size_t max_idle) {
  pool *p = find_pool(u->key, 1);
  if (u->closing || p->nidle >= max_idle) {
    rh_upconn_close(u);
    return;
  }
  u->next = p->idle;
  p->idle = u;
  p->nidle++;
  total_idle++;
  u->in_pool = 1;
  rh_upconn_read(u, NULL, NULL);
  uv_timer_start(&u->idle_timer, idle_expired, (uint64_t)(idle_timeout * 1000), 0);
}

size_t rh_pool_idle(void) { return total_idle; }

void rh_pool_close_all(void) {
  while (pools) {
    pool *p = pools;
    while (p->idle) rh_upconn_close(p->idle);
    pools = p->next;
    free(p);
  }
}
