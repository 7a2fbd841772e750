/* client: one HTTP/1.1 exchange per connection, driven entirely by loop callbacks.
 *
 * Life of an op: dial (net/upconn.h: every address, TLS, HTTPS_PROXY) -> write the whole
 * request -> feed the response to llhttp -> callback. One timer bounds all of it. Whatever ends
 * the exchange (success, error, timeout, cancel) goes through finish(), which calls back at most
 * once and then lets go of everything; the op itself is freed when its timer handle closes (the
 * dial and the connection free themselves). */
#include "http/client.h"

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <llhttp.h>

#include "http/collect.h"
#include "http/head.h"
#include "buf/buf.h"
#include "net/upconn.h"
#include "net/url.h"
#include "tls/tls.h"

#define DEFAULT_TIMEOUT 30.0
#define DEFAULT_MAX_BODY ((size_t)64 << 20)

struct rh_client_op {
  uv_loop_t *loop;
  rh_client_cb cb;
  void *ud;
  uv_timer_t timer;     /* open from start until finish(); its close frees the op */
  rh_upconn_dialing *dial;
  rh_upconn *up;

  char *host;           /* where to (without brackets) */
  int port;
  double connect_timeout;
  rh_buf out;           /* the request, written in one go */
  bool is_head;

  rh_client_parser parser; /* collects into headers */
  rh_headers headers;   /* response */
  rh_buf body;
  size_t max_body;
  int status;

  bool done;            /* called back or cancelled: from here on only closing happens */
  bool over_max;
  const char *refused;  /* a response head we do not take, and why */
  rh_client_data_cb on_data; /* streaming, see client.h */
  bool streaming;       /* the head went to cb: from here on the body goes to on_data */
  uint64_t idle_ms;

  rh_tls_ctx *own_ctx;  /* https with a ca_file of its own */
  bool use_tls;
  char err[192];        /* an error waiting to be delivered by the timer */
};

/* ---- lifetime ---- */

/* The connection keeps its own reference to the TLS context, so own_ctx may go first. */
static void op_free(uv_handle_t *h) {
  rh_client_op *op = h->data;
  if (op->own_ctx) rh_tls_ctx_free(op->own_ctx);
  free(op->host);
  rh_buf_free(&op->out);
  rh_buf_free(&op->body);
  rh_headers_free(&op->headers);
  free(op);
}

/* Lets go of the dial or the connection (they free themselves), then of the op. */
static void teardown(rh_client_op *op) {
  if (op->dial) rh_upconn_dial_cancel(op->dial);
  op->dial = NULL;
  if (op->up) rh_upconn_close(op->up);
  op->up = NULL;
  uv_close((uv_handle_t *)&op->timer, op_free);
}

static void finish(rh_client_op *op, const char *err, const rh_client_resp *resp) {
  if (op->done) return;
  op->done = true; /* before the callback, so a cancel from inside it is a no-op */
  if (op->streaming) op->on_data(op->ud, NULL, 0, err);
  else op->cb(op->ud, err, resp);
  teardown(op);
}

static void finish_ok(rh_client_op *op) {
  rh_client_resp resp = {
    .status = op->status,
    .headers = op->headers,
    .body = op->body.data ? op->body.data : "",
    .body_len = op->body.len,
  };
  finish(op, NULL, &resp);
}

static void on_timer(uv_timer_t *t) {
  rh_client_op *op = t->data;
  finish(op, op->err[0] ? op->err : "timeout", NULL);
}

/* An error found inside rh_client_request must still reach the caller later, on the loop:
 * park it and fire the timer at once. */
static void fail_later(rh_client_op *op, const char *msg) {
  snprintf(op->err, sizeof op->err, "%s", msg);
  uv_timer_start(&op->timer, on_timer, 0, 0);
}

/* Valid until the callback has returned: after that the op may already be freed. */
void rh_client_cancel(rh_client_op *op) {
  if (!op || op->done) return;
  op->done = true;
  teardown(op);
}

/* ---- response parsing ---- */

static rh_client_op *op_of(llhttp_t *p) { return p->data; }

static int on_message_begin(llhttp_t *p) {
  rh_client_op *op = op_of(p);
  rh_headers_clear(&op->headers);
  return 0;
}

/* A head that cannot be the answer to our request: NULL if it can. */
static const char *refused_head(const rh_client_op *op, const llhttp_t *p) {
  /* we never ask to upgrade: what follows a 101 is not HTTP, and reading it as such would
   * take the next bytes for a response */
  if (p->status_code == 101) return "bad response: 101 Switching Protocols to a request that did not ask to upgrade";
  if (p->status_code < 200 || p->status_code > 599) return "bad response: invalid status code";
  /* a declared length past the cap fails now, not after max_body bytes have been read */
  if (!op->on_data && !op->is_head && (p->flags & F_CONTENT_LENGTH) && p->content_length > op->max_body)
    return "response body over max_body";
  return NULL;
}

