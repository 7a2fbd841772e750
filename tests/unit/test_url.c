/* Unit tests for core/net/url.c, on what the five URL parsers it replaced disagreed about:
 * userinfo (refused, skipped, or half read), IPv6 literals, ports out of range or not numbers,
 * the schemes' default ports, where the path and query split, and input too long for a buffer. */
#include <string.h>

#include "net/url.h"
#include "check.h"

static rh_url u;

static const char *parse(const char *s) { return rh_url_parse(s, NULL, &u); }

/* The error contains want (or is NULL when want is). */
static int err_is(const char *got, const char *want) {
  if (!got || !want) return got == want;
  return strstr(got, want) != NULL;
}

static int eq(const char *a, const char *b) { return a && b ? !strcmp(a, b) : a == b; }

#define ERR(s, want) CHECK(err_is(parse(s), want))

static void userinfo(void) {
  test_name = "userinfo";
  CHECK(!parse("redis://alice:s3cret@h:1/2"));
  CHECK(eq(u.user, "alice") && eq(u.password, "s3cret") && eq(u.host, "h") && u.port == 1);
  CHECK(!parse("redis://:p%40ss%25w%3A@h"));
  CHECK(eq(u.user, "") && eq(u.password, "p@ss%w:"));
  CHECK(!parse("http://u:p@ss@h/x")); /* the last '@' ends it */
  CHECK(eq(u.password, "p@ss") && eq(u.host, "h"));
  CHECK(!parse("http://bob@h") && eq(u.user, "bob") && u.password == NULL);
  CHECK(!parse("http://h") && u.user == NULL && u.password == NULL);
  CHECK(!parse("http://a:b:c@h") && eq(u.user, "a") && eq(u.password, "b:c"));
  ERR("http://u:%zz@h", "bad percent-encoding in userinfo");
  ERR("http://u:%4@h", "bad percent-encoding in userinfo");
  ERR("http://u:%00@h", "%00 in userinfo");
  ERR("http://u:p@/x", "missing host");
  CHECK(!parse("http://u@h") && err_is(rh_url_refuse(&u, "userinfo"), "userinfo not allowed here"));
}

static void ipv6(void) {
  test_name = "ipv6";
  CHECK(!parse("http://[::1]:8080/a") && eq(u.host, "::1") && u.ipv6 && u.port == 8080 && eq(u.path, "/a"));
  CHECK(!parse("wss://[2001:db8::7]") && eq(u.host, "2001:db8::7") && u.port == 443 && !u.port_given);
  CHECK(!parse("redis://:pw@[::1]:7000/3") && eq(u.host, "::1") && eq(u.password, "pw") && eq(u.path, "/3"));
  ERR("http://[::1/x", "IPv6 literal not closed");
  ERR("http://[::1", "IPv6 literal not closed");
  ERR("http://[::1]x/", "junk after the IPv6 literal");
  ERR("http://[zz::1]/", "bad IPv6 literal");
  ERR("http://[]/", "missing host");
  ERR("http://::1/", "must be in brackets");
  ERR("http://:80/", "missing host");
  ERR("http://fe80::1:80/", "must be in brackets");
  char a[80];
  CHECK(!parse("http://[::1]:81/"));
  rh_url_authority(&u, a, sizeof a);
  CHECK(eq(a, "[::1]:81"));
  CHECK(!parse("http://Example.com/"));
  rh_url_authority(&u, a, sizeof a);
  CHECK(eq(a, "Example.com"));
}

static void ports(void) {
  test_name = "ports";
  ERR("http://h:0/", "port out of range");
  ERR("http://h:65536/", "port out of range");
  ERR("http://h:99999/", "port out of range");
  ERR("http://h:999999999999999999999/", "port out of range");
  ERR("http://h:7x/", "port '7x' is not a number");
  ERR("http://h:-1/", "is not a number");
  ERR("http://h:+80/", "is not a number");
  ERR("http://h: 80/", "invalid character");
  ERR("http://h:/", "missing port after ':'");
  ERR("http://[::1]:/", "missing port after ':'");
  CHECK(!parse("http://h:65535") && u.port == 65535 && u.port_given);
  CHECK(!parse("http://h:1") && u.port == 1);
}

static void schemes(void) {
  test_name = "schemes";
  static const struct { const char *url; int port, tls; } d[] = {
    { "http://h", 80, 0 },      { "https://h", 443, 1 },    { "ws://h", 80, 0 },
    { "wss://h", 443, 1 },      { "redis://h", 6379, 0 },   { "rediss://h", 6379, 1 },
    { "HTTPS://h", 443, 1 },    { "git+ssh://h", 0, 0 },
  };
  for (size_t i = 0; i < sizeof d / sizeof *d; i++) {
    CHECK(!parse(d[i].url));
    CHECK(u.port == d[i].port && u.tls == d[i].tls && !u.port_given);
  }
  CHECK(!parse("HTTP://h") && eq(u.scheme, "http"));
  CHECK(err_is(rh_url_parse("ftp://h/", "http https", &u), "unsupported scheme 'ftp'"));
  CHECK(!rh_url_parse("https://h/", "http https", &u));
  CHECK(err_is(rh_url_parse("http://h/", "https", &u), "unsupported scheme 'http'"));
  CHECK(err_is(rh_url_parse("http://h/", "https ws http2", &u), "unsupported scheme"));
  ERR("h:80", "missing scheme");
  ERR("http:/h", "missing scheme");
  ERR("://h", "missing scheme");
  ERR("1http://h", "bad scheme");
  CHECK(rh_url_default_port("redis") == 6379 && rh_url_default_port("gopher") == 0);
}

