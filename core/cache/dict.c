/* dict: chained hash table + doubly-linked LRU list + per-item expiry.
 *
 * Each item sits in one hash chain and in the LRU list (head: most recently used). Expired
 * items are not swept by a timer: they count as missing and are reclaimed when a lookup finds
 * them, when eviction reaches them at the LRU tail, and when stats or keys walk the list. */
#include "cache/dict.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_ITEMS 10000
#define MIN_BUCKETS 16

typedef struct item {
  struct item *chain;            /* next in the hash bucket */
  struct item *prev, *next;      /* LRU list */
  uint64_t hash;
  double expires;                /* INFINITY: never */
  rh_val_type type;
  double num;
  int boolean;
  char *str;                     /* NUL-terminated copy, for RH_VAL_STR */
  size_t slen;
  size_t klen;
  char key[];
} item;

struct rh_dict {
  item **buckets;
  size_t nbuckets;               /* power of two */
  item *head, *tail;
  size_t items, max_items, bytes;
  unsigned long long hits, misses, evictions, expirations;
  char *name;                    /* NULL for standalone dictionaries */
  rh_dict *next_open;            /* registry link */
};

static rh_dict *registry;

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) abort(); /* like rh_buf: out of memory is not recoverable here */
  return p;
}

/* FNV-1a, 64-bit: keys are arbitrary bytes, including NULs. */
static uint64_t hash_key(const char *key, size_t klen) {
  uint64_t h = 14695981039346656037ULL;
  for (size_t i = 0; i < klen; i++) {
    h ^= (unsigned char)key[i];
    h *= 1099511628211ULL;
  }
  return h;
}

static int is_expired(const item *it, double now) { return now >= it->expires; }

static double expiry_of(double ttl, double now) {
  /* !(ttl > 0) also maps NaN to "no expiry" rather than to an item that never compares. */
  return ttl > 0 ? now + ttl : INFINITY;
}

/* ---- LRU list ---- */

static void lru_unlink(rh_dict *d, item *it) {
  if (it->prev) it->prev->next = it->next; else d->head = it->next;
  if (it->next) it->next->prev = it->prev; else d->tail = it->prev;
  it->prev = it->next = NULL;
}

static void lru_push_front(rh_dict *d, item *it) {
  it->prev = NULL;
  it->next = d->head;
  if (d->head) d->head->prev = it; else d->tail = it;
  d->head = it;
}

static void lru_touch(rh_dict *d, item *it) {
  if (d->head == it) return;
  lru_unlink(d, it);
  lru_push_front(d, it);
}

/* ---- values ---- */

static void value_clear(rh_dict *d, item *it) {
  if (it->type == RH_VAL_STR) {
    d->bytes -= it->slen;
    free(it->str);
    it->str = NULL;
    it->slen = 0;
  }
  it->type = RH_VAL_NIL;
}

static void value_store(rh_dict *d, item *it, const rh_val *v) {
  value_clear(d, it);
  it->type = v->type;
  it->num = v->type == RH_VAL_NUM ? v->num : 0;
  it->boolean = v->type == RH_VAL_BOOL ? (v->boolean != 0) : 0;
  if (v->type == RH_VAL_STR) {
    it->str = xmalloc(v->len + 1);
    if (v->len) memcpy(it->str, v->str, v->len);
    it->str[v->len] = 0;
    it->slen = v->len;
    d->bytes += v->len;
  }
}

static void value_load(const item *it, rh_val *out) {
  memset(out, 0, sizeof *out);
  out->type = it->type;
  if (it->type == RH_VAL_NUM) out->num = it->num;
  if (it->type == RH_VAL_BOOL) out->boolean = it->boolean;
  if (it->type == RH_VAL_STR) { out->str = it->str; out->len = it->slen; }
}

/* ---- hash table ---- */

static item **slot_of(rh_dict *d, const char *key, size_t klen, uint64_t h) {
  item **pp = &d->buckets[h & (d->nbuckets - 1)];
  for (; *pp; pp = &(*pp)->chain) {
    item *it = *pp;
    if (it->hash == h && it->klen == klen && memcmp(it->key, key, klen) == 0) return pp;
  }
  return pp;
}

