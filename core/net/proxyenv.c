#include "net/proxyenv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "net/cidr.h"
#include "net/url.h"

#define ENTRY_MAX 300

static const char *env_any(const char *upper, const char *lower, const char **name) {
  const char *v = getenv(upper);
  *name = upper;
  if (!v || !*v) {
    v = getenv(lower);
    *name = lower;
  }
  return v && *v ? v : NULL;
}

/* ---- NO_PROXY ---- */

/* entry's ":PORT" split off into *port (0: any). A bare IPv6 address has no port. */
static void split_port(char *entry, int *port) {
  *port = 0;
  char *colon = strrchr(entry, ':');
  if (!colon || (entry[0] != '[' && strchr(entry, ':') != colon)) return;
  if (colon[1] && strspn(colon + 1, "0123456789") == strlen(colon + 1)) {
    *port = atoi(colon + 1); /* at most 5 digits follow a host, checked just above */
    *colon = 0;
  }
}

/* An address or range entry ("10.0.0.1", "10.0.0.0/8", "::1", "[::1]") against an IP literal. */
static int ip_match(const char *entry, const char *host) {
  char e[ENTRY_MAX];
  snprintf(e, sizeof e, "%s", entry[0] == '[' ? entry + 1 : entry);
  char *rb = strchr(e, ']');
  if (rb) *rb = 0;
  char err[64];
  rh_cidr_list *l = rh_cidr_parse(e, err, sizeof err);
  if (!l) return -1; /* not an address: a name */
  int in = rh_cidr_contains(l, host);
  rh_cidr_free(l);
  return in;
}

/* A name entry: host itself or one of its subdomains, case aside. */
static int name_match(const char *entry, const char *host) {
  if (entry[0] == '*' && entry[1] == '.') entry++;
  if (entry[0] == '.') entry++;
  size_t el = strlen(entry), hl = strlen(host);
  if (!el || el > hl || strcasecmp(host + hl - el, entry) != 0) return 0;
  return el == hl || host[hl - el - 1] == '.';
}

static int entry_match(const char *s, size_t n, const char *host, int port) {
  while (n && (*s == ' ' || *s == '\t')) s++, n--;
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
  if (!n || n >= ENTRY_MAX) return 0;
  if (n == 1 && *s == '*') return 1;
  char e[ENTRY_MAX];
  memcpy(e, s, n);
  e[n] = 0;
  int want_port;
  split_port(e, &want_port);
  if (want_port && want_port != port) return 0;
  int ip = ip_match(e, host);
  return ip >= 0 ? ip : name_match(e, host);
}

int rh_proxyenv_bypass(const char *no_proxy, const char *host, int port) {
  for (const char *s = no_proxy; s && *s;) {
    size_t n = strcspn(s, ",");
    if (entry_match(s, n, host, port)) return 1;
    s += n + (s[n] == ',');
  }
  return 0;
}

/* ---- the proxy's address ---- */

/* user:password (decoded by the URL parser) into out->basic for Proxy-Authorization. */
static const char *credentials(const rh_url *u, rh_proxyenv *out) {
  unsigned char plain[500];
  int n = snprintf((char *)plain, sizeof plain, "%s:%s", u->user, u->password ? u->password : "");
  if (!u->password) return "credentials must be USER:PASSWORD";
  if (n < 0 || (size_t)n >= sizeof plain) return "credentials too long";
  EVP_EncodeBlock((unsigned char *)out->basic, plain, n); /* 4/3 of 500 fits in 700 */
  return NULL;
}

/* http://[USER:PASSWORD@]HOST[:PORT][/] or the same without http://, read by core/net/url.
 * NULL, or what is wrong. */
static const char *parse_proxy(const char *v, rh_proxyenv *out) {
  static rh_url u; /* 8 KiB: not on the dialing stack; the loop is one thread */
  char with_scheme[RH_URL_MAX + 8];
  if (!strstr(v, "://")) snprintf(with_scheme, sizeof with_scheme, "http://%s", v), v = with_scheme;
  const char *why = rh_url_parse(v, "http", &u);
  if (why) return strncmp(why, "unsupported scheme", 18) == 0 ? "only http:// proxies are supported" : why;
  if (u.path[1] || u.query) return "a proxy is HOST[:PORT], with no path";
  out->basic[0] = 0;
  if (u.user && (why = credentials(&u, out))) return why;
  snprintf(out->host, sizeof out->host, "%s", u.host);
  out->port = u.port;
  return NULL;
}

int rh_proxyenv_pick(const char *host, int port, int tls, rh_proxyenv *out, char *err, size_t errlen) {
  const char *var, *v = tls ? env_any("HTTPS_PROXY", "https_proxy", &var) : env_any("HTTP_PROXY", "http_proxy", &var);
  if (!v) return 0;
  const char *no_var, *no = env_any("NO_PROXY", "no_proxy", &no_var);
  if (rh_proxyenv_bypass(no, host, port)) return 0;
  out->var = var;
  const char *why = parse_proxy(v, out);
  if (!why) return 1;
  int shown = strchr(v, '@') == NULL; /* never the password */
  snprintf(err, errlen, "%s%s%.200s: %s", var, shown ? "=" : " (credentials withheld)", shown ? v : "", why);
  return -1;
}
