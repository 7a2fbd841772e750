/* Unit tests for core/redis/seeds.c: a seed list split into one URL per address, the scheme and
 * userinfo before each and the path after (as the Cluster and Sentinel clients read them), and a
 * callback's refusal ending the walk. */
#include <string.h>

#include "redis/seeds.h"
#include "check.h"

typedef struct {
  char urls[8][128];
  int n, stop_at;
} got;

static int collect(void *ud, const char *url) {
  got *g = ud;
  if (g->n < 8) snprintf(g->urls[g->n], sizeof g->urls[0], "%s", url);
  return ++g->n == g->stop_at ? -1 : 0;
}

static got split(const char *seeds, int stop_at, int *rc) {
  got g = { .stop_at = stop_at };
  *rc = rh_redis_each_seed(seeds, collect, &g);
  return g;
}

int main(void) {
  int rc;
  test_name = "bare seeds";
  got g = split("127.0.0.1:7000,127.0.0.1:7001", 0, &rc);
  CHECK(rc == 0 && g.n == 2);
  CHECK(strcmp(g.urls[0], "redis://127.0.0.1:7000") == 0);
  CHECK(strcmp(g.urls[1], "redis://127.0.0.1:7001") == 0);

  test_name = "scheme, userinfo and path on each";
  g = split("redis-sentinel://u:p%40ss@a:26379,b,[::1]:26380/mymaster", 0, &rc);
  CHECK(rc == 0 && g.n == 3);
  CHECK(strcmp(g.urls[0], "redis-sentinel://u:p%40ss@a:26379/mymaster") == 0);
  CHECK(strcmp(g.urls[1], "redis-sentinel://u:p%40ss@b/mymaster") == 0);
  CHECK(strcmp(g.urls[2], "redis-sentinel://u:p%40ss@[::1]:26380/mymaster") == 0);

  test_name = "a raw '@' in the password: the last one ends the userinfo";
  g = split("redis://:p@ss@h:1,h:2", 0, &rc);
  CHECK(rc == 0 && g.n == 2 && strcmp(g.urls[1], "redis://:p@ss@h:2") == 0);

  test_name = "a query after the path, or without one";
  g = split("rediss://h:1,h:2/0?ssl_ca_certs=/etc/ca.pem", 0, &rc);
  CHECK(rc == 0 && g.n == 2 && strcmp(g.urls[1], "rediss://h:2/0?ssl_ca_certs=/etc/ca.pem") == 0);
  g = split("rediss://h:1,h:2?ssl_cert_reqs=none", 0, &rc);
  CHECK(rc == 0 && g.n == 2 && strcmp(g.urls[0], "rediss://h:1?ssl_cert_reqs=none") == 0);

  test_name = "one seed";
  g = split("rediss://h:6380/0", 0, &rc);
  CHECK(rc == 0 && g.n == 1 && strcmp(g.urls[0], "rediss://h:6380/0") == 0);

  test_name = "a refusal ends the walk";
  g = split("a:1,b:2,c:3", 2, &rc);
  CHECK(rc == -1 && g.n == 2);
  return failures ? 1 : 0;
}
