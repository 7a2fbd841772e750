/* Unit tests for core/http/head.c: the parts of a head are checked as they are written (a CR, LF,
 * NUL or other control byte, a space in a target, an empty or non-token name or method, a status
 * out of range are refused with a message), and what is written is the expected bytes. */
#include <string.h>

#include "http/head.h"
#include "check.h"

static int is(const rh_buf *b, const char *want) {
  return b->len == strlen(want) && memcmp(b->data, want, b->len) == 0;
}

static void test_checks(void) {
  test_name = "checks";
  CHECK(rh_http_is_token("X-Ok_1!#$%&'*+-.^`|~", 20));
  CHECK(!rh_http_is_token("", 0));
  CHECK(!rh_http_is_token("a b", 3));
  CHECK(!rh_http_is_token("a:", 2));
  CHECK(!rh_http_is_token("a\0", 2));
  CHECK(rh_http_is_field_value("", 0));
  CHECK(rh_http_is_field_value("a b\tc \xc3\xa9", 8));
  CHECK(!rh_http_is_field_value("a\r\nSet-Cookie: x", 16));
  CHECK(!rh_http_is_field_value("a\nb", 3));
  CHECK(!rh_http_is_field_value("a\0b", 3));
  CHECK(!rh_http_is_field_value("a\x01", 2));
  CHECK(!rh_http_is_field_value("a\x7f", 2));
  CHECK(rh_http_is_target("/a/b?c=d&e=%20", 14));
  CHECK(rh_http_is_target("*", 1));
  CHECK(!rh_http_is_target("", 0));
  CHECK(!rh_http_is_target("?x=1", 4));
  CHECK(!rh_http_is_target("@127.0.0.1:1/x", 14));
  CHECK(!rh_http_is_target("/a b", 4));
  CHECK(!rh_http_is_target("/a\r\nGET /b", 10));
  CHECK(!rh_http_is_target("/a#f", 4));
  CHECK(!rh_http_is_target("/\xc3\xa9", 3));
}

static void test_writers(void) {
  test_name = "writers";
  rh_buf b = RH_BUF_INIT;
  CHECK(!rh_head_request_line(&b, "GET", 3, "/x?y", 4));
  CHECK(!rh_head_field(&b, "Host", 4, "h", 1));
  rh_headers h = RH_HEADERS_INIT;
  rh_headers_add(&h, "A", 1, "1", 1);
  rh_headers_add(&h, "Content-Length", 14, "5", 1);
  CHECK(!rh_head_fields(&b, &h, rh_header_hop_by_hop));
  rh_head_end(&b);
  CHECK(is(&b, "GET /x?y HTTP/1.1\r\nHost: h\r\nA: 1\r\nContent-Length: 5\r\n\r\n"));
  b.len = 0;
  CHECK(!rh_head_status_line(&b, 404));
  CHECK(is(&b, "HTTP/1.1 404 Not Found\r\n"));
  rh_headers_add(&h, "Bad", 3, "x\r\ny: z", 7);
  b.len = 0;
  CHECK(rh_head_fields(&b, &h, NULL) != NULL);
  CHECK(rh_head_status_line(&b, 99) != NULL);
  CHECK(rh_head_status_line(&b, 600) != NULL);
  CHECK(rh_head_request_line(&b, "G T", 3, "/", 1) != NULL);
  CHECK(rh_head_request_line(&b, "GET", 3, "/ HTTP/1.1\r\nX: y", 16) != NULL);
  rh_headers_free(&h);
  rh_buf_free(&b);
}

/* The word-at-a-time value check against the byte rule, for every byte at every place of a
 * value longer than a word (the bytes around it allowed ones: space, 'a', 0x80, 0xff, HTAB). */
static void test_field_value_every_byte(void) {
  test_name = "field value, every byte";
  const unsigned char fill[] = { ' ', 'a', 0x80, 0xff, '\t' };
  for (size_t f = 0; f < sizeof fill; f++)
    for (size_t len = 1; len <= 19; len++)
      for (size_t at = 0; at < len; at++)
        for (int b = 0; b < 256; b++) {
          char v[19];
          memset(v, fill[f], sizeof v);
          v[at] = (char)b;
          int want = b == '\t' || (b >= 0x20 && b != 0x7f);
          if (rh_http_is_field_value(v, len) != want) {
            CHECK(!"is_field_value disagrees with the byte rule");
            fprintf(stderr, "  fill %#x len %zu at %zu byte %#x\n", fill[f], len, at, b);
            return;
          }
        }
}

