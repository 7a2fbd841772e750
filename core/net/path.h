/* path: the one rule for a request path that is placed under another (a proxy mount's base
 * path, the git tunnel's base-url), so that no form of ".." leaves it.
 *
 * Dot-segments are removed as RFC 3986 §5.2.4 says, reading the encoded forms as the servers
 * behind us will: "%2e" is a dot. A segment that holds an encoded slash or backslash ("%2f",
 * "%5c") or a backslash, with a dot-segment between them ("..%2f", "%2e%2e%5c"), is refused:
 * an upstream that decodes them would climb, and no honest client sends that. Empty segments
 * are merged (as nginx's merge_slashes). docs/security.md states the rule for operators. */
#ifndef RH_NET_PATH_H
#define RH_NET_PATH_H

#include <stddef.h>
#include "buf/buf.h"

/* Appends the normalised form of the path p[0..n) (no query; a leading '/' optional) to out:
 * "/" and the segments left, with a trailing '/' kept when p ended in one or in a dot-segment.
 * NULL, or a message naming what was wrong (out then holds a partial result: drop it). */
const char *rh_path_normalize(const char *p, size_t n, rh_buf *out);

#endif
