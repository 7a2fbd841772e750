#include "net/pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Idle connections are taken most recently parked first, so under a light load the surplus ages
 * out, but not one parked during the current loop turn while an older one waits: the kernel
 * reports a socket it reported last turn ahead of every newer event (level-triggered epoll
 * re-queues it at once), so the answer to a request sent on a connection freed this turn is read
 * ahead of older ones. At 256 connections that was 7 % of all events, about one response in
 * seven, and it widened p99 (issue 17, tools/perf/epoll-order). Parked this turn: fresh; at the
 * turn's check phase they join rested. */
typedef struct pool {
  char key[280];
  rh_upconn *rested, *fresh, *fresh_last; /* each most recent first */
  size_t nidle;
  size_t in_use;              /* slots granted and not yet released */
  rh_pool_waiter *first, *last; /* waiting for a slot, oldest first */
  size_t nqueued;
  struct pool *next;
} pool;

static pool *pools;
static size_t total_idle;
static uv_check_t turn_end; /* started while a pool has fresh connections */

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

/* Removes u from list *head; returns whether it was there. *last follows when u was the last. */
static int unlist(rh_upconn **head, rh_upconn **last, rh_upconn *u) {
  rh_upconn *before = NULL;
  for (rh_upconn **q = head; *q; before = *q, q = &(*q)->next) {
    if (*q != u) continue;
    *q = u->next;
    if (last && *last == u) *last = before;
    return 1;
  }
  return 0;
}

static void unlink_idle(rh_upconn *u) {
  if (!u->in_pool) return;
  pool *p = find_pool(u->key, 0);
  if (!unlist(&p->rested, NULL, u)) unlist(&p->fresh, &p->fresh_last, u);
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
  if (!p || !p->nidle) return NULL;
  rh_upconn *u = p->rested ? p->rested : p->fresh;
  unlink_idle(u);
  return u;
}

static void turn_ended(uv_check_t *h) {
  for (pool *p = pools; p; p = p->next) {
    if (!p->fresh) continue;
    p->fresh_last->next = p->rested;
    p->rested = p->fresh;
    p->fresh = p->fresh_last = NULL;
  }
  uv_check_stop(h);
}

static void park(pool *p, rh_upconn *u) {
  if (!turn_end.loop) {
    uv_check_init(u->idle_timer.loop, &turn_end);
    uv_unref((uv_handle_t *)&turn_end); /* never what keeps the loop running */
  }
  uv_check_start(&turn_end, turn_ended); /* nothing when started already */
  if (!p->fresh) p->fresh_last = u;
  u->next = p->fresh;
  p->fresh = u;
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
  park(p, u);
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
    while (p->nidle) close_idle(p->rested ? p->rested : p->fresh);
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
