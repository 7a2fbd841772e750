/* fuzz_router: core/http/router against a reference matcher written from router.h's contract.
 *
 * Input: lines. Every line but the last adds a route "METHOD PATTERN" (METHOD "*" or "-" for
 * any); the last line is "METHOD PATH" to match (the path may hold any byte but newline).
 *
 * The reference: a pattern is its segments ("/a/:id" -> "a", ":id"); a prefix pattern
 * ("/static/<star>") is its segments before the star. A segment ":name" matches one non-empty
 * path segment; any other segment matches itself. An exact or parameter pattern matches a path
 * with the same segments; a prefix matches a path that starts with its segments at a '/'
 * boundary (the rest, after that '/', is the parameter "*"). Ranking: exact over parameters
 * (more literal segments first) over prefix (longer first), ties to the route added first; a
 * route's method matches when it is any, equal, or GET for HEAD.
 *
 * Invariants: rh_router_add refuses exactly the malformed patterns (not starting with '/', a
 * '*' anywhere but after a final '/', a ':' with no name, too many parameters); for the path,
 * both agree on match / no match / 405 (other_methods), on the handler, and on every parameter
 * (name and value); parameter values point into the path. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/router.h"

#define FUZZ_TARGET "fuzz_router"
#include "check.h"

#define MAX_ROUTES 24

typedef struct {
  char method[16];
  int any;         /* method NULL or "*" */
  char pattern[128];
  int prefix;      /* ends in "/<star>" */
  size_t base_len; /* pattern length without "/<star>" */
  int kind;        /* 2 exact, 1 params, 0 prefix */
  size_t literals, params;
  int handler;
} ref_route;

/* Reference validation; 1 if the router must accept the pattern. */
static int ref_valid(ref_route *r) {
  const char *p = r->pattern;
  size_t n = strlen(p);
  if (n == 0 || p[0] != '/') return 0;
  r->prefix = n >= 2 && p[n - 1] == '*' && p[n - 2] == '/';
  r->base_len = r->prefix ? n - 2 : n;
  if (memchr(p, '*', r->base_len)) return 0;
  if (!r->prefix && p[n - 1] == '*') return 0;
  r->literals = r->params = 0;
  /* segments of the base: each '/' starts one */
  for (size_t i = 0; i < r->base_len; i++) {
    if (p[i] != '/') continue;
    size_t s = i + 1, e = s;
    while (e < r->base_len && p[e] != '/') e++;
    if (s < r->base_len && p[s] == ':') {
      if (e - s < 2) return 0; /* ":" alone */
      r->params++;
    } else {
      r->literals++;
    }
  }
  if (r->params > (size_t)RH_ROUTE_MAX_PARAMS - (r->prefix ? 1 : 0)) return 0;
  r->kind = r->prefix ? 0 : r->params ? 1 : 2;
  return 1;
}

typedef struct {
  size_t n;
  const char *name[RH_ROUTE_MAX_PARAMS];
  size_t name_len[RH_ROUTE_MAX_PARAMS];
  const char *value[RH_ROUTE_MAX_PARAMS];
  size_t value_len[RH_ROUTE_MAX_PARAMS];
} ref_params;

static int ref_match_path(const ref_route *r, const char *path, size_t len, ref_params *out) {
  const char *p = r->pattern, *pe = p + r->base_len;
  const char *s = path, *se = path + len;
  out->n = 0;
  /* pattern segments one by one against path segments */
  while (p < pe) {
    /* p at a '/' */
    if (s >= se || *s != '/') return 0;
    const char *ps = p + 1, *pend = ps;
    while (pend < pe && *pend != '/') pend++;
    const char *ss = s + 1, *send = ss;
    while (send < se && *send != '/') send++;
    if (ps < pend && *ps == ':') {
      if (send == ss) return 0;
      out->name[out->n] = ps + 1;
      out->name_len[out->n] = (size_t)(pend - ps - 1);
      out->value[out->n] = ss;
      out->value_len[out->n] = (size_t)(send - ss);
      out->n++;
    } else {
      if ((size_t)(pend - ps) != (size_t)(send - ss) || memcmp(ps, ss, (size_t)(pend - ps))) return 0;
    }
    p = pend;
    s = send;
  }
  if (!r->prefix) return s == se;
  /* the rest: empty, or after a '/' (any path at all for "/<star>") */
  const char *rest;
  if (s == se) rest = s;
  else if (*s == '/') rest = s + 1;
  else if (r->base_len == 0) rest = s;
  else return 0;
  out->name[out->n] = "*";
  out->name_len[out->n] = 1;
  out->value[out->n] = rest;
  out->value_len[out->n] = (size_t)(se - rest);
  out->n++;
  return 1;
}

static uint64_t ref_rank(const ref_route *r) {
  if (r->kind == 2) return (uint64_t)3 << 40;
  if (r->kind == 1) return ((uint64_t)2 << 40) + r->literals;
  return ((uint64_t)1 << 40) + r->base_len;
}

