/* fuzz_head: core/http/head.h, the one writer of heads that cross a hop, against hostile parts.
 *
 * Each input is a request (method, target) or a response (status), then header fields, each
 * part given raw by the fuzzer. The parts go to the writers (rh_head_request_line or
 * rh_head_status_line, rh_head_field for each field, rh_head_end). Invariants:
 *  - a writer that refuses a part leaves the buffer as it was before that part;
 *  - whenever every writer accepted, the output parses (llhttp, strict, as the next hop's server
 *    or client would) as exactly one head, ending exactly at the end of the output, with exactly
 *    those parts: the method, the target, the status, and the same fields in the same order,
 *    each value as given less the optional whitespace around it (RFC 9110 5.5: OWS is not part
 *    of a field value, and a reader strips it).
 * Two parts are not given to the parse check: a method llhttp does not know (it reads a fixed
 * list; the server only ever hands over those) and the framing fields Content-Length and
 * Transfer-Encoding, whose values llhttp interprets (every caller writes its own framing).
 *
 * Input layout: byte 0 bit 0 = response; then parts, each one length byte and that many bytes:
 * method and target (request) or a 2-byte status (response), then name, value, name, value… */
#include <llhttp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/collect.h"
#include "http/head.h"
#include "http/headers.h"
#include "buf/buf.h"

#define FUZZ_TARGET "fuzz_head"
#include "check.h"

typedef struct {
  const uint8_t *p;
  size_t n;
} part;

/* The next length-prefixed part; 0 when the input is used up. */
static int next_part(const uint8_t **in, size_t *left, part *out) {
  if (*left == 0) return 0;
  size_t len = (*in)[0];
  if (len > *left - 1) len = *left - 1;
  out->p = *in + 1;
  out->n = len;
  *in += 1 + len;
  *left -= 1 + len;
  return 1;
}

static int known_method(const part *m) {
  static const char *const methods[] = {
#define XX(num, name, string) #string,
    HTTP_METHOD_MAP(XX)
#undef XX
  };
  for (size_t i = 0; i < sizeof methods / sizeof *methods; i++)
    if (strlen(methods[i]) == m->n && memcmp(methods[i], m->p, m->n) == 0) return 1;
  return 0;
}

/* ---- what llhttp reads back ---- */

typedef struct {
  rh_collect col;       /* first: the callbacks get its llhttp_t */
  rh_headers fields;
  rh_buf url;
  int heads;
} readback;

static int rb_url(llhttp_t *p, const char *at, size_t n) {
  rh_buf_append(&((readback *)p)->url, at, n);
  return 0;
}

static int rb_begin(llhttp_t *p) {
  ((readback *)p)->heads++;
  return 0;
}

static int rb_headers_complete(llhttp_t *p) {
  (void)p;
  return HPE_PAUSED; /* the head is all we wrote: stop right at its end */
}

/* A value less the OWS around it (llhttp hands over the trailing OWS, not the leading). */
static const char *trim(const char *v, size_t n, size_t *out) {
  const char *e = v + n;
  while (v < e && (*v == ' ' || *v == '\t')) v++;
  while (e > v && (e[-1] == ' ' || e[-1] == '\t')) e--;
  *out = (size_t)(e - v);
  return v;
}

