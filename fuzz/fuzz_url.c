/* fuzz_url: core/net/url (rh_url_parse, rh_hostport_parse) on arbitrary strings.
 *
 * Invariants: an error is a terminated message and nothing else; a URL that parses has a
 * lower-case scheme, a host of 1..RH_HOST_MAX bytes with a ':' only when it was a bracketed
 * literal, a port in 1..65535 (or 0 when neither written nor known), a path starting with '/',
 * and no CR, LF, space or NUL anywhere; written back (userinfo percent-encoded, the host
 * bracketed when a literal) it parses again to the same parts. The same for a listen address:
 * port 0..65535, and rh_hostport_format's text parses back to the same host and port. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/url.h"

#define FUZZ_TARGET "fuzz_url"
#include "check.h"

static int same(const char *a, const char *b) { return a && b ? !strcmp(a, b) : a == b; }

static void encode(char *out, size_t *o, const char *s) {
  for (; s && *s; s++) {
    unsigned char c = (unsigned char)*s;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) out[(*o)++] = (char)c;
    else *o += (size_t)sprintf(out + *o, "%%%02X", c);
  }
}

/* u written back as a URL. */
static void unparse(const rh_url *u, char *out) {
  size_t o = (size_t)sprintf(out, "%s://", u->scheme);
  encode(out, &o, u->user);
  if (u->password) out[o++] = ':', encode(out, &o, u->password);
  if (u->user) out[o++] = '@';
  rh_url_authority(u, out + o, RH_HOST_MAX + 9);
  o += strlen(out + o);
  o += (size_t)sprintf(out + o, "%s", u->path);
  if (u->query) o += (size_t)sprintf(out + o, "?%s", u->query);
  if (u->fragment) sprintf(out + o, "#%s", u->fragment);
}

static void check_parts(const rh_url *u) {
  for (const char *c = u->scheme; *c; c++)
    if (*c >= 'A' && *c <= 'Z') FAIL("scheme '%s' not lower-cased", u->scheme);
  size_t hl = strlen(u->host);
  if (!hl || hl > RH_HOST_MAX) FAIL("host of %zu bytes", hl);
  if (strchr(u->host, ':') && !u->ipv6) FAIL("':' in a host '%s' that was no literal", u->host);
  if (u->port < 0 || u->port > 65535 || (u->port_given && u->port == 0)) FAIL("port %d", u->port);
  if (u->path[0] != '/') FAIL("path '%s'", u->path);
}

static void check_url(const char *s) {
  static rh_url u, again;
  static char text[RH_URL_MAX * 3 + 64];
  const char *err = rh_url_parse(s, NULL, &u);
  if (err) {
    if (!*err || strlen(err) >= RH_URL_ERRLEN) FAIL("error message '%s'", err);
    return;
  }
  check_parts(&u);
  unparse(&u, text);
  if (strlen(text) > RH_URL_MAX) return; /* encoding grew it past the limit */
  if ((err = rh_url_parse(text, NULL, &again))) FAIL("'%s' written back as '%s': %s", s, text, err);
  if (!same(u.scheme, again.scheme) || !same(u.user, again.user) || !same(u.password, again.password) ||
      !same(u.host, again.host) || u.port != again.port || !same(u.path, again.path) ||
      !same(u.query, again.query) || !same(u.fragment, again.fragment))
    FAIL("'%s' written back as '%s' parses to other parts", s, text);
}

static void check_hostport(const char *s) {
  rh_hostport h, again;
  char text[RH_HOST_MAX + 16];
  if (rh_hostport_parse(s, &h)) return;
  if (h.port < 0 || h.port > 65535 || !h.host[0]) FAIL("listen address '%s': host '%s' port %d", s, h.host, h.port);
  rh_hostport_format(h.host, h.port, text, sizeof text);
  if (rh_hostport_parse(text, &again) || strcmp(h.host, again.host) || h.port != again.port)
    FAIL("listen address '%s' written back as '%s' parses otherwise", s, text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *s = malloc(size + 1);
  if (!s) abort();
  memcpy(s, data, size);
  s[size] = 0;
  check_url(s);
  check_hostport(s);
  free(s);
  return 0;
}