static int on_headers_complete(llhttp_t *p) {
  rh_client_op *op = op_of(p);
  if (rh_collect_interim_head(&op->parser.c)) return 0;
  if ((op->refused = refused_head(op, p))) return -1;
  op->status = p->status_code;
  if (op->is_head) return 1; /* 1: no body, whatever Content-Length says */
  if (op->on_data) {
    rh_client_resp resp = { .status = op->status, .headers = op->headers, .body = "", .body_len = 0 };
    op->streaming = true;
    uv_timer_start(&op->timer, on_timer, op->idle_ms, 0);
    op->cb(op->ud, NULL, &resp); /* may cancel: on_body then stops the parser */
  }
  return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  rh_client_op *op = op_of(p);
  if (op->done) return -1;
  if (op->streaming) {
    uv_timer_start(&op->timer, on_timer, op->idle_ms, 0);
    op->on_data(op->ud, at, len, NULL);
    return op->done ? -1 : 0;
  }
  if (len > op->max_body - op->body.len) {
    op->over_max = true;
    return -1;
  }
  rh_buf_append(&op->body, at, len);
  return 0;
}

int rh_client_on_message_complete(llhttp_t *p) {
  rh_client_parser *cp = (rh_client_parser *)p;
  if (!rh_collect_final_message(&cp->c)) return 0;
  cp->complete = 1;
  return HPE_PAUSED; /* anything after the response is not ours to parse */
}

const char *rh_client_parser_error(const rh_client_parser *p) {
  return rh_collect_over(&p->c) ? "head over 64 KiB" : llhttp_get_error_reason(&p->c.llhttp);
}

static const llhttp_settings_t parser_settings = {
  RH_CLIENT_PARSER_SETTINGS,
  .on_message_begin = on_message_begin,
  .on_headers_complete = on_headers_complete,
  .on_body = on_body,
};

/* After llhttp has seen some bytes (or the end): done, failed, or wait for more. */
static void after_parse(rh_client_op *op, llhttp_errno_t perr) {
  if (!op->refused && rh_collect_over(&op->parser.c)) op->refused = "bad response: head over 64 KiB";
  if (op->refused) {
    finish(op, op->refused, NULL);
  } else if (op->over_max) {
    finish(op, "response body over max_body", NULL);
  } else if (op->parser.complete) {
    finish_ok(op);
  } else if (perr != HPE_OK) {
    char msg[sizeof op->err];
    snprintf(msg, sizeof msg, "bad response: %s", rh_client_parser_error(&op->parser));
    finish(op, msg, NULL);
  }
}

/* ---- connection ---- */

/* Answer bytes, or the end. A write that failed (a server that answered and closed before
 * reading our whole body) is reported here too, after its answer: the answer still counts. */
static void on_up_read(void *owner, const char *p, ssize_t n, const char *err) {
  rh_client_op *op = owner;
  if (op->done) return;
  if (n > 0) {
    after_parse(op, llhttp_execute(&op->parser.c.llhttp, p, (size_t)n));
  } else if (err == rh_upconn_closed) {
    /* llhttp_finish() completes a read-until-close body, or says the message was cut short. */
    after_parse(op, llhttp_finish(&op->parser.c.llhttp));
    if (!op->done) finish(op, "connection closed before response", NULL);
  } else {
    finish(op, err, NULL);
  }
}

static void dialed(void *ud, rh_upconn *u, const char *err) {
  rh_client_op *op = ud;
  op->dial = NULL;
  if (!u) {
    finish(op, err, NULL);
    return;
  }
  op->up = u;
  rh_upconn_own(u, op, on_up_read, NULL);
  rh_upconn_write(u, op->out.data, op->out.len); /* on TLS it waits inside for the handshake */
}

/* ---- request building ---- */

/* NULL, or why the URL is unusable ("bad url: …"). u is the caller's: an rh_url is large. */
static const char *parse_url(const char *url, rh_url *u) {
  static char why[RH_URL_ERRLEN + 16];
  const char *err = rh_url_parse(url, "http https", u);
  if (!err && u->user) err = rh_url_refuse(u, "userinfo"); /* credentials go in headers */
  if (!err) return NULL;
  snprintf(why, sizeof why, "bad url: %s", err);
  return why;
}

/* The framing headers are ours: the body is sent with Content-Length, one request per
 * connection. */
