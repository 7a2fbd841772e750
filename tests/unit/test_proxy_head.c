/* Unit tests for the proxy's upstream request head (core/proxy/proxy.c, rh_proxy_build_head) and
 * the checked mark (http/headers.h): the client's fields come marked by the server's parser and
 * go up without a second check, but a value a hook (a script) sets, on a marked field or a new
 * one, and an option's value, are checked as they are written: one with CR LF is refused (500)
 * and nothing goes up. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/head.h"
#include "log/log.h"
#include "proxy/internal.h"
#include "check.h"

typedef enum { KEEP, SET_MARKED, SET_HOST, ADD_NEW } hook_does;

static int hook_request(void *ud, rh_proxy_head *head, char **body) {
  (void)body;
  hook_does what = *(hook_does *)ud;
  rh_headers *h = head->headers;
  if (what == SET_MARKED) rh_headers_set_value(h, &h->items[1], "a\r\nInjected: 1", 15);
  if (what == SET_HOST) rh_headers_set_value(h, &h->items[0], "a\r\nInjected: 1", 15); /* X-Forwarded-Host's */
  if (what == ADD_NEW) rh_headers_add(h, "X-New", 5, "a\r\nInjected: 1", 15);
  return 0;
}

static rh_proxy_conf *conf_with(const rh_headers *extra) {
  rh_proxy_opts o = { .mount = "/api", .target_base_url = "http://127.0.0.1:9/v1", .extra_request_headers = extra };
  char err[200];
  rh_proxy_conf *c = rh_proxy_conf_new(&o, err, sizeof err);
  REQUIRE(c);
  return c;
}

/* The client's request as the server hands it over: fields checked and marked as read. */
static void request(rh_http_req *r) {
  memset(r, 0, sizeof *r);
  r->method = "GET";
  r->path = "/api/x";
  r->path_len = 6;
  r->content_length = UINT64_MAX;
  snprintf(r->socket_peer, sizeof r->socket_peer, "127.0.0.1");
  snprintf(r->id, sizeof r->id, "test");
  rh_headers_init(&r->headers);
  rh_headers_add(&r->headers, "Host", 4, "client", 6);
  rh_headers_add(&r->headers, "X-Client", 8, "ok", 2);
  for (size_t i = 0; i < r->headers.n; i++) REQUIRE(!rh_head_check(&r->headers.items[i]));
  rh_trace_begin(&r->trace, &r->headers);
}

/* The status rh_proxy_build_head returns for the hook's change; the head in *out. */
static int build(rh_proxy_conf *c, hook_does what, rh_buf *out) {
  rh_http_req r;
  request(&r);
  rh_proxy_hooks hooks = { .on_request = hook_request, .ud = &what };
  char *body = NULL;
  int chunked = 0;
  rh_headers answer = RH_HEADERS_INIT;
  int status = rh_proxy_build_head(c, &r, &hooks, "up:9", NULL, out, &chunked, &body, &answer);
  free(body);
  rh_headers_free(&answer);
  rh_headers_free(&r.headers);
  return status;
}

static void test_script_values(void) {
  test_name = "script values";
  rh_proxy_conf *c = conf_with(NULL);
  rh_buf out = RH_BUF_INIT;
  CHECK(build(c, KEEP, &out) == 0);
  CHECK(out.len && strstr(out.data, "\r\nX-Client: ok\r\n") && strstr(out.data, "\r\nX-Forwarded-Host: client\r\n"));
  out.len = 0;
  CHECK(build(c, SET_MARKED, &out) == 500 && out.len == 0);
  CHECK(build(c, SET_HOST, &out) == 500 && out.len == 0);
  CHECK(build(c, ADD_NEW, &out) == 500 && out.len == 0);
  rh_buf_free(&out);
  rh_proxy_conf_unref(c);
}

static void test_option_values(void) {
  test_name = "option values";
  rh_headers extra = RH_HEADERS_INIT;
  rh_headers_add(&extra, "X-Opt", 5, "a\r\nInjected: 1", 15);
  rh_proxy_conf *c = conf_with(&extra);
  rh_buf out = RH_BUF_INIT;
  CHECK(build(c, KEEP, &out) == 500 && out.len == 0);
  rh_buf_free(&out);
  rh_proxy_conf_unref(c);
  rh_headers_free(&extra);
}

int main(void) {
  rh_log_set_level((rh_log_level)(RH_LOG_ERROR + 1)); /* the refusals' log lines are not the point */
  test_script_values();
  test_option_values();
  if (failures) fprintf(stderr, "%d failure(s)\n", failures);
  return failures ? 1 : 0;
}
