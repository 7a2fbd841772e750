#include "redis/own.h"

#include <stddef.h>

int rh_redis_pool_full(const rh_redis_pool *p) { return p->n_in_use >= RH_REDIS_MAX_OWN; }

rh_redis *rh_redis_pool_take(rh_redis_pool *p, rh_redis_own *o, rh_redis_open_fn open, void *ud) {
  if (rh_redis_pool_full(p)) return NULL;
  p->n_in_use++;
  o->r = p->n_spare ? p->spare[--p->n_spare] : open(ud);
  o->gen = p->gen;
  o->prev = NULL;
  o->next = p->in_use;
  if (o->next) o->next->prev = o;
  p->in_use = o;
  return o->r;
}

/* Out of in_use, its connection handed to the caller. */
static rh_redis *unlink_own(rh_redis_pool *p, rh_redis_own *o) {
  if (o->prev) o->prev->next = o->next;
  else p->in_use = o->next;
  if (o->next) o->next->prev = o->prev;
  p->n_in_use--;
  rh_redis *r = o->r;
  o->r = NULL;
  o->prev = o->next = NULL;
  return r;
}

void rh_redis_pool_give(rh_redis_pool *p, rh_redis_own *o, int keep) {
  if (!o->r) return;
  int back = keep && o->gen == p->gen && p->n_spare < RH_REDIS_MAX_SPARE;
  rh_redis *r = unlink_own(p, o);
  if (back) p->spare[p->n_spare++] = r;
  else rh_redis_free(r);
}

/* Unlinked before it is freed: freeing fails the command, whose callback may give o back. */
void rh_redis_pool_close(rh_redis_pool *p, rh_redis_own *o) {
  if (o->r) rh_redis_free(unlink_own(p, o));
}

void rh_redis_pool_forget(rh_redis_pool *p) {
  p->gen++;
  while (p->n_spare) rh_redis_free(p->spare[--p->n_spare]);
}

void rh_redis_pool_free(rh_redis_pool *p) {
  while (p->in_use) rh_redis_pool_close(p, p->in_use);
  rh_redis_pool_forget(p);
}
