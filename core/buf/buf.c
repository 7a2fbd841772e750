#include "buf/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int rh_buf_reserve(rh_buf *b, size_t extra) {
  if (b->len + extra <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra) cap *= 2;
  char *p = realloc(b->data, cap);
  if (!p) abort(); /* out of memory on a buffer is not recoverable here */
  b->data = p;
  b->cap = cap;
  return 0;
}

void rh_buf_append_grow(rh_buf *b, const void *p, size_t n) {
  if (!n) return;
  rh_buf_reserve(b, n);
  memcpy(b->data + b->len, p, n);
  b->len += n;
}

void rh_buf_puts(rh_buf *b, const char *s) { rh_buf_append(b, s, strlen(s)); }

void rh_buf_printf(rh_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n <= 0) return;
  rh_buf_reserve(b, (size_t)n + 1);
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

void rh_buf_consume(rh_buf *b, size_t n) {
  if (n >= b->len) { b->len = 0; return; }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
}

void rh_buf_free(rh_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}
