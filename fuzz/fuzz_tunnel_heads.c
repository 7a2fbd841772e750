/* fuzz_tunnel_heads: the heads the git tunnel relays, in both directions, built from hostile parts.
 *
 * Input: byte 0 picks the direction and the setting (bit 0: 0 the relay-client's upstream request
 * from a server's HEAD frame, rh_texec_head; 1 the server's response to the git user from a
 * client's HEAD frame, rh_trelay_check_head then the writer; bit 1: base-url "http:/" with an
 * allow list, else base-url with a path when bit 3; bit 2: X-Relay-* pass on). Then parts, each
 * a u8 length and that many bytes: method and target (or status and reason), then name, value
 * pairs.
 *
 * Checked: whatever is not refused parses (llhttp, as the far end would) as exactly one head
 * with the parts given: the method or status, every field that crosses a hop with its value in
 * order and nothing else but the writer's own (Host, Connection, the framing), a target that
 * stays under base-url's path with no dot-segment left, on base-url's host or an allowed one,
 * with the query as given. A response head whose parts are all valid is never refused. */
#include <stdint.h>
#include <string.h>
#include <strings.h>

#define FUZZ_TARGET "fuzz_tunnel_heads"
#include "check.h"
#include "http/collect.h"
#include "http/head.h"
#include "net/path.h"
#include "tunnel/relay.h"

static int heads, begun;

static int on_begin(llhttp_t *p) { (void)p; begun++; return 0; }
static int on_head_done(llhttp_t *p) { (void)p; heads++; return 0; }

static rh_buf url;
static int on_url(llhttp_t *p, const char *at, size_t n) { (void)p; rh_buf_append(&url, at, n); return 0; }

static const llhttp_settings_t settings = {
  .on_message_begin = on_begin,
  .on_url = on_url,
  .on_header_field = rh_collect_on_field,
  .on_header_field_complete = rh_collect_on_field_complete,
  .on_header_value = rh_collect_on_value,
  .on_headers_complete = on_head_done,
};

/* Parses the head in b: exactly one, every byte of it, into got. The parser is left for the
 * caller to read the method or status from. */
static void parse_one(rh_collect *c, llhttp_type_t type, const rh_buf *b, rh_headers *got) {
  heads = begun = 0;
  url.len = 0;
  rh_collect_init(c, type, &settings, NULL, got);
  llhttp_errno_t rc = llhttp_execute(&c->llhttp, b->data, b->len);
  if (rc != HPE_OK) FAIL("the head written does not parse: %s", llhttp_get_error_reason(&c->llhttp));
  if (heads != 1 || begun != 1) FAIL("the head written parses as %d heads", heads);
}

/* A value as the far end reads it: without leading and trailing spaces and tabs (llhttp drops
 * the leading ones and keeps the trailing ones; RFC 9112 says a recipient drops both). */
static void trim(const char **v, size_t *n) {
  while (*n && (**v == ' ' || **v == '\t')) (*v)++, (*n)--;
  while (*n && ((*v)[*n - 1] == ' ' || (*v)[*n - 1] == '\t')) (*n)--;
}

static int same_value(const rh_header *a, const char *v, size_t n) {
  const char *g = a->value;
  size_t gn = a->value_len;
  trim(&v, &n);
  trim(&g, &gn);
  return gn == n && memcmp(g, v, n) == 0;
}

/* got[from..] holds exactly the fields of sent that cross (skip says 0), in order. */
static void same_fields(const rh_headers *got, size_t from, const rh_headers *sent, int (*skip)(const rh_header *)) {
  size_t k = from;
  for (size_t i = 0; i < sent->n; i++) {
    const rh_header *f = &sent->items[i];
    if (skip(f)) continue;
    if (k >= got->n) FAIL("a field that crosses the hop is missing");
    const rh_header *g = &got->items[k++];
    if (g->name_len != f->name_len || strncasecmp(g->name, f->name, f->name_len) || !same_value(g, f->value, f->value_len))
      FAIL("field %zu arrives changed", i);
  }
  if (k != got->n) FAIL("the head carries %zu fields nobody sent", got->n - k);
}

static int relay_headers;
static int skip_request(const rh_header *f) {
  return rh_header_hop_by_hop(f) || rh_header_name_eq(f, "host") || rh_header_name_eq(f, "content-length") ||
         (!relay_headers && f->name_len > 8 && !strncasecmp(f->name, "x-relay-", 8));
}
static int skip_response(const rh_header *f) {
  return rh_header_hop_by_hop(f) || rh_header_name_eq(f, "host") || rh_header_name_eq(f, "content-length");
}

/* ---- the relay-client's upstream request ---- */

static const char *const allow[] = { "origin.test:8080", "other.test", "wild.test:*", "[::1]:81" };

static void check_target(const rh_texec_conf *c, const char *target, const rh_texec_up *up) {
  const char *q = memchr(url.data, '?', url.len);
  size_t pl = q ? (size_t)(q - url.data) : url.len;
  const char *base = strncmp(c->base_url, "http://origin.test:8080/base", 28) == 0 ? "/base" : "";
  if (strncmp(url.data, base, strlen(base)) != 0) FAIL("the target left base-url's path");
  rh_buf norm = RH_BUF_INIT;
  if (rh_path_normalize(url.data, pl, &norm) || norm.len != pl || memcmp(norm.data, url.data, pl))
    FAIL("a dot-segment or an empty segment is left in the target");
  rh_buf_free(&norm);
  const char *tq = strchr(target, '?');
  if ((tq && tq[1]) != (q != NULL)) FAIL("the query was dropped or made up");
  if (q && (url.len - pl - 1 != strlen(tq + 1) || memcmp(q + 1, tq + 1, url.len - pl - 1))) FAIL("the query changed");
  if (c->nallow == 0 && (strcmp(up->host, "origin.test") || up->port != 8080)) FAIL("the request left base-url's host");
  if (c->nallow && !(!strcasecmp(up->host, "origin.test") && up->port == 8080) &&
      !(!strcasecmp(up->host, "other.test") && up->port == 80) && strcasecmp(up->host, "wild.test") &&
      !(!strcmp(up->host, "::1") && up->port == 81))
    FAIL("the request went to %s:%d, not an allowed host", up->host, up->port);
}

