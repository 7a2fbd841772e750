/* client: one HTTP/1.1 exchange per connection, driven entirely by loop callbacks.
 *
 * Life of an op: resolve (uv_getaddrinfo) -> connect to each address in turn until one
 * answers -> write the whole request -> feed the response to llhttp -> callback. One timer
 * bounds all of it. Whatever ends the exchange (success, error, timeout, cancel) goes through
 * finish(), which calls back at most once and then closes everything; the op itself is freed
 * only when the last handle or request that points at it has reported back (op->refs). */
#include "http/client.h"

#include <limits.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <llhttp.h>

#include "http/collect.h"
#include "http/head.h"
#include "buf/buf.h"
#include "net/url.h"
#include "tls/tls.h"

#define DEFAULT_TIMEOUT 30.0
#define DEFAULT_MAX_BODY ((size_t)64 << 20)
#define READ_CHUNK 16384

struct rh_client_op {
  uv_loop_t *loop;
  rh_client_cb cb;
  void *ud;
  int refs;             /* open handles + the resolve request in flight */

  uv_timer_t timer;     /* open from start until finish() */
  uv_getaddrinfo_t gai;
  uv_tcp_t tcp;
  uv_connect_t connect;
  struct addrinfo *addrs, *next_addr;

  char *host, *port;    /* what to resolve */
  bool numeric_host;    /* a [literal]: never ask DNS */
  rh_buf out;           /* the request, written in one go */
  bool is_head;

  rh_collect parser;    /* collects into headers */
  rh_headers headers;   /* response */
  rh_buf body;
  size_t max_body;
  int status;

  bool resolving, tcp_open;
  bool done;            /* called back or cancelled: from here on only closing happens */
  bool got_bytes;       /* anything arrived: a write error no longer matters */
  bool complete, over_max;
  const char *refused;  /* a response head we do not take, and why */
  rh_client_data_cb on_data; /* streaming, see client.h */
  bool streaming;       /* the head went to cb: from here on the body goes to on_data */
  uint64_t idle_ms;

  rh_tls_ctx *own_ctx;  /* https with a ca_file of its own */
  rh_tls *tls;          /* https: between the socket and the parser */
  bool use_tls;
  char err[192];        /* an error waiting to be delivered by the timer */
  char connect_err[192]; /* why the last address failed */
  char rbuf[READ_CHUNK];
};

/* ---- lifetime ---- */

static void op_free(rh_client_op *op) {
  if (op->tls) rh_tls_free(op->tls);
  if (op->own_ctx) rh_tls_ctx_free(op->own_ctx);
  uv_freeaddrinfo(op->addrs);
  free(op->host);
  free(op->port);
  rh_buf_free(&op->out);
  rh_buf_free(&op->body);
  rh_headers_free(&op->headers);
  free(op);
}

static void op_unref(rh_client_op *op) {
  if (--op->refs == 0 && op->done) op_free(op);
}

static void on_handle_closed(uv_handle_t *h) { op_unref(h->data); }

/* Closes what is open. Requests in flight (resolve, connect, write) report back with a
 * cancellation, and their callbacks see op->done and do nothing more. */
static void teardown(rh_client_op *op) {
  uv_close((uv_handle_t *)&op->timer, on_handle_closed);
  if (op->tcp_open) {
    op->tcp_open = false;
    uv_close((uv_handle_t *)&op->tcp, on_handle_closed);
  }
  if (op->resolving) uv_cancel((uv_req_t *)&op->gai); /* on_resolved still runs and unrefs */
}

static void finish(rh_client_op *op, const char *err, const rh_client_resp *resp) {
  if (op->done) return;
  op->done = true; /* before the callback, so a cancel from inside it is a no-op */
  if (op->streaming) op->on_data(op->ud, NULL, 0, err);
  else op->cb(op->ud, err, resp);
  teardown(op);
}

