/* Unit tests for core/http/router.c: exact, parameter and prefix patterns, precedence, captured
 * parameters, method matching (HEAD via GET, "*", 405 detection), malformed patterns and the
 * RH_ROUTE_MAX_PARAMS bound. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/router.h"
#include "check.h"



/* Matches `path` with `method`; returns the handler, or -1 (no match). */
static int match(const rh_router *r, const char *method, const char *path, rh_route_match *m) {
  memset(m, 0xAB, sizeof *m); /* garbage, so the router must fill what it reports */
  if (!rh_router_match(r, method, path, strlen(path), m)) return -1;
  return m->handler;
}

static int add(rh_router *r, const char *method, const char *pattern, int handler) {
  const char *err = NULL;
  int rc = rh_router_add(r, method, pattern, handler, &err);
  if (rc != 0) fprintf(stderr, "  (add %s %s failed: %s)\n", method ? method : "NULL", pattern,
                       err ? err : "?");
  return rc;
}

static int param_is(const rh_route_match *m, size_t i, const char *name, const char *value) {
  if (i >= m->nparams) return 0;
  const rh_route_param *p = &m->params[i];
  return p->name_len == strlen(name) && memcmp(p->name, name, p->name_len) == 0 &&
         p->value_len == strlen(value) && memcmp(p->value, value, p->value_len) == 0;
}

static void test_exact(void) {
  rh_router *r = rh_router_new();
  rh_route_match m;
  CHECK(rh_router_size(r) == 0);
  CHECK(add(r, "GET", "/", 1) == 0);
  CHECK(add(r, "GET", "/a/b", 2) == 0);
  CHECK(add(r, "GET", "/a", 3) == 0);
  CHECK(rh_router_size(r) == 3);

  CHECK(match(r, "GET", "/", &m) == 1);
  CHECK(m.nparams == 0);
  CHECK(match(r, "GET", "/a/b", &m) == 2);
  CHECK(m.nparams == 0 && m.other_methods == 0);
  CHECK(match(r, "GET", "/a", &m) == 3);
  CHECK(match(r, "GET", "/a/", &m) == -1);
  CHECK(m.other_methods == 0);
  CHECK(match(r, "GET", "/a/b/c", &m) == -1);
  CHECK(match(r, "GET", "/ab", &m) == -1);
  CHECK(match(r, "GET", "/A", &m) == -1); /* paths are case-sensitive */
  CHECK(match(r, "GET", "", &m) == -1);

  /* the length argument bounds the path: "/a/b" with len 2 is "/a" */
  memset(&m, 0, sizeof m);
  CHECK(rh_router_match(r, "GET", "/a/b", 2, &m) == 1 && m.handler == 3);
  rh_router_free(r);
}

static void test_params(void) {
  rh_router *r = rh_router_new();
  rh_route_match m;
  CHECK(add(r, "GET", "/users/:id", 1) == 0);
  CHECK(add(r, "GET", "/users/:uid/posts/:post_id", 2) == 0);
  CHECK(add(r, "GET", "/:a/:b/:c", 3) == 0);

  CHECK(match(r, "GET", "/users/42", &m) == 1);
  CHECK(m.nparams == 1);
  CHECK(param_is(&m, 0, "id", "42"));

  CHECK(match(r, "GET", "/users/alice/posts/7", &m) == 2);
  CHECK(m.nparams == 2);
  CHECK(param_is(&m, 0, "uid", "alice"));
  CHECK(param_is(&m, 1, "post_id", "7"));

  CHECK(match(r, "GET", "/x/y/z", &m) == 3);
  CHECK(m.nparams == 3);
  CHECK(param_is(&m, 0, "a", "x"));
  CHECK(param_is(&m, 1, "b", "y"));
  CHECK(param_is(&m, 2, "c", "z"));

  /* the value points into the path that was matched */
  const char *path = "/users/abc";
  memset(&m, 0, sizeof m);
  CHECK(rh_router_match(r, "GET", path, strlen(path), &m) == 1);
  CHECK(m.nparams == 1 && m.params[0].value == path + 7);

  /* a parameter is one whole, non-empty segment */
  CHECK(match(r, "GET", "/users/", &m) == -1);
  CHECK(match(r, "GET", "/users", &m) == -1);
  CHECK(match(r, "GET", "/users/42/", &m) == -1);
  CHECK(match(r, "GET", "/users//posts/7", &m) == -1);
  CHECK(match(r, "GET", "/users/alice/posts/", &m) == -1);
  CHECK(match(r, "GET", "/x//z", &m) == -1);
  CHECK(match(r, "GET", "//y/z", &m) == -1);

  /* a ':' not right after '/' is a literal character */
  CHECK(add(r, "GET", "/v1:batch", 4) == 0);
  CHECK(match(r, "GET", "/v1:batch", &m) == 4);
  CHECK(m.nparams == 0);
  CHECK(match(r, "GET", "/v1xbatch", &m) == -1);

  /* a parameter in the middle, with a literal after it */
  CHECK(add(r, "GET", "/files/:name/raw", 5) == 0);
  CHECK(match(r, "GET", "/files/readme.md/raw", &m) == 5);
  CHECK(m.nparams == 1 && param_is(&m, 0, "name", "readme.md"));
  CHECK(match(r, "GET", "/files/readme.md/rawx", &m) == 3); /* not 5: only "/:a/:b/:c" fits */
  CHECK(match(r, "GET", "/files/readme.md/raw/x", &m) == -1);
  rh_router_free(r);
}

