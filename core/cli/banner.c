#include "cli/banner.h"
#include "net/net.h"

#include <stdio.h>
#include <string.h>

static int is_wildcard(const char *host) { return !host[0] || !strcmp(host, "0.0.0.0") || !strcmp(host, "::"); }

int rh_banner_describe(const char *addr, int tls, rh_banner *out) {
  char host[256];
  if (rh_parse_hostport(addr, host, sizeof host, &out->port) < 0) return -1;
  int v6 = strchr(host, ':') != NULL;
  out->wildcard = is_wildcard(host);
  snprintf(out->bound, sizeof out->bound, v6 ? "[%s]:%d" : "%s:%d", host, out->port);
  const char *reach = !out->wildcard ? host : v6 ? "::1" : "127.0.0.1";
  snprintf(out->url, sizeof out->url, v6 ? "%s://[%s]:%d/" : "%s://%s:%d/", tls ? "https" : "http", reach, out->port);
  return 0;
}

void rh_banner_words(const rh_banner *b, char *out, size_t len) {
  if (b->wildcard)
    snprintf(out, len, "listening on %s (every interface), serving at %s from this machine", b->bound, b->url);
  else
    snprintf(out, len, "listening on %s, serving at %s", b->bound, b->url);
}
