#include "http/head.h"
#include <stdint.h>
#include <string.h>
#include "http/server.h"

/* Byte classes, by table: these run over every byte of every head the proxy forwards. A constant
 * table (no first-use check per call); spec: TCHAR the RFC 9110 tchars, VCHAR_OR_OBS 0x20-0x7e,
 * HTAB and 0x80-0xff, TARGET 0x21-0x7e but '#'. */
enum { TCHAR = 1, VCHAR_OR_OBS = 2, TARGET = 4 };
#define V VCHAR_OR_OBS
#define VT (VCHAR_OR_OBS | TARGET)
#define TV (TCHAR | VCHAR_OR_OBS)
#define A (TCHAR | VCHAR_OR_OBS | TARGET)
#define V16 V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V
static const unsigned char klass[256] = {
  0, 0, 0, 0, 0, 0, 0, 0, 0, V, 0, 0, 0, 0, 0, 0,         /* 0x00: HTAB only */
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,         /* 0x10 */
  V, A, VT, TV, A, A, A, A, VT, VT, A, A, VT, A, A, VT,   /* 0x20: SP ! " # $ % & ' ( ) * + , - . / */
  A, A, A, A, A, A, A, A, A, A, VT, VT, VT, VT, VT, VT,   /* 0x30: 0-9 : ; < = > ? */
  VT, A, A, A, A, A, A, A, A, A, A, A, A, A, A, A,        /* 0x40: @ A-O */
  A, A, A, A, A, A, A, A, A, A, A, VT, VT, VT, A, A,      /* 0x50: P-Z [ \ ] ^ _ */
  A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, A,         /* 0x60: ` a-o */
  A, A, A, A, A, A, A, A, A, A, A, VT, A, VT, A, 0,       /* 0x70: p-z { | } ~ DEL */
  V16, V16, V16, V16, V16, V16, V16, V16,                 /* 0x80-0xff: obs-text */
};
#undef V
#undef VT
#undef TV
#undef A
#undef V16

/* Eight bytes a test: one lookup a byte and no branch but the loop's and the verdict's. */
static int all_of(const char *s, size_t n, unsigned char want) {
  const unsigned char *p = (const unsigned char *)s, *end = p + n;
  for (; end - p >= 8; p += 8)
    if (!(klass[p[0]] & klass[p[1]] & klass[p[2]] & klass[p[3]] & klass[p[4]] & klass[p[5]] & klass[p[6]] &
          klass[p[7]] & want))
      return 0;
  unsigned char all = want;
  for (; p < end; p++) all &= klass[*p];
  return all == want;
}

int rh_http_is_token(const char *s, size_t n) { return n > 0 && all_of(s, n, TCHAR); }

/* Eight bytes at a time: a word with no control byte (< 0x20) and no DEL is all field-value
 * bytes; any other word (HTAB, or a bad byte) goes through the table. */
static int word_is_field_value(const char *s) {
  const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
  uint64_t w, del;
  memcpy(&w, s, 8);
  del = w ^ (ones * 0x7f);
  if (!((((w - ones * 0x20) & ~w) | ((del - ones) & ~del)) & highs)) return 1;
  return all_of(s, 8, VCHAR_OR_OBS);
}

/* The tail of a value of 8 bytes or more is its last word, overlapping the one before. */
int rh_http_is_field_value(const char *s, size_t n) {
  if (n < 8) return all_of(s, n, VCHAR_OR_OBS);
  for (size_t i = 0; i + 8 < n; i += 8)
    if (!word_is_field_value(s + i)) return 0;
  return word_is_field_value(s + n - 8);
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
