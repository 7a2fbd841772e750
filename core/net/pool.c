#include "net/pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct pool {
  char key[280];
  rh_upconn *idle;
  size_t nidle;
  size_t in_use;              /* slots granted and not yet released */
  rh_pool_waiter *first, *last; /* waiting for a slot, oldest first */
  size_t nqueued;
  struct pool *next;
} pool;

static pool *pools;
static size_t total_idle;

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
}

static void close_idle(rh_upconn *u) {
  unlink_idle(u);
  rh_upconn_close(u);
}

rh_upconn *rh_pool_take(const char *key) {
  pool *p = find_pool(key, 0);
  if (!p || !p->idle) return NULL;
  rh_upconn *u = p->idle;
  unlink_idle(u);
  return u;
}

/* The idle timer is left running when a connection is taken, and checked when it fires: a
 * connection is taken and put back once per request, and stopping and restarting its timer each
 * time cost more than the rest of the pool's work (issue 17). */
static void idle_expired(uv_timer_t *t) {
  rh_upconn *u = t->data;
  if (!u->in_pool) return;
  uint64_t now = uv_now(t->loop);
  if (now >= u->idle_until) close_idle(u);
  else uv_timer_start(t, idle_expired, u->idle_until - now, 0);
}

/* Anything from an idle upstream (bytes or its close) means it is no longer reusable. */
static void idle_read(void *owner, const char *p, ssize_t n, const char *err) {
  (void)p;
  (void)n;
  (void)err;
  close_idle(owner);
}

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
  rh_upconn_own(u, u, idle_read, NULL);
  uint64_t ms = (uint64_t)(idle_timeout * 1000);
  u->idle_until = uv_now(u->idle_timer.loop) + ms;
  uv_timer_t *t = &u->idle_timer; /* still running from an earlier stay when it was taken */
  if (!uv_is_active((uv_handle_t *)t) || uv_timer_get_due_in(t) > ms) uv_timer_start(t, idle_expired, ms, 0);
}

size_t rh_pool_idle(void) { return total_idle; }

void rh_pool_each(void (*fn)(const char *key, size_t idle, void *ud), void *ud) {
  for (pool *p = pools; p; p = p->next) fn(p->key, p->nidle, ud);
}

void rh_pool_close_all(void) {
  while (pools) {
    pool *p = pools;
    while (p->idle) close_idle(p->idle);
    while (p->first) rh_pool_leave(p->first);
    pools = p->next;
    free(p);
  }
}

/* ---- slots ---- */

static int fits(const pool *p, const rh_pool_waiter *w) { return !w->max || p->in_use < w->max; }

static void enqueue(pool *p, rh_pool_waiter *w) {
  w->queue = p;
  w->next = NULL;
  w->prev = p->last;
  if (p->last) p->last->next = w;
  else p->first = w;
  p->last = w;
  p->nqueued++;
}

void rh_pool_leave(rh_pool_waiter *w) {
  pool *p = w->queue;
  if (!p) return;
  if (w->prev) w->prev->next = w->next;
  else p->first = w->next;
  if (w->next) w->next->prev = w->prev;
  else p->last = w->prev;
  p->nqueued--;
  w->queue = w->next = w->prev = NULL;
}

rh_pool_slot rh_pool_acquire(const char *key, size_t max, size_t max_queue, rh_pool_waiter *w) {
  pool *p = find_pool(key, 1);
  w->max = max;
  /* no waiter fits (a release grants every one that does), so this passes none under its cap */
  if (fits(p, w)) {
    p->in_use++;
    return RH_POOL_GRANTED;
  }
  if (p->nqueued >= max_queue) return RH_POOL_FULL;
  enqueue(p, w);
  return RH_POOL_QUEUED;
}

/* Waiters are granted oldest first, each that fits; one under a larger cap may pass one under
 * a smaller when mounts with different caps share an upstream. */
void rh_pool_release(const char *key) {
  pool *p = find_pool(key, 0);
  if (!p || !p->in_use) return; /* forgotten by rh_pool_close_all meanwhile */
  p->in_use--;
  for (rh_pool_waiter *w = p->first, *next; w; w = next) {
    next = w->next;
    if (!fits(p, w)) continue;
    rh_pool_leave(w);
    p->in_use++;
    w->granted(w);
  }
}
