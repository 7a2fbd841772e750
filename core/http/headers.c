#include "http/headers.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* One block of a list's arena: the field array, and the names and values, each with its NUL,
 * back to back. */
struct rh_headers_block {
  struct rh_headers_block *next;
  size_t used, cap;
  _Alignas(rh_header) char data[];
};

/* A first block fits a typical head's fields and their array: one malloc a list, not two (this
 * runs for several lists of every proxied exchange). */
#define BLOCK_MIN (1024 - sizeof(struct rh_headers_block))
#define ITEMS_MIN 8

void rh_headers_init(rh_headers *h) {
  h->items = NULL;
  h->n = h->cap = 0;
  h->bytes = NULL;
}

static void free_blocks(struct rh_headers_block *b) {
  while (b) {
    struct rh_headers_block *next = b->next;
    free(b);
    b = next;
  }
}

void rh_headers_free(rh_headers *h) {
  free_blocks(h->bytes);
  rh_headers_init(h);
}

/* n bytes from the arena at a multiple of align (a power of two); a new block when the newest
 * is full, at least twice its size, so a value that grows piece by piece (or the array) is moved
 * a bounded number of times. */
static char *arena_alloc(rh_headers *h, size_t n, size_t align) {
  struct rh_headers_block *b = h->bytes;
  size_t at = b ? (b->used + align - 1) & ~(align - 1) : 0;
  if (!b || at > b->cap || b->cap - at < n) {
    size_t cap = b ? b->cap * 2 : BLOCK_MIN;
    if (cap < n) cap = n;
    b = malloc(sizeof *b + cap);
    if (!b) abort();
    b->next = h->bytes;
    b->cap = cap;
    h->bytes = b;
    at = 0;
  }
  b->used = at + n;
  return b->data + at;
}

static rh_header *items_alloc(rh_headers *h, size_t cap) {
  return (rh_header *)(void *)arena_alloc(h, cap * sizeof(rh_header), _Alignof(rh_header));
}

/* The newest block stays for the next fields (a parser clears its list per message), with the
 * array at its start: the newest block is the largest, so the array fits. */
void rh_headers_clear(rh_headers *h) {
  if (h->bytes) {
    free_blocks(h->bytes->next);
    h->bytes->next = NULL;
    h->bytes->used = 0;
    h->items = h->cap ? items_alloc(h, h->cap) : NULL;
  }
  h->n = 0;
}

size_t rh_headers_kept(const rh_headers *h) { return h->bytes ? h->bytes->cap : 0; }

static char *dup_bytes(rh_headers *h, const char *p, size_t n) {
  char *s = arena_alloc(h, n + 1, 1);
  memcpy(s, p, n);
  s[n] = 0;
  return s;
}

/* A larger array in the arena; the old one stays there until the list is cleared. */
static void grow_items(rh_headers *h) {
  size_t cap = h->cap ? h->cap * 2 : ITEMS_MIN;
  rh_header *items = items_alloc(h, cap);
  if (h->n) memcpy(items, h->items, h->n * sizeof *items);
  h->items = items;
  h->cap = cap;
}

void rh_headers_add(rh_headers *h, const char *name, size_t nlen, const char *value, size_t vlen) {
  if (h->n == h->cap) grow_items(h);
  rh_header *f = &h->items[h->n++];
  char *p = arena_alloc(h, nlen + vlen + 2, 1); /* both at once, the value last (grow_str) */
  memcpy(p, name, nlen);
  p[nlen] = 0;
  f->name = p;
  f->name_len = nlen;
  f->value = p + nlen + 1;
  memcpy(f->value, value, vlen);
  f->value[vlen] = 0;
  f->value_len = vlen;
  f->checked = 0;
}

void rh_headers_add_field(rh_headers *h, const rh_header *f) {
  int checked = f->checked; /* f may be a field of h, which the add can move */
  rh_headers_add(h, f->name, f->name_len, f->value, f->value_len);
  h->items[h->n - 1].checked = checked;
}

void rh_headers_add_pair(rh_headers *h, const rh_header *name_of, const rh_header *value_of) {
  int checked = name_of->checked && value_of->checked;
  rh_headers_add(h, name_of->name, name_of->name_len, value_of->value, value_of->value_len);
  h->items[h->n - 1].checked = checked;
}

