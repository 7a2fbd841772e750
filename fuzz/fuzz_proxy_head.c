/* fuzz_proxy_head: the proxy's upstream request head (rh_proxy_build_head) from hostile parts.
 *
 * Input: lines. Byte 0 of line 1 picks the mode ('h': an on_request hook sets method and target,
 * as a script may; else the client's request goes up as the proxy builds it); the rest of line 1
 * is the method, line 2 the client's path (or the hook's target), line 3 the query ("-": none),
 * and each further line a header "name:value" (any byte but newline: the parts are not
 * pre-checked). The mount is /api on http://127.0.0.1:9/v1.
 *
 * Invariants: either a refusal (a status, a body naming why, and nothing written), or a head that
 * llhttp reads as exactly one complete request, chunked only when the client's was (its body then
 * ended with a last chunk), using every byte (the method read as
 * GET: llhttp knows only the registered ones, and a hook may send any token); without the hook,
 * its target lies under /v1/ and holds no dot-segment ("." or "..", "%2e" read as a dot). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <llhttp.h>

#include "log/log.h"
#include "proxy/internal.h"

#define FUZZ_TARGET "fuzz_proxy_head"
#include "check.h"

typedef struct {
  int messages, complete;
  rh_buf url;
} parsed;

static int on_url(llhttp_t *p, const char *at, size_t n) {
  rh_buf_append(&((parsed *)p->data)->url, at, n);
  return 0;
}

static int on_begin(llhttp_t *p) {
  ((parsed *)p->data)->messages++;
  return 0;
}

static int on_complete(llhttp_t *p) {
  ((parsed *)p->data)->complete++;
  return 0;
}

/* The hook's parts: line 1 and 2 of the input, as a script would set them. */
typedef struct {
  const char *method, *target;
} hook_parts;

static int hook_request(void *ud, rh_proxy_head *head, char **body) {
  (void)body;
  hook_parts *h = ud;
  free(head->method);
  free(head->target);
  head->method = strdup(h->method);
  head->target = strdup(h->target);
  return 0;
}

/* 1 if the segment s[0..n) is "." or ".." with "%2e" read as a dot. */
static int dot_segment(const char *s, size_t n) {
  size_t dots = 0;
  for (size_t i = 0; i < n; dots++) {
    if (s[i] == '.') i++;
    else if (n - i >= 3 && !strncasecmp(s + i, "%2e", 3)) i += 3;
    else return 0;
  }
  return dots == 1 || dots == 2;
}

static void check_target(const char *t, size_t n) {
  size_t path_len = strcspn(t, "?");
  if (path_len > n) path_len = n;
  if (path_len < 4 || memcmp(t, "/v1/", 4) != 0) FAIL("target '%.*s' is not under /v1/", (int)n, t);
  for (size_t i = 1; i < path_len;) {
    size_t s = i;
    while (i < path_len && t[i] != '/') i++;
    if (dot_segment(t + s, i - s)) FAIL("target '%.*s' holds a dot-segment", (int)n, t);
    i++;
  }
}

static void check_head(const rh_buf *out, int hooked, int chunked) {
  llhttp_settings_t st;
  llhttp_settings_init(&st);
  st.on_url = on_url;
  st.on_message_begin = on_begin;
  st.on_message_complete = on_complete;
  llhttp_t p;
  llhttp_init(&p, HTTP_REQUEST, &st);
  parsed r = { 0, 0, RH_BUF_INIT };
  p.data = &r;
  /* llhttp knows only the registered methods; any token is one (a hook may use its own), so
   * the method is read as GET: the first space ends it, which is what the check is about */
  const char *sp = memchr(out->data, ' ', out->len);
  if (!sp) FAIL("no space in the request line");
  rh_buf head = RH_BUF_INIT;
  rh_buf_puts(&head, "GET");
  rh_buf_append(&head, sp, out->len - (size_t)(sp - out->data));
  if (chunked) rh_buf_puts(&head, "0\r\n\r\n"); /* the body's end, which the proxy sends later */
  llhttp_errno_t e = llhttp_execute(&p, head.data, head.len);
  rh_buf_free(&head);
  if (e != HPE_OK) FAIL("the head does not parse: %s: %.*s", llhttp_errno_name(e), (int)out->len, out->data);
  if (r.messages != 1 || r.complete != 1) FAIL("the head is %d messages (%d complete)", r.messages, r.complete);
  rh_buf_append(&r.url, "", 1); /* a NUL for strcspn, not counted */
  r.url.len--;
  if (!hooked) check_target(r.url.data, r.url.len);
  rh_buf_free(&r.url);
}