static bool is_framing_header(const rh_header *f) {
  return rh_header_name_eq(f, "content-length") || rh_header_name_eq(f, "transfer-encoding") ||
         rh_header_name_eq(f, "connection");
}

static const char *build_request(rh_client_op *op, const rh_client_req *req, const rh_url *u) {
  const char *method = req->method ? req->method : "GET";
  size_t body_len = req->body ? req->body_len : 0;
  const rh_headers *h = req->headers;
  rh_buf *b = &op->out;

  /* a query-only target ("?x=1") is the root's */
  rh_buf target = RH_BUF_INIT;
  rh_buf_puts(&target, u->path);
  if (u->query) rh_buf_printf(&target, "?%s", u->query);
  const char *err = rh_head_request_line(b, method, strlen(method), target.data, target.len);
  rh_buf_free(&target);
  if (err) return rh_http_is_token(method, strlen(method)) ? "bad url: invalid target" : "bad request: invalid method";

  if (!h || !rh_headers_find(h, "host", NULL)) {
    char authority[RH_HOST_MAX + 9];
    rh_url_authority(u, authority, sizeof authority);
    rh_buf_printf(b, "Host: %s\r\n", authority);
  }
  for (size_t i = 0; h && i < h->n; i++) {
    const rh_header *f = &h->items[i];
    if (is_framing_header(f)) continue;
    if (rh_head_field(b, f->name, f->name_len, f->value, f->value_len)) return "bad request: invalid header";
  }
  if (body_len || !strcmp(method, "POST") || !strcmp(method, "PUT") || !strcmp(method, "PATCH"))
    rh_buf_printf(b, "Content-Length: %zu\r\n", body_len);
  rh_buf_puts(b, "Connection: close\r\n\r\n");
  rh_buf_append(b, req->body, body_len);
  if (b->len > UINT_MAX) return "bad request: too large"; /* one uv_buf_t carries it all */
  op->is_head = strcmp(method, "HEAD") == 0;
  return NULL;
}

static char *dup_n(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (!d) abort();
  memcpy(d, s, n);
  d[n] = 0;
  return d;
}

static const char *prepare(rh_client_op *op, const rh_client_req *req) {
  rh_url u;
  const char *why = parse_url(req->url, &u);
  if (why) return why;
  if ((why = build_request(op, req, &u))) return why;
  op->host = dup_n(u.host, strlen(u.host));
  op->port = u.port;
  op->use_tls = u.tls;
  if (u.tls && req->ca_file) {
    static char err[160];
    op->own_ctx = rh_tls_client_ctx(req->ca_file, 1, err, sizeof err);
    if (!op->own_ctx) return err;
  }
  if (u.tls && !op->own_ctx && !rh_tls_default_client()) return "tls: no usable CA store";
  return NULL;
}

/* relay.http is an outbound client: HTTPS_PROXY and friends apply. */
static void start_dial(rh_client_op *op) {
  rh_tls_ctx *tls = !op->use_tls ? NULL : op->own_ctx ? op->own_ctx : rh_tls_default_client();
  rh_upconn_target t = { .key = "http-client", .host = op->host, .port = op->port, .tls = tls,
                         .connect_timeout = op->connect_timeout, .via_proxy = 1 };
  op->dial = rh_upconn_dial(op->loop, &t, dialed, op);
}

static uint64_t timeout_ms(double seconds) {
  if (!(seconds > 0)) seconds = DEFAULT_TIMEOUT; /* also catches NaN */
  if (seconds > 1e9) seconds = 1e9;
  uint64_t ms = (uint64_t)(seconds * 1000.0 + 0.999);
  return ms ? ms : 1;
}

rh_client_op *rh_client_request(uv_loop_t *loop, const rh_client_req *req, rh_client_cb cb,
                                void *ud) {
  rh_client_op *op = calloc(1, sizeof *op);
  if (!op) abort();
  op->loop = loop;
  op->cb = cb;
  op->ud = ud;
  op->max_body = req->max_body ? req->max_body : DEFAULT_MAX_BODY;
  op->on_data = req->on_data;
  op->idle_ms = timeout_ms(req->timeout);
  rh_headers_init(&op->headers);
  rh_collect_init(&op->parser.c, HTTP_RESPONSE, &parser_settings, op, &op->headers);

  op->connect_timeout = (double)op->idle_ms / 1000;
  uv_timer_init(loop, &op->timer);
  op->timer.data = op;

  const char *why = prepare(op, req);
  if (why) fail_later(op, why);
  else start_dial(op);
  if (!op->err[0]) uv_timer_start(&op->timer, on_timer, timeout_ms(req->timeout), 0);
  return op;
}