static void request(const rh_texec_conf *c, const char *method, const char *target, const rh_headers *h) {
  rh_texec_up up;
  rh_buf out = RH_BUF_INIT;
  int status;
  if (rh_texec_head(c, method, target, h, &up, &out, &status)) {
    if (status != 400 && status != 403) FAIL("a refusal that is not 400 or 403");
    rh_buf_free(&out);
    return;
  }
  /* the method as written; llhttp knows only its own, so the rest is parsed behind a GET */
  size_t ml = strlen(method);
  if (!rh_http_is_token(method, ml) || out.len <= ml || memcmp(out.data, method, ml) || out.data[ml] != ' ')
    FAIL("the method is not written as given");
  rh_buf rest = RH_BUF_INIT;
  rh_buf_puts(&rest, "GET");
  rh_buf_append(&rest, out.data + ml, out.len - ml);
  rh_collect p;
  rh_headers got = RH_HEADERS_INIT;
  parse_one(&p, HTTP_REQUEST, &rest, &got);
  rh_buf_free(&rest);
  check_target(c, target, &up);
  if (got.n < 2 || !rh_header_name_eq(&got.items[0], "host") || !rh_header_name_eq(&got.items[1], "connection"))
    FAIL("Host and Connection are not the writer's own");
  size_t own = 2 + (up.chunked || up.left);
  same_fields(&got, own, h, skip_request);
  rh_headers_free(&got);
  rh_buf_free(&out);
}

/* ---- the server's response to the git user ---- */

static int all_valid(const char *status, const rh_headers *h) {
  if (strlen(status) != 3 || status[0] < '2' || status[0] > '5' || strspn(status, "0123456789") != 3) return 0;
  for (size_t i = 0; i < h->n; i++) {
    const rh_header *f = &h->items[i];
    if (!rh_http_is_token(f->name, f->name_len) || !rh_http_is_field_value(f->value, f->value_len)) return 0;
    if (rh_header_name_eq(f, "content-length")) return -1; /* its own rules: not judged here */
  }
  return 1;
}

static void response(const char *status, const rh_headers *h) {
  int code;
  uint64_t len;
  const char *why = rh_trelay_check_head(status, h, &code, &len);
  if (why) {
    if (all_valid(status, h) == 1) FAIL("a valid response head was refused: %s", why);
    return;
  }
  if (code < 200 || code > 599) FAIL("status %d passed as final", code);
  rh_buf out = RH_BUF_INIT;
  rh_headers cross = RH_HEADERS_INIT;
  rh_trelay_copy_headers(h, &cross);
  /* as the server writes it (build_head in core/http/server.c): the framing is its own */
  if (rh_head_status_line(&out, code) || rh_head_fields(&out, &cross, skip_response))
    FAIL("a head that passed the check cannot be written");
  if (len != UINT64_MAX) rh_buf_printf(&out, "Content-Length: %llu\r\n", (unsigned long long)len);
  rh_head_end(&out);
  rh_collect p;
  rh_headers got = RH_HEADERS_INIT;
  parse_one(&p, HTTP_RESPONSE, &out, &got);
  if (p.llhttp.status_code != code) FAIL("the status arrives as %d", p.llhttp.status_code);
  rh_headers view = got;
  if (len != UINT64_MAX) view.n--; /* the writer's own, last */
  same_fields(&view, 0, h, skip_response);
  rh_headers_free(&got);
  rh_headers_free(&cross);
  rh_buf_free(&out);
}

/* ---- input ---- */

/* The next part: a NUL-terminated copy in buf (the HEAD frame's strings are C strings by then). */
static int next_part(const uint8_t **d, size_t *n, char *buf, size_t *len) {
  if (*n < 1) return 0;
  size_t l = (*d)[0];
  if (l > *n - 1) l = *n - 1;
  memcpy(buf, *d + 1, l);
  buf[l] = 0;
  *len = l;
  *d += 1 + l, *n -= 1 + l;
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  int mode = data[0];
  data++, size--;
  char a[256], b[256], name[256], value[256];
  size_t al, bl, nl, vl;
  if (!next_part(&data, &size, a, &al) || !next_part(&data, &size, b, &bl)) return 0;
  rh_headers h = RH_HEADERS_INIT;
  while (next_part(&data, &size, name, &nl) && next_part(&data, &size, value, &vl))
    rh_headers_add(&h, name, nl, value, vl);
  if (mode & 1) {
    response(a, &h);
  } else {
    int quirk = mode & 2;
    relay_headers = !!(mode & 4);
    rh_texec_conf c = { quirk ? "http:/" : (mode & 8) ? "http://origin.test:8080/base/" : "http://origin.test:8080",
                        quirk ? allow : NULL, quirk ? sizeof allow / sizeof *allow : 0, NULL, relay_headers };
    /* a NUL inside the method or target ends it, as the HEAD frame's C strings do */
    request(&c, a, b, &h);
  }
  rh_headers_free(&h);
  return 0;
}
