/* Unit tests for core/cache/dict.c: values, add/incr, TTL, LRU bound, keys, stats, registry. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/dict.h"
#include "check.h"



#define K(s) (s), strlen(s)

static rh_val str_val(const char *s, size_t n) { return (rh_val){ .type = RH_VAL_STR, .str = s, .len = n }; }
static rh_val num_val(double n) { return (rh_val){ .type = RH_VAL_NUM, .num = n }; }
static rh_val bool_val(int b) { return (rh_val){ .type = RH_VAL_BOOL, .boolean = b }; }

static void test_types(void) {
  rh_dict *d = rh_dict_new(0);
  rh_val v = str_val("hello", 5), out;
  CHECK(rh_dict_set(d, K("s"), &v, 0, 0) == 0);
  v = num_val(42.5);
  CHECK(rh_dict_set(d, K("n"), &v, 0, 0) == 0);
  v = bool_val(0);
  CHECK(rh_dict_set(d, K("b"), &v, 0, 0) == 0);
  v = str_val("", 0);
  CHECK(rh_dict_set(d, K("empty"), &v, 0, 0) == 0);

  CHECK(rh_dict_get(d, K("s"), 0, &out) == 1);
  CHECK(out.type == RH_VAL_STR && out.len == 5 && memcmp(out.str, "hello", 5) == 0);
  CHECK(rh_dict_get(d, K("n"), 0, &out) == 1);
  CHECK(out.type == RH_VAL_NUM && out.num == 42.5);
  CHECK(rh_dict_get(d, K("b"), 0, &out) == 1);
  CHECK(out.type == RH_VAL_BOOL && out.boolean == 0);
  CHECK(rh_dict_get(d, K("empty"), 0, &out) == 1);
  CHECK(out.type == RH_VAL_STR && out.len == 0);
  CHECK(rh_dict_get(d, K("nope"), 0, &out) == 0);
  CHECK(out.type == RH_VAL_NIL);

  /* Overwrite with another type; NIL deletes. */
  v = num_val(7);
  rh_dict_set(d, K("s"), &v, 0, 0);
  CHECK(rh_dict_get(d, K("s"), 0, &out) == 1 && out.type == RH_VAL_NUM && out.num == 7);
  v = (rh_val){ .type = RH_VAL_NIL };
  rh_dict_set(d, K("s"), &v, 0, 0);
  CHECK(rh_dict_get(d, K("s"), 0, &out) == 0);

  /* Stored strings are copies. */
  char buf[] = "mutable";
  v = str_val(buf, 7);
  rh_dict_set(d, K("copy"), &v, 0, 0);
  buf[0] = 'X';
  CHECK(rh_dict_get(d, K("copy"), 0, &out) == 1 && memcmp(out.str, "mutable", 7) == 0);
  rh_dict_free(d);
}

static void test_add_incr(void) {
  rh_dict *d = rh_dict_new(0);
  rh_val v = num_val(1), out;
  double n = 0, init = 10;
  CHECK(rh_dict_add(d, K("a"), &v, 0, 0) == 0);
  CHECK(rh_dict_add(d, K("a"), &v, 0, 0) == RH_DICT_EXISTS);

  CHECK(rh_dict_incr(d, K("a"), 5, NULL, 0, 0, &n) == 0 && n == 6);
  CHECK(rh_dict_incr(d, K("a"), -2.5, NULL, 0, 0, &n) == 0 && n == 3.5);
  CHECK(rh_dict_get(d, K("a"), 0, &out) == 1 && out.num == 3.5);

  CHECK(rh_dict_incr(d, K("missing"), 1, NULL, 0, 0, &n) == RH_DICT_NOTFOUND);
  CHECK(rh_dict_get(d, K("missing"), 0, &out) == 0);
  CHECK(rh_dict_incr(d, K("fresh"), 2, &init, 0, 0, &n) == 0 && n == 12);
  CHECK(rh_dict_incr(d, K("fresh"), 2, &init, 0, 0, &n) == 0 && n == 14);

  v = str_val("x", 1);
  rh_dict_set(d, K("str"), &v, 0, 0);
  CHECK(rh_dict_incr(d, K("str"), 1, &init, 0, 0, &n) == RH_DICT_NOTNUM);
  v = bool_val(1);
  rh_dict_set(d, K("bool"), &v, 0, 0);
  CHECK(rh_dict_incr(d, K("bool"), 1, NULL, 0, 0, &n) == RH_DICT_NOTNUM);
  rh_dict_free(d);
}

