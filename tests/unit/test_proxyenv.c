/* proxyenv: which peers NO_PROXY sends direct, and how HTTPS_PROXY/HTTP_PROXY are read (the
 * forward_proxy spec shows the same through a real proxy). */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "net/proxyenv.h"

typedef struct {
  const char *no_proxy, *host;
  int port, direct;
} bypass_case;

static const bypass_case cases[] = {
  { "*", "anything.example", 443, 1 },
  { "", "example.com", 443, 0 },
  { NULL, "example.com", 443, 0 },
  { "example.com", "example.com", 443, 1 },
  { "example.com", "api.EXAMPLE.com", 443, 1 },  /* subdomains, case aside */
  { "example.com", "badexample.com", 443, 0 },   /* a suffix is not a subdomain */
  { ".example.com", "example.com", 443, 1 },     /* a leading dot changes nothing */
  { "*.example.com", "a.b.example.com", 80, 1 },
  { " other.org , example.com ", "example.com", 80, 1 },
  { "example.com:8443", "example.com", 8443, 1 },
  { "example.com:8443", "example.com", 443, 0 },
  { "10.0.0.1", "10.0.0.1", 80, 1 },
  { "10.0.0.1", "10.0.0.2", 80, 0 },
  { "10.0.0.0/8", "10.200.3.4", 80, 1 },
  { "10.0.0.0/8", "11.0.0.1", 80, 0 },
  { "10.0.0.0/8", "ten.example", 80, 0 },        /* a range matches IP literals only */
  { "::1", "::1", 80, 1 },
  { "[::1]:8080", "::1", 8080, 1 },
  { "[::1]:8080", "::1", 80, 0 },
  { "fd00::/8", "fd12::5", 80, 1 },
  { "127.0.0.1:9000", "127.0.0.1", 9000, 1 },
  { "127.0.0.1:9000", "127.0.0.1", 9001, 0 },
  { "localhost", "127.0.0.1", 80, 0 },           /* names are not resolved */
};

static void bypass(void) {
  test_name = "NO_PROXY";
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const bypass_case *c = &cases[i];
    int got = rh_proxyenv_bypass(c->no_proxy, c->host, c->port);
    if (got != c->direct) fprintf(stderr, "  NO_PROXY=%s %s:%d -> %d\n", c->no_proxy ? c->no_proxy : "(unset)", c->host, c->port, got);
    CHECK(got == c->direct);
  }
}

static int pick(const char *host, int port, int tls, rh_proxyenv *p, char *err) {
  memset(p, 0, sizeof *p);
  return rh_proxyenv_pick(host, port, tls, p, err, 200);
}

static void variables(void) {
  test_name = "HTTPS_PROXY, HTTP_PROXY";
  rh_proxyenv p;
  char err[200];
  unsetenv("NO_PROXY"), unsetenv("no_proxy");
  setenv("https_proxy", "http://lower:1", 1);
  setenv("HTTPS_PROXY", "http://proxy.example:3128/", 1);
  CHECK(pick("api.example", 443, 1, &p, err) == 1);
  CHECK(strcmp(p.host, "proxy.example") == 0 && p.port == 3128 && strcmp(p.var, "HTTPS_PROXY") == 0);
  unsetenv("HTTPS_PROXY");
  CHECK(pick("api.example", 443, 1, &p, err) == 1 && strcmp(p.host, "lower") == 0 && p.port == 1);
  CHECK(pick("api.example", 80, 0, &p, err) == 0); /* plain peers read HTTP_PROXY only */
  setenv("http_proxy", "[::1]", 1);
  CHECK(pick("api.example", 80, 0, &p, err) == 1 && strcmp(p.host, "::1") == 0 && p.port == 80);
  setenv("no_proxy", "api.example", 1);
  CHECK(pick("api.example", 80, 0, &p, err) == 0);
  unsetenv("no_proxy");
  setenv("http_proxy", "socks5://s:1080", 1);
  CHECK(pick("api.example", 80, 0, &p, err) == -1 && strstr(err, "http_proxy=socks5://s:1080") == err);
  setenv("http_proxy", "http://us%40er:p%3Aw@proxy:3128", 1); /* "us@er", "p:w" */
  CHECK(pick("api.example", 80, 0, &p, err) == 1 && strcmp(p.host, "proxy") == 0 && p.port == 3128);
  CHECK(strcmp(p.basic, "dXNAZXI6cDp3") == 0); /* base64 of us@er:p:w */
  setenv("http_proxy", "http://user:secret%zz@proxy:3128", 1);
  CHECK(pick("api.example", 80, 0, &p, err) == -1 && strstr(err, "secret") == NULL && strstr(err, "percent-encoding") != NULL);
  setenv("http_proxy", "http://proxy:3128", 1);
  CHECK(pick("api.example", 80, 0, &p, err) == 1 && p.basic[0] == 0);
  setenv("http_proxy", "http://:3128", 1);
  CHECK(pick("api.example", 80, 0, &p, err) == -1);
  setenv("http_proxy", "proxy:99999", 1);
  CHECK(pick("api.example", 80, 0, &p, err) == -1);
  unsetenv("http_proxy"), unsetenv("https_proxy");
}

int main(void) {
  bypass();
  variables();
  if (!failures) fprintf(stderr, "test_proxyenv: ok\n");
  return failures ? 1 : 0;
}
