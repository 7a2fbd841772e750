/* Unit tests for core/http/headers.c: add/find (case-insensitive), repeated fields in order with
 * the `from` iterator, count, remove, append_value/append_name, has_token, clear/free. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/headers.h"
#include "check.h"



#define S(s) (s), strlen(s)

static void add(rh_headers *h, const char *name, const char *value) {
  rh_headers_add(h, S(name), S(value));
}

static int value_is(const rh_header *f, const char *v) {
  return f && f->value_len == strlen(v) && memcmp(f->value, v, f->value_len) == 0 &&
         f->value[f->value_len] == 0;
}

static int name_is(const rh_header *f, const char *n) {
  return f && f->name_len == strlen(n) && memcmp(f->name, n, f->name_len) == 0 &&
         f->name[f->name_len] == 0;
}

static void test_init(void) {
  rh_headers h = RH_HEADERS_INIT;
  CHECK(h.n == 0 && h.items == NULL);
  CHECK(rh_headers_find(&h, "Host", NULL) == NULL);
  CHECK(rh_headers_count(&h, "Host") == 0);
  CHECK(rh_headers_remove(&h, "Host") == 0);
  CHECK(rh_headers_has_token(&h, "Connection", "close") == 0);
  rh_headers_append_value(&h, S("x")); /* nothing to append to: a no-op */
  rh_headers_append_name(&h, S("x"));
  CHECK(h.n == 0);
  rh_headers_free(&h);

  rh_headers h2;
  memset(&h2, 0x5A, sizeof h2);
  rh_headers_init(&h2);
  CHECK(h2.n == 0 && h2.cap == 0 && h2.items == NULL);
  rh_headers_free(&h2);
  rh_headers_free(&h2); /* free leaves it re-initialised: freeing again is safe */
}

static void test_add_find(void) {
  rh_headers h = RH_HEADERS_INIT;
  add(&h, "Host", "example.com");
  add(&h, "Content-Type", "text/plain");
  add(&h, "X-Empty", "");
  CHECK(h.n == 3);

  const rh_header *f = rh_headers_find(&h, "host", NULL);
  CHECK(name_is(f, "Host")); /* the name keeps its spelling */
  CHECK(value_is(f, "example.com"));
  CHECK(value_is(rh_headers_find(&h, "HOST", NULL), "example.com"));
  CHECK(value_is(rh_headers_find(&h, "content-type", NULL), "text/plain"));
  CHECK(value_is(rh_headers_find(&h, "CoNtEnT-tYpE", NULL), "text/plain"));
  f = rh_headers_find(&h, "x-empty", NULL);
  CHECK(f != NULL && value_is(f, ""));
  CHECK(rh_headers_find(&h, "Content", NULL) == NULL);     /* no prefix match */
  CHECK(rh_headers_find(&h, "Content-Type2", NULL) == NULL);
  CHECK(rh_headers_find(&h, "Hos", NULL) == NULL);
  CHECK(rh_headers_find(&h, "", NULL) == NULL);

  CHECK(rh_header_name_eq(&h.items[0], "HoSt"));
  CHECK(!rh_header_name_eq(&h.items[0], "Hosts"));
  CHECK(!rh_header_name_eq(&h.items[0], "Hos"));

  /* the list copies: changing the caller's buffers changes nothing */
  char name[] = "X-Copy", value[] = "original";
  rh_headers_add(&h, name, strlen(name), value, strlen(value));
  memset(name, 'z', strlen(name));
  memset(value, 'z', strlen(value));
  CHECK(value_is(rh_headers_find(&h, "x-copy", NULL), "original"));

  /* names and values given by length, not NUL-terminated, are copied and terminated */
  rh_headers_add(&h, "X-LenXXXX", 5, "abcdef", 3);
  f = rh_headers_find(&h, "x-len", NULL);
  CHECK(name_is(f, "X-Len"));
  CHECK(value_is(f, "abc"));

  /* values may hold any bytes, including NUL */
  rh_headers_add(&h, S("X-Bin"), "a\0b", 3);
  f = rh_headers_find(&h, "X-Bin", NULL);
  CHECK(f && f->value_len == 3 && memcmp(f->value, "a\0b", 3) == 0);

  /* growth past the initial capacity keeps everything */
  char n[32], v[32];
  for (int i = 0; i < 100; i++) {
    snprintf(n, sizeof n, "X-H%d", i);
    snprintf(v, sizeof v, "v%d", i);
    add(&h, n, v);
  }
  for (int i = 0; i < 100; i++) {
    snprintf(n, sizeof n, "x-h%d", i);
    snprintf(v, sizeof v, "v%d", i);
    CHECK(value_is(rh_headers_find(&h, n, NULL), v));
  }
  CHECK(value_is(rh_headers_find(&h, "host", NULL), "example.com"));
  rh_headers_free(&h);
  CHECK(h.n == 0 && h.items == NULL);
}