static void grow(rh_dict *d) {
  size_t n = d->nbuckets * 2;
  item **b = calloc(n, sizeof *b);
  if (!b) return; /* a longer chain is slower, not wrong */
  for (size_t i = 0; i < d->nbuckets; i++) {
    item *it = d->buckets[i];
    while (it) {
      item *next = it->chain;
      item **dst = &b[it->hash & (n - 1)];
      it->chain = *dst;
      *dst = it;
      it = next;
    }
  }
  free(d->buckets);
  d->buckets = b;
  d->nbuckets = n;
}

/* Unlinks the item at *pp from both structures and frees it. */
static void remove_at(rh_dict *d, item **pp) {
  item *it = *pp;
  *pp = it->chain;
  lru_unlink(d, it);
  value_clear(d, it);
  d->bytes -= it->klen;
  d->items--;
  free(it);
}

static void remove_item(rh_dict *d, item *it) {
  remove_at(d, slot_of(d, it->key, it->klen, it->hash));
}

static void expire_item(rh_dict *d, item *it) {
  d->expirations++;
  remove_item(d, it);
}

/* The live item for key, reclaiming it if it has expired; NULL when missing. */
static item *lookup(rh_dict *d, const char *key, size_t klen, double now) {
  item **pp = slot_of(d, key, klen, hash_key(key, klen));
  item *it = *pp;
  if (!it) return NULL;
  if (is_expired(it, now)) {
    d->expirations++;
    remove_at(d, pp);
    return NULL;
  }
  return it;
}

/* Drops LRU-tail items until the bound holds. An expired tail counts as an expiration. */
static void enforce_bound(rh_dict *d, double now) {
  while (d->items > d->max_items && d->tail) {
    item *victim = d->tail;
    if (is_expired(victim, now)) d->expirations++; else d->evictions++;
    remove_item(d, victim);
  }
}

/* A new item at the LRU head. The caller fills the value and enforces the bound. */
static item *insert(rh_dict *d, const char *key, size_t klen, double expires) {
  if (d->items >= d->nbuckets) grow(d);
  uint64_t h = hash_key(key, klen);
  item *it = xmalloc(sizeof *it + klen);
  memset(it, 0, sizeof *it);
  it->hash = h;
  it->klen = klen;
  if (klen) memcpy(it->key, key, klen);
  it->expires = expires;
  it->type = RH_VAL_NIL;
  item **slot = &d->buckets[h & (d->nbuckets - 1)];
  it->chain = *slot;
  *slot = it;
  lru_push_front(d, it);
  d->items++;
  d->bytes += klen;
  return it;
}

/* Every expired item, reclaimed in one walk (stats and keys walk anyway). */
static void purge_expired(rh_dict *d, double now) {
  item *it = d->head;
  while (it) {
    item *next = it->next;
    if (is_expired(it, now)) expire_item(d, it);
    it = next;
  }
}

/* ---- construction ---- */

static rh_dict *dict_create(size_t max_items) {
  rh_dict *d = xmalloc(sizeof *d);
  memset(d, 0, sizeof *d);
  d->nbuckets = MIN_BUCKETS;
  d->buckets = calloc(d->nbuckets, sizeof *d->buckets);
  if (!d->buckets) abort();
  d->max_items = max_items ? max_items : DEFAULT_MAX_ITEMS;
  return d;
}

rh_dict *rh_dict_new(size_t max_items) { return dict_create(max_items); }

static void unregister(rh_dict *d) {
  for (rh_dict **pp = &registry; *pp; pp = &(*pp)->next_open) {
    if (*pp == d) { *pp = d->next_open; return; }
  }
}

void rh_dict_free(rh_dict *d) {
  if (!d) return;
  if (d->name) unregister(d); /* tolerate freeing a registered dict directly */
  rh_dict_flush(d);
  free(d->buckets);
  free(d->name);
  free(d);
}