void rh_headers_set_value(rh_headers *h, rh_header *f, const char *value, size_t vlen) {
  f->value = dup_bytes(h, value, vlen);
  f->value_len = vlen;
  f->checked = 0;
}

/* Grows in place when s is the newest bytes of the arena (a field arriving in pieces), else
 * moves it to the end. s is the last field's, which the change unmarks. */
static void grow_str(rh_headers *h, char **s, size_t *len, const char *more, size_t n) {
  h->items[h->n - 1].checked = 0;
  struct rh_headers_block *b = h->bytes;
  if (b && *s + *len + 1 == b->data + b->used && b->cap - b->used >= n) {
    b->used += n;
  } else {
    char *moved = arena_alloc(h, *len + n + 1, 1);
    memcpy(moved, *s, *len);
    *s = moved;
  }
  memcpy(*s + *len, more, n);
  *len += n;
  (*s)[*len] = 0;
}

void rh_headers_append_value(rh_headers *h, const char *value, size_t vlen) {
  if (h->n) grow_str(h, &h->items[h->n - 1].value, &h->items[h->n - 1].value_len, value, vlen);
}

void rh_headers_append_name(rh_headers *h, const char *name, size_t nlen) {
  if (h->n) grow_str(h, &h->items[h->n - 1].name, &h->items[h->n - 1].name_len, name, nlen);
}

/* f's name is name, of n bytes (measured once per search, not once per field). */
static int named(const rh_header *f, const char *name, size_t n) {
  return f->name_len == n && strncasecmp(f->name, name, n) == 0;
}

const rh_header *rh_headers_find(const rh_headers *h, const char *name, size_t *from) {
  size_t n = strlen(name);
  for (size_t i = from ? *from : 0; i < h->n; i++) {
    if (named(&h->items[i], name, n)) {
      if (from) *from = i + 1;
      return &h->items[i];
    }
  }
  if (from) *from = h->n;
  return NULL;
}

size_t rh_headers_count(const rh_headers *h, const char *name) {
  size_t c = 0, n = strlen(name);
  for (size_t i = 0; i < h->n; i++) c += named(&h->items[i], name, n);
  return c;
}

size_t rh_headers_remove(rh_headers *h, const char *name) {
  size_t w = 0, removed = 0, n = strlen(name);
  for (size_t i = 0; i < h->n; i++) {
    if (named(&h->items[i], name, n)) {
      removed++;
    } else {
      h->items[w++] = h->items[i];
    }
  }
  h->n = w;
  return removed;
}

void rh_headers_filter(rh_headers *h, int (*keep)(const rh_headers *h, const rh_header *f, void *ud), void *ud) {
  unsigned char small[64], *k = h->n <= sizeof small ? small : malloc(h->n);
  if (!k) abort();
  for (size_t i = 0; i < h->n; i++) k[i] = keep(h, &h->items[i], ud) != 0;
  size_t w = 0;
  for (size_t i = 0; i < h->n; i++)
    if (k[i]) h->items[w++] = h->items[i];
  h->n = w;
  if (k != small) free(k);
}

static int is_ows(char c) { return c == ' ' || c == '\t'; }

/* 1 when a token of a `name` field is tok (other == 0), or is not tok (other == 1). */
static int scan_tokens(const rh_headers *h, const char *name, const char *tok, int other) {
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
      if (e == s) continue;
      int is = (size_t)(e - s) == tlen && strncasecmp(s, tok, tlen) == 0;
      if (is != other) return 1;
    }
  }
  return 0;
}

int rh_headers_has_token(const rh_headers *h, const char *name, const char *tok) {
  return scan_tokens(h, name, tok, 0);
}

int rh_headers_has_other_token(const rh_headers *h, const char *name, const char *tok) {
  return scan_tokens(h, name, tok, 1);
}

/* By length first: most fields have a length no hop-by-hop name has, and this runs for every
 * field of every proxied response (issue 17). */
int rh_header_hop_by_hop(const rh_header *f) {
  switch (f->name_len) {
  case 2: return named(f, "te", 2);
  case 7: return named(f, "trailer", 7) || named(f, "upgrade", 7);
  case 10: return named(f, "connection", 10) || named(f, "keep-alive", 10);
  case 16: return named(f, "proxy-connection", 16);
  case 17: return named(f, "transfer-encoding", 17);
  case 18: return named(f, "proxy-authenticate", 18);
  case 19: return named(f, "proxy-authorization", 19);
  default: return 0;
  }
}
