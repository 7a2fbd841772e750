#include "net/url.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct {
  const char *p;
  size_t n;
} span;

typedef struct {
  const char *name;
  int port, tls;
} scheme_info;

static const scheme_info known_schemes[] = {
  { "http", 80, 0 },  { "https", 443, 1 }, { "ws", 80, 0 },
  { "wss", 443, 1 },  { "redis", 6379, 0 }, { "rediss", 6379, 1 },
};

static const char *failf(char *err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, RH_URL_ERRLEN, fmt, ap);
  va_end(ap);
  return err;
}

static const scheme_info *known(const char *scheme) {
  for (size_t i = 0; i < sizeof known_schemes / sizeof *known_schemes; i++)
    if (!strcmp(known_schemes[i].name, scheme)) return &known_schemes[i];
  return NULL;
}

int rh_url_default_port(const char *scheme) {
  const scheme_info *k = known(scheme);
  return k ? k->port : 0;
}

static int is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* A reg-name as DNS has them: what else RFC 3986 allows (sub-delims, '%') only ever hides a
 * host from the resolver or from a policy that compares names. */
static int host_char(char c) { return is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_' || c == '~'; }

static int scheme_char(char c) { return is_alpha(c) || is_digit(c) || c == '+' || c == '-' || c == '.'; }

static int hex(char c) {
  if (is_digit(c)) return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* ---- host and port, shared by URLs and listen addresses ---- */

/* [p, end) is host[:port] or [v6][:port]: host and the port's text (port->p NULL: no ':'). */
static const char *split_host(const char *p, const char *end, span *host, span *port, int *ipv6, char *err) {
  *port = (span){ NULL, 0 };
  *ipv6 = p < end && *p == '[';
  if (*ipv6) {
    const char *rb = memchr(p, ']', (size_t)(end - p));
    if (!rb) return failf(err, "IPv6 literal not closed");
    *host = (span){ p + 1, (size_t)(rb - p - 1) };
    if (rb + 1 < end && rb[1] != ':') return failf(err, "junk after the IPv6 literal");
    if (rb + 1 < end) *port = (span){ rb + 2, (size_t)(end - rb - 2) };
    return NULL;
  }
  const char *colon = memchr(p, ':', (size_t)(end - p));
  *host = (span){ p, colon ? (size_t)(colon - p) : (size_t)(end - p) };
  if (!colon) return NULL;
  *port = (span){ colon + 1, (size_t)(end - colon - 1) };
  if (memchr(port->p, ':', port->n)) return failf(err, "an IPv6 literal must be in brackets");
  return NULL;
}

static int v6_literal(span h) {
  char text[RH_HOST_MAX + 1];
  unsigned char bin[16];
  memcpy(text, h.p, h.n);
  text[h.n] = 0;
  return inet_pton(AF_INET6, text, bin) == 1;
}

static const char *check_host(span h, int ipv6, char *err) {
  if (!h.n) return failf(err, "missing host");
  if (h.n > RH_HOST_MAX) return failf(err, "host too long (over %d bytes)", RH_HOST_MAX);
  if (ipv6) return v6_literal(h) ? NULL : failf(err, "bad IPv6 literal '%.*s'", (int)h.n, h.p);
  for (size_t i = 0; i < h.n; i++)
    if (!host_char(h.p[i])) return failf(err, "bad character in host '%.*s'", (int)(h.n > 64 ? 64 : h.n), h.p);
  return NULL;
}

/* Digits only (no sign, no space), min..65535. */
static const char *parse_port(span s, int min, int *port, char *err) {
  if (!s.n) return failf(err, "missing port after ':'");
  long v = 0;
  for (size_t i = 0; i < s.n; i++) {
    if (!is_digit(s.p[i])) return failf(err, "port '%.*s' is not a number", (int)(s.n > 16 ? 16 : s.n), s.p);
    if (v <= 65535) v = v * 10 + (s.p[i] - '0');
  }
  if (v < min || v > 65535) return failf(err, "port out of range (%d to 65535)", min);
  *port = (int)v;
  return NULL;
}

/* ---- URLs ---- */

/* A copy of p[0..n) in u->buf, terminated. */
static const char *keep(rh_url *u, size_t *used, const char *p, size_t n) {
  char *d = u->buf + *used;
  memcpy(d, p, n);
  d[n] = 0;
  *used += n + 1;
  return d;
}

static const char *check_input(const char *s, char *err) {
  if (!s || !*s) return failf(err, "empty URL");
  size_t n = strnlen(s, RH_URL_MAX + 1);
  if (n > RH_URL_MAX) return failf(err, "URL too long (over %d bytes)", RH_URL_MAX);
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f) return failf(err, "invalid character in the URL");
  return NULL;
}

/* Is name in the space-separated list? */
static int in_list(const char *list, const char *name) {
  size_t n = strlen(name);
  for (const char *p = list; *p; p += strcspn(p, " "), p += strspn(p, " "))
    if (strcspn(p, " ") == n && !strncmp(p, name, n)) return 1;
  return 0;
}

static const char *take_scheme(rh_url *u, const char *s, const char *schemes, size_t *used) {
  size_t n = 0;
  while (scheme_char(s[n])) n++;
  if (!n || s[n] != ':' || s[n + 1] != '/' || s[n + 2] != '/') return failf(u->err, "missing scheme (want scheme://host)");
  if (!is_alpha(s[0]) || n > 15) return failf(u->err, "bad scheme '%.*s'", (int)(n > 15 ? 15 : n), s);
  char *d = (char *)keep(u, used, s, n);
  for (char *c = d; *c; c++)
    if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
  u->scheme = d;
  if (schemes && !in_list(schemes, d)) return failf(u->err, "unsupported scheme '%s' (want %s)", d, schemes);
  const scheme_info *k = known(d);
  u->port = k ? k->port : 0;
  u->tls = k ? k->tls : 0;
  return NULL;
}

/* Percent-decodes s into u->buf. */
static const char *decode(rh_url *u, size_t *used, span s, const char **out) {
  char *d = u->buf + *used;
  *out = d;
  for (size_t i = 0; i < s.n; i++) {
    int c = (unsigned char)s.p[i];
    if (c == '%') {
      if (i + 2 >= s.n || hex(s.p[i + 1]) < 0 || hex(s.p[i + 2]) < 0)
        return failf(u->err, "bad percent-encoding in userinfo");
      c = hex(s.p[i + 1]) * 16 + hex(s.p[i + 2]);
      if (!c) return failf(u->err, "%%00 in userinfo");
      i += 2;
    }
    *d++ = (char)c;
  }
  *d = 0;
  *used = (size_t)(d - u->buf) + 1;
  return NULL;
}

/* user[:password] */
static const char *take_userinfo(rh_url *u, span s, size_t *used) {
  const char *colon = memchr(s.p, ':', s.n);
  span user = { s.p, colon ? (size_t)(colon - s.p) : s.n };
  const char *why = decode(u, used, user, &u->user);
  if (why || !colon) return why;
  return decode(u, used, (span){ colon + 1, (size_t)(s.p + s.n - colon - 1) }, &u->password);
}

/* The last '@' ends the userinfo (as browsers read it): a raw '@' in a password stays in it. */
static const char *take_authority(rh_url *u, const char *p, const char *end, size_t *used) {
  const char *at = NULL, *why;
  for (const char *c = p; c < end; c++)
    if (*c == '@') at = c;
  if (at && (why = take_userinfo(u, (span){ p, (size_t)(at - p) }, used))) return why;
  span host, port;
  if ((why = split_host(at ? at + 1 : p, end, &host, &port, &u->ipv6, u->err))) return why;
  if ((why = check_host(host, u->ipv6, u->err))) return why;
  u->host = keep(u, used, host.p, host.n);
  u->port_given = port.p != NULL;
  return port.p ? parse_port(port, 1, &u->port, u->err) : NULL;
}

/* [/path][?query][#fragment] */
static void take_rest(rh_url *u, const char *p, size_t *used) {
  size_t pn = strcspn(p, "?#");
  u->path = pn ? keep(u, used, p, pn) : keep(u, used, "/", 1);
  p += pn;
  if (*p == '?') {
    size_t qn = strcspn(++p, "#");
    u->query = keep(u, used, p, qn);
    p += qn;
  }
  if (*p == '#') u->fragment = keep(u, used, p + 1, strlen(p + 1));
}

static void url_clear(rh_url *u) {
  u->scheme = u->user = u->password = u->host = u->path = u->query = u->fragment = NULL;
  u->port = u->port_given = u->ipv6 = u->tls = 0;
  u->rest = 0;
  u->err[0] = 0;
}

const char *rh_url_parse(const char *s, const char *schemes, rh_url *u) {
  size_t used = 0;
  url_clear(u);
  const char *why = check_input(s, u->err);
  if (!why) why = take_scheme(u, s, schemes, &used);
  if (why) return why;
  const char *auth = s + strlen(u->scheme) + 3, *end = auth + strcspn(auth, "/?#");
  if ((why = take_authority(u, auth, end, &used))) return why;
  u->rest = (size_t)(end - s);
  take_rest(u, end, &used);
  return NULL;
}

const char *rh_url_refuse(rh_url *u, const char *what) { return failf(u->err, "%s not allowed here", what); }

void rh_url_authority(const rh_url *u, char *out, size_t outlen) {
  int n = snprintf(out, outlen, u->ipv6 ? "[%s]" : "%s", u->host);
  if (u->port_given && n >= 0 && (size_t)n < outlen) snprintf(out + n, outlen - (size_t)n, ":%d", u->port);
}

/* ---- listen addresses ---- */

const char *rh_hostport_parse(const char *s, rh_hostport *out) {
  memset(out, 0, sizeof *out);
  size_t n = s ? strlen(s) : 0;
  span host = { s, 0 }, port = { s, n };
  const char *why = NULL;
  if (!n) return failf(out->err, "empty address (want HOST:PORT)");
  if (strspn(s, "0123456789") < n) { /* not a bare port */
    if ((why = split_host(s, s + n, &host, &port, &out->ipv6, out->err))) return why;
    if (!port.p) return failf(out->err, "missing port (want HOST:PORT)");
    if ((host.n || out->ipv6) && (why = check_host(host, out->ipv6, out->err))) return why;
  }
  if ((why = parse_port(port, 0, &out->port, out->err))) return why;
  snprintf(out->host, sizeof out->host, "%.*s", host.n ? (int)host.n : 7, host.n ? host.p : "0.0.0.0");
  return NULL;
}

void rh_hostport_format(const char *host, int port, char *out, size_t outlen) {
  snprintf(out, outlen, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
}
