#include "cli/admin.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "cli/status.h"
#include "lua/runtime.h"
#include "metrics/metrics.h"

static void text(rh_http_req *r, int status, const char *ctype, const char *body, size_t len) {
  rh_headers h = RH_HEADERS_INIT;
  rh_headers_add(&h, "Content-Type", 12, ctype, strlen(ctype));
  rh_http_respond(r, status, &h, body, len);
  rh_headers_free(&h);
}

/* CSP source for the page's one inline <tag>…</tag> block: 'sha256-…' of its text, so the
 * policy allows that script and style and nothing else (no other script, no fetch but our own). */
static void inline_hash(const char *tag, char *out, size_t len) {
  char open[16], close[16];
  snprintf(open, sizeof open, "<%s>", tag);
  snprintf(close, sizeof close, "</%s>", tag);
  const char *a = strstr(rh_status_html, open), *z = a ? strstr(a, close) : NULL;
  unsigned char md[SHA256_DIGEST_LENGTH];
  unsigned char b64[4 * ((SHA256_DIGEST_LENGTH + 2) / 3) + 1];
  a = a ? a + strlen(open) : "";
  SHA256((const unsigned char *)a, z ? (size_t)(z - a) : 0, md);
  EVP_EncodeBlock(b64, md, sizeof md);
  snprintf(out, len, "'sha256-%s'", (const char *)b64);
}

static void page(rh_http_req *r) {
  static char csp[400];
  if (!csp[0]) {
    char script[64], style[64];
    inline_hash("script", script, sizeof script);
    inline_hash("style", style, sizeof style);
    snprintf(csp, sizeof csp,
             "default-src 'none'; script-src %s; style-src %s; connect-src 'self'; img-src data:; "
             "base-uri 'none'; form-action 'none'; frame-ancestors 'none'", script, style);
  }
  rh_headers h = RH_HEADERS_INIT;
  rh_headers_add(&h, "Content-Type", 12, "text/html; charset=utf-8", 24);
  rh_headers_add(&h, "Content-Security-Policy", 23, csp, strlen(csp));
  rh_headers_add(&h, "X-Content-Type-Options", 22, "nosniff", 7);
  rh_headers_add(&h, "Cache-Control", 13, "no-store", 8);
  rh_http_respond(r, 200, &h, rh_status_html, rh_status_html_len);
  rh_headers_free(&h);
}

static void status_json(rh_http_req *r) {
  rh_buf b = RH_BUF_INIT;
  rh_status_json(&b);
  rh_headers h = RH_HEADERS_INIT;
  rh_headers_add(&h, "Content-Type", 12, "application/json", 16);
  rh_headers_add(&h, "Cache-Control", 13, "no-store", 8);
  rh_http_respond(r, 200, &h, b.data, b.len);
  rh_headers_free(&h);
  rh_buf_free(&b);
}

static int path_is(rh_http_req *r, const char *p) {
  return r->path_len == strlen(p) && memcmp(r->path, p, r->path_len) == 0;
}

static void on_request(rh_http_req *r, void *ud) {
  (void)ud;
  static const char plain[] = "text/plain; charset=utf-8";
  if (path_is(r, "/")) {
    page(r);
  } else if (path_is(r, "/status.json")) {
    status_json(r);
  } else if (path_is(r, "/health")) {
    text(r, 200, plain, "ok\n", 3);
  } else if (path_is(r, "/ready")) {
    int ready = rh_gen_current() != NULL;
    text(r, ready ? 200 : 503, plain, ready ? "ready\n" : "not ready\n", ready ? 6 : 10);
  } else if (path_is(r, "/metrics")) {
    size_t len;
    char *m = rh_metrics_render(&len);
    text(r, 200, "text/plain; version=0.0.4; charset=utf-8", m, len);
    free(m);
  } else {
    text(r, 404, plain, "Not Found\n", 10);
  }
  rh_http_req_release(r);
}

rh_http_server *rh_admin_start(uv_loop_t *loop, const rh_host_settings *s, rh_http_server *main,
                               rh_http_server *const *extra, char *err, size_t errlen) {
  rh_http_limits lim;
  rh_http_limits_default(&lim);
  lim.max_body = 0;
  lim.name = "admin";
  rh_http_handlers h = { on_request, NULL, NULL, NULL, NULL };
  rh_http_server *srv = rh_http_server_start(loop, s->admin_listen, &lim, &h, err, errlen);
  if (srv) rh_status_start(loop, s, main, extra, srv);
  return srv;
}

void rh_admin_free(rh_http_server *s) {
  rh_status_stop();
  rh_http_server_free(s);
}
