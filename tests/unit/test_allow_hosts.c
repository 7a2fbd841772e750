/* Unit tests for the git tunnel's --allow-hosts with --base-url=http:/ (core/tunnel/relay_client.c,
 * through rh_texec_head): each entry form ("host", "host:port", "host:*", "[v6]", "[v6]:port",
 * "[v6]:*") lets exactly its host and ports through, and the relayed target's authority is read
 * by core/net/url (userinfo, a bad port and an unclosed IPv6 literal are refused with 400). */
#include <string.h>

#include "tunnel/relay.h"
#include "check.h"

static const char *const allow[] = { "git.corp", "Web.Corp:8080", "any.corp:*", "[::1]", "[fe80::2]:9000",
                                     "[::3]:*" };

/* The status rh_texec_head gives target: 0 when it goes through. */
static int status_of(const char *target) {
  rh_texec_conf c = { "http:/", allow, sizeof allow / sizeof *allow, NULL, 0 };
  rh_headers h = RH_HEADERS_INIT;
  rh_texec_up up;
  rh_buf out = RH_BUF_INIT;
  int status = 0;
  const char *why = rh_texec_head(&c, "GET", target, &h, &up, &out, &status);
  rh_buf_free(&out);
  return why ? status : 0;
}

int main(void) {
  test_name = "host alone: the default port only";
  CHECK(status_of("/git.corp/x") == 0);
  CHECK(status_of("/GIT.corp:80/x") == 0);
  CHECK(status_of("/git.corp:8080/x") == 403);
  test_name = "host:port";
  CHECK(status_of("/web.corp:8080/x") == 0);
  CHECK(status_of("/web.corp/x") == 403);
  CHECK(status_of("/web.corp:8081/x") == 403);
  test_name = "host:*";
  CHECK(status_of("/any.corp:1/x") == 0 && status_of("/any.corp/x") == 0);
  CHECK(status_of("/many.corp/x") == 403);
  test_name = "ipv6";
  CHECK(status_of("/[::1]/x") == 0);
  CHECK(status_of("/[::1]:81/x") == 403);
  CHECK(status_of("/[fe80::2]:9000/x") == 0);
  CHECK(status_of("/[fe80::2]/x") == 403);
  CHECK(status_of("/[::3]:7/x") == 0);
  test_name = "refused before the list";
  CHECK(status_of("/u@git.corp/x") == 400);
  CHECK(status_of("/git.corp:99999/x") == 400);
  CHECK(status_of("/[::1/x") == 400);
  CHECK(status_of("/169.254.169.254/x") == 403);
  if (failures) fprintf(stderr, "%d failure(s)\n", failures);
  return failures ? 1 : 0;
}
