/* Unit tests for rh_addr_format (core/net/net.c): the hand-written IPv4 formatter against
 * inet_ntop for every octet value in every position, the edge addresses, a buffer too small,
 * IPv6 (which still goes through inet_ntop) and an unknown family. */
#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

#include "net/net.h"
#include "check.h"

static rh_addr v4(unsigned a, unsigned b, unsigned c, unsigned d) {
  rh_addr x = {.family = AF_INET, .addr = {(unsigned char)a, (unsigned char)b, (unsigned char)c, (unsigned char)d}};
  return x;
}

static int formats_as(rh_addr a, size_t outlen, const char *want) {
  char out[64];
  memset(out, 'x', sizeof out);
  rh_addr_format(&a, out, outlen);
  return !strcmp(out, want);
}

static void edges(void) {
  test_name = "edges";
  CHECK(formats_as(v4(0, 0, 0, 0), 46, "0.0.0.0"));
  CHECK(formats_as(v4(255, 255, 255, 255), 46, "255.255.255.255"));
  CHECK(formats_as(v4(127, 0, 0, 1), 46, "127.0.0.1"));
  CHECK(formats_as(v4(10, 9, 100, 99), 46, "10.9.100.99"));
  CHECK(formats_as(v4(1, 20, 200, 0), 46, "1.20.200.0"));
}

/* Every octet value in every position agrees with inet_ntop. */
static void every_octet(void) {
  test_name = "every_octet";
  for (unsigned pos = 0; pos < 4; pos++)
    for (unsigned v = 0; v < 256; v++) {
      rh_addr a = v4(pos == 0 ? v : 7, pos == 1 ? v : 0, pos == 2 ? v : 250, pos == 3 ? v : 19);
      char want[INET_ADDRSTRLEN];
      REQUIRE(inet_ntop(AF_INET, a.addr, want, sizeof want));
      CHECK(formats_as(a, 46, want));
    }
}

/* The exact fit works; one byte less gives "unknown" cut to fit, as inet_ntop's failure did. */
static void small_buffer(void) {
  test_name = "small_buffer";
  CHECK(formats_as(v4(255, 255, 255, 255), 16, "255.255.255.255"));
  CHECK(formats_as(v4(255, 255, 255, 255), 15, "unknown"));
  CHECK(formats_as(v4(255, 255, 255, 255), 4, "unk"));
  CHECK(formats_as(v4(0, 0, 0, 0), 8, "0.0.0.0"));
}

static void ipv6_and_unknown(void) {
  test_name = "ipv6_and_unknown";
  rh_addr a = {.family = AF_INET6};
  CHECK(formats_as(a, 46, "::"));
  a.addr[15] = 1;
  CHECK(formats_as(a, 46, "::1"));
  inet_pton(AF_INET6, "2001:db8::ff00:42:8329", a.addr);
  CHECK(formats_as(a, 46, "2001:db8::ff00:42:8329"));
  inet_pton(AF_INET6, "::ffff:192.0.2.128", a.addr);
  CHECK(formats_as(a, 46, "::ffff:192.0.2.128"));
  memset(a.addr, 0xff, 16);
  CHECK(formats_as(a, 46, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
  rh_addr none = {0};
  CHECK(formats_as(none, 46, "unknown"));
}

int main(void) {
  edges();
  every_octet();
  small_buffer();
  ipv6_and_unknown();
  if (failures) fprintf(stderr, "%d failure(s)\n", failures);
  return failures ? 1 : 0;
}