static void test_repeated(void) {
  rh_headers h = RH_HEADERS_INIT;
  add(&h, "Set-Cookie", "a=1");
  add(&h, "Host", "h");
  add(&h, "set-cookie", "b=2");
  add(&h, "SET-COOKIE", "c=3");
  add(&h, "Via", "1.1 x");

  CHECK(rh_headers_count(&h, "Set-Cookie") == 3);
  CHECK(rh_headers_count(&h, "set-cookie") == 3);
  CHECK(rh_headers_count(&h, "host") == 1);
  CHECK(rh_headers_count(&h, "Missing") == 0);

  /* find without `from` gives the first */
  CHECK(value_is(rh_headers_find(&h, "set-cookie", NULL), "a=1"));

  size_t from = 0;
  const rh_header *f = rh_headers_find(&h, "Set-Cookie", &from);
  CHECK(value_is(f, "a=1"));
  CHECK(from == 1);
  f = rh_headers_find(&h, "Set-Cookie", &from);
  CHECK(value_is(f, "b=2"));
  CHECK(from == 3);
  f = rh_headers_find(&h, "Set-Cookie", &from);
  CHECK(value_is(f, "c=3"));
  CHECK(from == 4);
  f = rh_headers_find(&h, "Set-Cookie", &from);
  CHECK(f == NULL);
  CHECK(from == h.n);
  CHECK(rh_headers_find(&h, "Set-Cookie", &from) == NULL); /* stays exhausted */

  /* the usual loop collects them all, in order */
  const char *want[] = { "a=1", "b=2", "c=3" };
  size_t k = 0;
  from = 0;
  while ((f = rh_headers_find(&h, "set-cookie", &from))) {
    CHECK(k < 3 && value_is(f, want[k]));
    k++;
  }
  CHECK(k == 3);

  /* starting further on skips the earlier ones */
  from = 2;
  CHECK(value_is(rh_headers_find(&h, "set-cookie", &from), "b=2"));
  from = 100;
  CHECK(rh_headers_find(&h, "set-cookie", &from) == NULL);
  rh_headers_free(&h);
}

static void test_remove(void) {
  rh_headers h = RH_HEADERS_INIT;
  add(&h, "A", "1");
  add(&h, "X-Drop", "d1");
  add(&h, "B", "2");
  add(&h, "x-drop", "d2");
  add(&h, "C", "3");
  add(&h, "X-DROP", "d3");

  CHECK(rh_headers_remove(&h, "X-Drop") == 3);
  CHECK(h.n == 3);
  CHECK(rh_headers_count(&h, "x-drop") == 0);
  CHECK(rh_headers_find(&h, "x-drop", NULL) == NULL);
  CHECK(name_is(&h.items[0], "A") && value_is(&h.items[0], "1"));
  CHECK(name_is(&h.items[1], "B") && value_is(&h.items[1], "2"));
  CHECK(name_is(&h.items[2], "C") && value_is(&h.items[2], "3"));

  CHECK(rh_headers_remove(&h, "x-drop") == 0);
  CHECK(rh_headers_remove(&h, "nope") == 0);
  CHECK(h.n == 3);

  CHECK(rh_headers_remove(&h, "a") == 1);
  CHECK(h.n == 2);
  CHECK(name_is(&h.items[0], "B") && name_is(&h.items[1], "C"));

  /* adding after a remove */
  add(&h, "D", "4");
  CHECK(h.n == 3 && name_is(&h.items[2], "D"));

  CHECK(rh_headers_remove(&h, "b") == 1);
  CHECK(rh_headers_remove(&h, "c") == 1);
  CHECK(rh_headers_remove(&h, "d") == 1);
  CHECK(h.n == 0);
  rh_headers_free(&h);
}

