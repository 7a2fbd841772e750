/* Unit tests for core/http/collect.c: header fields come out whole and in order however llhttp's
 * input is split (names and values handed over in pieces), an empty value stays a field, and
 * rh_collect_into moves the next message's fields to another list, and interim (1xx) responses
 * are skipped. */
#include <stdio.h>
#include <string.h>

#include "http/collect.h"
#include "check.h"

static const char response[] =
  "HTTP/1.1 200 OK\r\n"
  "Content-Type: text/plain\r\n"
  "X-Long-Header-Name: a value, with commas\r\n"
  "Empty:\r\n"
  "set-cookie: a=1\r\n"
  "Set-Cookie: b=2\r\n"
  "Content-Length: 2\r\n"
  "\r\n"
  "hi";

static const llhttp_settings_t settings = {
  .on_header_field = rh_collect_on_field,
  .on_header_field_complete = rh_collect_on_field_complete,
  .on_header_value = rh_collect_on_value,
};

static int field_is(const rh_headers *h, size_t i, const char *name, const char *value) {
  if (i >= h->n) return 0;
  const rh_header *f = &h->items[i];
  return f->name_len == strlen(name) && memcmp(f->name, name, f->name_len) == 0 && f->name[f->name_len] == 0 &&
         f->value_len == strlen(value) && memcmp(f->value, value, f->value_len) == 0 && f->value[f->value_len] == 0;
}

static int all_fields(const rh_headers *h) {
  return h->n == 6 && field_is(h, 0, "Content-Type", "text/plain") &&
         field_is(h, 1, "X-Long-Header-Name", "a value, with commas") && field_is(h, 2, "Empty", "") &&
         field_is(h, 3, "set-cookie", "a=1") && field_is(h, 4, "Set-Cookie", "b=2") &&
         field_is(h, 5, "Content-Length", "2");
}

/* The response in pieces of `step` bytes. */
static void test_split(size_t step) {
  rh_headers h = RH_HEADERS_INIT;
  rh_collect c;
  int owner;
  rh_collect_init(&c, HTTP_RESPONSE, &settings, &owner, &h);
  CHECK(c.llhttp.data == &owner);
  size_t len = sizeof response - 1;
  for (size_t off = 0; off < len; off += step) {
    size_t n = len - off < step ? len - off : step;
    CHECK(llhttp_execute(&c.llhttp, response + off, n) == HPE_OK);
  }
  CHECK(all_fields(&h));
  rh_headers_free(&h);
}

/* Two messages on one parser (a keep-alive connection): the second's fields go elsewhere. */
static void test_into(void) {
  rh_headers first = RH_HEADERS_INIT, second = RH_HEADERS_INIT;
  rh_collect c;
  rh_collect_init(&c, HTTP_RESPONSE, &settings, NULL, &first);
  CHECK(llhttp_execute(&c.llhttp, response, sizeof response - 1) == HPE_OK);
  rh_collect_into(&c, &second);
  CHECK(llhttp_execute(&c.llhttp, response, sizeof response - 1) == HPE_OK);
  CHECK(all_fields(&first));
  CHECK(all_fields(&second));
  rh_headers_free(&first);
  rh_headers_free(&second);
}

/* 1xx heads other than 101 are skipped: their fields dropped, the final response's kept. */
static int finals, heads_seen;
static int interim_head(llhttp_t *p) {
  heads_seen++;
  rh_collect_interim_head((rh_collect *)p);
  return 0;
}
static int final_message(llhttp_t *p) {
  if (rh_collect_final_message((rh_collect *)p)) finals++;
  return 0;
}

static void test_interim(void) {
  static const llhttp_settings_t s = {
    .on_header_field = rh_collect_on_field,
    .on_header_field_complete = rh_collect_on_field_complete,
    .on_header_value = rh_collect_on_value,
    .on_headers_complete = interim_head,
    .on_message_complete = final_message,
  };
  static const char twice[] = "HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
                              "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n";
  rh_headers h = RH_HEADERS_INIT;
  rh_collect c;
  finals = heads_seen = 0;
  rh_collect_init(&c, HTTP_RESPONSE, &s, NULL, &h);
  CHECK(llhttp_execute(&c.llhttp, twice, sizeof twice - 1) == HPE_OK);
  CHECK(llhttp_execute(&c.llhttp, response, sizeof response - 1) == HPE_OK);
  CHECK(heads_seen == 3 && finals == 1);
  CHECK(all_fields(&h)); /* X-Interim and Link are gone */
  rh_headers_free(&h);

  /* 101 is a final head (the connection switches), not one to skip */
  static const char switching[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
  rh_collect_init(&c, HTTP_RESPONSE, &s, NULL, &h);
  llhttp_execute(&c.llhttp, switching, sizeof switching - 1);
  CHECK(c.interim == 0 && h.n == 1);
  rh_headers_free(&h);
}

/* A response's fields stop at RH_COLLECT_MAX_RESPONSE_HEAD (a server that never ends its head),
 * in however many pieces they come; a request's are not limited here (the server's 431 is). */
static size_t feed_fields(llhttp_type_t type, const char *first_line, int *over) {
  rh_headers h = RH_HEADERS_INIT;
  rh_collect c;
  rh_collect_init(&c, type, &settings, NULL, &h);
  llhttp_errno_t e = llhttp_execute(&c.llhttp, first_line, strlen(first_line));
  static const char field[] = "X-Filler: 0123456789012345678901234567890123456789012345678901234\r\n";
  size_t sent = 0;
  for (int i = 0; i < 2000 && e == HPE_OK; i++, sent += sizeof field - 1)
    e = llhttp_execute(&c.llhttp, field, sizeof field - 1);
  *over = rh_collect_over(&c);
  CHECK(*over ? e == HPE_USER : e == HPE_OK);
  rh_headers_free(&h);
  return sent;
}

static void test_limit(void) {
  test_name = "limit";
  int over;
  size_t sent = feed_fields(HTTP_RESPONSE, "HTTP/1.1 200 OK\r\n", &over);
  CHECK(over);
  CHECK(sent < RH_COLLECT_MAX_RESPONSE_HEAD + RH_COLLECT_MAX_RESPONSE_HEAD / 8); /* held counts names and values, not ": " and CRLF */
  feed_fields(HTTP_REQUEST, "GET / HTTP/1.1\r\n", &over);
  CHECK(!over);
}

int main(void) {
  for (size_t step = 1; step <= sizeof response; step++) test_split(step);
  test_limit();
  test_into();
  test_interim();
  if (failures) {
    fprintf(stderr, "test_collect: %d check(s) failed\n", failures);
    return 1;
  }
  printf("test_collect: ok\n");
  return 0;
}
