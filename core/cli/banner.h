/* banner: how relayhost says where it serves. The address as it was bound (a wildcard stays a
 * wildcard, so nobody believes it serves loopback only) and a URL that reaches it from this
 * machine (a wildcard is reached at loopback). */
#ifndef RH_CLI_BANNER_H
#define RH_CLI_BANNER_H

#include <stddef.h>

typedef struct {
  char bound[300]; /* 0.0.0.0:8686, [::]:8686, 10.0.0.5:8686 */
  char reach[300]; /* 127.0.0.1:8686: where a client on this machine connects */
  char url[320];   /* http://127.0.0.1:8686/ */
  int port;
  int wildcard;    /* every interface: the URL is this machine's view only */
} rh_banner;

/* addr is HOST:PORT with the port actually bound; -1 when it does not parse. */
int rh_banner_describe(const char *addr, int tls, rh_banner *out);

/* "listening on B (every interface), serving at U from this machine" or "listening on B,
 * serving at U": the words every listener's line uses. */
void rh_banner_words(const rh_banner *b, char *out, size_t len);

#endif