static void test_prefix(void) {
  rh_router *r = rh_router_new();
  rh_route_match m;
  CHECK(add(r, "GET", "/x/*", 1) == 0);

  CHECK(match(r, "GET", "/x", &m) == 1);
  CHECK(m.nparams == 1 && param_is(&m, 0, "*", ""));
  CHECK(match(r, "GET", "/x/", &m) == 1);
  CHECK(m.nparams == 1 && param_is(&m, 0, "*", ""));
  CHECK(match(r, "GET", "/x/a", &m) == 1);
  CHECK(param_is(&m, 0, "*", "a"));
  CHECK(match(r, "GET", "/x/a/b", &m) == 1);
  CHECK(m.nparams == 1 && param_is(&m, 0, "*", "a/b"));
  CHECK(match(r, "GET", "/xy", &m) == -1);
  CHECK(match(r, "GET", "/xy/z", &m) == -1);
  CHECK(match(r, "GET", "/", &m) == -1);
  CHECK(match(r, "GET", "/y/x", &m) == -1);
  rh_router_free(r);

  /* the root prefix matches everything */
  r = rh_router_new();
  CHECK(add(r, "GET", "/*", 7) == 0);
  CHECK(match(r, "GET", "/", &m) == 7);
  CHECK(m.nparams == 1 && param_is(&m, 0, "*", ""));
  CHECK(match(r, "GET", "/anything", &m) == 7);
  CHECK(param_is(&m, 0, "*", "anything"));
  CHECK(match(r, "GET", "/a/b/c", &m) == 7);
  CHECK(param_is(&m, 0, "*", "a/b/c"));
  rh_router_free(r);

  /* a prefix with parameters before the star */
  r = rh_router_new();
  CHECK(add(r, "GET", "/repos/:owner/*", 3) == 0);
  CHECK(match(r, "GET", "/repos/me/src/main.c", &m) == 3);
  CHECK(m.nparams == 2);
  CHECK(param_is(&m, 0, "owner", "me"));
  CHECK(param_is(&m, 1, "*", "src/main.c"));
  CHECK(match(r, "GET", "/repos/me", &m) == 3);
  CHECK(m.nparams == 2 && param_is(&m, 1, "*", ""));
  CHECK(match(r, "GET", "/repos/", &m) == -1);
  rh_router_free(r);
}

