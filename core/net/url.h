/* url: the one parser of the addresses the core is given. URLs for peers it dials (relay.http,
 * relay.ws.connect, relay.redis, a proxy mount's upstream, the tunnel's base-url) and host:port
 * for the addresses it listens on. One syntax (RFC 3986's authority: userinfo, reg-name, IPv4,
 * [IPv6], a port of digits only) and one vocabulary of errors; each caller keeps its own policy
 * (which schemes, whether userinfo may be there) and says so with rh_url_refuse's wording. */
#ifndef RH_NET_URL_H
#define RH_NET_URL_H

#include <stddef.h>

#define RH_URL_MAX 8192     /* longer input is refused, never cut */
#define RH_HOST_MAX 255     /* a DNS name is at most 253 */
#define RH_URL_ERRLEN 160

/* scheme://[user[:password]@]host[:port][/path][?query][#fragment]. Every string lives in buf. */
typedef struct {
  const char *scheme;          /* lower-cased */
  const char *user, *password; /* percent-decoded; NULL when the URL has none */
  const char *host;            /* an IPv6 literal without its brackets */
  const char *path;            /* as written (not decoded); "/" when empty */
  const char *query;           /* as written, without '?'; NULL when there is none */
  const char *fragment;        /* without '#'; NULL when there is none */
  int port;                    /* as written, else the scheme's default (0 if it has none) */
  int port_given, ipv6, tls;   /* tls: https, wss, rediss */
  size_t rest;                 /* offset in the input of what follows the authority */
  char err[RH_URL_ERRLEN];
  char buf[RH_URL_MAX + 16];
} rh_url;

/* Parses s into out. schemes: those the caller accepts, separated by spaces ("http https"), or
 * NULL for any well-formed one. NULL, or out->err: what was wrong ("unsupported scheme 'ftp'",
 * "port out of range", "IPv6 literal not closed", …). */
const char *rh_url_parse(const char *s, const char *schemes, rh_url *out);

/* A caller's refusal of a part the syntax allows ("userinfo not allowed here"), in out->err
 * with the same wording as the parser's; returns out->err. */
const char *rh_url_refuse(rh_url *u, const char *what);

/* host[:port] as a Host field wants it: an IPv6 literal in brackets, the port if one was written.
 * out has room for RH_HOST_MAX + 9. */
void rh_url_authority(const rh_url *u, char *out, size_t outlen);

/* The default port of a known scheme (http 80, https 443, ws 80, wss 443, redis and rediss
 * 6379), else 0. */
int rh_url_default_port(const char *scheme);

/* A listen address: "HOST:PORT", "[V6]:PORT", ":PORT" or "PORT" (then host is 0.0.0.0). HOST
 * may be a name (the listener resolves it). Port 0..65535, 0 meaning any free one. */
typedef struct {
  char host[RH_HOST_MAX + 1]; /* an IPv6 literal without its brackets */
  int port, ipv6;
  char err[RH_URL_ERRLEN];
} rh_hostport;

/* NULL, or out->err. */
const char *rh_hostport_parse(const char *s, rh_hostport *out);

/* host and port written back as an address ("[v6]:port" for a literal). out has room for
 * RH_HOST_MAX + 9. */
void rh_hostport_format(const char *host, int port, char *out, size_t outlen);

#endif
