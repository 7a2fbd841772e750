#include "http/headers.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

void rh_headers_init(rh_headers *h) {
  h->items = NULL;
  h->n = h->cap = 0;
}

void rh_headers_clear(rh_headers *h) {
  for (size_t i = 0; i < h->n; i++) {
    free(h->items[i].name);
    free(h->items[i].value);
  }
  h->n = 0;
}

void rh_headers_free(rh_headers *h) {
  rh_headers_clear(h);
  free(h->items);
  rh_headers_init(h);
}

static char *dup_bytes(const char *p, size_t n) {
  char *s = malloc(n + 1);
  if (!s) abort();
  memcpy(s, p, n);
  s[n] = 0;
  return s;
}

void rh_headers_add(rh_headers *h, const char *name, size_t nlen, const char *value, size_t vlen) {
  if (h->n == h->cap) {
    h->cap = h->cap ? h->cap * 2 : 16;
    h->items = realloc(h->items, h->cap * sizeof *h->items);
    if (!h->items) abort();
  }
  rh_header *f = &h->items[h->n++];
  f->name = dup_bytes(name, nlen);
  f->name_len = nlen;
  f->value = dup_bytes(value, vlen);
  f->value_len = vlen;
}

static void grow_str(char **s, size_t *len, const char *more, size_t n) {
  *s = realloc(*s, *len + n + 1);
  if (!*s) abort();
  memcpy(*s + *len, more, n);
  *len += n;
  (*s)[*len] = 0;
}

void rh_headers_append_value(rh_headers *h, const char *value, size_t vlen) {
  if (h->n) grow_str(&h->items[h->n - 1].value, &h->items[h->n - 1].value_len, value, vlen);
}

void rh_headers_append_name(rh_headers *h, const char *name, size_t nlen) {
  if (h->n) grow_str(&h->items[h->n - 1].name, &h->items[h->n - 1].name_len, name, nlen);
}

int rh_header_name_eq(const rh_header *f, const char *name) {
  return strlen(name) == f->name_len && strncasecmp(f->name, name, f->name_len) == 0;
}

const rh_header *rh_headers_find(const rh_headers *h, const char *name, size_t *from) {
  for (size_t i = from ? *from : 0; i < h->n; i++) {
    if (rh_header_name_eq(&h->items[i], name)) {
      if (from) *from = i + 1;
      return &h->items[i];
    }
  }
  if (from) *from = h->n;
  return NULL;
}

size_t rh_headers_count(const rh_headers *h, const char *name) {
  size_t c = 0;
  for (size_t i = 0; i < h->n; i++) c += rh_header_name_eq(&h->items[i], name);
  return c;
}

size_t rh_headers_remove(rh_headers *h, const char *name) {
  size_t w = 0, removed = 0;
  for (size_t i = 0; i < h->n; i++) {
    if (rh_header_name_eq(&h->items[i], name)) {
      free(h->items[i].name);
      free(h->items[i].value);
      removed++;
    } else {
      h->items[w++] = h->items[i];
    }
  }
  h->n = w;
  return removed;
}

static int is_ows(char c) { return c == ' ' || c == '\t'; }

int rh_headers_has_token(const rh_headers *h, const char *name, const char *tok) {
  size_t tlen = strlen(tok), from = 0;
  const rh_header *f;
  while ((f = rh_headers_find(h, name, &from))) {
    const char *p = f->value, *end = f->value + f->value_len;
    while (p < end) {
      while (p < end && (is_ows(*p) || *p == ',')) p++;
      const char *s = p;
      while (p < end && *p != ',') p++;
      const char *e = p;
      while (e > s && is_ows(e[-1])) e--;
      if ((size_t)(e - s) == tlen && strncasecmp(s, tok, tlen) == 0) return 1;
    }
  }
  return 0;
}

int rh_header_hop_by_hop(const rh_header *f) {
  static const char *names[] = { "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                                 "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade" };
  for (size_t i = 0; i < sizeof names / sizeof *names; i++)
    if (rh_header_name_eq(f, names[i])) return 1;
  return 0;
}