static void test_precedence(void) {
  rh_route_match m;

  /* exact > params > prefix, whatever the order they were added in */
  rh_router *r = rh_router_new();
  CHECK(add(r, "GET", "/users/*", 1) == 0);
  CHECK(add(r, "GET", "/users/:id", 2) == 0);
  CHECK(add(r, "GET", "/users/me", 3) == 0);
  CHECK(match(r, "GET", "/users/me", &m) == 3);
  CHECK(m.nparams == 0);
  CHECK(match(r, "GET", "/users/42", &m) == 2);
  CHECK(m.nparams == 1 && param_is(&m, 0, "id", "42"));
  CHECK(match(r, "GET", "/users/42/avatar", &m) == 1);
  CHECK(m.nparams == 1 && param_is(&m, 0, "*", "42/avatar"));
  CHECK(match(r, "GET", "/users", &m) == 1);
  rh_router_free(r);

  r = rh_router_new();
  CHECK(add(r, "GET", "/users/me", 3) == 0);
  CHECK(add(r, "GET", "/users/:id", 2) == 0);
  CHECK(add(r, "GET", "/users/*", 1) == 0);
  CHECK(match(r, "GET", "/users/me", &m) == 3);
  CHECK(match(r, "GET", "/users/42", &m) == 2);
  CHECK(match(r, "GET", "/users/42/x", &m) == 1);
  rh_router_free(r);

  /* among parameter patterns, more literal segments win */
  r = rh_router_new();
  CHECK(add(r, "GET", "/:a/:b", 1) == 0);
  CHECK(add(r, "GET", "/:a/posts", 2) == 0);
  CHECK(add(r, "GET", "/users/:b", 3) == 0); /* same literal count as 2: 2 was first */
  CHECK(add(r, "GET", "/:a/:b/:c", 4) == 0);
  CHECK(add(r, "GET", "/users/:id/posts", 5) == 0);
  CHECK(match(r, "GET", "/x/y", &m) == 1);
  CHECK(match(r, "GET", "/x/posts", &m) == 2);
  CHECK(match(r, "GET", "/users/y", &m) == 3);
  CHECK(match(r, "GET", "/users/posts", &m) == 2);
  CHECK(match(r, "GET", "/a/b/c", &m) == 4);
  CHECK(match(r, "GET", "/users/9/posts", &m) == 5);
  CHECK(m.nparams == 1 && param_is(&m, 0, "id", "9"));
  rh_router_free(r);

  /* the longest prefix wins */
  r = rh_router_new();
  CHECK(add(r, "GET", "/*", 1) == 0);
  CHECK(add(r, "GET", "/a/*", 2) == 0);
  CHECK(add(r, "GET", "/a/b/*", 3) == 0);
  CHECK(match(r, "GET", "/z", &m) == 1);
  CHECK(match(r, "GET", "/a", &m) == 2);
  CHECK(match(r, "GET", "/a/c", &m) == 2);
  CHECK(match(r, "GET", "/a/b", &m) == 3);
  CHECK(match(r, "GET", "/a/b/c/d", &m) == 3);
  CHECK(param_is(&m, 0, "*", "c/d"));
  CHECK(match(r, "GET", "/a/bc", &m) == 2);
  CHECK(param_is(&m, 0, "*", "bc"));
  rh_router_free(r);

  r = rh_router_new();
  CHECK(add(r, "GET", "/a/b/*", 3) == 0);
  CHECK(add(r, "GET", "/a/*", 2) == 0);
  CHECK(add(r, "GET", "/*", 1) == 0);
  CHECK(match(r, "GET", "/a/b/c", &m) == 3);
  CHECK(match(r, "GET", "/a/c", &m) == 2);
  CHECK(match(r, "GET", "/c", &m) == 1);
  rh_router_free(r);

  /* ties go to the route added first */
  r = rh_router_new();
  CHECK(add(r, "GET", "/dup", 1) == 0);
  CHECK(add(r, "GET", "/dup", 2) == 0);
  CHECK(add(r, "GET", "/p/:x", 3) == 0);
  CHECK(add(r, "GET", "/p/:y", 4) == 0);
  CHECK(add(r, "GET", "/s/*", 5) == 0);
  CHECK(add(r, "*", "/s/*", 6) == 0);
  CHECK(add(r, "GET", "/:a/z", 7) == 0);
  CHECK(add(r, "GET", "/q/:b", 8) == 0);
  CHECK(match(r, "GET", "/dup", &m) == 1);
  CHECK(match(r, "GET", "/p/1", &m) == 3);
  CHECK(param_is(&m, 0, "x", "1"));
  CHECK(match(r, "GET", "/s/1", &m) == 5);
  CHECK(match(r, "GET", "/q/z", &m) == 7); /* one literal each */
  rh_router_free(r);
}

/* The header: "among parameter patterns the one with more literal segments [wins] ... Ties go to
 * the route added first." Two parameter patterns with the same literal segments are a tie,
 * whatever their parameter names are called. */
