/* router: picks the route for a method and path.
 *
 * Patterns: exact "/a/b"; parameters "/users/:id" (one segment each); prefix "/static/<star>"
 * (matches "/static" and everything under it; the rest is the parameter "*"). The most specific
 * match wins: exact over parameters over prefix; among parameter patterns the one with more
 * literal segments; among prefixes the longest. Ties go to the route added first. A route's
 * method NULL or "*" matches any method. The router copies patterns; handlers are opaque ints. */
#ifndef RH_ROUTER_H
#define RH_ROUTER_H

#include <stddef.h>

#define RH_ROUTE_MAX_PARAMS 16

typedef struct rh_router rh_router;

typedef struct {
  const char *name;  /* into the router's copy of the pattern ("*" for a prefix's rest) */
  size_t name_len;
  const char *value; /* into the matched path */
  size_t value_len;
} rh_route_param;

typedef struct {
  int handler;
  size_t nparams;
  rh_route_param params[RH_ROUTE_MAX_PARAMS];
  int other_methods; /* no match, but the path matched a route of another method (405) */
} rh_route_match;

rh_router *rh_router_new(void);
void rh_router_free(rh_router *r);
/* 0, or -1 with *err (static) for a malformed pattern. */
int rh_router_add(rh_router *r, const char *method, const char *pattern, int handler,
                  const char **err);
/* 1 and m filled on a match; 0 otherwise (m->other_methods says whether it was a 405). */
int rh_router_match(const rh_router *r, const char *method, const char *path, size_t len,
                    rh_route_match *m);
size_t rh_router_size(const rh_router *r);

#endif
