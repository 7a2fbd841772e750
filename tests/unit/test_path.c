/* Unit tests for core/net/path.c: dot-segments go, in every spelling ("..", "%2e%2e", ".%2E"),
 * a path that climbs above its root is refused, and so is a dot-segment hidden behind an encoded
 * slash or backslash; everything else is kept as it came (no decoding). */
#include <string.h>

#include "net/path.h"
#include "check.h"

static const char *normal(const char *in) {
  static rh_buf b;
  b.len = 0;
  if (rh_path_normalize(in, strlen(in), &b)) return "ERROR";
  rh_buf_append(&b, "", 1);
  return b.data;
}

#define IS(in, want) CHECK(strcmp(normal(in), want) == 0)

int main(void) {
  test_name = "kept";
  IS("", "/");
  IS("/", "/");
  IS("a", "/a");
  IS("/a/b", "/a/b");
  IS("/a/b/", "/a/b/");
  IS("//a///b", "/a/b");
  IS("/a%2fb", "/a%2fb");
  IS("/a%2eb/...", "/a%2eb/...");
  IS("/.well-known/x", "/.well-known/x");
  test_name = "dot-segments";
  IS("/a/./b", "/a/b");
  IS("/a/../b", "/b");
  IS("/a/b/..", "/a/");
  IS("/a/%2e%2e/b", "/b");
  IS("/a/.%2E/b", "/b");
  IS("/a/%2E./b", "/b");
  IS("/a/%2e/b", "/a/b");
  test_name = "refused";
  IS("/..", "ERROR");
  IS("/%2e%2e/admin", "ERROR");
  IS("/%2E%2E/admin", "ERROR");
  IS("/.%2e/admin", "ERROR");
  IS("/a/../../x", "ERROR");
  IS("/a/..%2fadmin", "ERROR");
  IS("/a/..%2Fadmin", "ERROR");
  IS("/a/%2e%2e%5cadmin", "ERROR");
  IS("/a/..\\admin", "ERROR");
  IS("/a/x%2f..", "ERROR");
  if (failures) fprintf(stderr, "%d failure(s)\n", failures);
  return failures ? 1 : 0;
}