static int method_ok(const ref_route *r, const char *m) {
  return r->any || strcmp(r->method, m) == 0 || (strcmp(r->method, "GET") == 0 && strcmp(m, "HEAD") == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* split into lines */
  const char *lines[MAX_ROUTES + 1];
  size_t lens[MAX_ROUTES + 1], nlines = 0;
  const char *p = (const char *)data, *e = p + size;
  while (p <= e && nlines < MAX_ROUTES + 1) {
    const char *nl = memchr(p, '\n', (size_t)(e - p));
    lines[nlines] = p;
    lens[nlines++] = nl ? (size_t)(nl - p) : (size_t)(e - p);
    if (!nl) break;
    p = nl + 1;
  }
  if (nlines < 1) return 0;

  rh_router *router = rh_router_new();
  ref_route routes[MAX_ROUTES];
  size_t nroutes = 0;
  for (size_t i = 0; i + 1 < nlines; i++) {
    const char *sp = memchr(lines[i], ' ', lens[i]);
    if (!sp) continue;
    size_t ml = (size_t)(sp - lines[i]), pl = lens[i] - ml - 1;
    ref_route *r = &routes[nroutes];
    memset(r, 0, sizeof *r);
    if (ml >= sizeof r->method || pl >= sizeof r->pattern) continue;
    if (memchr(lines[i], 0, lens[i])) continue; /* the router takes C strings */
    memcpy(r->method, lines[i], ml);
    memcpy(r->pattern, sp + 1, pl);
    const char *method = r->method;
    if (strcmp(r->method, "-") == 0) { method = NULL; r->any = 1; }
    else if (strcmp(r->method, "*") == 0) r->any = 1;
    r->handler = (int)nroutes + 100;
    const char *err = NULL;
    int rc = rh_router_add(router, method, r->pattern, r->handler, &err);
    int want = ref_valid(r);
    if ((rc == 0) != want)
      FAIL("rh_router_add('%s') returned %d (%s); the reference says %s", r->pattern, rc,
           err ? err : "", want ? "valid" : "invalid");
    if (rc < 0 && !err) FAIL("rh_router_add failed without a reason");
    if (rc == 0) nroutes++;
  }
  if (rh_router_size(router) != nroutes) FAIL("router size %zu, %zu added", rh_router_size(router), nroutes);

  /* the request line: METHOD PATH */
  const char *last = lines[nlines - 1];
  size_t ll = lens[nlines - 1];
  const char *sp = memchr(last, ' ', ll);
  char method[16] = "GET";
  const char *path = last;
  size_t plen = ll;
  if (sp && (size_t)(sp - last) < sizeof method && !memchr(last, 0, (size_t)(sp - last))) {
    memcpy(method, last, (size_t)(sp - last));
    method[sp - last] = 0;
    path = sp + 1;
    plen = ll - (size_t)(sp - last) - 1;
  }
  /* the path in its own allocation, so reads past it are caught */
  char *own = malloc(plen ? plen : 1);
  if (!own) abort();
  memcpy(own, path, plen);

  rh_route_match m;
  memset(&m, 0xAA, sizeof m);
  int got = rh_router_match(router, method, own, plen, &m);

  const ref_route *best = NULL;
  ref_params best_params = { 0 }, tmp;
  uint64_t best_rank = 0;
  int other = 0;
  for (size_t i = 0; i < nroutes; i++) {
    if (!ref_match_path(&routes[i], own, plen, &tmp)) continue;
    if (!method_ok(&routes[i], method)) { other = 1; continue; }
    uint64_t rk = ref_rank(&routes[i]);
    if (!best || rk > best_rank) { best = &routes[i]; best_rank = rk; best_params = tmp; }
  }
  if (got != (best != NULL))
    FAIL("router says %s, the reference %s (method %s, %zu routes)", got ? "match" : "no match",
         best ? best->pattern : "no match", method, nroutes);
  if (!got) {
    if (m.other_methods != other) FAIL("other_methods %d, the reference %d", m.other_methods, other);
  } else {
    if (m.handler != best->handler)
      FAIL("router picked handler %d, the reference %d (%s)", m.handler, best->handler, best->pattern);
    if (m.nparams != best_params.n) FAIL("%zu parameters, the reference %zu", m.nparams, best_params.n);
    for (size_t i = 0; i < m.nparams; i++) {
      const rh_route_param *q = &m.params[i];
      if (q->name_len != best_params.name_len[i] || memcmp(q->name, best_params.name[i], q->name_len))
        FAIL("parameter %zu name differs", i);
      if (q->value_len != best_params.value_len[i] ||
          (q->value_len && memcmp(q->value, best_params.value[i], q->value_len)))
        FAIL("parameter %zu value differs", i);
      if (q->value < own || q->value + q->value_len > own + plen) FAIL("parameter %zu outside the path", i);
    }
  }
  free(own);
  rh_router_free(router);
  return 0;
}