static void test_ttl(void) {
  rh_dict *d = rh_dict_new(0);
  rh_val v = str_val("v", 1), out;
  rh_dict_stats st;
  rh_dict_set(d, K("t"), &v, 10, 100);
  rh_dict_set(d, K("forever"), &v, 0, 100);
  CHECK(rh_dict_ttl(d, K("t"), 100) == 10);
  CHECK(rh_dict_ttl(d, K("t"), 104) == 6);
  CHECK(rh_dict_ttl(d, K("forever"), 104) == -1);
  CHECK(rh_dict_ttl(d, K("none"), 104) == -2);
  CHECK(rh_dict_get(d, K("t"), 109.5, &out) == 1);
  CHECK(rh_dict_get(d, K("t"), 110, &out) == 0);  /* expiry is inclusive of the deadline */
  CHECK(rh_dict_ttl(d, K("t"), 110) == -2);
  CHECK(rh_dict_get(d, K("forever"), 1e9, &out) == 1);
  rh_dict_get_stats(d, 110, &st);
  CHECK(st.items == 1 && st.expirations == 1);

  /* add over an expired key succeeds; set refreshes the TTL. */
  rh_dict_set(d, K("e"), &v, 1, 0);
  CHECK(rh_dict_add(d, K("e"), &v, 5, 2) == 0);
  CHECK(rh_dict_ttl(d, K("e"), 2) == 5);
  rh_dict_set(d, K("e"), &v, 0, 3);
  CHECK(rh_dict_ttl(d, K("e"), 3) == -1);

  /* incr keeps the existing expiry; init_ttl applies only when the key is created. */
  double n, init = 0;
  CHECK(rh_dict_incr(d, K("c"), 1, &init, 10, 0, &n) == 0 && n == 1);
  CHECK(rh_dict_incr(d, K("c"), 1, &init, 100, 5, &n) == 0 && n == 2);
  CHECK(rh_dict_ttl(d, K("c"), 5) == 5);
  CHECK(rh_dict_incr(d, K("c"), 1, NULL, 0, 10, &n) == RH_DICT_NOTFOUND);
  CHECK(rh_dict_incr(d, K("c"), 1, &init, 0, 10, &n) == 0 && n == 1);
  rh_dict_free(d);
}

struct keylist {
  char keys[16][32];
  size_t lens[16];
  size_t n;
};

static void collect(void *ud, const char *key, size_t klen) {
  struct keylist *kl = ud;
  if (kl->n < 16 && klen < 32) {
    memcpy(kl->keys[kl->n], key, klen);
    kl->lens[kl->n++] = klen;
  }
}

static int key_is(const struct keylist *kl, size_t i, const char *s) {
  return i < kl->n && kl->lens[i] == strlen(s) && memcmp(kl->keys[i], s, kl->lens[i]) == 0;
}

static void test_lru(void) {
  rh_dict *d = rh_dict_new(3);
  rh_val v = num_val(1), out;
  rh_dict_stats st;
  rh_dict_set(d, K("a"), &v, 0, 0);
  rh_dict_set(d, K("b"), &v, 0, 0);
  rh_dict_set(d, K("c"), &v, 0, 0);
  CHECK(rh_dict_get(d, K("a"), 0, &out) == 1); /* a is now the most recent; b the least */
  rh_dict_set(d, K("d"), &v, 0, 0);
  CHECK(rh_dict_get(d, K("b"), 0, &out) == 0);
  CHECK(rh_dict_get(d, K("a"), 0, &out) == 1);
  CHECK(rh_dict_get(d, K("c"), 0, &out) == 1);
  CHECK(rh_dict_get(d, K("d"), 0, &out) == 1);
  rh_dict_get_stats(d, 0, &st);
  CHECK(st.items == 3 && st.max_items == 3 && st.evictions == 1);

  /* Order now (most recent first): d c a. Overwriting a touches it. */
  rh_dict_set(d, K("a"), &v, 0, 0);
  struct keylist kl = { .n = 0 };
  rh_dict_keys(d, 0, 0, collect, &kl);
  CHECK(kl.n == 3 && key_is(&kl, 0, "a") && key_is(&kl, 1, "d") && key_is(&kl, 2, "c"));
  kl.n = 0;
  rh_dict_keys(d, 0, 2, collect, &kl);
  CHECK(kl.n == 2 && key_is(&kl, 0, "a") && key_is(&kl, 1, "d"));

  /* An expired tail item is reclaimed as an expiration, not an eviction. */
  rh_dict_flush(d);
  rh_dict_set(d, K("old"), &v, 1, 0);
  rh_dict_set(d, K("x"), &v, 0, 0);
  rh_dict_set(d, K("y"), &v, 0, 0);
  rh_dict_set(d, K("z"), &v, 0, 5);
  rh_dict_get_stats(d, 5, &st);
  CHECK(st.items == 3 && st.evictions == 1 && st.expirations == 1);

  /* Many inserts never exceed the bound. */
  for (int i = 0; i < 1000; i++) {
    char key[16];
    snprintf(key, sizeof key, "k%d", i);
    rh_dict_set(d, K(key), &v, 0, 0);
  }
  rh_dict_get_stats(d, 0, &st);
  CHECK(st.items == 3 && st.evictions == 1 + 1000);
  CHECK(rh_dict_get(d, K("k999"), 0, &out) == 1 && rh_dict_get(d, K("k996"), 0, &out) == 0);
  rh_dict_free(d);
}

