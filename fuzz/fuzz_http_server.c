/* fuzz_http_server: the HTTP/1.1 server's head and body framing, exactly as the server sees it.
 *
 * One rh_http_server listens on 127.0.0.1:0 for the whole run. Each input is sent to it over a
 * fresh loopback TCP connection in 1..3 writes at fuzzer-chosen offsets, with the loop pumped in
 * between so the server reads the pieces separately; then the client half-closes (or resets)
 * and reads until the server has closed. The request path picks what the handler does (plain
 * answer, streamed answer, held head, reject, early answer, streamed body, paused body, tunnel,
 * abort, small body limit), so the fuzzer reaches every way the upper layer drives the server.
 *
 * Invariants checked (abort() on violation, besides ASan/UBSan/LSan):
 *  - nothing malformed reaches on_request: method set, target without SP/CR/LF/NUL, header names
 *    are tokens, values carry no CR/LF/NUL, at most one Content-Length, never Content-Length with
 *    Transfer-Encoding, Transfer-Encoding ends in chunked, exactly one Host on HTTP/1.1;
 *  - a buffered body that completes has exactly Content-Length bytes;
 *  - what the server sends parses as HTTP/1.1 responses (llhttp, response mode): the handler's
 *    answers in order (X-Seq 1, 2, …), 1xx interim answers, and at most one answer of the server's
 *    own (a rejection), which comes last and says Connection: close;
 *  - the server closes the connection within a few seconds of the client's half-close, forgets
 *    it (connection count back to 0), and tells the handler about every request it still holds;
 *  - every 64 inputs a well-formed request on a fresh connection is answered 200.
 *
 * Some inputs stop the server from accepting (drain) or free it while the connection is open; a
 * new server takes its place afterwards.
 *
 * Input layout: byte 0 = mode bits (see below), bytes 1-2 = split points, the rest = the bytes
 * sent. */
#include <llhttp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "http/headers.h"
#include "http/server.h"
#include "buf/buf.h"
#include "log/log.h"

#define FUZZ_TARGET "fuzz_http_server"
#include "check.h"
#include "loopback.h"
static int known_connect_cl, known_te_http10, known_te_final, known_name_ws,
    known_name_empty;

static rh_http_server *server;
static int port;

/* ---- the handler side ---- */

enum { K_PLAIN, K_STREAM, K_HELD, K_REJECT, K_EARLY, K_SBODY, K_PAUSE, K_UPGRADE, K_ABORT, K_SMALL };

typedef struct req_state {
  rh_http_req *req;
  int kind;
  int released;
  int paused;
  int answered;
  int tunnel_pending; /* to be tunnelled from the driver, outside the server's callbacks */
  size_t streamed;
  struct req_state *next;
} req_state;

static req_state *states;   /* this input's, freed after the connection is gone */
static int seq;             /* handler answers sent on this connection */
static int seq_ok;          /* of which written without error */
static int tunnel_used;     /* a 101 went out: what follows is not HTTP */
static int tunnel_later;    /* this input tunnels from the driver, not inside on_request */
#define MAX_SEQ 8192
static unsigned char seq_minor[MAX_SEQ + 1]; /* HTTP/1.x minor version of the request answered */

static void release(req_state *st) {
  if (st->released) return;
  st->released = 1;
  rh_http_req_release(st->req);
}

static int path_is(const rh_http_req *r, const char *p) {
  size_t n = strlen(p);
  return r->path_len == n && memcmp(r->path, p, n) == 0;
}

static void seq_headers(rh_headers *h) {
  char num[16];
  int n = snprintf(num, sizeof num, "%d", ++seq);
  rh_headers_init(h);
  rh_headers_add(h, "X-Seq", 5, num, (size_t)n);
  rh_headers_add(h, "Content-Type", 12, "text/plain", 10);
}

static void note_minor(const rh_http_req *r) {
  if (seq <= MAX_SEQ) seq_minor[seq] = (unsigned char)r->http_minor;
}

