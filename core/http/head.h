/* head: the one writer of an HTTP/1.1 head that crosses a hop (proxy both ways, the tunnel's two
 * ends, the HTTP client, the WebSocket dial, the server's own answers), and the one set of checks
 * on the parts of a head.
 *
 * Heads are rebuilt from parsed parts, never copied: every part is checked as it is written (a
 * parsed field once, as it was read: rh_head_check and the checked mark of http/headers.h), so
 * whatever a peer or a script hands over, the output parses as exactly one head. Each writer
 * returns NULL, or a message naming what was wrong; the buffer then keeps whatever was written
 * before the failing part, and the caller drops the whole head. */
#ifndef RH_HTTP_HEAD_H
#define RH_HTTP_HEAD_H

#include <stddef.h>
#include <stdint.h>
#include "http/headers.h"
#include "buf/buf.h"

int rh_http_is_token(const char *s, size_t n);       /* RFC 9110 token: a method, a field name */
int rh_http_is_field_value(const char *s, size_t n); /* no control bytes but HTAB */
/* A request target another server will read as one: origin-form ("/…") or "*", visible ASCII
 * only (no space, CR, LF, NUL, '#'). */
int rh_http_is_target(const char *s, size_t n);

const char *rh_head_request_line(rh_buf *b, const char *method, size_t mlen, const char *target,
                                 size_t tlen);
/* "HTTP/1.1 NNN Reason"; status must be 100..599 (the reason comes from rh_http_reason). */
const char *rh_head_status_line(rh_buf *b, int status);
const char *rh_head_field(rh_buf *b, const char *name, size_t nlen, const char *value, size_t vlen);
/* A field of a list: as rh_head_field, but one marked checked (a parser's, http/headers.h) is
 * written without looking at its bytes again: each byte that crosses a hop is checked once. */
const char *rh_head_header(rh_buf *b, const rh_header *f);
/* rh_head_field's checks on a parsed field, which is marked checked when it passes. */
const char *rh_head_check(rh_header *f);
/* Every field of h (rh_head_header) for which skip (may be NULL) says 0. */
const char *rh_head_fields(rh_buf *b, const rh_headers *h, int (*skip)(const rh_header *f));
void rh_head_end(rh_buf *b);
/* v in decimal at out (no NUL; at least RH_HTTP_U64_MAX bytes), its length returned. Without
 * printf: a Content-Length is written for most responses. */
#define RH_HTTP_U64_MAX 20
size_t rh_http_u64(char *out, uint64_t v);

#endif
