#include "net/pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct pool {
  char key[280];
  rh_upconn *idle;
  size_t nidle;
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
  uv_timer_stop(&u->idle_timer);
}

/* A connection that leaves the pool, by being taken or by closing, stops its idle timer. */
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

static void idle_expired(uv_timer_t *t) { close_idle(t->data); }

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
  uv_timer_start(&u->idle_timer, idle_expired, (uint64_t)(idle_timeout * 1000), 0);
}

size_t rh_pool_idle(void) { return total_idle; }

void rh_pool_each(void (*fn)(const char *key, size_t idle, void *ud), void *ud) {
  for (pool *p = pools; p; p = p->next) fn(p->key, p->nidle, ud);
}

void rh_pool_close_all(void) {
  while (pools) {
    pool *p = pools;
    while (p->idle) close_idle(p->idle);
    pools = p->next;
    free(p);
  }
}