static void test_append(void) {
  rh_headers h = RH_HEADERS_INIT;
  /* llhttp style: a name in pieces, then a value in pieces */
  rh_headers_add(&h, S("Con"), "", 0);
  rh_headers_append_name(&h, S("tent-"));
  rh_headers_append_name(&h, S("Length"));
  rh_headers_append_value(&h, S("12"));
  rh_headers_append_value(&h, S("34"));
  rh_headers_append_value(&h, "", 0);
  const rh_header *f = rh_headers_find(&h, "content-length", NULL);
  CHECK(name_is(f, "Content-Length"));
  CHECK(value_is(f, "1234"));

  /* appends go to the last field only */
  add(&h, "X-A", "first");
  add(&h, "X-B", "sec");
  rh_headers_append_value(&h, S("ond"));
  CHECK(value_is(rh_headers_find(&h, "x-a", NULL), "first"));
  CHECK(value_is(rh_headers_find(&h, "x-b", NULL), "second"));
  rh_headers_append_name(&h, S("C"));
  CHECK(rh_headers_find(&h, "x-b", NULL) == NULL);
  CHECK(value_is(rh_headers_find(&h, "x-bc", NULL), "second"));
  CHECK(value_is(rh_headers_find(&h, "content-length", NULL), "1234"));

  /* a long value built from many small pieces */
  add(&h, "X-Long", "");
  for (int i = 0; i < 1000; i++) rh_headers_append_value(&h, "ab", 2);
  f = rh_headers_find(&h, "x-long", NULL);
  CHECK(f && f->value_len == 2000 && f->value[2000] == 0);
  CHECK(f && memcmp(f->value, "abab", 4) == 0 && memcmp(f->value + 1996, "abab", 4) == 0);
  rh_headers_free(&h);
}

static void test_has_token(void) {
  rh_headers h = RH_HEADERS_INIT;
  add(&h, "Connection", "keep-alive, Upgrade");
  CHECK(rh_headers_has_token(&h, "connection", "upgrade"));
  CHECK(rh_headers_has_token(&h, "Connection", "Upgrade"));
  CHECK(rh_headers_has_token(&h, "CONNECTION", "keep-alive"));
  CHECK(rh_headers_has_token(&h, "connection", "KEEP-ALIVE"));
  CHECK(!rh_headers_has_token(&h, "connection", "close"));
  CHECK(!rh_headers_has_token(&h, "connection", "upgrade2"));
  CHECK(!rh_headers_has_token(&h, "connection", "upgrad"));
  CHECK(!rh_headers_has_token(&h, "connection", "keep"));
  CHECK(!rh_headers_has_token(&h, "connection", "alive"));
  CHECK(!rh_headers_has_token(&h, "connection", "keep-alive, Upgrade"));
  CHECK(!rh_headers_has_token(&h, "upgrade", "upgrade")); /* another header name */
  rh_headers_free(&h);

  rh_headers_init(&h);
  add(&h, "Connection", "upgrade2");
  CHECK(!rh_headers_has_token(&h, "connection", "upgrade"));
  rh_headers_free(&h);

  rh_headers_init(&h);
  add(&h, "Connection", "xupgrade, upgradex");
  CHECK(!rh_headers_has_token(&h, "connection", "upgrade"));
  rh_headers_free(&h);

  /* whitespace (spaces and tabs) and empty list elements around tokens */
  rh_headers_init(&h);
  add(&h, "Transfer-Encoding", " ,\tgzip ,, \t chunked\t ,");
  CHECK(rh_headers_has_token(&h, "transfer-encoding", "gzip"));
  CHECK(rh_headers_has_token(&h, "transfer-encoding", "chunked"));
  CHECK(!rh_headers_has_token(&h, "transfer-encoding", "chunk"));
  CHECK(!rh_headers_has_token(&h, "transfer-encoding", "gzip chunked"));
  rh_headers_free(&h);

  /* a single token, and one in a later repeat of the field */
  rh_headers_init(&h);
  add(&h, "Connection", "close");
  CHECK(rh_headers_has_token(&h, "connection", "close"));
  add(&h, "Host", "x");
  add(&h, "connection", "TE, Upgrade");
  CHECK(rh_headers_has_token(&h, "connection", "upgrade"));
  CHECK(rh_headers_has_token(&h, "connection", "te"));
  CHECK(!rh_headers_has_token(&h, "connection", "t"));
  rh_headers_free(&h);

  /* an empty value has no tokens */
  rh_headers_init(&h);
  add(&h, "Connection", "");
  CHECK(!rh_headers_has_token(&h, "connection", "close"));
  rh_headers_free(&h);

  /* a value that is only separators */
  rh_headers_init(&h);
  add(&h, "Connection", " , ,\t");
  CHECK(!rh_headers_has_token(&h, "connection", "close"));
  rh_headers_free(&h);
}

