#include "redis/seeds.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int rh_redis_each_seed(const char *seeds, rh_redis_seed_fn fn, void *ud) {
  const char *auth = strstr(seeds, "://");
  auth = auth ? auth + 3 : seeds;
  const char *hosts = auth, *end = auth + strcspn(auth, "/?#");
  for (const char *p = auth; p < end; p++) /* the last '@': a password may hold one */
    if (*p == '@') hosts = p + 1;
  int prefix = (int)(hosts - seeds);
  int bad = 0;
  char *url = malloc(strlen(seeds) + 16);
  if (!url) abort();
  while (!bad && hosts <= end) {
    size_t n = strcspn(hosts, ",/?#");
    sprintf(url, "%s%.*s%.*s%s", auth == seeds ? "redis://" : "", prefix, seeds, (int)n, hosts, end);
    bad = fn(ud, url);
    hosts += n + 1;
  }
  free(url);
  return bad ? -1 : 0;
}