static void answer(req_state *st) {
  rh_http_req *r = st->req;
  if (st->answered || r->head_sent) return;
  st->answered = 1;
  if (!r->conn) return;
  rh_headers h;
  seq_headers(&h);
  note_minor(r);
  int rc;
  if (r->is_head) {
    rc = rh_http_respond(r, 204, &h, NULL, 0); /* no body and no length: framing needs no HEAD context */
  } else if (st->kind == K_STREAM || st->kind == K_HELD) {
    rc = st->kind == K_STREAM ? rh_http_start(r, 200, &h) : rh_http_start_held(r, 200, &h);
    if (rc == 0 && r->conn) rc = rh_http_write(r, "abc", 3) < 0 ? -1 : 0;
    if (r->conn && rh_http_write(r, "", 0) < 0) rc = -1;
    if (rc == 0 && r->conn) rc = rh_http_write(r, "defgh", 5) < 0 ? -1 : 0;
    if (rh_http_finish(r) < 0) rc = -1;
  } else {
    rc = rh_http_respond(r, 200, &h, "ok\n", 3);
  }
  rh_headers_free(&h);
  if (rc == 0) seq_ok++;
}

static void check_body(req_state *st) {
  rh_http_req *r = st->req;
  if (r->body_error || !r->body_done || r->content_length == UINT64_MAX) return;
  size_t got = (st->kind == K_SBODY || st->kind == K_PAUSE) ? st->streamed : r->body.len;
  if (got == r->content_length) return;
  /* llhttp ends a CONNECT at its head whatever Content-Length says (the rest is tunnel data) */
  if (strcmp(r->method, "CONNECT") == 0)
    KNOWN(known_connect_cl, "CONNECT with Content-Length %llu: body complete with %zu bytes",
          (unsigned long long)r->content_length, got);
  else
    FAIL("body of %zu bytes, Content-Length %llu", got, (unsigned long long)r->content_length);
}

static void ev_chunk(rh_http_req *r, const char *p, size_t n, void *ud) {
  req_state *st = ud;
  (void)p;
  if (st->released) return;
  st->streamed += n;
  if (st->kind == K_PAUSE) {
    rh_http_pause_body(r);
    st->paused = 1;
  } else if (st->kind == K_UPGRADE && r->conn) {
    rh_http_write(r, p, n); /* echo through the tunnel */
  }
}

static void ev_body(rh_http_req *r, void *ud) {
  req_state *st = ud;
  (void)r;
  if (st->released) return;
  check_body(st);
  answer(st);
  release(st);
}

static void ev_abort(rh_http_req *r, void *ud) {
  req_state *st = ud;
  (void)r;
  release(st);
}

static const rh_http_req_events stream_events = { ev_chunk, ev_body, NULL, ev_abort };

