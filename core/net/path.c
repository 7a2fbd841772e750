#include "net/path.h"
#include <string.h>
#include <strings.h>

/* How many dots the segment s[0..n) is ("." 1, ".." 2) with "%2e" read as a dot; 0 if it is
 * anything else. */
static int dots(const char *s, size_t n) {
  int count = 0;
  for (size_t i = 0; i < n; count++) {
    if (s[i] == '.') i++;
    else if (n - i >= 3 && !strncasecmp(s + i, "%2e", 3)) i += 3;
    else return 0;
  }
  return count <= 2 ? count : 0;
}

/* Length of a separator an upstream may decode at s ("\", "%2f", "%5c"), or 0. */
static size_t hidden_separator(const char *s, size_t n) {
  if (n >= 1 && s[0] == '\\') return 1;
  if (n >= 3 && (!strncasecmp(s, "%2f", 3) || !strncasecmp(s, "%5c", 3))) return 3;
  return 0;
}

/* 1 if a piece of the segment between hidden separators is a dot-segment. */
static int hides_dots(const char *s, size_t n) {
  size_t start = 0, pieces = 1;
  int found = 0;
  for (size_t i = 0; i < n;) {
    size_t k = hidden_separator(s + i, n - i);
    if (!k) { i++; continue; }
    found |= dots(s + start, i - start) > 0;
    pieces++;
    i += k;
    start = i;
  }
  found |= dots(s + start, n - start) > 0;
  return pieces > 1 && found;
}

/* Drops the last segment written after `root` (segments hold no '/'). 0, or -1 if none. */
static int pop_segment(rh_buf *out, size_t root) {
  if (out->len == root) return -1;
  while (out->len > root && out->data[out->len - 1] != '/') out->len--;
  out->len--; /* the '/' before it */
  return 0;
}

const char *rh_path_normalize(const char *p, size_t n, rh_buf *out) {
  size_t root = out->len;
  int trailing = 0;
  for (size_t i = 0; i < n;) {
    size_t s = i;
    while (i < n && p[i] != '/') i++;
    size_t len = i - s;
    if (i < n) i++; /* the '/' */
    if (!len) continue;
    if (hides_dots(p + s, len)) return "a dot-segment behind an encoded slash or backslash";
    int d = dots(p + s, len);
    if (d == 2 && pop_segment(out, root)) return "the path climbs above its root";
    trailing = d > 0;
    if (d) continue;
    rh_buf_append(out, "/", 1);
    rh_buf_append(out, p + s, len);
  }
  if (out->len == root || trailing || (n && p[n - 1] == '/')) rh_buf_append(out, "/", 1);
  return NULL;
}