static void finish_errf(rh_client_op *op, const char *what, int uverr) {
  char msg[sizeof op->err];
  snprintf(msg, sizeof msg, "%s: %s", what, uv_strerror(uverr));
  finish(op, msg, NULL);
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
  if (rh_collect_interim_head(&op->parser)) return 0;
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

static int on_message_complete(llhttp_t *p) {
  rh_client_op *op = op_of(p);
  if (!rh_collect_final_message(&op->parser)) return 0;
  op->complete = true;
  return HPE_PAUSED; /* anything after the response is not ours to parse */
}

static const llhttp_settings_t parser_settings = {
  .on_message_begin = on_message_begin,
  .on_header_field = rh_collect_on_field,
  .on_header_field_complete = rh_collect_on_field_complete,
  .on_header_value = rh_collect_on_value,
  .on_headers_complete = on_headers_complete,
  .on_body = on_body,
  .on_message_complete = on_message_complete,
};

/* After llhttp has seen some bytes (or the end): done, failed, or wait for more. */
static void after_parse(rh_client_op *op, llhttp_errno_t perr) {
  if (!op->refused && rh_collect_over(&op->parser)) op->refused = "bad response: head over 64 KiB";
  if (op->refused) {
    finish(op, op->refused, NULL);
  } else if (op->over_max) {
    finish(op, "response body over max_body", NULL);
  } else if (op->complete) {
    finish_ok(op);
  } else if (perr != HPE_OK) {
    char msg[sizeof op->err];
    snprintf(msg, sizeof msg, "bad response: %s", llhttp_get_error_reason(&op->parser.llhttp));
    finish(op, msg, NULL);
  }
}

/* ---- connection ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  rh_client_op *op = h->data;
  (void)suggested;
  *buf = uv_buf_init(op->rbuf, sizeof op->rbuf);
}

static void send_raw(rh_client_op *op, const char *p, size_t n);

/* https: decrypt, answer the handshake, and parse what is application data. */
static void tls_input(rh_client_op *op, const char *p, size_t n) {
  rh_buf plain = RH_BUF_INIT, out = RH_BUF_INIT;
  int rc = rh_tls_read(op->tls, p, n, &plain);
  rh_tls_pending(op->tls, &out);
  send_raw(op, out.data, out.len);
  rh_buf_free(&out);
  if (rc < 0) {
    char msg[sizeof op->err];
    snprintf(msg, sizeof msg, "tls: %s", rh_tls_error(op->tls));
    finish(op, msg, NULL);
  } else if (plain.len) {
    after_parse(op, llhttp_execute(&op->parser.llhttp, plain.data, plain.len));
  }
  rh_buf_free(&plain);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  rh_client_op *op = s->data;
  if (op->done) return;
  if (nread > 0) {
    op->got_bytes = true;
    if (op->tls) tls_input(op, buf->base, (size_t)nread);
    else after_parse(op, llhttp_execute(&op->parser.llhttp, buf->base, (size_t)nread));
  } else if (nread == UV_EOF) {
    /* llhttp_finish() completes a read-until-close body, or says the message was cut short. */
    after_parse(op, llhttp_finish(&op->parser.llhttp));
    if (!op->done) finish(op, "connection closed before response", NULL);
  } else if (nread < 0) {
    finish_errf(op, "read", (int)nread);
  }
}

static void on_write(uv_write_t *w, int status) {
  rh_client_op *op = w->data;
  free(w);
  if (op->done || status == 0) return;
  /* A server may answer and close before reading our whole body; its answer still counts. */
  if (!op->got_bytes) finish_errf(op, "write", status);
}

/* One write request per write: TLS sends several (handshake, then the request). */
static void send_raw(rh_client_op *op, const char *p, size_t n) {
  if (!n || op->done) return;
  uv_write_t *w = malloc(sizeof *w + n);
  if (!w) abort();
  char *copy = (char *)(w + 1);
  memcpy(copy, p, n);
  w->data = op;
  uv_buf_t b = uv_buf_init(copy, (unsigned)n);
  int r = uv_write(w, (uv_stream_t *)&op->tcp, &b, 1, on_write);
  if (r < 0) {
    free(w);
    finish_errf(op, "write", r);
  }
}

static void connect_next(rh_client_op *op);

static void on_retry_closed(uv_handle_t *h) {
  rh_client_op *op = h->data;
  if (op->done) {
    op_unref(op);
    return;
  }
  op->refs--; /* the timer is still open, so op lives on */
  connect_next(op);
}

/* This address failed: remember why, and try the next one on a fresh handle. */
static void connect_failed(rh_client_op *op, int uverr) {
  snprintf(op->connect_err, sizeof op->connect_err, "connect: %s", uv_strerror(uverr));
  op->tcp_open = false;
  uv_close((uv_handle_t *)&op->tcp, on_retry_closed);
}

static void on_connect(uv_connect_t *c, int status) {
  rh_client_op *op = c->data;
  if (op->done) return;
  if (status < 0) {
    connect_failed(op, status);
    return;
  }
  int r = uv_read_start((uv_stream_t *)&op->tcp, on_alloc, on_read);
  if (r < 0) {
    finish_errf(op, "read", r);
    return;
  }
  if (!op->use_tls) {
    send_raw(op, op->out.data, op->out.len);
    return;
  }
  op->tls = rh_tls_new(op->own_ctx ? op->own_ctx : rh_tls_default_client(), op->host);
  rh_buf enc = RH_BUF_INIT;
  rh_tls_pending(op->tls, &enc); /* the ClientHello; the request waits inside until the handshake */
  rh_tls_write(op->tls, op->out.data, op->out.len, &enc);
  send_raw(op, enc.data, enc.len);
  rh_buf_free(&enc);
}

static void connect_next(rh_client_op *op) {
  struct addrinfo *ai = op->next_addr;
  while (ai && ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ai = ai->ai_next;
  if (!ai) {
    finish(op, op->connect_err[0] ? op->connect_err : "connect: no usable address", NULL);
    return;
  }
  op->next_addr = ai->ai_next;
  uv_tcp_init(op->loop, &op->tcp);
  op->tcp.data = op;
  op->tcp_open = true;
  op->refs++;
  op->connect.data = op;
  int r = uv_tcp_connect(&op->connect, &op->tcp, ai->ai_addr, on_connect);
  if (r < 0) connect_failed(op, r);
}

static void on_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *res) {
  rh_client_op *op = g->data;
  op->resolving = false;
  if (op->done) {
    uv_freeaddrinfo(res);
  } else if (status < 0) {
    uv_freeaddrinfo(res);
    finish_errf(op, "resolve", status);
  } else {
    op->addrs = op->next_addr = res;
    connect_next(op);
  }
  op_unref(op);
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
  char port[8];
  snprintf(port, sizeof port, "%d", u.port);
  op->port = dup_n(port, strlen(port));
  op->numeric_host = u.ipv6;
  op->use_tls = u.tls;
  if (u.tls && req->ca_file) {
    static char err[160];
    op->own_ctx = rh_tls_client_ctx(req->ca_file, 1, err, sizeof err);
    if (!op->own_ctx) return err;
  }
  if (u.tls && !op->own_ctx && !rh_tls_default_client()) return "tls: no usable CA store";
  return NULL;
}

static void start_resolve(rh_client_op *op) {
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (op->numeric_host ? AI_NUMERICHOST : 0);
  op->gai.data = op;
  int r = uv_getaddrinfo(op->loop, &op->gai, on_resolved, op->host, op->port, &hints);
  if (r < 0) {
    char msg[sizeof op->err];
    snprintf(msg, sizeof msg, "resolve: %s", uv_strerror(r));
    fail_later(op, msg);
    return;
  }
  op->resolving = true;
  op->refs++;
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
  rh_collect_init(&op->parser, HTTP_RESPONSE, &parser_settings, op, &op->headers);

  uv_timer_init(loop, &op->timer);
  op->timer.data = op;
  op->refs = 1;

  const char *why = prepare(op, req);
  if (why) fail_later(op, why);
  else start_resolve(op);
  if (!op->err[0]) uv_timer_start(&op->timer, on_timer, timeout_ms(req->timeout), 0);
  return op;
}
