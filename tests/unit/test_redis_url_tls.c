/* Unit tests for rh_redis_url_tls (core/redis/redis.c): the ssl_… query of a rediss:// URL, its
 * percent-decoding and what it refuses (an unknown parameter, bad percent-encoding, %00, an empty
 * or too long value, a key without a certificate, ssl_* on redis://), naming the parameter. */
#include <string.h>

#include "redis/redis.h"
#include "tls/tls.h"
#include "check.h"

static char err[1024];

/* NULL (and *ctx) or the message, for url. */
static const char *tls_of(const char *url, rh_tls_ctx **ctx) {
  static rh_url u;
  rh_redis_addr a;
  err[0] = 0;
  *ctx = NULL;
  REQUIRE(rh_redis_parse_url(url, &u, &a) == NULL);
  return rh_redis_url_tls(&u, ctx, err, sizeof err);
}

static int refused(const char *url, const char *says) {
  rh_tls_ctx *ctx;
  const char *why = tls_of(url, &ctx);
  if (ctx) rh_tls_ctx_free(ctx);
  if (!why || !strstr(why, says)) fprintf(stderr, "  %s -> %s\n", url, why ? why : "(accepted)");
  return why && strstr(why, says) && !ctx;
}

static void accepted(void) {
  rh_tls_ctx *ctx;
  test_name = "accepted";
  CHECK(tls_of("rediss://h:1", &ctx) == NULL && ctx == NULL); /* the shared default serves */
  CHECK(tls_of("rediss://h:1/2", &ctx) == NULL && ctx == NULL);
  CHECK(tls_of("rediss://h:1?ssl_cert_reqs=none", &ctx) == NULL && ctx != NULL);
  rh_tls_ctx_free(ctx);
  CHECK(tls_of("rediss://h:1?ssl_cert_reqs=REQUIRED&ssl_server_name=redis%2Etest&", &ctx) == NULL && ctx != NULL);
  rh_tls_ctx_free(ctx);
  CHECK(tls_of("rediss://h:1?&&ssl_cert_reqs=none", &ctx) == NULL && ctx != NULL); /* empty pairs pass */
  rh_tls_ctx_free(ctx);
}

static void refusals(void) {
  test_name = "refused";
  CHECK(refused("rediss://h:1?ssl_ca_cert=x", "unknown parameter 'ssl_ca_cert' (want ssl_ca_certs,"));
  CHECK(refused("rediss://h:1?ssl_cert_reqs", "ssl_cert_reqs: empty, too long or badly percent-encoded"));
  CHECK(refused("rediss://h:1?ssl_cert_reqs=", "ssl_cert_reqs: empty"));
  CHECK(refused("rediss://h:1?ssl_cert_reqs=maybe", "ssl_cert_reqs: 'maybe' (want required or none)"));
  CHECK(refused("rediss://h:1?ssl_cert_reqs=nonenonenonenone", "ssl_cert_reqs: empty, too long"));
  CHECK(refused("rediss://h:1?ssl_ca_certs=%zz", "ssl_ca_certs: empty, too long or badly percent-encoded"));
  CHECK(refused("rediss://h:1?ssl_ca_certs=a%2", "ssl_ca_certs: empty, too long or badly percent-encoded"));
  CHECK(refused("rediss://h:1?ssl_ca_certs=a%00b", "ssl_ca_certs: empty, too long or badly percent-encoded"));
  CHECK(refused("rediss://h:1?ssl_keyfile=/k.pem", "ssl_keyfile needs ssl_certfile"));
  CHECK(refused("redis://h:1?ssl_cert_reqs=none", "ssl_* parameters are for rediss:// (TLS); this URL is redis://"));
  CHECK(refused("rediss://h:1?ssl_ca_certs=%2Fno%2Fsuch.pem", "ssl_ca_certs: cannot load CA file /no/such.pem: No such file"));
  CHECK(refused("rediss://h:1?ssl_certfile=/no/such.pem", "ssl_certfile: cannot load certificate chain /no/such.pem"));
  char longname[600] = "rediss://h:1?ssl_server_name=";
  memset(longname + strlen(longname), 'a', 300);
  CHECK(refused(longname, "ssl_server_name: empty, too long"));
}

int main(void) {
  accepted();
  refusals();
  return failures ? 1 : 0;
}
