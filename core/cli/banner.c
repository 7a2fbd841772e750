#include "cli/banner.h"
#include "net/url.h"

#include <stdio.h>
#include <string.h>

static int is_wildcard(const char *host) { return !host[0] || !strcmp(host, "0.0.0.0") || !strcmp(host, "::"); }

int rh_banner_describe(const char *addr, int tls, rh_banner *out) {
  rh_hostport hp;
  if (rh_hostport_parse(addr, &hp)) return -1;
  out->port = hp.port;
  out->wildcard = is_wildcard(hp.host);
  rh_hostport_format(hp.host, hp.port, out->bound, sizeof out->bound);
  const char *reach = !out->wildcard ? hp.host : hp.ipv6 || !strcmp(hp.host, "::") ? "::1" : "127.0.0.1";
  rh_hostport_format(reach, hp.port, out->reach, sizeof out->reach);
  snprintf(out->url, sizeof out->url, "%s://%s/", tls ? "https" : "http", out->reach);
  return 0;
}

void rh_banner_words(const rh_banner *b, char *out, size_t len) {
  if (b->wildcard)
    snprintf(out, len, "listening on %s (every interface), serving at %s from this machine", b->bound, b->url);
  else
    snprintf(out, len, "listening on %s, serving at %s", b->bound, b->url);
}