static void test_param_tie_ignores_name_length(void) {
  rh_route_match m;
  rh_router *r = rh_router_new();
  CHECK(add(r, "GET", "/u/:id", 1) == 0);
  CHECK(add(r, "GET", "/u/:identifier", 2) == 0);
  CHECK(match(r, "GET", "/u/5", &m) == 1);
  rh_router_free(r);

  /* a long parameter name must not outrank a literal segment */
  char pat[6000];
  strcpy(pat, "/:");
  memset(pat + 2, 'n', 5000);
  strcpy(pat + 5002, "/:y");
  r = rh_router_new();
  CHECK(add(r, "GET", pat, 1) == 0);     /* no literal segments */
  CHECK(add(r, "GET", "/a/:y", 2) == 0); /* one literal segment */
  CHECK(match(r, "GET", "/a/b", &m) == 2);
  rh_router_free(r);
}

static void test_methods(void) {
  rh_route_match m;
  rh_router *r = rh_router_new();
  CHECK(add(r, "GET", "/g", 1) == 0);
  CHECK(add(r, "POST", "/g", 2) == 0);
  CHECK(add(r, "*", "/any", 3) == 0);
  CHECK(add(r, NULL, "/null", 4) == 0);
  CHECK(add(r, "HEAD", "/h", 5) == 0);
  CHECK(add(r, "DELETE", "/items/:id", 6) == 0);
  CHECK(add(r, "PUT", "/files/*", 7) == 0);

  CHECK(match(r, "GET", "/g", &m) == 1);
  CHECK(match(r, "HEAD", "/g", &m) == 1); /* GET routes answer HEAD */
  CHECK(match(r, "POST", "/g", &m) == 2);
  CHECK(m.other_methods == 0);
  CHECK(match(r, "PUT", "/g", &m) == -1);
  CHECK(m.other_methods == 1);
  CHECK(match(r, "get", "/g", &m) == -1); /* methods are case-sensitive */
  CHECK(m.other_methods == 1);

  CHECK(match(r, "GET", "/any", &m) == 3);
  CHECK(match(r, "PATCH", "/any", &m) == 3);
  CHECK(match(r, "X-CUSTOM", "/any", &m) == 3);
  CHECK(match(r, "DELETE", "/null", &m) == 4);
  CHECK(match(r, "HEAD", "/null", &m) == 4);

  CHECK(match(r, "HEAD", "/h", &m) == 5);
  CHECK(match(r, "GET", "/h", &m) == -1); /* a HEAD route does not answer GET */
  CHECK(m.other_methods == 1);

  CHECK(match(r, "DELETE", "/items/3", &m) == 6);
  CHECK(match(r, "GET", "/items/3", &m) == -1);
  CHECK(m.other_methods == 1);
  CHECK(match(r, "GET", "/items/", &m) == -1);
  CHECK(m.other_methods == 0); /* the path matched nothing */
  CHECK(match(r, "GET", "/files/a/b", &m) == -1);
  CHECK(m.other_methods == 1);

  CHECK(match(r, "GET", "/nowhere", &m) == -1);
  CHECK(m.other_methods == 0);
  rh_router_free(r);

  /* a more specific route of another method does not hide a less specific one of this method */
  r = rh_router_new();
  CHECK(add(r, "GET", "/api/*", 1) == 0);
  CHECK(add(r, "POST", "/api/items", 2) == 0);
  CHECK(add(r, "PUT", "/api/:thing", 3) == 0);
  CHECK(match(r, "GET", "/api/items", &m) == 1);
  CHECK(m.other_methods == 0);
  CHECK(param_is(&m, 0, "*", "items"));
  CHECK(match(r, "POST", "/api/items", &m) == 2);
  CHECK(match(r, "PUT", "/api/items", &m) == 3);
  CHECK(m.nparams == 1 && param_is(&m, 0, "thing", "items"));
  CHECK(match(r, "DELETE", "/api/items", &m) == -1);
  CHECK(m.other_methods == 1);
  rh_router_free(r);

  /* the same, added the other way round */
  r = rh_router_new();
  CHECK(add(r, "POST", "/api/items", 2) == 0);
  CHECK(add(r, "GET", "/api/*", 1) == 0);
  CHECK(match(r, "GET", "/api/items", &m) == 1);
  CHECK(m.other_methods == 0);
  CHECK(match(r, "HEAD", "/api/items", &m) == 1);
  rh_router_free(r);
}