/* The byte rules of tokens and targets, written out apart from head.c's table. */
static int tchar(int b) {
  return (b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') ||
         (b && strchr("!#$%&'*+-.^_`|~", b));
}
static int target_byte(int b) { return b > 0x20 && b < 0x7f && b != '#'; }

/* The table-driven token and target checks against the rules, for every byte at every place of
 * names and targets shorter and longer than the eight bytes a test. */
static void test_token_target_every_byte(void) {
  test_name = "token and target, every byte";
  for (size_t len = 1; len <= 19; len++)
    for (size_t at = 0; at < len; at++)
      for (int b = 0; b < 256; b++) {
        char v[19];
        memset(v, 'a', sizeof v);
        v[0] = '/';
        v[at] = (char)b;
        int want_target = (len == 1 && v[0] == '*') || (v[0] == '/' && target_byte(b));
        int want_token = at == 0 && tchar(b); /* the '/' in front is no tchar */
        if (rh_http_is_target(v, len) != want_target || rh_http_is_token(v, len) != want_token) {
          CHECK(!"is_token or is_target disagrees with the byte rule");
          fprintf(stderr, "  len %zu at %zu byte %#x\n", len, at, b);
          return;
        }
      }
}

/* The checked mark: a parsed field that passed rh_head_check is written without a second look,
 * and every way a field changes afterwards (a script's new value, a piece appended, a new field)
 * takes the mark away, so the writer checks those bytes again. */
static void test_checked_mark(void) {
  test_name = "checked mark";
  rh_headers h = RH_HEADERS_INIT, copy = RH_HEADERS_INIT;
  rh_buf b = RH_BUF_INIT;
  rh_headers_add(&h, "A", 1, "ok", 2);
  CHECK(!h.items[0].checked);
  CHECK(!rh_head_check(&h.items[0]) && h.items[0].checked);
  rh_headers_add(&h, "B", 1, "x\r\ny: z", 7);
  CHECK(rh_head_check(&h.items[1]) && !h.items[1].checked);
  rh_headers_add(&h, "C d", 3, "v", 1);
  CHECK(rh_head_check(&h.items[2]) && !h.items[2].checked);
  h.n = 1;
  CHECK(!rh_head_fields(&b, &h, NULL) && is(&b, "A: ok\r\n"));
  rh_headers_add_field(&copy, &h.items[0]); /* a copy keeps the mark */
  CHECK(copy.items[0].checked);
  rh_headers_set_value(&copy, &copy.items[0], "a\r\nInjected: 1", 15); /* as a hook sets it */
  CHECK(!copy.items[0].checked);
  b.len = 0;
  CHECK(rh_head_fields(&b, &copy, NULL) != NULL && b.len == 0);
  rh_headers_clear(&copy);
  rh_headers_add_field(&copy, &h.items[0]);
  rh_headers_append_value(&copy, "\n", 1);
  CHECK(!copy.items[0].checked && rh_head_header(&b, &copy.items[0]) != NULL);
  rh_headers_clear(&copy);
  rh_headers_add_field(&copy, &h.items[0]);
  rh_headers_append_name(&copy, " x", 2);
  CHECK(!copy.items[0].checked && rh_head_header(&b, &copy.items[0]) != NULL);
  CHECK(b.len == 0);
  rh_headers_clear(&copy);
  rh_headers_add(&copy, "V", 1, "a\r\nb", 4);
  rh_headers_add_pair(&copy, &h.items[0], &h.items[0]); /* a checked name and value */
  rh_headers_add_pair(&copy, &h.items[0], &copy.items[0]);
  CHECK(copy.items[1].checked && !copy.items[2].checked);
  CHECK(!rh_head_header(&b, &copy.items[1]) && rh_head_header(&b, &copy.items[2]) != NULL);
  rh_headers_free(&copy);
  rh_headers_free(&h);
  rh_buf_free(&b);
}

static void test_u64(void) {
  test_name = "u64";
  char out[RH_HTTP_U64_MAX];
  CHECK(rh_http_u64(out, 0) == 1 && memcmp(out, "0", 1) == 0);
  CHECK(rh_http_u64(out, 10) == 2 && memcmp(out, "10", 2) == 0);
  CHECK(rh_http_u64(out, UINT64_MAX) == 20 && memcmp(out, "18446744073709551615", 20) == 0);
}

int main(void) {
  test_checks();
  test_field_value_every_byte();
  test_token_target_every_byte();
  test_writers();
  test_checked_mark();
  test_u64();
  if (failures) fprintf(stderr, "%d failure(s)\n", failures);
  return failures ? 1 : 0;
}