static void check_head(const rh_buf *out, int response, const part *first, int status,
                       const rh_headers *given) {
  static llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_message_begin = rb_begin;
  s.on_url = rb_url;
  s.on_header_field = rh_collect_on_field;
  s.on_header_value = rh_collect_on_value;
  s.on_header_field_complete = rh_collect_on_field_complete;
  s.on_headers_complete = rb_headers_complete;
  readback rb = { 0 };
  rh_headers_init(&rb.fields);
  rh_collect_init(&rb.col, response ? HTTP_RESPONSE : HTTP_REQUEST, &s, NULL, &rb.fields);
  llhttp_errno_t e = llhttp_execute(&rb.col.llhttp, out->data, out->len);
  if (e != HPE_PAUSED)
    FAIL("the writers' output does not parse: %s at byte %zu of\n%.*s", llhttp_get_error_reason(&rb.col.llhttp),
         (size_t)(llhttp_get_error_pos(&rb.col.llhttp) - out->data), (int)out->len, out->data);
  if (llhttp_get_error_pos(&rb.col.llhttp) != out->data + out->len) FAIL("the head ends before the output does");
  if (rb.heads != 1) FAIL("%d heads in one", rb.heads);
  if (response && rb.col.llhttp.status_code != status) FAIL("status %d read as %d", status, rb.col.llhttp.status_code);
  if (!response) {
    const char *m = llhttp_method_name((llhttp_method_t)rb.col.llhttp.method);
    if (strlen(m) != first[0].n || memcmp(m, first[0].p, first[0].n)) FAIL("method read as %s", m);
    if (rb.url.len != first[1].n || memcmp(rb.url.data, first[1].p, first[1].n)) FAIL("target read differently");
  }
  if (rb.fields.n != given->n) FAIL("%zu fields written, %zu read", given->n, rb.fields.n);
  for (size_t i = 0; i < given->n; i++) {
    const rh_header *a = &given->items[i], *b = &rb.fields.items[i];
    if (a->name_len != b->name_len || memcmp(a->name, b->name, a->name_len)) FAIL("field %zu: name read differently", i);
    size_t an, bn;
    const char *av = trim(a->value, a->value_len, &an), *bv = trim(b->value, b->value_len, &bn);
    if (an != bn || memcmp(av, bv, an))
      FAIL("field %zu: value '%.*s' read as '%.*s'", i, (int)a->value_len, a->value, (int)b->value_len, b->value);
  }
  rh_headers_free(&rb.fields);
  rh_buf_free(&rb.url);
}

/* ---- writing ---- */

/* Calls a writer; a refusal must leave the buffer as it was. 1: accepted. */
#define WRITE(b, call)                                                                             \
  ({                                                                                               \
    size_t before_ = (b)->len;                                                                     \
    const char *err_ = (call);                                                                     \
    if (err_ && (b)->len != before_) FAIL("a refused part (%s) left %zu bytes behind", err_, (b)->len - before_); \
    err_ == NULL;                                                                                  \
  })

static int framing_field(const part *name) {
  return (name->n == 14 && strncasecmp((const char *)name->p, "content-length", 14) == 0) ||
         (name->n == 17 && strncasecmp((const char *)name->p, "transfer-encoding", 17) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  int response = data[0] & 1;
  const uint8_t *in = data + 1;
  size_t left = size - 1;
  part first[2] = { { NULL, 0 }, { NULL, 0 } };
  rh_buf b = RH_BUF_INIT;
  int ok, status = 0, checkable = 1;
  if (response) {
    if (!next_part(&in, &left, &first[0]) || first[0].n < 2) return 0;
    status = first[0].p[0] << 8 | first[0].p[1];
    ok = WRITE(&b, rh_head_status_line(&b, status));
  } else {
    if (!next_part(&in, &left, &first[0]) || !next_part(&in, &left, &first[1])) return 0;
    ok = WRITE(&b, rh_head_request_line(&b, (const char *)first[0].p, first[0].n, (const char *)first[1].p, first[1].n));
    checkable = known_method(&first[0]);
  }
  rh_headers given;
  rh_headers_init(&given);
  part name, value;
  while (ok && next_part(&in, &left, &name) && next_part(&in, &left, &value)) {
    ok = WRITE(&b, rh_head_field(&b, (const char *)name.p, name.n, (const char *)value.p, value.n));
    if (ok) rh_headers_add(&given, (const char *)name.p, name.n, (const char *)value.p, value.n);
    if (framing_field(&name)) checkable = 0;
  }
  if (ok) {
    rh_head_end(&b);
    if (checkable) check_head(&b, response, first, status, &given);
  }
  rh_headers_free(&given);
  rh_buf_free(&b);
  return 0;
}