static void test_delete_keys_stats(void) {
  rh_dict *d = rh_dict_new(100);
  rh_val v = str_val("abcd", 4), out;
  rh_dict_stats st;
  rh_dict_set(d, K("k1"), &v, 0, 0);
  rh_dict_set(d, K("k2"), &v, 1, 0);
  rh_dict_set(d, K("k3"), &v, 0, 0);
  rh_dict_get_stats(d, 0, &st);
  CHECK(st.items == 3 && st.bytes == 3 * (2 + 4));
  CHECK(rh_dict_delete(d, K("k3")) == 1);
  CHECK(rh_dict_delete(d, K("k3")) == 0);
  CHECK(rh_dict_get(d, K("k3"), 0, &out) == 0);

  struct keylist kl = { .n = 0 };
  rh_dict_keys(d, 2, 0, collect, &kl); /* k2 has expired by now=2 */
  CHECK(kl.n == 1 && key_is(&kl, 0, "k1"));

  CHECK(rh_dict_get(d, K("k1"), 2, &out) == 1);
  CHECK(rh_dict_get(d, K("zz"), 2, &out) == 0);
  rh_dict_get_stats(d, 2, &st);
  CHECK(st.items == 1 && st.bytes == 6 && st.hits == 1 && st.misses == 2 && st.expirations == 1);
  CHECK(st.evictions == 0 && st.max_items == 100);

  rh_dict_flush(d);
  rh_dict_get_stats(d, 2, &st);
  CHECK(st.items == 0 && st.bytes == 0);
  kl.n = 0;
  rh_dict_keys(d, 2, 0, collect, &kl);
  CHECK(kl.n == 0);
  rh_dict_free(d);
}

static void test_binary_keys(void) {
  rh_dict *d = rh_dict_new(0);
  rh_val v, out;
  const char k1[] = { 'a', 0, 'b' }, k2[] = { 'a', 0, 'c' };
  v = num_val(1);
  rh_dict_set(d, k1, sizeof k1, &v, 0, 0);
  v = num_val(2);
  rh_dict_set(d, k2, sizeof k2, &v, 0, 0);
  CHECK(rh_dict_get(d, k1, sizeof k1, 0, &out) == 1 && out.num == 1);
  CHECK(rh_dict_get(d, k2, sizeof k2, 0, &out) == 1 && out.num == 2);
  CHECK(rh_dict_get(d, "a", 1, 0, &out) == 0);
  CHECK(rh_dict_get(d, "", 0, 0, &out) == 0);

  const char bin[] = { 'x', 0, 'y', 0 };
  v = str_val(bin, sizeof bin);
  rh_dict_set(d, "", 0, &v, 0, 0);
  CHECK(rh_dict_get(d, "", 0, 0, &out) == 1 && out.len == 4 && memcmp(out.str, bin, 4) == 0);

  size_t big = 100000;
  char *lk = malloc(big);
  memset(lk, 'L', big);
  lk[500] = 0;
  v = num_val(3);
  rh_dict_set(d, lk, big, &v, 0, 0);
  CHECK(rh_dict_get(d, lk, big, 0, &out) == 1 && out.num == 3);
  CHECK(rh_dict_get(d, lk, big - 1, 0, &out) == 0);
  lk[big - 1] = 'M';
  CHECK(rh_dict_get(d, lk, big, 0, &out) == 0);
  free(lk);

  /* Enough keys to grow the table several times, all still reachable. */
  for (int i = 0; i < 5000; i++) {
    char key[16];
    snprintf(key, sizeof key, "g%d", i);
    v = num_val(i);
    rh_dict_set(d, K(key), &v, 0, 0);
  }
  int ok = 1;
  for (int i = 0; i < 5000; i++) {
    char key[16];
    snprintf(key, sizeof key, "g%d", i);
    ok &= rh_dict_get(d, K(key), 0, &out) == 1 && out.num == i;
  }
  CHECK(ok);
  rh_dict_free(d);
}

static void test_registry(void) {
  rh_dict *a = rh_dict_open("cache", 0);
  rh_dict *b = rh_dict_open("cache", 0);
  rh_dict *c = rh_dict_open("other", 5);
  rh_dict_stats st;
  CHECK(a == b && a != c);
  CHECK(strcmp(rh_dict_name(a), "cache") == 0 && strcmp(rh_dict_name(c), "other") == 0);
  rh_dict_get_stats(a, 0, &st);
  CHECK(st.max_items == 10000);

  rh_val v = num_val(1);
  for (int i = 0; i < 5; i++) {
    char key[8];
    snprintf(key, sizeof key, "%d", i);
    rh_dict_set(c, K(key), &v, 0, 0);
  }
  CHECK(rh_dict_open("other", 2) == c); /* a smaller bound evicts down to it */
  rh_dict_get_stats(c, 0, &st);
  CHECK(st.items == 2 && st.max_items == 2 && st.evictions == 3);
  rh_dict_close_all();
  CHECK(rh_dict_open("cache", 0) != NULL);
  rh_dict_close_all();
}

int main(void) {
  test_types();
  test_add_incr();
  test_ttl();
  test_lru();
  test_delete_keys_stats();
  test_binary_keys();
  test_registry();
  if (failures) {
    fprintf(stderr, "test_dict: %d check(s) failed\n", failures);
    return 1;
  }
  printf("test_dict: ok\n");
  return 0;
}
