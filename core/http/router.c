#include "http/router.h"

#include <stdlib.h>
#include <string.h>

typedef enum { KIND_EXACT = 2, KIND_PARAMS = 1, KIND_PREFIX = 0 } route_kind;

typedef struct {
  char *method;        /* NULL: any */
  char *pattern;
  size_t len;          /* of pattern, without the trailing slash-star of a prefix */
  route_kind kind;
  size_t literals;     /* literal segments, for ranking parameter patterns */
  int handler;
} route;

struct rh_router {
  route *routes;
  size_t n, cap;
};

rh_router *rh_router_new(void) {
  rh_router *r = calloc(1, sizeof *r);
  if (!r) abort();
  return r;
}

void rh_router_free(rh_router *r) {
  if (!r) return;
  for (size_t i = 0; i < r->n; i++) {
    free(r->routes[i].method);
    free(r->routes[i].pattern);
  }
  free(r->routes);
  free(r);
}

size_t rh_router_size(const rh_router *r) { return r->n; }

static int check_pattern(const char *p, route_kind *kind, size_t *len, size_t *literals,
                         const char **err) {
  size_t n = strlen(p);
  if (n == 0 || p[0] != '/') { *err = "a route pattern starts with '/'"; return -1; }
  *kind = KIND_EXACT;
  *len = n;
  if (n >= 1 && p[n - 1] == '*') {
    if (n == 1 || p[n - 2] != '/') { *err = "'*' may only end a pattern, after '/'"; return -1; }
    *kind = KIND_PREFIX;
    *len = n - 2; /* "/static/<star>" -> "/static"; "/<star>" -> "" */
  }
  size_t params = 0;
  *literals = 0;
  for (size_t i = 0; i < *len; i++) {
    if (p[i] == '*') { *err = "'*' may only end a pattern, after '/'"; return -1; }
    if (p[i] != '/') continue;
    if (i + 1 < *len && p[i + 1] == ':') {
      if (i + 2 >= *len || p[i + 2] == '/') { *err = "a ':' parameter needs a name"; return -1; }
      params++;
    } else {
      (*literals)++;
    }
  }
  /* a prefix needs one slot more, for its rest ("*") */
  if (params > RH_ROUTE_MAX_PARAMS - (*kind == KIND_PREFIX)) {
    *err = "too many parameters in a pattern";
    return -1;
  }
  if (params && *kind == KIND_EXACT) *kind = KIND_PARAMS;
  return 0;
}

int rh_router_add(rh_router *r, const char *method, const char *pattern, int handler,
                  const char **err) {
  route rt = { 0 };
  if (check_pattern(pattern, &rt.kind, &rt.len, &rt.literals, err) < 0) return -1;
  if (r->n == r->cap) {
    r->cap = r->cap ? r->cap * 2 : 8;
    r->routes = realloc(r->routes, r->cap * sizeof *r->routes);
    if (!r->routes) abort();
  }
  rt.method = method && strcmp(method, "*") ? strdup(method) : NULL;
  rt.pattern = strdup(pattern);
  rt.handler = handler;
  r->routes[r->n++] = rt;
  return 0;
}

/* Matches pattern segments against the path; fills params. Prefix patterns also accept a
 * path that continues past the pattern at a '/' boundary. */
static int match_route(const route *rt, const char *path, size_t len, rh_route_match *m) {
  const char *p = rt->pattern, *pe = rt->pattern + rt->len;
  const char *s = path, *se = path + len;
  m->nparams = 0;
  while (p < pe) {
    if (*p == ':' && p > rt->pattern && p[-1] == '/') {
      const char *name = p + 1;
      while (p < pe && *p != '/') p++;
      const char *v = s;
      while (s < se && *s != '/') s++;
      if (s == v) return 0; /* a parameter is never empty */
      m->params[m->nparams++] = (rh_route_param){ name, (size_t)(p - name), v, (size_t)(s - v) };
      continue;
    }
    if (s == se || *s != *p) return 0;
    p++;
    s++;
  }
  if (rt->kind != KIND_PREFIX) return s == se;
  if (s != se && *s != '/' && rt->len > 0) return 0;
  const char *rest = s < se && *s == '/' ? s + 1 : s;
  m->params[m->nparams++] = (rh_route_param){ "*", 1, rest, (size_t)(se - rest) };
  return 1;
}

/* Higher is more specific. */
static size_t rank(const route *rt) {
  switch (rt->kind) {
  case KIND_EXACT: return (size_t)3 << 40;
  case KIND_PARAMS: return ((size_t)2 << 40) + rt->literals;
  default: return ((size_t)1 << 40) + rt->len;
  }
}

int rh_router_match(const rh_router *r, const char *method, const char *path, size_t len,
                    rh_route_match *m) {
  const route *best = NULL;
  size_t best_rank = 0;
  int other = 0;
  rh_route_match tmp;
  for (size_t i = 0; i < r->n; i++) {
    const route *rt = &r->routes[i];
    size_t rk = rank(rt);
    if (best && rk <= best_rank) continue;
    if (!match_route(rt, path, len, &tmp)) continue;
    if (rt->method && strcmp(rt->method, method) != 0 &&
        !(strcmp(rt->method, "GET") == 0 && strcmp(method, "HEAD") == 0)) {
      other = 1;
      continue;
    }
    best = rt;
    best_rank = rk;
    *m = tmp;
  }
  m->other_methods = !best && other;
  if (!best) return 0;
  m->handler = best->handler;
  return 1;
}
