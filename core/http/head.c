#include "http/head.h"
#include <stdint.h>
#include <string.h>
#include "http/server.h"

/* Byte classes, by table: these run over every byte of every head the proxy forwards. */
enum { TCHAR = 1, VCHAR_OR_OBS = 2, TARGET = 4 };

static unsigned char klass[256];

static void init_classes(void) {
  for (int c = 0x21; c < 0x7f; c++) klass[c] |= VCHAR_OR_OBS | TARGET;
  for (int c = 0x80; c < 0x100; c++) klass[c] |= VCHAR_OR_OBS;
  klass[' '] |= VCHAR_OR_OBS;
  klass['\t'] |= VCHAR_OR_OBS;
  klass['#'] &= (unsigned char)~TARGET;
  for (int c = '0'; c <= '9'; c++) klass[c] |= TCHAR;
  for (int c = 'a'; c <= 'z'; c++) klass[c] |= TCHAR;
  for (int c = 'A'; c <= 'Z'; c++) klass[c] |= TCHAR;
  for (const char *p = "!#$%&'*+-.^_`|~"; *p; p++) klass[(unsigned char)*p] |= TCHAR;
}

static int all_of(const char *s, size_t n, unsigned char want) {
  if (!klass['a']) init_classes();
  for (size_t i = 0; i < n; i++)
    if (!(klass[(unsigned char)s[i]] & want)) return 0;
  return 1;
}

int rh_http_is_token(const char *s, size_t n) { return n > 0 && all_of(s, n, TCHAR); }

/* Eight bytes at a time: a word with no control byte (< 0x20) and no DEL is all field-value
 * bytes; any other word (HTAB, or a bad byte) goes through the table. */
int rh_http_is_field_value(const char *s, size_t n) {
  const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w, del;
    memcpy(&w, s + i, 8);
    del = w ^ (ones * 0x7f);
    if ((((w - ones * 0x20) & ~w) | ((del - ones) & ~del)) & highs)
      if (!all_of(s + i, 8, VCHAR_OR_OBS)) return 0;
  }
  return all_of(s + i, n - i, VCHAR_OR_OBS);
}

int rh_http_is_target(const char *s, size_t n) {
  if (n == 1 && s[0] == '*') return 1;
  return n > 0 && s[0] == '/' && all_of(s, n, TARGET);
}

const char *rh_head_request_line(rh_buf *b, const char *method, size_t mlen, const char *target,
                                 size_t tlen) {
  if (!rh_http_is_token(method, mlen)) return "invalid method";
  if (!rh_http_is_target(target, tlen)) return "invalid request target";
  rh_buf_reserve(b, mlen + tlen + 12);
  rh_buf_append(b, method, mlen);
  rh_buf_append(b, " ", 1);
  rh_buf_append(b, target, tlen);
  rh_buf_append(b, " HTTP/1.1\r\n", 11);
  return NULL;
}

/* Without printf: it runs for every response. */
const char *rh_head_status_line(rh_buf *b, int status) {
  if (status < 100 || status > 599) return "invalid status code";
  const char *reason = rh_http_reason(status);
  char line[15] = "HTTP/1.1 NNN ";
  line[9] = (char)('0' + status / 100);
  line[10] = (char)('0' + status / 10 % 10);
  line[11] = (char)('0' + status % 10);
  rh_buf_append(b, line, 13);
  rh_buf_puts(b, reason);
  rh_buf_append(b, "\r\n", 2);
  return NULL;
}

static const char *field_error(const char *name, size_t nlen, const char *value, size_t vlen) {
  if (!rh_http_is_token(name, nlen)) return "invalid header name";
  if (!rh_http_is_field_value(value, vlen)) return "invalid header value";
  return NULL;
}

static void write_field(rh_buf *b, const char *name, size_t nlen, const char *value, size_t vlen) {
  rh_buf_reserve(b, nlen + vlen + 4);
  rh_buf_append(b, name, nlen);
  rh_buf_append(b, ": ", 2);
  rh_buf_append(b, value, vlen);
  rh_buf_append(b, "\r\n", 2);
}

const char *rh_head_field(rh_buf *b, const char *name, size_t nlen, const char *value, size_t vlen) {
  const char *err = field_error(name, nlen, value, vlen);
  if (!err) write_field(b, name, nlen, value, vlen);
  return err;
}

const char *rh_head_header(rh_buf *b, const rh_header *f) {
  if (!f->checked) return rh_head_field(b, f->name, f->name_len, f->value, f->value_len);
  write_field(b, f->name, f->name_len, f->value, f->value_len);
  return NULL;
}

const char *rh_head_check(rh_header *f) {
  const char *err = field_error(f->name, f->name_len, f->value, f->value_len);
  f->checked = !err;
  return err;
}

const char *rh_head_fields(rh_buf *b, const rh_headers *h, int (*skip)(const rh_header *f)) {
  for (size_t i = 0; h && i < h->n; i++) {
    const rh_header *f = &h->items[i];
    if (skip && skip(f)) continue;
    const char *err = rh_head_header(b, f);
    if (err) return err;
  }
  return NULL;
}

void rh_head_end(rh_buf *b) { rh_buf_append(b, "\r\n", 2); }

size_t rh_http_u64(char *out, uint64_t v) {
  char num[RH_HTTP_U64_MAX], *p = num + sizeof num;
  do { *--p = (char)('0' + v % 10); v /= 10; } while (v);
  size_t n = (size_t)(num + sizeof num - p);
  memcpy(out, p, n);
  return n;
}
