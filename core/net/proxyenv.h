/* proxyenv: which forward proxy an outbound client reaches a peer through, from the environment
 * as Go's net/http and httpx read it. HTTPS_PROXY for TLS peers (https, wss), HTTP_PROXY for
 * plain ones (http, ws); the upper-case name wins over the lower-case one (Go's order). The value
 * is http://HOST[:PORT] or HOST[:PORT] (port 80 if left out), with USER:PASSWORD@ (percent-
 * encoded) for a proxy that asks for Basic credentials; other schemes are refused with a message
 * naming the variable (never its password).
 *
 * NO_PROXY (or no_proxy) lists peers that go direct, comma-separated: `*` (every peer), a host
 * name (it and its subdomains; a leading "." or "*." changes nothing), an IP address, or a CIDR
 * range (IP-literal peers in it); each with ":PORT" to match that port only. As in httpx and
 * curl (and unlike Go), localhost is not special: list it in NO_PROXY to keep it direct.
 * The environment is read at every dial, so nothing is kept. */
#ifndef RH_PROXYENV_H
#define RH_PROXYENV_H

#include <stddef.h>

typedef struct {
  char host[256]; /* without brackets */
  int port;
  const char *var; /* the variable it came from, for messages */
  char basic[700]; /* base64 of user:password for Proxy-Authorization, or "" */
} rh_proxyenv;

/* 1: reach host:port through *out; 0: go direct; -1: the variable is unusable, err says why. */
int rh_proxyenv_pick(const char *host, int port, int tls, rh_proxyenv *out, char *err, size_t errlen);

/* 1 if no_proxy (a NO_PROXY value) sends host:port direct. */
int rh_proxyenv_bypass(const char *no_proxy, const char *host, int port);

#endif
