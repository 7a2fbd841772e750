#include "net/cidr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  int family;
  unsigned char addr[16];
  int bits;
} range;

struct rh_cidr_list {
  range *items;
  size_t n;
};

static int parse_ip(const char *s, int *family, unsigned char *out) {
  if (inet_pton(AF_INET, s, out) == 1) { *family = AF_INET; return 0; }
  if (inet_pton(AF_INET6, s, out) == 1) { *family = AF_INET6; return 0; }
  return -1;
}

static int parse_range(const char *s, range *r) {
  char buf[64];
  snprintf(buf, sizeof buf, "%s", s);
  char *slash = strchr(buf, '/');
  if (slash) *slash = 0;
  if (parse_ip(buf, &r->family, r->addr) < 0) return -1;
  int max = r->family == AF_INET ? 32 : 128;
  r->bits = max;
  if (slash) {
    char *end;
    long b = strtol(slash + 1, &end, 10);
    if (*end || end == slash + 1 || b < 0 || b > max) return -1;
    r->bits = (int)b;
  }
  return 0;
}

rh_cidr_list *rh_cidr_parse(const char *spec, char *err, size_t errlen) {
  rh_cidr_list *l = calloc(1, sizeof *l);
  if (!l) abort();
  char *copy = strdup(spec ? spec : ""), *save = NULL;
  for (char *tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
    range r;
    if (parse_range(tok, &r) < 0) {
      snprintf(err, errlen, "'%s' is not an address or CIDR range", tok);
      free(copy);
      rh_cidr_free(l);
      return NULL;
    }
    l->items = realloc(l->items, (l->n + 1) * sizeof *l->items);
    if (!l->items) abort();
    l->items[l->n++] = r;
  }
  free(copy);
  return l;
}

void rh_cidr_free(rh_cidr_list *l) {
  if (!l) return;
  free(l->items);
  free(l);
}

static int in_range(const range *r, int family, const unsigned char *a) {
  if (r->family != family) return 0;
  int full = r->bits / 8, rest = r->bits % 8;
  if (memcmp(r->addr, a, (size_t)full) != 0) return 0;
  if (!rest) return 1;
  unsigned char mask = (unsigned char)(0xff << (8 - rest));
  return (r->addr[full] & mask) == (a[full] & mask);
}

int rh_cidr_contains(const rh_cidr_list *l, const char *ip) {
  int family;
  unsigned char a[16];
  if (!l || !l->n || parse_ip(ip, &family, a) < 0) return 0;
  for (size_t i = 0; i < l->n; i++)
    if (in_range(&l->items[i], family, a)) return 1;
  return 0;
}

/* s into out, cut to fit as snprintf would, without snprintf's cost on every request. */
static void copy_cut(char *out, size_t outlen, const char *s) {
  if (!outlen) return;
  size_t n = strnlen(s, outlen - 1);
  memcpy(out, s, n);
  out[n] = 0;
}

void rh_client_address(const rh_cidr_list *l, const char *peer, const char *xff, size_t xff_len,
                       char *out, size_t outlen) {
  copy_cut(out, outlen, peer);
  if (!xff || !rh_cidr_contains(l, peer)) return;
  /* walk the hops right to left: each trusted hop vouches for the one before it */
  const char *end = xff + xff_len;
  while (end > xff) {
    const char *start = end;
    while (start > xff && start[-1] != ',') start--;
    const char *s = start, *e = end;
    while (s < e && (*s == ' ' || *s == '\t')) s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t')) e--;
    char hop[64];
    if (e > s && (size_t)(e - s) < sizeof hop) {
      memcpy(hop, s, (size_t)(e - s));
      hop[e - s] = 0;
      int family;
      unsigned char a[16];
      if (parse_ip(hop, &family, a) < 0) return; /* garbage: stop at what we know */
      copy_cut(out, outlen, hop);
      if (!rh_cidr_contains(l, hop)) return;
    }
    end = start > xff ? start - 1 : xff;
  }
}
