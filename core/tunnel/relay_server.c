/* relay_server: a client's HTTP request relayed as one tunnel stream. See relay.h. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/head.h"
#include "tunnel/relay.h"

struct rh_trelay {
  rh_http_req *req;
  rh_tstream *s;
  void *req_ud;              /* the runtime's, put back when we let go of the request */
  size_t unacked;            /* response bytes written while the client's socket was full */
  uint64_t left;             /* body bytes the response's Content-Length still owes (UINT64_MAX: none) */
  rh_trelay_done done;
  void *ud;
  int ending;                /* our own abort must not come back to us as the client's */
};

void rh_trelay_copy_headers(const rh_headers *from, rh_headers *to) {
  for (size_t i = 0; i < from->n; i++) {
    const rh_header *f = &from->items[i];
    if (rh_header_hop_by_hop(f) || rh_header_name_eq(f, "host")) continue;
    rh_headers_add(to, f->name, f->name_len, f->value, f->value_len);
  }
}

static void let_go(rh_trelay *r) {
  r->req->events = NULL;
  r->req->ud = r->req_ud;
  rh_http_resume_body(r->req); /* whatever is left of the body is read past */
  if (r->s) rh_tstream_release(r->s);
  r->s = NULL;
}

static void finish(rh_trelay *r, int status, const char *err) {
  let_go(r);
  r->done(r->ud, status, err);
  free(r);
}

/* The stream failed: an answer if none began, else the client's connection is cut. */
static void fail(rh_trelay *r, int code, const char *reason) {
  r->ending = 1;
  if (r->req->head_sent) {
    rh_http_abort(r->req);
    return;
  }
  int status = code == RH_TR_TIMEOUT ? 504 : 502;
  char body[300];
  if (code == RH_TR_GONE)
    snprintf(body, sizeof body, "Bad Gateway: the relay client went away (%s)\n", reason);
  else if (code == RH_TR_TIMEOUT)
    snprintf(body, sizeof body, "Gateway Timeout: %s\n", reason);
  else
    snprintf(body, sizeof body, "Bad Gateway: relay client: %s (%s)\n", reason, rh_tun_reset_name(code));
  rh_headers h = RH_HEADERS_INIT;
  rh_headers_add(&h, "Content-Type", 12, "text/plain; charset=utf-8", 25);
  rh_http_respond(r->req, status, &h, body, strlen(body));
  rh_headers_free(&h);
}

/* ---- stream → client ---- */

/* The relay client broke the response (a bad head, a body that does not fit its length): the
 * stream is reset, and the git user gets a 502, or a cut connection if the head went out. */
static void refuse(rh_trelay *r, const char *why) {
  rh_tstream_reset(r->s, RH_TR_PROTOCOL, why);
  int answered = !r->req->head_sent;
  fail(r, RH_TR_PROTOCOL, why);
  finish(r, answered ? r->req->status : 0, why);
}

/* "200".."599": a final status (a 1xx is not one, and a relayed exchange never upgrades). */
static int parse_status(const char *s) {
  if (strlen(s) != 3 || s[0] < '2' || s[0] > '5' || s[1] < '0' || s[1] > '9' || s[2] < '0' || s[2] > '9')
    return -1;
  return atoi(s);
}

int rh_trelay_content_length(const rh_headers *h, uint64_t *len) {
  *len = UINT64_MAX;
  for (size_t i = 0; i < h->n; i++) {
    const rh_header *f = &h->items[i];
    if (!rh_header_name_eq(f, "content-length")) continue;
    uint64_t v = 0;
    if (!f->value_len || f->value_len > 18) return -1;
    for (size_t k = 0; k < f->value_len; k++) {
      if (f->value[k] < '0' || f->value[k] > '9') return -1;
      v = v * 10 + (uint64_t)(f->value[k] - '0');
    }
    if (*len != UINT64_MAX && *len != v) return -1;
    *len = v;
  }
  return 0;
}

const char *rh_trelay_check_head(const char *status, const rh_headers *h, int *code, uint64_t *len) {
  if ((*code = parse_status(status)) < 0) return "bad response head: the status is not a final one (200-599)";
  for (size_t i = 0; i < h->n; i++) {
    if (!rh_http_is_token(h->items[i].name, h->items[i].name_len)) return "bad response head: a header name is not a token";
    if (!rh_http_is_field_value(h->items[i].value, h->items[i].value_len))
      return "bad response head: a header value holds a control byte";
  }
  if (rh_trelay_content_length(h, len) < 0) return "bad response head: bad or conflicting Content-Length";
  return NULL;
}

