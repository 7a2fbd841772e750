/* buf: a growable byte buffer. The owner of the struct owns `data` (free with rh_buf_free). */
#ifndef RH_BUF_H
#define RH_BUF_H

#include <stddef.h>
#include <string.h>

typedef struct rh_buf {
  char *data;
  size_t len, cap;
} rh_buf;

#define RH_BUF_INIT { NULL, 0, 0 }

int rh_buf_reserve(rh_buf *b, size_t extra);            /* 0 or -1 (out of memory: aborts) */
void rh_buf_append_grow(rh_buf *b, const void *p, size_t n); /* rh_buf_append's slow path */
/* Inline: a head is written a few bytes at a time, dozens of appends per proxied exchange, and
 * almost all of them fit. */
static inline void rh_buf_append(rh_buf *b, const void *p, size_t n) {
  if (n && n <= b->cap - b->len) {
    memcpy(b->data + b->len, p, n);
    b->len += n;
  } else {
    rh_buf_append_grow(b, p, n);
  }
}
void rh_buf_puts(rh_buf *b, const char *s);
void rh_buf_printf(rh_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void rh_buf_consume(rh_buf *b, size_t n);               /* drops the first n bytes */
void rh_buf_free(rh_buf *b);

#endif
