/* dict: named in-process dictionaries with TTL and an LRU bound.
 *
 * Dictionaries live in a process-wide registry keyed by name and outlive Lua generations: a
 * reload gets the same dictionary back from rh_dict_open. They are freed by rh_dict_close_all
 * at exit. Keys and string values are copied in. Time is passed in (seconds, monotonic) so the
 * table is pure and testable; the Lua binding passes the loop's clock. */
#ifndef RH_DICT_H
#define RH_DICT_H

#include <stddef.h>

typedef struct rh_dict rh_dict;

typedef enum { RH_VAL_NIL, RH_VAL_STR, RH_VAL_NUM, RH_VAL_BOOL } rh_val_type;

typedef struct {
  rh_val_type type;
  double num;       /* RH_VAL_NUM */
  int boolean;      /* RH_VAL_BOOL */
  const char *str;  /* RH_VAL_STR: valid until the next change to this dict */
  size_t len;
} rh_val;

typedef struct {
  size_t items, max_items;
  size_t bytes;              /* keys + string values */
  unsigned long long hits, misses, evictions, expirations;
} rh_dict_stats;

#define RH_DICT_EXISTS   (-1)  /* add: key already there */
#define RH_DICT_NOTFOUND (-2)  /* incr without init on a missing key */
#define RH_DICT_NOTNUM   (-3)  /* incr on a non-number */

/* The dictionary called name, created with max_items (0: 10000) on first use. Later calls
 * return the existing one; a different max_items there resizes its bound. */
rh_dict *rh_dict_open(const char *name, size_t max_items);
void rh_dict_close_all(void);

/* A standalone dictionary (not in the registry), for tests. */
rh_dict *rh_dict_new(size_t max_items);
void rh_dict_free(rh_dict *d);

/* 1 found (out filled), 0 missing or expired. Touches the LRU. */
int rh_dict_get(rh_dict *d, const char *key, size_t klen, double now, rh_val *out);
/* ttl <= 0: no expiry. Evicts least recently used items beyond max_items. type NIL deletes. */
int rh_dict_set(rh_dict *d, const char *key, size_t klen, const rh_val *v, double ttl, double now);
int rh_dict_add(rh_dict *d, const char *key, size_t klen, const rh_val *v, double ttl, double now);
/* New value in *out. init NULL: a missing key is RH_DICT_NOTFOUND. */
int rh_dict_incr(rh_dict *d, const char *key, size_t klen, double by, const double *init,
                 double ttl, double now, double *out);
int rh_dict_delete(rh_dict *d, const char *key, size_t klen); /* 1 deleted, 0 missing */
/* Seconds left (-1 no expiry), or -2 missing. */
double rh_dict_ttl(rh_dict *d, const char *key, size_t klen, double now);
/* Calls fn for each live key, at most max (0: all), most recent first. */
void rh_dict_keys(rh_dict *d, double now, size_t max,
                  void (*fn)(void *ud, const char *key, size_t klen), void *ud);
void rh_dict_flush(rh_dict *d);
void rh_dict_get_stats(rh_dict *d, double now, rh_dict_stats *out);
const char *rh_dict_name(const rh_dict *d);

#endif