static void on_head(void *ud, const char *status, const char *reason, const rh_headers *h) {
  rh_trelay *r = ud;
  (void)reason;
  int st;
  const char *why = rh_trelay_check_head(status, h, &st, &r->left);
  if (why) {
    refuse(r, why);
    return;
  }
  rh_headers out = RH_HEADERS_INIT;
  rh_trelay_copy_headers(h, &out);
  rh_http_start_held(r->req, st, &out);
  rh_headers_free(&out);
  /* no body follows (what DATA comes is dropped): the length is the GET's, or meaningless */
  if (r->req->is_head || st == 204 || st == 304) r->left = UINT64_MAX;
}

static void on_data(void *ud, const char *p, size_t n) {
  rh_trelay *r = ud;
  if (!r->req->head_sent) {
    refuse(r, "response body before its head");
    return;
  }
  if (r->left != UINT64_MAX && n > r->left) {
    refuse(r, "response body longer than its Content-Length");
    return;
  }
  if (r->left != UINT64_MAX) r->left -= n;
  int rc = rh_http_write(r->req, p, n);
  if (rc < 0) { /* nobody to give the rest to: stop the far end sending it */
    rh_tstream_reset(r->s, RH_TR_CANCEL, "client closed the connection");
    finish(r, 0, "client closed the connection");
  } else if (rc == 0) {
    rh_tstream_consumed(r->s, n);
  } else {
    r->unacked += n;
  }
}

static void on_end(void *ud) {
  rh_trelay *r = ud;
  if (!r->req->head_sent) {
    refuse(r, "response ended before its head");
    return;
  }
  if (r->left && r->left != UINT64_MAX) {
    refuse(r, "response body shorter than its Content-Length");
    return;
  }
  rh_http_finish(r->req);
  finish(r, r->req->status, NULL);
}

static void on_reset(void *ud, int code, const char *reason) {
  rh_trelay *r = ud;
  int answered = !r->req->head_sent;
  fail(r, code, reason);
  finish(r, answered ? r->req->status : 0, reason);
}

static void on_writable(void *ud) { rh_http_resume_body(((rh_trelay *)ud)->req); }

static const rh_tstream_handlers stream_handlers = { on_head, on_data, on_end, on_reset, on_writable, NULL };

/* ---- client → stream ---- */

static void body_chunk(rh_http_req *req, const char *p, size_t n, void *ud) {
  rh_trelay *r = ud;
  if (rh_tstream_write(r->s, p, n) == 1) rh_http_pause_body(req);
}

static void body_done(rh_http_req *req, void *ud) {
  rh_trelay *r = ud;
  if (!req->body_error) {
    rh_tstream_end(r->s);
    return;
  }
  rh_tstream_reset(r->s, RH_TR_CANCEL, req->body_error);
  finish(r, 0, req->body_error);
}

static void drained(rh_http_req *req, void *ud) {
  rh_trelay *r = ud;
  (void)req;
  if (!r->unacked) return;
  rh_tstream_consumed(r->s, r->unacked);
  r->unacked = 0;
}

static void aborted(rh_http_req *req, void *ud) {
  (void)req;
  rh_trelay *r = ud;
  if (r->ending) return;
  rh_tstream_reset(r->s, RH_TR_CANCEL, "client went away");
  finish(r, 0, "client went away");
}

static const rh_http_req_events req_events = { body_chunk, body_done, drained, aborted };

static int has_body(const rh_http_req *req) {
  return req->content_length != UINT64_MAX ? req->content_length > 0
                                           : rh_headers_has_token(&req->headers, "transfer-encoding", "chunked");
}

rh_trelay *rh_trelay_start(rh_tun *t, rh_http_req *req, const char *target, const rh_headers *extra,
                           rh_trelay_done done, void *ud) {
  rh_trelay *r = calloc(1, sizeof *r);
  if (!r) abort();
  r->req = req;
  r->left = UINT64_MAX;
  r->done = done;
  r->ud = ud;
  rh_headers h = RH_HEADERS_INIT;
  rh_trelay_copy_headers(&req->headers, &h);
  if (extra) rh_trelay_copy_headers(extra, &h);
  rh_trace_apply(&req->trace, &h); /* the client's trace, this hop as its parent */
  int body = has_body(req);
  if (body && req->content_length == UINT64_MAX) rh_headers_add(&h, "Transfer-Encoding", 17, "chunked", 7);
  rh_tstream_handlers sh = stream_handlers;
  sh.ud = r;
  r->s = rh_tun_open(t, req->method, target, &h, &sh);
  rh_headers_free(&h);
  if (!r->s) {
    free(r);
    return NULL;
  }
  req->max_body = SIZE_MAX; /* streamed under the stream's credit: no size cap */
  r->req_ud = req->ud;
  rh_http_stream_body(req, &req_events, r);
  if (!body || req->body_done) rh_tstream_end(r->s);
  return r;
}

void rh_trelay_cancel(rh_trelay *r) {
  r->ending = 1;
  if (r->s) rh_tstream_reset(r->s, RH_TR_CANCEL, "request cancelled");
  if (r->req->head_sent && !r->req->finished) rh_http_abort(r->req);
  let_go(r);
  free(r);
}