static void test_clear(void) {
  rh_headers h = RH_HEADERS_INIT;
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 40; i++) add(&h, "X-Round", "value");
    rh_headers_append_value(&h, S("-more"));
    CHECK(h.n == 40);
    CHECK(rh_headers_count(&h, "x-round") == 40);
    size_t cap = h.cap;
    rh_headers_clear(&h);
    CHECK(h.n == 0);
    CHECK(h.cap == cap); /* clear keeps the array for reuse */
    CHECK(rh_headers_find(&h, "x-round", NULL) == NULL);
    CHECK(rh_headers_count(&h, "x-round") == 0);
  }
  add(&h, "After", "clear");
  CHECK(value_is(rh_headers_find(&h, "after", NULL), "clear"));
  rh_headers_free(&h);
  CHECK(h.n == 0 && h.cap == 0 && h.items == NULL);
  /* usable again after free */
  add(&h, "Again", "yes");
  CHECK(value_is(rh_headers_find(&h, "again", NULL), "yes"));
  rh_headers_free(&h);
}

/* The arena: fields that outgrow a block, a value arriving in many pieces while other fields
 * sit before it, names growing after an empty value, set_value, and clear keeping the list
 * usable; every earlier field keeps its bytes. */
static void test_arena(void) {
  test_name = "arena";
  rh_headers h = RH_HEADERS_INIT;
  char big[5000];
  memset(big, 'b', sizeof big - 1);
  big[sizeof big - 1] = 0;
  for (int i = 0; i < 40; i++) {
    char name[16];
    snprintf(name, sizeof name, "X-F%d", i);
    add(&h, name, i % 7 ? "small" : big);
  }
  rh_headers_add(&h, S("X-Pieces"), "", 0);
  char want[3001];
  for (int i = 0; i < 3000; i++) {
    want[i] = (char)('a' + i % 26);
    rh_headers_append_value(&h, &want[i], 1);
  }
  want[3000] = 0;
  rh_headers_add(&h, S("X-N"), "", 0);
  rh_headers_append_name(&h, S("ame"));
  rh_headers_append_value(&h, S("v"));
  rh_headers_append_value(&h, S("w"));
  CHECK(h.n == 42);
  for (int i = 0; i < 40; i++) {
    char name[16];
    snprintf(name, sizeof name, "x-f%d", i);
    CHECK(value_is(rh_headers_find(&h, name, NULL), i % 7 ? "small" : big));
  }
  CHECK(value_is(rh_headers_find(&h, "x-pieces", NULL), want));
  CHECK(name_is(&h.items[41], "X-Name") && value_is(&h.items[41], "vw"));
  size_t kept = rh_headers_kept(&h); /* the newest block, the one clear keeps: past the big values */
  CHECK(kept >= 5000);
  rh_headers_set_value(&h, &h.items[0], S("replaced"));
  CHECK(value_is(rh_headers_find(&h, "x-f0", NULL), "replaced"));
  CHECK(value_is(rh_headers_find(&h, "x-f1", NULL), "small"));
  rh_headers_clear(&h);
  CHECK(rh_headers_kept(&h) == kept);
  CHECK(h.n == 0 && rh_headers_find(&h, "x-f1", NULL) == NULL);
  add(&h, "After", "clear");
  rh_headers_append_value(&h, S("ed"));
  CHECK(value_is(rh_headers_find(&h, "after", NULL), "cleared"));
  rh_headers_free(&h);
  CHECK(rh_headers_kept(&h) == 0);
}