rh_dict *rh_dict_open(const char *name, size_t max_items) {
  for (rh_dict *d = registry; d; d = d->next_open) {
    if (strcmp(d->name, name) != 0) continue;
    if (max_items && max_items != d->max_items) {
      d->max_items = max_items;
      /* No clock here: shrinking evicts from the tail, counting every victim as evicted. */
      enforce_bound(d, -INFINITY);
    }
    return d;
  }
  rh_dict *d = dict_create(max_items);
  size_t n = strlen(name);
  d->name = xmalloc(n + 1);
  memcpy(d->name, name, n + 1);
  d->next_open = registry;
  registry = d;
  return d;
}

void rh_dict_close_all(void) {
  while (registry) rh_dict_free(registry);
}

const char *rh_dict_name(const rh_dict *d) { return d->name ? d->name : ""; }

/* ---- operations ---- */

int rh_dict_get(rh_dict *d, const char *key, size_t klen, double now, rh_val *out) {
  item *it = lookup(d, key, klen, now);
  if (!it) {
    d->misses++;
    if (out) memset(out, 0, sizeof *out);
    return 0;
  }
  d->hits++;
  lru_touch(d, it);
  if (out) value_load(it, out);
  return 1;
}

int rh_dict_set(rh_dict *d, const char *key, size_t klen, const rh_val *v, double ttl, double now) {
  if (!v || v->type == RH_VAL_NIL) {
    rh_dict_delete(d, key, klen);
    return 0;
  }
  item *it = lookup(d, key, klen, now);
  if (it) {
    lru_touch(d, it);
    it->expires = expiry_of(ttl, now);
  } else {
    it = insert(d, key, klen, expiry_of(ttl, now));
  }
  value_store(d, it, v);
  enforce_bound(d, now);
  return 0;
}

int rh_dict_add(rh_dict *d, const char *key, size_t klen, const rh_val *v, double ttl, double now) {
  if (lookup(d, key, klen, now)) return RH_DICT_EXISTS;
  return rh_dict_set(d, key, klen, v, ttl, now);
}

/* ttl applies only when init creates the key: an increment keeps the existing expiry, so a
 * rate-limit window is not extended by every hit. */
int rh_dict_incr(rh_dict *d, const char *key, size_t klen, double by, const double *init,
                 double ttl, double now, double *out) {
  item *it = lookup(d, key, klen, now);
  if (!it) {
    if (!init) return RH_DICT_NOTFOUND;
    rh_val v = { .type = RH_VAL_NUM, .num = *init + by };
    rh_dict_set(d, key, klen, &v, ttl, now);
    if (out) *out = v.num;
    return 0;
  }
  if (it->type != RH_VAL_NUM) return RH_DICT_NOTNUM;
  it->num += by;
  lru_touch(d, it);
  if (out) *out = it->num;
  return 0;
}

/* Without a clock, an expired item not yet reclaimed still counts as deleted here. */
int rh_dict_delete(rh_dict *d, const char *key, size_t klen) {
  item **pp = slot_of(d, key, klen, hash_key(key, klen));
  if (!*pp) return 0;
  remove_at(d, pp);
  return 1;
}

double rh_dict_ttl(rh_dict *d, const char *key, size_t klen, double now) {
  item *it = lookup(d, key, klen, now);
  if (!it) return -2;
  if (isinf(it->expires)) return -1;
  return it->expires - now;
}

void rh_dict_keys(rh_dict *d, double now, size_t max,
                  void (*fn)(void *ud, const char *key, size_t klen), void *ud) {
  purge_expired(d, now);
  size_t n = 0;
  for (item *it = d->head; it && (max == 0 || n < max); it = it->next, n++)
    fn(ud, it->key, it->klen);
}

void rh_dict_flush(rh_dict *d) {
  while (d->head) remove_item(d, d->head);
}

void rh_dict_get_stats(rh_dict *d, double now, rh_dict_stats *out) {
  purge_expired(d, now); /* so items and bytes count only live entries */
  out->items = d->items;
  out->max_items = d->max_items;
  out->bytes = d->bytes;
  out->hits = d->hits;
  out->misses = d->misses;
  out->evictions = d->evictions;
  out->expirations = d->expirations;
}