static void split(void) {
  test_name = "path and query";
  CHECK(!parse("http://h") && eq(u.path, "/") && u.query == NULL && u.fragment == NULL);
  CHECK(!parse("http://h?a=1") && eq(u.path, "/") && eq(u.query, "a=1"));
  CHECK(!parse("http://h/a/b?c=d&e#f") && eq(u.path, "/a/b") && eq(u.query, "c=d&e") && eq(u.fragment, "f"));
  CHECK(!parse("http://h/a%20b/?") && eq(u.path, "/a%20b/") && eq(u.query, ""));
  CHECK(!parse("http://h#x?y") && eq(u.path, "/") && u.query == NULL && eq(u.fragment, "x?y"));
  CHECK(!parse("http://u@h:1/p") && u.rest == strlen("http://u@h:1"));
  CHECK(!parse("http://h/@x:9") && eq(u.host, "h") && u.port == 80 && eq(u.path, "/@x:9"));
  ERR("http://h/a b", "invalid character");
  ERR("http://h/\r\nX: y", "invalid character");
  ERR("http://h\x7f/", "invalid character");
  ERR("http://h!x/", "bad character in host");
  ERR("http://h%41/", "bad character in host");
  ERR("", "empty URL");
  CHECK(err_is(rh_url_parse(NULL, NULL, &u), "empty URL"));
}

static void too_long(void) {
  test_name = "too long";
  static char s[RH_URL_MAX + 64];
  memset(s, 'a', sizeof s - 1);
  memcpy(s, "http://h/", 9);
  ERR(s, "URL too long");
  s[RH_URL_MAX] = 0; /* exactly the limit: whole */
  CHECK(!parse(s) && strlen(u.path) == RH_URL_MAX - 8);
  memset(s, 'a', sizeof s - 1);
  memcpy(s, "http://", 7);
  s[7 + RH_HOST_MAX + 1] = 0;
  ERR(s, "host too long");
  s[7 + RH_HOST_MAX] = 0;
  CHECK(!parse(s) && strlen(u.host) == RH_HOST_MAX);
  memset(s, 'a', sizeof s - 1); /* every part at once, the whole limit long: buf holds them all */
  memcpy(s, "http://", 7);
  s[100] = ':', s[4000] = '@', s[4001] = 'h', s[4002] = '/', s[6000] = '?', s[7000] = '#';
  s[RH_URL_MAX] = 0;
  CHECK(!parse(s) && strlen(u.password) == 3899 && strlen(u.fragment) == RH_URL_MAX - 7001);
}

static void hostport(void) {
  test_name = "hostport";
  rh_hostport h;
  CHECK(!rh_hostport_parse("127.0.0.1:8080", &h) && eq(h.host, "127.0.0.1") && h.port == 8080 && !h.ipv6);
  CHECK(!rh_hostport_parse("[::1]:0", &h) && eq(h.host, "::1") && h.port == 0 && h.ipv6);
  CHECK(!rh_hostport_parse(":9", &h) && eq(h.host, "0.0.0.0") && h.port == 9);
  CHECK(!rh_hostport_parse("9", &h) && eq(h.host, "0.0.0.0") && h.port == 9);
  CHECK(!rh_hostport_parse("localhost:8686", &h) && eq(h.host, "localhost") && h.port == 8686);
  CHECK(err_is(rh_hostport_parse("localhost", &h), "missing port"));
  CHECK(err_is(rh_hostport_parse("h:65536", &h), "port out of range"));
  CHECK(err_is(rh_hostport_parse("h:8x", &h), "is not a number"));
  CHECK(err_is(rh_hostport_parse("h:", &h), "missing port after ':'"));
  CHECK(err_is(rh_hostport_parse("[::1:80", &h), "IPv6 literal not closed"));
  CHECK(err_is(rh_hostport_parse("[]:80", &h), "missing host"));
  CHECK(err_is(rh_hostport_parse("::1:80", &h), "must be in brackets"));
  CHECK(err_is(rh_hostport_parse("", &h), "empty address"));
  CHECK(err_is(rh_hostport_parse(NULL, &h), "empty address"));
  CHECK(err_is(rh_hostport_parse("a b:80", &h), "bad character in host"));
  char out[300];
  rh_hostport_format("::1", 80, out, sizeof out);
  CHECK(eq(out, "[::1]:80"));
  rh_hostport_format("localhost", 0, out, sizeof out);
  CHECK(eq(out, "localhost:0"));
}

int main(void) {
  userinfo();
  ipv6();
  ports();
  schemes();
  split();
  too_long();
  hostport();
  if (failures) fprintf(stderr, "%d failure(s)\n", failures);
  return failures ? 1 : 0;
}