/* Line i of the input (0-based) into *s, *n; 0 if there is none. */
static int line(const char *d, size_t size, int i, const char **s, size_t *n) {
  const char *p = d, *end = d + size;
  for (; i > 0; i--) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) return 0;
    p = nl + 1;
  }
  const char *nl = memchr(p, '\n', (size_t)(end - p));
  *s = p;
  *n = (size_t)((nl ? nl : end) - p);
  return 1;
}

static rh_proxy_conf *conf(void) {
  static rh_proxy_conf *c;
  if (c) return c;
  rh_log_set_level((rh_log_level)(RH_LOG_ERROR + 1)); /* the refusals' log lines are not the point */
  rh_proxy_opts o = { .mount = "/api", .target_base_url = "http://127.0.0.1:9/v1" };
  char err[200];
  if (!(c = rh_proxy_conf_new(&o, err, sizeof err))) FAIL("conf: %s", err);
  return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *d = (const char *)data, *s;
  size_t n;
  if (!line(d, size, 0, &s, &n) || n < 2) return 0;
  int hooked = s[0] == 'h';
  char *method = strndup(s + 1, n - 1), *path = NULL;
  if (line(d, size, 1, &s, &n)) path = strndup(s, n);
  else path = strdup("/api/x");
  rh_http_req r;
  memset(&r, 0, sizeof r);
  r.method = method;
  r.path = path;
  r.path_len = strcspn(path, "?"); /* the server's split: the query is line 3 */
  r.content_length = UINT64_MAX;
  snprintf(r.socket_peer, sizeof r.socket_peer, "127.0.0.1");
  snprintf(r.id, sizeof r.id, "fuzz");
  rh_headers_init(&r.headers);
  if (line(d, size, 2, &s, &n) && !(n == 1 && s[0] == '-')) {
    r.query = s;
    r.query_len = n;
  }
  for (int i = 3; line(d, size, i, &s, &n); i++) {
    const char *colon = memchr(s, ':', n);
    if (!colon) continue;
    rh_headers_add(&r.headers, s, (size_t)(colon - s), colon + 1, n - (size_t)(colon - s) - 1);
  }
  rh_trace_begin(&r.trace, &r.headers); /* as the server does: fuzzed traceparents too */
  hook_parts hp = { method, path };
  rh_proxy_hooks hooks = { .on_request = hook_request, .ud = &hp };
  rh_buf out = RH_BUF_INIT;
  char *body = NULL;
  int chunked = 0;
  rh_headers answer = RH_HEADERS_INIT;
  rh_proxy_upstream up; /* the mount's one upstream: its Host, as the proxy sends it */
  rh_proxy_conf_upstream(conf(), NULL, &up);
  int status = rh_proxy_build_head(conf(), &r, hooked ? &hooks : NULL, up.host_header, NULL, &out, &chunked, &body,
                                   &answer);
  if (status) {
    if (out.len) FAIL("refused with %d but wrote %zu bytes", status, out.len);
    if (!body || !*body) FAIL("refused with %d without saying why", status);
  } else {
    if (chunked != (rh_headers_find(&r.headers, "transfer-encoding", NULL) != NULL))
      FAIL("chunked %d, but the client's request %s Transfer-Encoding", chunked, chunked ? "has no" : "has");
    check_head(&out, hooked, chunked);
  }
  free(body);
  rh_headers_free(&answer);
  rh_buf_free(&out);
  rh_headers_free(&r.headers);
  free(method);
  free(path);
  return 0;
}