static int tchar(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Transfer-Encoding's last coding (over all its fields) is chunked. */
static int te_final_chunked(const rh_headers *h) {
  const char *last = NULL;
  size_t last_len = 0;
  size_t from = 0;
  const rh_header *f;
  while ((f = rh_headers_find(h, "transfer-encoding", &from))) {
    const char *p = f->value, *e = f->value + f->value_len;
    while (p < e) {
      const char *c = memchr(p, ',', (size_t)(e - p));
      const char *te = c ? c : e, *s = p;
      while (s < te && (*s == ' ' || *s == '\t')) s++;
      const char *t = te;
      while (t > s && (t[-1] == ' ' || t[-1] == '\t')) t--;
      if (t > s) { last = s; last_len = (size_t)(t - s); }
      p = c ? c + 1 : e;
    }
  }
  return last && last_len == 7 && strncasecmp(last, "chunked", 7) == 0;
}

static void check_request(const rh_http_req *r) {
  if (!r->method || !*r->method) FAIL("request without a method");
  if (!r->target) FAIL("request without a target");
  if (r->path < r->target || r->path + r->path_len > r->target + r->target_len)
    FAIL("path outside the target");
  for (size_t i = 0; i < r->target_len; i++) {
    char c = r->target[i];
    if (c == ' ' || c == '\r' || c == '\n' || c == 0) FAIL("target with byte 0x%02x", (unsigned char)c);
  }
  if (r->http_minor != 0 && r->http_minor != 1) FAIL("HTTP/1.%d reached the handler", r->http_minor);
  for (size_t i = 0; i < r->headers.n; i++) {
    const rh_header *f = &r->headers.items[i];
    if (!f->name_len) KNOWN(known_name_empty, "empty header name reached the handler (\": value\")");
    for (size_t k = 0; k < f->name_len; k++) {
      unsigned char ch = (unsigned char)f->name[k];
      if (tchar(ch)) continue;
      if (ch == ' ' || ch == '\t') /* llhttp 8.1 lets "Name : v" and "Na me: v" through */
        KNOWN(known_name_ws, "header name with whitespace reached the handler: '%.*s'", (int)f->name_len, f->name);
      else
        FAIL("header name byte 0x%02x: '%.*s'", ch, (int)f->name_len, f->name);
    }
    for (size_t k = 0; k < f->value_len; k++) {
      char c = f->value[k];
      if (c == '\r' || c == '\n' || c == 0) FAIL("header value byte 0x%02x", (unsigned char)c);
    }
  }
  size_t cl = rh_headers_count(&r->headers, "content-length");
  size_t te = rh_headers_count(&r->headers, "transfer-encoding");
  size_t host = rh_headers_count(&r->headers, "host");
  if (cl > 1) FAIL("%zu Content-Length fields reached the handler", cl);
  if (cl && te) FAIL("Content-Length with Transfer-Encoding reached the handler");
  if (te && !te_final_chunked(&r->headers))
    KNOWN(known_te_final, "Transfer-Encoding not ending in chunked reached the handler");
  if (r->http_minor == 1 && host != 1) FAIL("HTTP/1.1 request with %zu Host fields", host);
  if (cl && r->content_length == UINT64_MAX) FAIL("Content-Length field but no length");
}

static void tunnel(req_state *st) {
  rh_http_req *r = st->req;
  st->tunnel_pending = 0;
  if (st->released) return;
  if (!r->conn || r->head_sent) { release(st); return; }
  rh_headers h;
  rh_headers_init(&h);
  rh_headers_add(&h, "Upgrade", 7, "fuzz", 4);
  rh_headers_add(&h, "Connection", 10, "Upgrade", 7);
  if (rh_http_tunnel(r, 101, &h, &stream_events, st) == 0) tunnel_used = 1;
  rh_headers_free(&h);
  if (!r->conn) release(st);
}

static void on_request(rh_http_req *r, void *ud) {
  (void)ud;
  check_request(r);
  req_state *st = calloc(1, sizeof *st);
  if (!st) abort();
  st->req = r;
  st->next = states;
  states = st;
  r->ud = st;
  static const struct { const char *path; int kind; } paths[] = {
    { "/stream", K_STREAM }, { "/held", K_HELD },   { "/reject", K_REJECT },
    { "/early", K_EARLY },   { "/sbody", K_SBODY }, { "/pause", K_PAUSE },
    { "/upgrade", K_UPGRADE }, { "/abort", K_ABORT }, { "/small", K_SMALL },
  };
  st->kind = K_PLAIN;
  for (size_t i = 0; i < sizeof paths / sizeof *paths; i++)
    if (path_is(r, paths[i].path)) st->kind = paths[i].kind;
  switch (st->kind) {
  case K_REJECT:
    rh_http_reject(r, 413, "rejected by the handler");
    release(st);
    return;
  case K_EARLY:
    answer(st);
    release(st);
    return;
  case K_ABORT:
    rh_http_abort(r);
    release(st);
    return;
  case K_UPGRADE:
    /* from inside on_request, or later from the driver (as the proxy does once its upstream
     * answers), as the input's mode says */
    if (tunnel_later) st->tunnel_pending = 1;
    else tunnel(st);
    return; /* held until the connection goes (on_abort) */
  case K_SBODY:
  case K_PAUSE:
    rh_http_stream_body(r, &stream_events, st);
    if (st->released) return;
    if (r->body_done) { check_body(st); answer(st); release(st); }
    else if (!r->conn || r->body_error) release(st);
    return;
  case K_SMALL:
    r->max_body = 8;
    /* fall through */
  default: {
    int w = rh_http_want_body(r);
    if (w == 1) { check_body(st); answer(st); release(st); }
    else if (w < 0) release(st);
    return; /* 0: on_body follows */
  }
  }
}

static void on_body(rh_http_req *r, void *ud) {
  (void)ud;
  ev_body(r, r->ud);
}

static void on_abort(rh_http_req *r, void *ud) {
  (void)ud;
  ev_abort(r, r->ud);
}

/* ---- the client side (loopback.h), with the paused bodies resumed after each loop turn ---- */

static void resume_paused(void) {
  for (req_state *st = states; st; st = st->next) {
    if (st->paused && !st->released) {
      st->paused = 0;
      rh_http_resume_body(st->req);
    }
    if (st->tunnel_pending) tunnel(st);
  }
}

/* ---- checking what came back ---- */

typedef struct {
  int status;
  int seq;            /* X-Seq value, 0 if none */
  int conn_close;
  int chunked;        /* Transfer-Encoding present */
  int in_field;
  rh_buf field, value;
  int finals;         /* final (non-1xx) responses completed */
  int expect_seq;
  int server_own;     /* an answer of the server's own was seen */
  int upgraded;
} resp_check;

static int rc_field(llhttp_t *p, const char *at, size_t len) {
  resp_check *c = p->data;
  if (c->in_field) { rh_buf_free(&c->field); rh_buf_free(&c->value); c->in_field = 0; }
  rh_buf_append(&c->field, at, len);
  return 0;
}

static int rc_value(llhttp_t *p, const char *at, size_t len) {
  resp_check *c = p->data;
  c->in_field = 1;
  rh_buf_append(&c->value, at, len);
  return 0;
}

static void rc_take_field(resp_check *c) {
  rh_buf_append(&c->field, "", 1);
  rh_buf_append(&c->value, "", 1);
  if (strcasecmp(c->field.data, "x-seq") == 0) c->seq = atoi(c->value.data);
  if (strcasecmp(c->field.data, "connection") == 0 && strcasestr(c->value.data, "close")) c->conn_close = 1;
  if (strcasecmp(c->field.data, "transfer-encoding") == 0) c->chunked = 1;
  c->field.len = c->value.len = 0;
  c->in_field = 0;
}

static int rc_value_complete(llhttp_t *p) {
  rc_take_field(p->data);
  return 0;
}

static int rc_begin(llhttp_t *p) {
  resp_check *c = p->data;
  c->seq = 0;
  c->conn_close = c->chunked = 0;
  return 0;
}

static int rc_headers_complete(llhttp_t *p) {
  resp_check *c = p->data;
  c->status = p->status_code;
  return 0;
}

static int rc_complete(llhttp_t *p) {
  resp_check *c = p->data;
  if (c->status == 101) { c->upgraded = 1; return 0; } /* a tunnel's bytes follow */
  if (c->status >= 100 && c->status < 200) return 0; /* interim */
  if (c->server_own) FAIL("a response after the server's own answer (status %d)", c->status);
  if (c->seq) {
    if (c->seq != c->expect_seq + 1) FAIL("answer X-Seq %d after %d", c->seq, c->expect_seq);
    c->expect_seq = c->seq;
    /* RFC 9112 §6.1: no Transfer-Encoding in a response to an HTTP/1.0 request */
    if (c->chunked && c->seq <= MAX_SEQ && seq_minor[c->seq] == 0)
      KNOWN(known_te_http10, "chunked response (X-Seq %d) to an HTTP/1.0 request", c->seq);
  } else {
    c->server_own = 1;
    if (!c->conn_close) FAIL("the server's own answer %d without Connection: close", c->status);
  }
  c->finals++;
  return 0;
}

static void check_responses(const rh_buf *got, int complete) {
  static llhttp_settings_t s;
  static int init;
  if (!init++) {
    llhttp_settings_init(&s);
    s.on_message_begin = rc_begin;
    s.on_header_field = rc_field;
    s.on_header_value = rc_value;
    s.on_header_value_complete = rc_value_complete;
    s.on_headers_complete = rc_headers_complete;
    s.on_message_complete = rc_complete;
  }
  resp_check c = { 0 };
  llhttp_t p;
  llhttp_init(&p, HTTP_RESPONSE, &s);
  p.data = &c;
  llhttp_errno_t e = got->len ? llhttp_execute(&p, got->data, got->len) : HPE_OK;
  if (e == HPE_PAUSED_UPGRADE || c.upgraded) goto out; /* a tunnel's bytes follow */
  if (e != HPE_OK)
    FAIL("the server's output does not parse as responses: %s (at byte %zu of %zu)",
         llhttp_get_error_reason(&p), (size_t)(llhttp_get_error_pos(&p) - got->data), got->len);
  if (complete) {
    if (llhttp_finish(&p) != HPE_OK) FAIL("the server's output ends inside a response");
    if (c.expect_seq != seq_ok)
      FAIL("%d handler answers written, %d received", seq_ok, c.expect_seq);
  }
out:
  rh_buf_free(&c.field);
  rh_buf_free(&c.value);
}

/* ---- one exchange ---- */

enum { CLOSE_HALF, CLOSE_RESET };

enum { SRV_KEEP, SRV_STOP, SRV_FREE };
static int server_freed; /* rh_http_server_free was called: `server` is gone */

static size_t server_conns(void) { return server_freed ? 0 : rh_http_server_connections(server); }

static void start_server(void) {
  static rh_http_limits lim;
  static const rh_http_handlers h = { on_request, on_body, NULL, on_abort, NULL };
  rh_http_limits_default(&lim);
  lim.max_head = 2048;    /* small, so 431 is within reach of small inputs */
  lim.max_body = 4096;
  lim.write_high_water = 64;
  char err[256];
  server = rh_http_server_start(&loop, "127.0.0.1:0", &lim, &h, err, sizeof err);
  if (!server) FAIL("server start: %s", err);
  port = rh_http_server_port(server);
  server_freed = 0;
}

/* Frees the server (if that did not happen yet) and lets its handles close. */
static void restart_server(void) {
  if (!server_freed) rh_http_server_free(server);
  server_freed = 1;
  for (int i = 0; i < 4; i++) pump();
  start_server();
}

static void run_exchange(const uint8_t *data, size_t size, const size_t *cuts, int ncuts, int how,
                         int settle, int check, int srv) {
  double deadline = now_s() + 8;
  seq = seq_ok = tunnel_used = 0;
  int fd = client_connect(port);
  rh_buf got = RH_BUF_INIT;
  int eof = 0;
  size_t off = 0;
  pump(); /* accept */
  for (int i = 0; i <= ncuts && !eof; i++) {
    size_t end = i < ncuts ? cuts[i] : size;
    if (end > off && client_send(fd, data + off, end - off, &got, deadline) < 0) eof = 1;
    off = end;
    for (int k = 0; k < 3; k++) pump();
    if (!eof) eof = client_read(fd, &got);
    if (i == 0 && srv == SRV_STOP) rh_http_server_stop_accepting(server);
    if (i == 0 && srv == SRV_FREE) { rh_http_server_free(server); server_freed = 1; }
  }
  for (int k = 0; k < settle && !eof; k++) {
    pump();
    eof = client_read(fd, &got);
  }
  if (how == CLOSE_RESET) {
    client_reset(fd);
    fd = -1;
  } else {
    shutdown(fd, SHUT_WR); /* even after the server's EOF: it lingers until ours */
  }
  /* until the client has seen the server close and the server has let go of the connection */
  double t0 = now_s();
  int late = 0;
  while ((fd >= 0 && !eof) || server_conns() > 0) {
    pump();
    if (fd >= 0 && !eof) eof = client_read(fd, &got);
    if (now_s() > deadline && !late) {
      /* keep waiting, to tell a missed event (closes only at some timeout) from a leak */
      late = 1;
      fprintf(stderr, "fuzz_http_server: connection still open 8 s after the client's %s (client saw "
                      "EOF: %d, errno %d, %zu bytes; server connections: %zu); waiting up to 90 s\n",
              how == CLOSE_RESET ? "reset" : "half-close", eof, errno, got.len, server_conns());
    }
    if (late && now_s() > deadline + 90) break;
    if ((fd >= 0 && !eof) || server_conns() > 0) wait_a_little(fd);
  }
  if (late)
    FAIL("connection closed only %.1f s after the client's %s (client saw EOF: %d, server connections: %zu)",
         now_s() - t0, how == CLOSE_RESET ? "reset" : "half-close", eof, server_conns());
  pump(); /* close callbacks */
  pump();
  if (fd >= 0) client_reset(fd);
  if (getenv("FUZZ_DUMP")) /* what the server answered, for reading a reproducer */
    fprintf(stderr, "---- server output (%zu bytes) ----\n%.*s\n---- end ----\n", got.len, (int)got.len,
            got.data ? got.data : "");
  /* a freed server may cut a response short */
  if (check) check_responses(&got, how == CLOSE_HALF && srv != SRV_FREE);
  for (req_state *st = states, *next; st; st = next) {
    next = st->next;
    if (!st->released) FAIL("the connection is gone but the handler was never told (request %s)", st->req->id);
    free(st);
  }
  states = NULL;
  rh_buf_free(&got);
  if (srv != SRV_KEEP) restart_server();
}

static void health_check(void) {
  static const char req[] = "GET /health HTTP/1.1\r\nHost: fuzz\r\n\r\n";
  int fd = client_connect(port);
  rh_buf got = RH_BUF_INIT;
  double deadline = now_s() + 8;
  pump();
  if (client_send(fd, (const uint8_t *)req, sizeof req - 1, &got, deadline) < 0)
    FAIL("health check: the server refused the request");
  while (got.len < 15) {
    pump();
    if (client_read(fd, &got) && got.len < 15) break;
    if (now_s() > deadline) FAIL("health check: no answer in 8 s");
    wait_a_little(fd);
  }
  if (got.len < 15 || memcmp(got.data, "HTTP/1.1 200 OK", 15) != 0)
    FAIL("health check: answer %.*s", (int)(got.len < 40 ? got.len : 40), got.data ? got.data : "");
  client_reset(fd);
  double d2 = now_s() + 8;
  while (rh_http_server_connections(server) > 0) {
    pump();
    if (now_s() > d2) FAIL("health check: connection not closed after reset");
    wait_a_little(-1);
  }
  pump();
  pump();
  for (req_state *st = states, *next; st; st = next) {
    next = st->next;
    free(st);
  }
  states = NULL;
  rh_buf_free(&got);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  signal(SIGPIPE, SIG_IGN);
  after_pump = resume_paused;
  strict = !(getenv("FUZZ_STRICT") && *getenv("FUZZ_STRICT") == '0'); /* all fixed: fatal */
  rh_log_set_level(getenv("FUZZ_VERBOSE") ? RH_LOG_DEBUG : RH_LOG_ERROR);
  uv_loop_init(&loop);
  start_server();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static unsigned long runs;
  if (runs++ % 64 == 0) health_check();
  if (size < 3) return 0;
  /* byte 0: bits 0-1 number of cuts (0-2, 3 means 2), bit 2 reset instead of half-close,
   * bits 3-4 extra loop turns before closing, bits 5-6 after the first piece: 1 the server
   * stops accepting (drain), 2 the server is freed (then a new one starts); bit 7 /upgrade
   * tunnels from the driver after on_request rather than inside it */
  uint8_t mode = data[0];
  int ncuts = mode & 3;
  if (ncuts > 2) ncuts = 2;
  int how = (mode & 4) ? CLOSE_RESET : CLOSE_HALF;
  int settle = (mode >> 3) & 3;
  const uint8_t *body = data + 3;
  size_t n = size - 3;
  size_t cuts[2] = { (size_t)data[1] * n / 255, (size_t)data[2] * n / 255 };
  if (cuts[0] > cuts[1]) { size_t t = cuts[0]; cuts[0] = cuts[1]; cuts[1] = t; }
  int srv = (mode >> 5) & 3;
  tunnel_later = mode >> 7;
  run_exchange(body, n, cuts, ncuts, how, settle, 1, srv == 3 ? SRV_KEEP : srv);
  return 0;
}
