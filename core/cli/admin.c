#include "cli/admin.h"

#include <stdlib.h>
#include <string.h>

#include "lua/runtime.h"
#include "metrics/metrics.h"

static void text(rh_http_req *r, int status, const char *ctype, const char *body, size_t len) {
  rh_headers h = RH_HEADERS_INIT;
  rh_headers_add(&h, "Content-Type", 12, ctype, strlen(ctype));
  rh_http_respond(r, status, &h, body, len);
  rh_headers_free(&h);
}

static int path_is(rh_http_req *r, const char *p) {
  return r->path_len == strlen(p) && memcmp(r->path, p, r->path_len) == 0;
}

static void on_request(rh_http_req *r, void *ud) {
  (void)ud;
  static const char plain[] = "text/plain; charset=utf-8";
  if (path_is(r, "/health")) {
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

rh_http_server *rh_admin_start(uv_loop_t *loop, const char *addr, char *err, size_t errlen) {
  rh_http_limits lim;
  rh_http_limits_default(&lim);
  lim.max_body = 0;
  rh_http_handlers h = { on_request, NULL, NULL, NULL, NULL };
  return rh_http_server_start(loop, addr, &lim, &h, err, errlen);
}

void rh_admin_free(rh_http_server *s) { rh_http_server_free(s); }