static void test_bad_patterns(void) {
  rh_router *r = rh_router_new();
  const char *bad[] = { "", "users", "*", "users/*", ":id", "/a/*/b", "/a*", "/a/b*", "/*/",
                        "/**", "/:", "/users/:", "/users/:/x", "/:/*", "/a/:/b/*" };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    const char *err = NULL;
    int rc = rh_router_add(r, "GET", bad[i], 1, &err);
    if (rc != -1 || !err || !*err) fprintf(stderr, "  (pattern \"%s\" was accepted)\n", bad[i]);
    CHECK(rc == -1);
    CHECK(err != NULL && *err != 0);
  }
  CHECK(rh_router_size(r) == 0);

  const char *err = NULL;
  CHECK(rh_router_add(r, "GET", "users", 1, &err) == -1);
  CHECK(err && strstr(err, "'/'"));
  err = NULL;
  CHECK(rh_router_add(r, "GET", "/a/*/b", 1, &err) == -1);
  CHECK(err && strstr(err, "'*'"));
  err = NULL;
  CHECK(rh_router_add(r, "GET", "/users/:", 1, &err) == -1);
  CHECK(err && strstr(err, "name"));

  /* good ones still work after the failures */
  CHECK(add(r, "GET", "/ok", 1) == 0);
  CHECK(rh_router_size(r) == 1);
  rh_route_match m;
  CHECK(match(r, "GET", "/ok", &m) == 1);
  rh_router_free(r);
}

static void build_params_pattern(char *out, size_t nparams, int prefix) {
  char *p = out;
  for (size_t i = 0; i < nparams; i++) p += sprintf(p, "/:p%zu", i);
  if (prefix) p += sprintf(p, "/*");
  *p = 0;
}

static void build_path(char *out, size_t nsegs) {
  char *p = out;
  for (size_t i = 0; i < nsegs; i++) p += sprintf(p, "/v%zu", i);
  *p = 0;
}

static void test_max_params(void) {
  char pat[512], path[512], name[16], value[16];
  rh_route_match m;
  const char *err;

  /* RH_ROUTE_MAX_PARAMS - 1 parameters and a prefix's "*": exactly fills params[] */
  rh_router *r = rh_router_new();
  build_params_pattern(pat, RH_ROUTE_MAX_PARAMS - 1, 1);
  CHECK(add(r, "GET", pat, 1) == 0);
  build_path(path, RH_ROUTE_MAX_PARAMS + 1);
  CHECK(match(r, "GET", path, &m) == 1);
  CHECK(m.nparams == RH_ROUTE_MAX_PARAMS);
  for (size_t i = 0; i + 1 < RH_ROUTE_MAX_PARAMS && i < m.nparams; i++) {
    snprintf(name, sizeof name, "p%zu", i);
    snprintf(value, sizeof value, "v%zu", i);
    CHECK(param_is(&m, i, name, value));
  }
  CHECK(param_is(&m, RH_ROUTE_MAX_PARAMS - 1, "*", "v15/v16"));
  rh_router_free(r);

  /* RH_ROUTE_MAX_PARAMS - 1 parameters, no prefix */
  r = rh_router_new();
  build_params_pattern(pat, RH_ROUTE_MAX_PARAMS - 1, 0);
  CHECK(add(r, "GET", pat, 2) == 0);
  build_path(path, RH_ROUTE_MAX_PARAMS - 1);
  CHECK(match(r, "GET", path, &m) == 2);
  CHECK(m.nparams == RH_ROUTE_MAX_PARAMS - 1);
  rh_router_free(r);

  /* more than RH_ROUTE_MAX_PARAMS is always rejected, with or without a prefix */
  r = rh_router_new();
  build_params_pattern(pat, RH_ROUTE_MAX_PARAMS + 1, 0);
  err = NULL;
  CHECK(rh_router_add(r, "GET", pat, 3, &err) == -1);
  CHECK(err && strstr(err, "too many"));
  build_params_pattern(pat, RH_ROUTE_MAX_PARAMS, 1); /* would need MAX + 1 slots */
  err = NULL;
  CHECK(rh_router_add(r, "GET", pat, 3, &err) == -1);
  CHECK(err != NULL);
  CHECK(rh_router_size(r) == 0);
  rh_router_free(r);
}

int main(void) {
  test_exact();
  test_params();
  test_prefix();
  test_precedence();
  test_param_tie_ignores_name_length();
  test_methods();
  test_bad_patterns();
  test_max_params();
  if (failures) {
    fprintf(stderr, "test_router: %d check(s) failed\n", failures);
    return 1;
  }
  printf("test_router: ok\n");
  return 0;
}