/* has_other_token: the proxy scans fields for Connection's tokens only when one names a field
 * other than Keep-Alive. */
static void test_other_token(void) {
  test_name = "other token";
  rh_headers h = RH_HEADERS_INIT;
  CHECK(!rh_headers_has_other_token(&h, "Connection", "keep-alive"));
  add(&h, "Connection", " Keep-Alive ,, ");
  CHECK(!rh_headers_has_other_token(&h, "connection", "keep-alive"));
  add(&h, "Connection", "keep-alive,\tX-Foo");
  CHECK(rh_headers_has_other_token(&h, "connection", "keep-alive"));
  rh_headers_clear(&h);
  add(&h, "Connection", "close");
  CHECK(rh_headers_has_other_token(&h, "connection", "keep-alive"));
  CHECK(!rh_headers_has_other_token(&h, "connection", "close"));
  rh_headers_free(&h);
}

/* filter: every field is judged while the list is whole (a keep that looks at the Connection
 * field still finds it after earlier fields were dropped), order is kept, and a list longer than
 * the stack's flags works too. */
static int not_named_by_connection(const rh_headers *h, const rh_header *f, void *ud) {
  (void)ud;
  char name[64];
  snprintf(name, sizeof name, "%.*s", (int)f->name_len, f->name);
  return !rh_header_name_eq(f, "connection") && !rh_headers_has_token(h, "connection", name);
}

static void test_filter(void) {
  test_name = "filter";
  rh_headers h = RH_HEADERS_INIT;
  add(&h, "X-A", "1");
  add(&h, "Connection", "x-b, x-d");
  add(&h, "X-B", "2");
  add(&h, "X-C", "3");
  add(&h, "X-D", "4");
  rh_headers_filter(&h, not_named_by_connection, NULL);
  CHECK(h.n == 2);
  CHECK(name_is(&h.items[0], "X-A") && name_is(&h.items[1], "X-C"));
  rh_headers_clear(&h);
  char name[16];
  for (int i = 0; i < 100; i++) {
    snprintf(name, sizeof name, "X-%d", i);
    add(&h, name, i % 3 ? "keep" : "drop");
  }
  add(&h, "Connection", "x-1");
  rh_headers_filter(&h, not_named_by_connection, NULL);
  CHECK(h.n == 99); /* all but X-1 and Connection */
  CHECK(name_is(&h.items[0], "X-0") && name_is(&h.items[1], "X-2") && name_is(&h.items[98], "X-99"));
  rh_headers_free(&h);
}

/* Every hop-by-hop name in any case, and names of the same lengths that are not. */
static void test_hop_by_hop(void) {
  test_name = "hop by hop";
  static const char *const hop[] = { "Connection", "KEEP-ALIVE", "proxy-authenticate", "Proxy-Authorization",
                                     "proxy-connection", "TE", "Trailer", "transfer-encoding", "upgrade" };
  static const char *const end[] = { "tx", "trailex", "upgradx", "content", "user-agent", "keep-alivx",
                                     "proxy-connectiox", "transfer-encodinx", "proxy-authenticatx",
                                     "proxy-authorizatiox", "host", "" };
  rh_headers h = RH_HEADERS_INIT;
  for (size_t i = 0; i < sizeof hop / sizeof *hop; i++) add(&h, hop[i], "v");
  for (size_t i = 0; i < sizeof end / sizeof *end; i++) add(&h, end[i], "v");
  size_t nhop = sizeof hop / sizeof *hop;
  for (size_t i = 0; i < h.n; i++) CHECK(rh_header_hop_by_hop(&h.items[i]) == (i < nhop));
  rh_headers_free(&h);
}

int main(void) {
  test_init();
  test_add_find();
  test_repeated();
  test_remove();
  test_append();
  test_has_token();
  test_clear();
  test_arena();
  test_other_token();
  test_filter();
  test_hop_by_hop();
  if (failures) {
    fprintf(stderr, "test_headers: %d check(s) failed\n", failures);
    return 1;
  }
  printf("test_headers: ok\n");
  return 0;
}
