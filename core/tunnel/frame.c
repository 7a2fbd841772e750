/* frame: the git tunnel's frame codec. See frame.h and docs/git-tunnel-protocol.md. */
#include "tunnel/frame.h"

#include <stdlib.h>
#include <string.h>

static uint32_t get32(const char *p) {
  const unsigned char *u = (const unsigned char *)p;
  return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

static uint16_t get16(const char *p) {
  const unsigned char *u = (const unsigned char *)p;
  return (uint16_t)(u[0] << 8 | u[1]);
}

static void put32(rh_buf *b, uint32_t v) {
  unsigned char u[4] = { (unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8),
                         (unsigned char)v };
  rh_buf_append(b, u, 4);
}

static void put_str(rh_buf *b, const char *s, size_t n) {
  if (n > 0xffff) n = 0xffff; /* the caller's heads are bounded far below this */
  unsigned char u[2] = { (unsigned char)(n >> 8), (unsigned char)n };
  rh_buf_append(b, u, 2);
  rh_buf_append(b, s, n);
}

/* Walks a string list: count, then (length, bytes) each. -1 if it does not add up exactly. */
static int walk_list(const char *p, size_t n, size_t *count) {
  if (n < 2) return -1;
  size_t c = get16(p), off = 2;
  for (size_t i = 0; i < c; i++) {
    if (n - off < 2) return -1;
    size_t l = get16(p + off);
    off += 2;
    if (n - off < l) return -1;
    off += l;
  }
  if (off != n) return -1;
  *count = c;
  return 0;
}

static const char *check_payload(const rh_tframe *f) {
  size_t count;
  switch (f->type) {
  case RH_TF_HEAD:
    if (walk_list(f->payload, f->len, &count) < 0) return "HEAD: string list does not add up";
    if (count < 2 || count % 2) return "HEAD: needs two strings and name/value pairs";
    return NULL;
  case RH_TF_DATA:
    if (f->len == 0 || f->len > RH_TF_MAX_DATA) return "DATA: payload must be 1 to 65536 bytes";
    return NULL;
  case RH_TF_END:
    return f->len ? "END: payload must be empty" : NULL;
  case RH_TF_RESET:
    return NULL;
  case RH_TF_WINDOW:
    if (f->len) return "WINDOW: trailing bytes";
    if (f->value == 0 || f->value > RH_TF_MAX_WINDOW) return "WINDOW: increment must be 1 to 2^31-1";
    return NULL;
  default: /* PING, PONG */
    return f->len == 8 ? NULL : "PING/PONG: payload must be 8 bytes";
  }
}

int rh_tframe_decode(const char *p, size_t n, rh_tframe *f, const char **why) {
  if (n < RH_TF_HEADER) {
    *why = "frame shorter than its 5-byte header";
    return -1;
  }
  f->type = (unsigned char)p[0];
  f->stream = get32(p + 1);
  f->value = 0;
  f->payload = p + RH_TF_HEADER;
  f->len = n - RH_TF_HEADER;
  if (f->type < RH_TF_HEAD || f->type > RH_TF_PONG) {
    *why = "unknown frame type";
    return -1;
  }
  int tunnel_wide = f->type == RH_TF_PING || f->type == RH_TF_PONG;
  if (tunnel_wide != (f->stream == 0)) {
    *why = tunnel_wide ? "PING/PONG must use stream 0" : "stream frames must not use stream 0";
    return -1;
  }
  if (f->type == RH_TF_RESET || f->type == RH_TF_WINDOW) {
    if (f->len < 4) {
      *why = "RESET/WINDOW: payload shorter than 4 bytes";
      return -1;
    }
    f->value = get32(f->payload);
    f->payload += 4;
    f->len -= 4;
  }
  *why = check_payload(f);
  return *why ? -1 : 0;
}

static void header(rh_buf *out, int type, uint32_t stream) {
  unsigned char t = (unsigned char)type;
  rh_buf_append(out, &t, 1);
  put32(out, stream);
}

void rh_tframe_encode(rh_buf *out, int type, uint32_t stream, const char *p, size_t n) {
  header(out, type, stream);
  if (n) rh_buf_append(out, p, n);
}

void rh_tframe_encode_u32(rh_buf *out, int type, uint32_t stream, uint32_t value, const char *reason) {
  header(out, type, stream);
  put32(out, value);
  if (reason) rh_buf_puts(out, reason);
}

void rh_tframe_encode_head(rh_buf *out, uint32_t stream, const char *a, const char *b, const rh_headers *h) {
  header(out, RH_TF_HEAD, stream);
  size_t count = 2 + 2 * (h ? h->n : 0);
  unsigned char u[2] = { (unsigned char)(count >> 8), (unsigned char)count };
  rh_buf_append(out, u, 2);
  put_str(out, a, strlen(a));
  put_str(out, b, strlen(b));
  for (size_t i = 0; h && i < h->n; i++) {
    put_str(out, h->items[i].name, h->items[i].name_len);
    put_str(out, h->items[i].value, h->items[i].value_len);
  }
}

int rh_tframe_head_parse(const rh_tframe *f, char **a, char **b, rh_headers *h) {
  size_t count;
  *a = *b = NULL;
  if (f->type != RH_TF_HEAD || walk_list(f->payload, f->len, &count) < 0 || count < 2 || count % 2) return -1;
  const char *p = f->payload + 2;
  const char *name = NULL;
  size_t name_len = 0;
  for (size_t i = 0; i < count; i++) {
    size_t l = get16(p);
    const char *s = p + 2;
    p = s + l;
    if (i < 2) {
      char *copy = strndup(s, l);
      if (!copy) abort();
      *(i ? b : a) = copy;
    } else if (i % 2 == 0) {
      name = s, name_len = l;
    } else {
      rh_headers_add(h, name, name_len, s, l);
    }
  }
  return 0;
}
