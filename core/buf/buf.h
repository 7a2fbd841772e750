/* buf: a growable byte buffer. The owner of the struct owns `data` (free with rh_buf_free). */
#ifndef RH_BUF_H
#define RH_BUF_H

#include <stddef.h>

typedef struct rh_buf {
  char *data;
  size_t len, cap;
} rh_buf;

#define RH_BUF_INIT { NULL, 0, 0 }

int rh_buf_reserve(rh_buf *b, size_t extra);            /* 0 or -1 (out of memory: aborts) */
void rh_buf_append(rh_buf *b, const void *p, size_t n);
void rh_buf_puts(rh_buf *b, const char *s);
void rh_buf_printf(rh_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void rh_buf_consume(rh_buf *b, size_t n);               /* drops the first n bytes */
void rh_buf_free(rh_buf *b);

#endif
