#include "http/server.h"
#include "http/head.h"

#include <inttypes.h>
#include <llhttp.h>
#include <sanitizer/asan_interface.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "http/asan.h"
#include "http/collect.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "net/cidr.h"
#include "tls/tls.h"
#include "net/net.h"

typedef enum { TIMER_NONE, TIMER_IDLE, TIMER_HEAD, TIMER_BODY, TIMER_SEND, TIMER_LINGER, TIMER_KINDS } timer_kind;

/* Connections waiting on one kind of timeout. Each kind has one duration per server, so
 * appending at the tail keeps a list in deadline order and one ticking timer serves them all:
 * no timer handle per connection. */
typedef struct {
  rh_http_conn *head, *tail;
} conn_list;

#define SPARE_PS 32
#define SPARE_IN_MAX 4096 /* a spare keeps its input buffer up to this size */

struct rh_http_server {
  uv_loop_t *loop;
  uv_tcp_t listener;
  int listening;
  rh_http_limits lim;
  char name[32];       /* lim.name points here */
  rh_http_handlers h;
  rh_http_conn *conns; /* every open connection, for stop and free */
  size_t nconns;
  int stopping;
  conn_list timeouts[TIMER_KINDS];
  uv_timer_t tick;
  int ticking;
  int open_handles;    /* listener, tick and closing connections: freed when all are closed */
  /* parse states given back by connections gone idle, for the next that reads: a keep-alive
   * request allocates none, while an idle connection still holds none (at most SPARE_PS) */
  struct rh_http_parse *spare_ps[SPARE_PS];
  size_t nspare_ps;
};

/* What parsing needs, allocated when bytes arrive and freed when the connection is idle again
 * with nothing pending, so an idle keep-alive connection costs its socket and little more. */
typedef struct rh_http_parse {
  rh_collect parser;           /* collects into the current request's headers */
  rh_buf in;                   /* read but not yet parsed */
  rh_headers trailers;         /* a chunked body's trailer fields: checked, then dropped */
  /* head scan: our own check of line endings, before llhttp sees the bytes; it runs over a
   * request's head and over its trailer section (in_trailers) */
  int in_head, prev_cr, in_trailers, trailers_next;
  size_t head_bytes, line_len, lines, spaces;
  size_t ext_name_len, ext_value_len; /* the current chunk extension's, so far */
  int ext_quoted, ext_value_bad; /* it is a quoted-string; it is neither that nor a token */
  int ext_after_token;         /* the last extension of this chunk line ended in a token value */
  size_t cl_count, host_count, te_count;
  int reject_status;           /* set by a callback that fails the parse */
  const char *reject_reason;
} rh_http_parse;

/* A connection owns its parse state and (one ref on) the current request. It is freed when
 * its handle is closed. */
struct rh_http_conn {
  uv_tcp_t tcp;
  rh_http_server *srv;
  rh_http_conn *prev, *next;
  rh_http_conn *tprev, *tnext; /* in srv->timeouts[timer_kind] */
  uint64_t deadline;           /* loop ms */
  rh_http_parse *ps;           /* parser and input: only while bytes are in flight */
  rh_http_req *req;            /* the request being parsed or answered */
  rh_tls *tls;                 /* on a TLS listener: between the socket and the parser */
  uint32_t write_queued;       /* bytes handed to libuv, not yet written */
  rh_addr peer;
  uint8_t timer_kind;
  /* set by parser callbacks and acted on outside llhttp; connection state */
  unsigned head_ready : 1, msg_done : 1, in_process : 1, reading : 1, closing : 1,
      close_after_write : 1, lingering : 1, tunnel : 1, peer_eof : 1;
};

typedef struct {
  uv_write_t w;
  rh_http_conn *conn;
  size_t len;
  char data[];
} write_req;

static rh_metric *m_requests, *m_rejected, *m_duration, *m_conns;
/* The series every request updates, resolved once (issue 17): the duration's, and the request
 * counter's for each status 100..599 the first time it is answered (a series appears when its
 * first request does, as before). */
static rh_metric_series *s_duration, *s_requests[500];

/* Request events go to the request's own consumer if it took them, else to the server's. */
static void emit_body(rh_http_req *r) {
  if (r->events) { if (r->events->on_body) r->events->on_body(r, r->ud); }
  else if (r->server->h.on_body) r->server->h.on_body(r, r->server->h.ud);
}

static void emit_drain(rh_http_req *r) {
  if (r->events) { if (r->events->on_drain) r->events->on_drain(r, r->ud); }
  else if (r->server->h.on_drain) r->server->h.on_drain(r, r->server->h.ud);
}

static void emit_abort(rh_http_req *r) {
  if (r->events) { if (r->events->on_abort) r->events->on_abort(r, r->ud); }
  else if (r->server->h.on_abort) r->server->h.on_abort(r, r->server->h.ud);
}
static char alloc_buf[65536];

static void process(rh_http_conn *c);
static void close_conn(rh_http_conn *c);
static void update_reading(rh_http_conn *c);

void rh_http_limits_default(rh_http_limits *lim) {
  lim->max_head = 16 * 1024;
  lim->max_body = 1024 * 1024;
  lim->head_timeout = 10;
  lim->body_timeout = 30;
  lim->keepalive_timeout = 75;
  lim->send_timeout = 60;
  lim->write_high_water = 256 * 1024;
  lim->trusted_proxies = NULL;
  lim->tls = NULL;
  lim->name = "main";
}

void rh_http_chunk_append(rh_buf *b, const char *p, size_t n) {
  char size[24];
  int k = snprintf(size, sizeof size, "%zx\r\n", n);
  rh_buf_reserve(b, (size_t)k + n + 2);
  rh_buf_append(b, size, (size_t)k);
  rh_buf_append(b, p, n);
  rh_buf_append(b, "\r\n", 2);
}

const char *rh_http_reason(int status) {
  switch (status) {
  case 100: return "Continue";
  case 101: return "Switching Protocols";
  case 200: return "OK";
  case 201: return "Created";
  case 202: return "Accepted";
  case 204: return "No Content";
  case 206: return "Partial Content";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 303: return "See Other";
  case 304: return "Not Modified";
  case 307: return "Temporary Redirect";
  case 308: return "Permanent Redirect";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 411: return "Length Required";
  case 413: return "Content Too Large";
  case 414: return "URI Too Long";
  case 415: return "Unsupported Media Type";
  case 417: return "Expectation Failed";
  case 422: return "Unprocessable Content";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  case 505: return "HTTP Version Not Supported";
  default: return "Unknown";
  }
}

static void register_metrics(void) {
  static const char *code[] = { "code" }, *status[] = { "status" };
  const char *err;
  m_requests = rh_metric_register(RH_COUNTER, "relayhost_http_requests_total",
                                  "HTTP requests answered, by status code", code, 1, NULL, 0, &err);
  m_rejected = rh_metric_register(RH_COUNTER, "relayhost_http_rejected_total",
                                  "Requests refused before reaching a handler (bad input, limits)",
                                  status, 1, NULL, 0, &err);
  m_duration = rh_metric_register(RH_HISTOGRAM, "relayhost_http_request_duration_seconds",
                                  "Time from a parsed head to the end of the response", NULL, 0,
                                  NULL, 0, &err);
  m_conns = rh_metric_register(RH_GAUGE, "relayhost_http_connections",
                               "Open client connections", NULL, 0, NULL, 0, &err);
  s_duration = rh_metric_series_of(m_duration, NULL);
}

/* The request counter's series for a status: its code as the label value. */
static rh_metric_series *requests_series(int status) {
  char code[4] = { (char)('0' + status / 100 % 10), (char)('0' + status / 10 % 10), (char)('0' + status % 10), 0 };
  if (status < 100 || status > 599) return rh_metric_series_of(m_requests, (const char *[]){ code });
  rh_metric_series **s = &s_requests[status - 100];
  if (!*s) *s = rh_metric_series_of(m_requests, (const char *[]){ code });
  return *s;
}

/* ---- requests ---- */

static void make_id(char *out) {
  static uint32_t prefix;
  static uint64_t seq;
  if (!prefix) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    prefix = (uint32_t)(ts.tv_nsec ^ ((uint32_t)getpid() << 16) ^ (uint32_t)ts.tv_sec);
  }
  /* 16 hex digits, by hand: this runs for every request */
  static const char hex[] = "0123456789abcdef";
  uint64_t v = ((uint64_t)prefix << 32) | (++seq & 0xffffffffu);
  for (int i = 15; i >= 0; i--, v >>= 4) out[i] = hex[v & 15];
  out[16] = 0;
}

/* Released requests kept for the next ones (issue 17: a calloc and a free a request, and the
 * header list's arena block, otherwise): at most SPARE_REQS a process (one loop serves them all),
 * each with a header block of at most SPARE_HEADERS_MAX. Under ASan a kept one is poisoned and
 * keeps no header block, so a use after its release, of it or of its fields, is still caught. */
#define SPARE_REQS 64
#ifdef RH_UNDER_ASAN
#define SPARE_HEADERS_MAX 0 /* nor may a poisoned spare hold the only pointer to a block (LSan) */
#else
#define SPARE_HEADERS_MAX 4096
#endif
static rh_http_req *spare_reqs[SPARE_REQS];
static size_t nspare_reqs;

/* As calloc'd, but for the header list: empty, its block kept. */
static rh_http_req *req_alloc(void) {
  if (!nspare_reqs) {
    rh_http_req *r = calloc(1, sizeof *r);
    if (!r) abort();
    return r;
  }
  rh_http_req *r = spare_reqs[--nspare_reqs];
  ASAN_UNPOISON_MEMORY_REGION(r, sizeof *r);
  rh_headers headers = r->headers;
  memset(r, 0, sizeof *r);
  r->headers = headers;
  return r;
}

static void req_free(rh_http_req *r) {
  if (nspare_reqs == SPARE_REQS) {
    rh_headers_free(&r->headers);
    free(r);
    return;
  }
  if (rh_headers_kept(&r->headers) > SPARE_HEADERS_MAX) rh_headers_free(&r->headers);
  else rh_headers_clear(&r->headers);
  spare_reqs[nspare_reqs++] = r;
  ASAN_POISON_MEMORY_REGION(r, sizeof *r);
}

static rh_http_req *req_new(rh_http_conn *c) {
  rh_http_req *r = req_alloc();
  r->conn = c;
  r->server = c->srv;
  r->refs = 1;
  r->max_body = c->srv->lim.max_body;
  r->content_length = UINT64_MAX;
  r->length_left = -1;
  rh_addr_format(&c->peer, r->socket_peer, sizeof r->socket_peer);
  memcpy(r->peer, r->socket_peer, sizeof r->peer); /* not snprintf: this runs for every request */
  r->tls = c->tls != NULL;
  make_id(r->id);
  return r;
}

void rh_http_req_release(rh_http_req *r) {
  if (--r->refs > 0) return;
  rh_buf_free(&r->body);
  rh_buf_free(&r->held);
  rh_buf_free(&r->log_path);
  free(r->target);
  req_free(r);
}

/* ---- writing ---- */

/* The server is freed when its listener, its tick and every closing connection are closed. */
static void free_ps(rh_http_parse *ps) {
  rh_buf_free(&ps->in);
  rh_headers_free(&ps->trailers);
  free(ps);
}

static void server_unref(rh_http_server *s) {
  if (--s->open_handles > 0) return;
  while (s->nspare_ps) free_ps(s->spare_ps[--s->nspare_ps]);
  free(s);
}

static void after_close(uv_handle_t *h) {
  rh_http_conn *c = h->data;
  rh_http_server *s = c->srv;
  if (c->tls) rh_tls_free(c->tls);
  if (c->ps) free_ps(c->ps);
  free(c);
  server_unref(s); /* a closing connection holds the server: its cancelled writes read c->srv */
}

static void detach_req(rh_http_conn *c);

static void timer_unlink(rh_http_conn *c);

static void close_now(rh_http_conn *c) {
  if (uv_is_closing((uv_handle_t *)&c->tcp)) return;
  c->closing = 1;
  timer_unlink(c);
  detach_req(c);
  rh_http_server *s = c->srv;
  if (c->prev) c->prev->next = c->next;
  else s->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  s->nconns--;
  s->open_handles++; /* released in after_close */
  rh_metric_add(m_conns, NULL, -1);
  uv_close((uv_handle_t *)&c->tcp, after_close);
}

static void on_linger_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  (void)buf;
  if (n < 0) close_now(st->data);
}

static void linger_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  (void)h;
  (void)size;
  *buf = uv_buf_init(alloc_buf, sizeof alloc_buf);
}

static void set_timer(rh_http_conn *c, timer_kind kind);

static void after_shutdown(uv_shutdown_t *sh, int status) {
  rh_http_conn *c = sh->data;
  free(sh);
  if (status < 0 || uv_is_closing((uv_handle_t *)&c->tcp)) { close_now(c); return; }
  /* Lingering close: read and drop what the client still sends, so our answer is not lost to
   * a reset caused by unread input (a 413 while the body is still arriving). */
  c->lingering = 1;
  set_timer(c, TIMER_LINGER);
  uv_read_start((uv_stream_t *)&c->tcp, linger_alloc, on_linger_read);
}

static int raw_write(rh_http_conn *c, const char *p, size_t n);

static void shutdown_conn(rh_http_conn *c) {
  if (c->lingering || uv_is_closing((uv_handle_t *)&c->tcp)) return;
  uv_read_stop((uv_stream_t *)&c->tcp);
  if (c->tls) { /* close_notify first, so the client knows the response is whole */
    rh_buf out = RH_BUF_INIT;
    rh_tls_shutdown(c->tls, &out);
    if (out.len) raw_write(c, out.data, out.len);
    rh_buf_free(&out);
    if (c->closing) return;
  }
  uv_shutdown_t *sh = malloc(sizeof *sh);
  if (!sh) abort();
  sh->data = c;
  if (uv_shutdown(sh, (uv_stream_t *)&c->tcp, after_shutdown) < 0) {
    free(sh);
    close_now(c);
  }
}

static void notify_drain(rh_http_conn *c) {
  rh_http_req *r = c->req;
  if (r && r->head_sent && !r->finished) emit_drain(r);
}

/* While bytes wait for the client, the send timer runs from the last progress: a client that
 * stops reading is closed after send_timeout instead of holding its queue forever. Once the
 * queue is empty the connection goes back to the timer its state wants. */
static void send_progress(rh_http_conn *c) {
  if (c->write_queued > 0) {
    if (c->timer_kind == TIMER_NONE || c->timer_kind == TIMER_IDLE || c->timer_kind == TIMER_SEND)
      set_timer(c, TIMER_SEND);
  } else if (c->timer_kind == TIMER_SEND) {
    set_timer(c, c->req || c->close_after_write ? TIMER_NONE : TIMER_IDLE);
  }
}

static void after_write(uv_write_t *w, int status) {
  write_req *wr = (write_req *)w;
  rh_http_conn *c = wr->conn;
  size_t hw = c->srv->lim.write_high_water;
  int was_high = c->write_queued > hw;
  c->write_queued -= (uint32_t)wr->len;
  free(wr);
  if (status < 0) { close_conn(c); return; }
  send_progress(c);
  if (c->close_after_write && c->write_queued == 0) { shutdown_conn(c); return; }
  if (was_high && c->write_queued <= hw) notify_drain(c);
}

/* Queues bytes for the socket; tries a direct write first, which is what a small response
 * usually needs. */
static int raw_write(rh_http_conn *c, const char *p, size_t n) {
  if (c->closing) return -1;
  if (c->write_queued == 0) {
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int w = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (w > 0) { p += w; n -= (size_t)w; }
    else if (w != UV_EAGAIN && w != UV_ENOSYS) { close_conn(c); return -1; }
  }
  if (n == 0) return 0;
  write_req *wr = malloc(sizeof *wr + n);
  if (!wr) abort();
  memcpy(wr->data, p, n);
  wr->conn = c;
  wr->len = n;
  if (c->timer_kind == TIMER_NONE || c->timer_kind == TIMER_IDLE) set_timer(c, TIMER_SEND);
  c->write_queued += (uint32_t)n;
  uv_buf_t b = uv_buf_init(wr->data, (unsigned)n);
  if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, after_write) < 0) {
    c->write_queued -= (uint32_t)n;
    free(wr);
    close_conn(c);
    return -1;
  }
  return 0;
}

/* Application bytes: through TLS when the listener has it. */
static int conn_write(rh_http_conn *c, const char *p, size_t n) {
  if (!c->tls) return raw_write(c, p, n);
  rh_buf out = RH_BUF_INIT;
  int rc = rh_tls_write(c->tls, p, n, &out);
  if (rc == 0 && out.len) rc = raw_write(c, out.data, out.len);
  rh_buf_free(&out);
  return rc;
}

static void close_after_write(rh_http_conn *c) {
  if (c->closing) return;
  c->close_after_write = 1;
  uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
  if (c->write_queued == 0) shutdown_conn(c);
}

/* ---- timers ---- */

static void timeout(rh_http_conn *c, timer_kind k) {
  if (k == TIMER_HEAD || k == TIMER_BODY) {
    if (k == TIMER_HEAD && (!c->ps || c->ps->head_bytes == 0)) { close_conn(c); return; }
    char peer[64];
    rh_addr_format(&c->peer, peer, sizeof peer);
    RH_LOG(RH_LOG_WARN, "http_timeout", RH_STR("peer", peer),
           RH_STR("phase", k == TIMER_HEAD ? "head" : "body"));
    rh_metric_add(m_rejected, (const char *[]){ "408" }, 1);
    if (c->req && c->req->head_sent) { close_conn(c); return; }
    static const char resp[] = "HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\n"
                               "Content-Length: 16\r\nConnection: close\r\n\r\nRequest Timeout\n";
    if (c->req) c->req->head_sent = c->req->finished = 1;
    conn_write(c, resp, sizeof resp - 1);
    close_after_write(c);
  } else if (k == TIMER_SEND) {
    char peer[64];
    rh_addr_format(&c->peer, peer, sizeof peer);
    RH_LOG(RH_LOG_WARN, "http_timeout", RH_STR("peer", peer), RH_STR("phase", "send"),
           RH_INT("queued", c->write_queued), RH_STR("request_id", c->req ? c->req->id : NULL));
    rh_metric_add(m_rejected, (const char *[]){ "send_timeout" }, 1);
    close_conn(c);
  } else {
    close_now(c); /* idle keep-alive or linger over */
  }
}

static void timer_unlink(rh_http_conn *c) {
  if (c->timer_kind == TIMER_NONE) return;
  conn_list *l = &c->srv->timeouts[c->timer_kind];
  if (c->tprev) c->tprev->tnext = c->tnext;
  else l->head = c->tnext;
  if (c->tnext) c->tnext->tprev = c->tprev;
  else l->tail = c->tprev;
  c->tprev = c->tnext = NULL;
  c->timer_kind = TIMER_NONE;
}

/* Pops every connection whose deadline has passed; stops ticking when none wait. */
static void on_tick(uv_timer_t *t) {
  rh_http_server *s = t->data;
  uint64_t now = uv_now(s->loop);
  int waiting = 0;
  for (int k = TIMER_IDLE; k < TIMER_KINDS; k++) {
    rh_http_conn *c;
    while ((c = s->timeouts[k].head) && c->deadline <= now) {
      timer_unlink(c);
      timeout(c, (timer_kind)k);
    }
    waiting |= s->timeouts[k].head != NULL;
  }
  if (!waiting) {
    uv_timer_stop(&s->tick);
    s->ticking = 0;
  }
}

static double kind_seconds(rh_http_server *s, timer_kind k) {
  switch (k) {
  case TIMER_IDLE: return s->lim.keepalive_timeout;
  case TIMER_HEAD: return s->lim.head_timeout;
  case TIMER_BODY: return s->lim.body_timeout;
  case TIMER_SEND: return s->lim.send_timeout;
  default: return 2; /* lingering close */
  }
}

static void set_timer(rh_http_conn *c, timer_kind kind) {
  /* nothing to wait for but the client taking our bytes: that is the send timeout */
  if ((kind == TIMER_NONE || kind == TIMER_IDLE) && c->write_queued) kind = TIMER_SEND;
  timer_unlink(c);
  if (kind == TIMER_NONE) return;
  rh_http_server *s = c->srv;
  conn_list *l = &s->timeouts[kind];
  c->timer_kind = kind;
  c->deadline = uv_now(s->loop) + (uint64_t)(kind_seconds(s, kind) * 1000);
  c->tprev = l->tail;
  if (l->tail) l->tail->tnext = c;
  else l->head = c;
  l->tail = c;
  if (!s->ticking) { /* a tenth of a second is fine grain for timeouts of seconds */
    s->ticking = 1;
    uv_timer_start(&s->tick, on_tick, 100, 100);
  }
}

/* ---- rejecting bad input ---- */

static void reject(rh_http_conn *c, int status, const char *reason) {
  rh_http_req *r = c->req;
  char peer[64];
  rh_addr_format(&c->peer, peer, sizeof peer);
  RH_LOG(RH_LOG_WARN, "http_rejected", RH_INT("status", status), RH_STR("reason", reason),
         RH_STR("peer", peer), RH_STR("request_id", r ? r->id : NULL));
  char code[8];
  snprintf(code, sizeof code, "%d", status);
  rh_metric_add(m_rejected, (const char *[]){ code }, 1);
  if (r && r->head_sent) { close_conn(c); return; }
  rh_buf b = RH_BUF_INIT;
  rh_buf_printf(&b, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                    "Content-Length: %zu\r\nConnection: close\r\n\r\n%s\n",
                status, rh_http_reason(status), strlen(reason) + 1, reason);
  if (r) {
    r->head_sent = r->finished = 1;
    r->status = status;
  }
  int gone = conn_write(c, b.data, b.len) < 0; /* the client reset: c closed, r went with it */
  rh_buf_free(&b);
  if (gone) return;
  close_after_write(c);
  if (r && !r->body_done) {
    r->body_error = reason;
    if (r->body_wanted) emit_body(r);
  }
}

void rh_http_reject(rh_http_req *r, int status, const char *reason) {
  if (r->conn && r->conn->req == r) reject(r->conn, status, reason);
}

/* Our own pass over the bytes of a head and of a trailer section: the one check of their line
 * endings (llhttp 8.1 accepts bare LF and obs-fold even in strict mode, both request smuggling
 * shapes; bare CR is refused here too, before llhttp sees it), and the 431 limit, simplest to
 * count here. Returns how many bytes belong to the head (all of n if it does not end here), or
 * -1 after rejecting. */
/* Bytes of s[0..m) before its first CR or LF (m if none): the rest of a field line, which
 * needs no look at each byte (memchr does it a word at a time). */
static size_t to_line_end(const char *s, size_t m) {
  const char *cr = memchr(s, '\r', m);
  size_t k = cr ? (size_t)(cr - s) : m;
  const char *lf = memchr(s, '\n', k);
  return lf ? (size_t)(lf - s) : k;
}

static ssize_t scan_head(rh_http_conn *c, const char *p, size_t n) {
  /* the state in locals while it runs: kept in ps, every field would be stored back for every
   * byte (the bytes scanned may alias it, as far as the compiler knows) */
  rh_http_parse *ps = c->ps;
  size_t max = c->srv->lim.max_head, bytes = ps->head_bytes, line_len = ps->line_len;
  size_t lines = ps->lines, spaces = ps->spaces;
  int prev_cr = ps->prev_cr, status = 400;
  const char *why = NULL;
  ssize_t used = (ssize_t)n;
  for (size_t i = 0; i < n; i++) {
    if (line_len && lines && !prev_cr) { /* inside a field line: on to its CR (or a bare LF) */
      size_t k = to_line_end(p + i, n - i < max - bytes ? n - i : max - bytes);
      bytes += k;
      line_len += k;
      if ((i += k) == n) break;
    }
    char ch = p[i];
    if (++bytes > max) {
      status = 431;
      why = ps->in_trailers ? "request trailers too large" : "request head too large";
      break;
    }
    if (ch == '\n') {
      if (!prev_cr) { why = "bare LF in request head"; break; }
      prev_cr = 0;
      if (line_len == 0) {
        if (lines == 0) continue; /* empty lines before a request line are allowed */
        ps->in_head = 0;
        used = (ssize_t)(i + 1);
        break;
      }
      /* llhttp takes "GET  / HTTP/1.1": the request line is method SP target SP version */
      if (lines == 0 && spaces != 2) { why = "malformed request line"; break; }
      lines++;
      line_len = 0;
      continue;
    }
    if (prev_cr) { why = "bare CR in request head"; break; }
    if (ch == '\r') { prev_cr = 1; continue; }
    if (line_len == 0 && lines > 0 && (ch == ' ' || ch == '\t')) {
      why = "obsolete line folding in request head";
      break;
    }
    line_len++;
    spaces += ch == ' ';
  }
  ps->head_bytes = bytes;
  ps->line_len = line_len;
  ps->lines = lines;
  ps->spaces = spaces;
  ps->prev_cr = prev_cr;
  if (!why) return used;
  reject(c, status, why);
  return -1;
}

static llhttp_settings_t parser_settings;

/* Parse state for a connection that has bytes to parse. */
static rh_http_parse *ensure_ps(rh_http_conn *c) {
  if (c->ps) return c->ps;
  rh_http_server *s = c->srv;
  c->ps = s->nspare_ps ? s->spare_ps[--s->nspare_ps] : calloc(1, sizeof *c->ps);
  if (!c->ps) abort();
  rh_collect_init(&c->ps->parser, HTTP_REQUEST, &parser_settings, c, NULL); /* no request yet */
  /* whether the connection ends is ours to say (wants_keep_alive): llhttp would otherwise
   * refuse pipelined bytes after a request it read as the last */
  llhttp_set_lenient_keep_alive(&c->ps->parser.llhttp, 1);
  c->ps->in_head = 1;
  return c->ps;
}

/* Between requests with nothing pending, the parse state goes (a fresh parser is equivalent). */
static void release_ps(rh_http_conn *c) {
  if (!c->ps || c->ps->in.len || c->req || c->tunnel) return;
  rh_http_server *s = c->srv;
  rh_http_parse *ps = c->ps;
  c->ps = NULL;
  if (s->nspare_ps == SPARE_PS) { free_ps(ps); return; }
  /* as calloc'd, but for the input buffer (empty) when it is small */
  rh_buf in = ps->in;
  if (in.cap > SPARE_IN_MAX) rh_buf_free(&in);
  rh_headers_free(&ps->trailers);
  memset(ps, 0, sizeof *ps);
  ps->in = in;
  s->spare_ps[s->nspare_ps++] = ps;
}

static void reset_head_scan(rh_http_conn *c) {
  c->ps->in_head = 1;
  c->ps->prev_cr = c->ps->in_trailers = c->ps->trailers_next = 0;
  c->ps->head_bytes = c->ps->line_len = c->ps->lines = c->ps->spaces = 0;
  c->ps->cl_count = c->ps->host_count = c->ps->te_count = 0;
  rh_headers_clear(&c->ps->trailers);
}

/* The last chunk is in: what follows up to an empty line is the trailer section, scanned like
 * a head (its own 431 budget) and collected aside, so no field arrives in the request's
 * headers after the handler has seen them. The scan starts where the head's left off after a
 * request line: the first empty line ends it. */
static void start_trailer_scan(rh_http_conn *c) {
  rh_http_parse *ps = c->ps;
  ps->trailers_next = 0;
  ps->in_head = ps->in_trailers = 1;
  ps->prev_cr = 0;
  ps->head_bytes = ps->line_len = 0;
  ps->lines = 1;
  rh_collect_into(&ps->parser, &ps->trailers);
}

/* ---- llhttp callbacks: collect, and pause where the upper layer must act ---- */

static rh_http_conn *conn_of(llhttp_t *p) { return p->data; }

static int cb_message_begin(llhttp_t *p) {
  rh_http_conn *c = conn_of(p);
  c->req = req_new(c);
  rh_collect_into(&c->ps->parser, &c->req->headers);
  return 0;
}

static int cb_url(llhttp_t *p, const char *at, size_t len) {
  rh_http_req *r = conn_of(p)->req;
  r->target = realloc(r->target, r->target_len + len + 1);
  if (!r->target) abort();
  memcpy(r->target + r->target_len, at, len);
  r->target_len += len;
  r->target[r->target_len] = 0;
  return 0;
}

static int fail_parse(rh_http_conn *c, int status, const char *reason);

/* The shared collecting, then the checks only a server makes on a request's field names. */
static int cb_header_field_complete(llhttp_t *p) {
  rh_http_conn *c = conn_of(p);
  rh_collect_on_field_complete(p); /* a value follows, even an empty one */
  rh_headers *into = c->ps->parser.into; /* the request's headers, or its trailers */
  rh_header *f = &into->items[into->n - 1];
  /* llhttp 8.1 lets an empty name and spaces through */
  if (!rh_http_is_token(f->name, f->name_len)) return fail_parse(c, 400, "invalid header name");
  /* RFC 9110 6.5.1: framing is the head's alone (llhttp would re-read these in a trailer) */
  if (c->ps->in_trailers && (rh_header_name_eq(f, "content-length") || rh_header_name_eq(f, "transfer-encoding")))
    return fail_parse(c, 400, "framing field in trailers");
  c->ps->cl_count += rh_header_name_eq(f, "content-length");
  c->ps->host_count += rh_header_name_eq(f, "host");
  c->ps->te_count += rh_header_name_eq(f, "transfer-encoding");
  return 0;
}

/* llhttp 8.1 lets DEL through in a value: the one rule for values is head.h's (a value that
 * could not be written on to the next hop is refused here, not half-way through a proxy). */
static int cb_header_value_complete(llhttp_t *p) {
  rh_http_conn *c = conn_of(p);
  rh_headers *into = c->ps->parser.into;
  rh_header *f = &into->items[into->n - 1];
  if (!rh_http_is_field_value(f->value, f->value_len)) return fail_parse(c, 400, "invalid header value");
  f->checked = 1; /* its name passed in cb_header_field_complete: the next hop's writer skips both */
  return 0;
}

static int fail_parse(rh_http_conn *c, int status, const char *reason) {
  c->ps->reject_status = status;
  c->ps->reject_reason = reason;
  return HPE_USER;
}

static void split_target(rh_http_req *r) {
  if (!r->target) {
    r->target = calloc(1, 1);
    if (!r->target) abort();
  }
  const char *t = r->target, *end = t + r->target_len;
  /* absolute-form (a proxy request): the path starts after scheme://authority */
  const char *s = t[0] != '/' ? strstr(t, "://") : NULL; /* origin-form, the usual one: no search */
  if (s) {
    const char *slash = memchr(s + 3, '/', (size_t)(end - (s + 3)));
    t = slash ? slash : end;
  }
  const char *q = memchr(t, '?', (size_t)(end - t));
  r->path = t;
  r->path_len = (size_t)((q ? q : end) - t);
  r->query = q ? q + 1 : NULL;
  r->query_len = q ? (size_t)(end - q - 1) : 0;
}

/* Transfer-Encoding is exactly "chunked" (the caller has checked there is one field). */
static int te_is_chunked(const rh_headers *h) {
  const rh_header *f = rh_headers_find(h, "transfer-encoding", NULL);
  const char *v = f->value, *e = v + f->value_len;
  while (v < e && (*v == ' ' || *v == '\t')) v++;
  while (e > v && (e[-1] == ' ' || e[-1] == '\t')) e--;
  return e - v == 7 && strncasecmp(v, "chunked", 7) == 0;
}

/* RFC 3986 authority bytes: unreserved, sub-delims, ':', '@', '[', ']' and '%', with at most
 * one '@' (userinfo "@" host: neither holds another; llhttp 8.1 refuses only "@@"). */
static int authority_ok(const char *s, size_t n) {
  size_t ats = 0;
  for (size_t i = 0; i < n; i++) {
    if (!isalnum((unsigned char)s[i]) && !strchr("-._~!$&'()*+,;=:@[]%", s[i])) return 0;
    ats += s[i] == '@';
  }
  return n > 0 && ats <= 1;
}

/* origin-form or "*" (head.h's rule, which the proxy writes by), or absolute-form with an http(s)
 * scheme: "http://authority", alone or followed by an origin-form path. No fragment. */
static int target_ok(const char *t, size_t n) {
  if (rh_http_is_target(t, n)) return 1;
  size_t k = n >= 7 && strncasecmp(t, "http://", 7) == 0 ? 7 : n >= 8 && strncasecmp(t, "https://", 8) == 0 ? 8 : 0;
  if (!k) return 0;
  const char *slash = memchr(t + k, '/', n - k);
  size_t a = slash ? (size_t)(slash - t) : n;
  return authority_ok(t + k, a - k) && (a == n || rh_http_is_target(t + a, n - a));
}

/* At the method, not the head's end: llhttp reads on after "PRI * HTTP/2.0" for the rest of the
 * HTTP/2 preface. */
static int cb_method_complete(llhttp_t *p) {
  if (p->method == HTTP_PRI) return fail_parse(conn_of(p), 505, "only HTTP/1.x is served here");
  return 0;
}

/* RFC 9112 9.3, read from the collected fields rather than llhttp's flags: llhttp 8.1 misses a
 * Connection token followed by a HTAB (optional whitespace, RFC 9110 5.6.1). */
static int wants_keep_alive(const rh_http_req *r) {
  if (r->http_minor == 0) return rh_headers_has_token(&r->headers, "connection", "keep-alive");
  return !rh_headers_has_token(&r->headers, "connection", "close");
}

static int cb_headers_complete(llhttp_t *p) {
  rh_http_conn *c = conn_of(p);
  rh_http_req *r = c->req;
  if (c->ps->cl_count > 1) return fail_parse(c, 400, "repeated Content-Length");
  if (c->ps->cl_count && c->ps->te_count) return fail_parse(c, 400, "Content-Length with Transfer-Encoding");
  if (c->ps->te_count > 1) return fail_parse(c, 400, "repeated Transfer-Encoding");
  /* RFC 9112 6.3: without chunked last a request body has no knowable length; and chunked is
   * the one coding we decode: any other would cross the hop undecoded (the field is
   * hop-by-hop). nginx says 501; a smuggling shape gets 400 here, like the rest */
  if (c->ps->te_count && !te_is_chunked(&r->headers))
    return fail_parse(c, 400, "unsupported Transfer-Encoding");
  /* RFC 9112 6.1: HTTP/1.0 has no transfer codings, so its framing is faulty (as nginx says) */
  if (c->ps->te_count && p->http_major == 1 && p->http_minor == 0)
    return fail_parse(c, 400, "Transfer-Encoding in an HTTP/1.0 request");
  /* UINT64_MAX means "no length" to the layers above (req->content_length): a length past
   * 2^63-1, which no body reaches, is refused as nginx does, so none can be mistaken for it */
  if ((p->flags & F_CONTENT_LENGTH) && p->content_length > INT64_MAX)
    return fail_parse(c, 400, "Content-Length out of range");
  if (p->method == HTTP_CONNECT) return fail_parse(c, 501, "CONNECT is not served here");
  /* HTTP/2 and later, and no version at all (llhttp reads "GET /x" as HTTP/0.9) */
  if (p->http_major != 1) return fail_parse(c, 505, "only HTTP/1.x is served here");
  if (p->http_minor == 1 && c->ps->host_count != 1)
    return fail_parse(c, 400, c->ps->host_count ? "repeated Host header" : "missing Host header");
  r->method = llhttp_method_name((llhttp_method_t)p->method);
  r->http_minor = p->http_minor;
  r->keep_alive = wants_keep_alive(r);
  r->is_head = p->method == HTTP_HEAD;
  if (p->flags & F_CONTENT_LENGTH) r->content_length = p->content_length;
  /* RFC 9110 10.1.1: an HTTP/1.0 client's 100-continue is ignored (it sends the body anyway) */
  r->expect_continue = r->http_minor >= 1 && rh_headers_has_token(&r->headers, "expect", "100-continue");
  split_target(r);
  if (!target_ok(r->target, r->target_len)) return fail_parse(c, 400, "invalid request target");
  if (c->srv->lim.trusted_proxies) {
    const rh_header *xff = rh_headers_find(&r->headers, "x-forwarded-for", NULL);
    rh_client_address(c->srv->lim.trusted_proxies, r->socket_peer, xff ? xff->value : NULL,
                      xff ? xff->value_len : 0, r->peer, sizeof r->peer);
  }
  c->head_ready = 1;
  return HPE_PAUSED;
}

static int cb_body(llhttp_t *p, const char *at, size_t len) {
  rh_http_conn *c = conn_of(p);
  rh_http_req *r = c->req;
  if (r->body_received + len > r->max_body) return fail_parse(c, 413, "request body over the limit");
  r->body_received += len;
  if (c->timer_kind == TIMER_BODY) set_timer(c, TIMER_BODY);
  if (r->events && r->events->on_body_chunk) {
    r->events->on_body_chunk(r, at, len, r->ud);
    return r->body_paused ? HPE_PAUSED : 0; /* the consumer is full: stop right here */
  }
  /* answered already (a proxied upstream that replied before reading it all): read past the
   * rest without keeping it */
  if (r->finished) return 0;
  rh_buf_append(&r->body, at, len);
  return 0;
}

/* A chunk's declared size is checked before its data comes: the same range as Content-Length,
 * and the body so far plus this chunk within the request's limit (413 before the bytes are
 * read or streamed on, as nginx does). The last chunk starts the trailer scan. */
static int cb_chunk_header(llhttp_t *p) {
  rh_http_conn *c = conn_of(p);
  rh_http_req *r = c->req;
  c->ps->ext_after_token = 0;
  uint64_t size = p->content_length;
  if (size > INT64_MAX) return fail_parse(c, 400, "chunk size out of range");
  if (r->body_received > r->max_body || size > r->max_body - r->body_received)
    return fail_parse(c, 413, "request body over the limit");
  if (size > 0) return 0;
  c->ps->trailers_next = 1;
  return HPE_PAUSED;
}

/* RFC 9112 7.1.1: an extension's name is a token, never empty (llhttp 8.1 takes "3;=a").
 * After a token value llhttp 8.1 goes on to another extension only through ";;" (it refuses
 * "3;a=b;c=d" and reads "3;a=b;;c=d" as two): a name there follows an empty one. */
static int cb_ext_name(llhttp_t *p, const char *at, size_t len) {
  (void)at;
  rh_http_conn *c = conn_of(p);
  if (c->ps->ext_after_token) return fail_parse(c, 400, "empty chunk extension name");
  c->ps->ext_name_len += len;
  return 0;
}

static int cb_ext_name_complete(llhttp_t *p) {
  rh_http_conn *c = conn_of(p);
  int empty = !c->ps->ext_name_len;
  c->ps->ext_name_len = 0;
  return empty ? fail_parse(c, 400, "empty chunk extension name") : 0;
}

/* Its value, when there is an "=", is a token or a quoted-string (llhttp checks those), never
 * empty nor a token with a quote in it (llhttp 8.1 takes "3;a=" and "3;a=b\"c\"") */
static int cb_ext_value(llhttp_t *p, const char *at, size_t len) {
  rh_http_parse *ps = conn_of(p)->ps;
  if (!len) return 0;
  if (!ps->ext_value_len) ps->ext_quoted = at[0] == '"';
  if (!ps->ext_quoted && !rh_http_is_token(at, len)) ps->ext_value_bad = 1;
  ps->ext_value_len += len;
  return 0;
}

static int cb_ext_value_complete(llhttp_t *p) {
  rh_http_conn *c = conn_of(p);
  int bad = !c->ps->ext_value_len || c->ps->ext_value_bad;
  c->ps->ext_after_token = !c->ps->ext_quoted;
  c->ps->ext_value_len = 0;
  c->ps->ext_quoted = c->ps->ext_value_bad = 0;
  return bad ? fail_parse(c, 400, "invalid chunk extension value") : 0;
}

static int cb_message_complete(llhttp_t *p) {
  rh_http_conn *c = conn_of(p);
  c->req->body_done = 1;
  c->msg_done = 1;
  return HPE_PAUSED;
}

static void init_settings(void) {
  llhttp_settings_init(&parser_settings);
  parser_settings.on_message_begin = cb_message_begin;
  parser_settings.on_url = cb_url;
  parser_settings.on_method_complete = cb_method_complete;
  parser_settings.on_header_field = rh_collect_on_field;
  parser_settings.on_header_value = rh_collect_on_value;
  parser_settings.on_header_field_complete = cb_header_field_complete;
  parser_settings.on_header_value_complete = cb_header_value_complete;
  parser_settings.on_headers_complete = cb_headers_complete;
  parser_settings.on_body = cb_body;
  parser_settings.on_chunk_header = cb_chunk_header;
  parser_settings.on_chunk_extension_name = cb_ext_name;
  parser_settings.on_chunk_extension_name_complete = cb_ext_name_complete;
  parser_settings.on_chunk_extension_value = cb_ext_value;
  parser_settings.on_chunk_extension_value_complete = cb_ext_value_complete;
  parser_settings.on_message_complete = cb_message_complete;
}

/* ---- the parse loop ---- */

static void dispatch(rh_http_conn *c) {
  rh_http_req *r = c->req;
  r->started_ns = uv_hrtime();
  rh_trace_begin(&r->trace, &r->headers);
  r->refs++; /* the upper layer's reference, dropped by rh_http_req_release */
  set_timer(c, c->msg_done ? TIMER_NONE : TIMER_BODY);
  c->srv->h.on_request(r, c->srv->h.ud);
}

static void body_complete(rh_http_conn *c) {
  rh_http_req *r = c->req;
  if (c->timer_kind == TIMER_BODY) set_timer(c, TIMER_NONE);
  if (r->body_wanted) emit_body(r);
}

/* Feeds unparsed input to llhttp until a request is complete (then waits for its response),
 * the input runs out, or the connection is rejected. */
static void parse_available(rh_http_conn *c) {
  if (!c->ps) return;
  size_t off = 0;
  /* After a head, llhttp needs one more call, even with no bytes, to end a bodiless message
   * (we paused it at the end of the head). */
  int kick = 0;
  while (!c->closing && !c->close_after_write && !c->msg_done && !c->tunnel && (off < c->ps->in.len || kick)) {
    kick = 0;
    const char *data = c->ps->in.data + off;
    size_t n = c->ps->in.len - off, chunk = n;
    if (c->ps->in_head) {
      int first = c->ps->head_bytes == 0;
      ssize_t h = scan_head(c, data, n);
      if (h < 0) break;
      chunk = (size_t)h;
      /* a trailer section stays under the body timeout */
      if (first && c->ps->head_bytes > 0 && c->ps->in_head && !c->ps->in_trailers) set_timer(c, TIMER_HEAD);
    }
    llhttp_errno_t err = llhttp_execute(&c->ps->parser.llhttp, data, chunk);
    size_t used = err == HPE_OK ? chunk : (size_t)(llhttp_get_error_pos(&c->ps->parser.llhttp) - data);
    off += used;
    if (err == HPE_PAUSED) {
      llhttp_resume(&c->ps->parser.llhttp);
      if (c->ps->trailers_next) start_trailer_scan(c);
      if (c->head_ready) {
        /* consumed before the handler runs: a tunnel it opens gets only what follows the head */
        rh_buf_consume(&c->ps->in, off);
        off = 0;
        c->head_ready = 0;
        kick = 1;
        dispatch(c);
        if (!c->ps) return;
      }
      if (c->msg_done) body_complete(c);
      if (c->req && c->req->body_paused && !c->msg_done) break;
    } else if (err == HPE_PAUSED_UPGRADE) {
      /* only reached when nobody took the upgrade: the bytes after the head are not HTTP */
      reject(c, 501, "protocol upgrade is not supported on this route");
    } else if (err != HPE_OK) {
      if (c->ps->reject_status) reject(c, c->ps->reject_status, c->ps->reject_reason);
      else reject(c, 400, llhttp_get_error_reason(&c->ps->parser.llhttp));
    }
  }
  rh_buf_consume(&c->ps->in, off);
}

static void log_access(rh_http_req *r) {
  /* uv_hrtime, not the loop's millisecond clock: a 3 s request read
   * "ms":3001.9999999999527 */
  double ms = rh_log_round((double)(uv_hrtime() - r->started_ns) / 1e6, 2);
  rh_metric_series_add(requests_series(r->status), 1);
  rh_metric_series_observe(s_duration, ms / 1000.0);
  if (!rh_log_enabled(RH_LOG_INFO)) return;
  RH_LOG(RH_LOG_INFO, "access", RH_STR("method", r->method), RH_STRN("path", r->log_path.len ? r->log_path.data : r->path, r->log_path.len ? r->log_path.len : r->path_len),
         RH_INT("status", r->status), RH_INT("bytes", r->bytes_out), RH_NUM("ms", ms),
         RH_STR("peer", r->peer), RH_STR("request_id", r->id), RH_STR("trace_id", r->trace.trace_id));
}

/* The current request is answered and fully read: on to the next one, or close. */
static void finish_exchange(rh_http_conn *c) {
  rh_http_req *r = c->req;
  /* after an upgrade (taken or refused) the bytes that follow are not HTTP */
  int keep = r->keep_alive && !c->srv->stopping && !c->tunnel && !(c->ps && c->ps->parser.llhttp.upgrade);
  c->req = NULL;
  c->msg_done = 0;
  r->conn = NULL;
  rh_http_req_release(r);
  if (!keep) { close_after_write(c); return; }
  reset_head_scan(c);
  release_ps(c);
  set_timer(c, TIMER_IDLE);
}

static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  (void)h;
  (void)size;
  *buf = uv_buf_init(alloc_buf, sizeof alloc_buf);
}

static int tunnel_consumer(const rh_http_conn *c) {
  return c->req && c->req->events && c->req->events->on_body_chunk;
}

/* An upgraded connection: whatever arrived goes to the request's consumer as it is. After that
 * the parse state holds nothing but an empty input buffer, so it goes (outside process(), which
 * may still be reading it): a held WebSocket or tunnel keeps no buffer while nothing is in flight,
 * and its next bytes come straight from the shared read buffer (on_read). */
static void tunnel_deliver(rh_http_conn *c) {
  rh_http_req *r = c->req;
  if (c->ps && c->ps->in.len && tunnel_consumer(c)) {
    rh_buf in = c->ps->in;
    c->ps->in = (rh_buf)RH_BUF_INIT;
    r->events->on_body_chunk(r, in.data, in.len, r->ud);
    rh_buf_free(&in);
  }
  if (c->ps && !c->ps->in.len && !c->in_process) {
    free_ps(c->ps);
    c->ps = NULL;
  }
}

/* Decrypts into the parser's input and sends what the TLS engine has to say (handshake). */
static int tls_input(rh_http_conn *c, const char *p, size_t n) {
  rh_buf out = RH_BUF_INIT;
  int rc = rh_tls_read(c->tls, p, n, &ensure_ps(c)->in);
  rh_tls_pending(c->tls, &out);
  if (out.len) raw_write(c, out.data, out.len);
  rh_buf_free(&out);
  if (rc < 0) {
    const char *why = rh_tls_error(c->tls);
    char peer[64];
    rh_addr_format(&c->peer, peer, sizeof peer);
    RH_LOG(RH_LOG_WARN, "tls_error", RH_STR("peer", peer), RH_STR("error", why));
    rh_metric_add(m_rejected, (const char *[]){ "tls" }, 1);
    if (why && strncmp(why, "not TLS (plain HTTP", 19) == 0) { /* say so, in plain HTTP */
      static const char resp[] = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                                 "Content-Length: 44\r\nConnection: close\r\n\r\n"
                                 "This port speaks HTTPS: plain HTTP was sent\n";
      raw_write(c, resp, sizeof resp - 1);
    }
    close_after_write(c);
    return -1;
  }
  return 0;
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  rh_http_conn *c = st->data;
  if (n == 0) return;
  if (n == UV_EOF && c->req && c->msg_done && !c->tunnel) {
    /* a complete request and then a half-close: the answer can still go out */
    c->peer_eof = 1;
    c->req->keep_alive = 0;
    update_reading(c);
    return;
  }
  if (n < 0) {
    /* EOF between requests is a normal goodbye; mid-request it aborts the handler */
    close_conn(c);
    return;
  }
  if (c->tunnel && !c->tls && !c->ps && tunnel_consumer(c)) { /* nothing pending: no copy */
    c->req->events->on_body_chunk(c->req, buf->base, (size_t)n, c->req->ud);
    return;
  }
  if (c->tls) {
    if (tls_input(c, buf->base, (size_t)n) < 0) return;
  } else {
    rh_buf_append(&ensure_ps(c)->in, buf->base, (size_t)n);
  }
  if (c->tunnel) { tunnel_deliver(c); return; }
  if (c->timer_kind == TIMER_IDLE) set_timer(c, TIMER_NONE);
  process(c);
}

/* Reading stays on while a request is handled (switching it costs a syscall each way); it
 * stops only for backpressure, a half-close, or too much pipelined input. */
static void update_reading(rh_http_conn *c) {
  int want = !c->closing && !c->close_after_write && !c->peer_eof && !(c->req && c->req->body_paused) &&
             (c->tunnel || !c->ps || c->ps->in.len < c->srv->lim.max_head + 65536);
  if (want && !c->reading) uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  else if (!want && c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = want;
}

static void process(rh_http_conn *c) {
  if (c->in_process) return; /* the outer call picks up whatever changed */
  c->in_process = 1;
  for (;;) {
    parse_available(c);
    if (c->closing || c->close_after_write) break;
    if (!(c->msg_done && c->req && c->req->finished)) break;
    finish_exchange(c);
    if (c->close_after_write) break;
  }
  c->in_process = 0;
  if (c->tunnel) tunnel_deliver(c); /* upgraded inside process(): its parse state may go now */
  if (!c->closing && !c->lingering) update_reading(c);
}

/* ---- connections ---- */

/* The connection lets go of its request; a handler still holding it learns it is gone. */
static void detach_req(rh_http_conn *c) {
  rh_http_req *r = c->req;
  if (!r) return;
  c->req = NULL;
  r->conn = NULL;
  if (!r->body_done && !r->body_error) r->body_error = "client closed the connection";
  if (r->refs > 1) emit_abort(r);
  rh_http_req_release(r);
}

static void close_conn(rh_http_conn *c) {
  if (c->closing) return;
  c->closing = 1;
  close_now(c);
}

static void on_connection(uv_stream_t *ls, int status) {
  rh_http_server *s = ls->data;
  if (status < 0) return;
  rh_http_conn *c = calloc(1, sizeof *c);
  if (!c) abort();
  c->srv = s;
  uv_tcp_init(s->loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(ls, (uv_stream_t *)&c->tcp) < 0) {
    /* out of descriptors: the pending connection stays queued; nothing to serve here */
    s->open_handles++;
    uv_close((uv_handle_t *)&c->tcp, after_close);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  rh_peer_addr(&c->tcp, &c->peer);
  if (s->lim.tls) c->tls = rh_tls_new(s->lim.tls, NULL);
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  s->nconns++;
  rh_metric_add(m_conns, NULL, 1);
  set_timer(c, TIMER_HEAD);
  update_reading(c);
}

static void free_server(uv_handle_t *h);

rh_http_server *rh_http_server_start(uv_loop_t *loop, const char *addr, const rh_http_limits *lim,
                                     const rh_http_handlers *h, char *err, size_t errlen) {
  static int once;
  if (!once++) {
    init_settings();
    register_metrics();
  }
  rh_http_server *s = calloc(1, sizeof *s);
  if (!s) abort();
  s->loop = loop;
  s->lim = *lim;
  snprintf(s->name, sizeof s->name, "%s", lim->name ? lim->name : "main");
  s->lim.name = s->name;
  s->h = *h;
  s->listener.data = s->tick.data = s;
  uv_timer_init(loop, &s->tick);
  s->open_handles = 1;
  if (rh_listen(loop, &s->listener, addr, on_connection, err, errlen) < 0) {
    s->listener.data = s;
    if (s->listener.loop) {
      s->open_handles++;
      uv_close((uv_handle_t *)&s->listener, free_server);
    }
    uv_close((uv_handle_t *)&s->tick, free_server);
    return NULL;
  }
  s->listener.data = s;
  s->listening = 1;
  s->open_handles++;
  return s;
}

int rh_http_server_port(rh_http_server *s) { return rh_bound_port(&s->listener); }
size_t rh_http_server_connections(rh_http_server *s) { return s->nconns; }
const char *rh_http_req_listener(const rh_http_req *r) { return r->server->name; }

int rh_http_server_fd(rh_http_server *s) {
  uv_os_fd_t fd;
  return s->listening && uv_fileno((uv_handle_t *)&s->listener, &fd) == 0 ? fd : -1;
}

static void free_server(uv_handle_t *h) { server_unref(h->data); }

static void close_listener(rh_http_server *s) {
  if (!s->listening) return;
  s->listening = 0;
  uv_close((uv_handle_t *)&s->listener, free_server);
}

void rh_http_server_stop_accepting(rh_http_server *s) {
  s->stopping = 1;
  close_listener(s);
  for (rh_http_conn *c = s->conns, *next; c; c = next) {
    next = c->next;
    /* Idle between requests: closed (clients retry a request on a closed keep-alive
     * connection). Accepted but not yet sent a byte: kept, so that its first request is
     * still answered (with Connection: close); the head timeout bounds the wait. */
    if (!c->req && (!c->ps || c->ps->in.len == 0)) {
      if (c->timer_kind == TIMER_IDLE) close_conn(c);
    } else if (c->req) {
      c->req->keep_alive = 0;
    }
  }
}

void rh_http_server_free(rh_http_server *s) {
  s->stopping = 1;
  while (s->conns) close_conn(s->conns);
  close_listener(s);
  uv_close((uv_handle_t *)&s->tick, free_server);
}

/* ---- responses ---- */

static void date_header(rh_buf *b) {
  static time_t last;
  static char cached[64];
  time_t now = time(NULL);
  if (now != last) {
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(cached, sizeof cached, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    last = now;
  }
  rh_buf_puts(b, cached);
}

static int body_allowed(int status) { return !(status < 200 || status == 204 || status == 304); }

/* Framing headers are the server's: the caller's Content-Length/Transfer-Encoding/Connection
 * are dropped, except a Content-Length on a streamed response, which sets its length. */
static void build_head(rh_buf *b, rh_http_req *r, int status, const rh_headers *h, int64_t length) {
  if (rh_head_status_line(b, status)) rh_head_status_line(b, 500);
  int have_date = 0, have_server = 0;
  for (size_t i = 0; h && i < h->n; i++) {
    const rh_header *f = &h->items[i];
    if (rh_header_name_eq(f, "content-length") || rh_header_name_eq(f, "transfer-encoding") ||
        rh_header_name_eq(f, "connection"))
      continue;
    /* a field that fails the check is not written: the callers check what they are handed
     * (Lua headers, a proxied head) and answer for it; this is the last line */
    if (rh_head_header(b, f)) continue;
    have_date |= rh_header_name_eq(f, "date");
    have_server |= rh_header_name_eq(f, "server");
  }
  if (!have_server) rh_buf_puts(b, "Server: relayhost\r\n");
  if (!have_date) date_header(b);
  if (body_allowed(status)) {
    if (length >= 0) {
      char num[RH_HTTP_U64_MAX];
      rh_buf_append(b, "Content-Length: ", 16);
      rh_buf_append(b, num, rh_http_u64(num, (uint64_t)length));
      rh_buf_append(b, "\r\n", 2);
    }
    else if (r->http_minor) rh_buf_puts(b, "Transfer-Encoding: chunked\r\n");
    /* HTTP/1.0 has no chunks: the body ends when the connection does (keep_alive is off) */
  }
  int keep = r->keep_alive && !r->server->stopping;
  /* a body the handler never read and the client still holds back: we cannot reuse */
  if (r->conn && !r->body_done && r->expect_continue && !r->body_wanted) keep = 0;
  r->keep_alive = keep;
  if (!keep) rh_buf_puts(b, "Connection: close\r\n");
  else if (r->http_minor == 0) rh_buf_puts(b, "Connection: keep-alive\r\n");
  rh_buf_append(b, "\r\n", 2);
}

static void response_done(rh_http_req *r) {
  r->finished = 1;
  log_access(r);
  if (r->conn) process(r->conn);
}

int rh_http_respond(rh_http_req *r, int status, const rh_headers *h, const char *body, size_t len) {
  if (r->head_sent || !r->conn) return -1;
  rh_buf b = RH_BUF_INIT;
  if (!body_allowed(status)) len = 0;
  build_head(&b, r, status, h, (int64_t)len);
  if (!r->is_head) rh_buf_append(&b, body, len);
  r->status = status;
  r->head_sent = 1;
  r->bytes_out = len;
  int rc = conn_write(r->conn, b.data, b.len);
  rh_buf_free(&b);
  response_done(r);
  return rc;
}

/* The Content-Length a handler states for a streamed answer: digits only, at most 2^63-1 (the
 * range the server takes from clients). -1 when there is none, -2 when it is not a length. */
static int64_t stated_length(const rh_headers *h) {
  const rh_header *cl = h ? rh_headers_find(h, "content-length", NULL) : NULL;
  if (!cl) return -1;
  if (cl->value_len == 0) return -2;
  int64_t v = 0;
  for (size_t i = 0; i < cl->value_len; i++) {
    int d = cl->value[i] - '0';
    if (d < 0 || d > 9 || v > (INT64_MAX - d) / 10) return -2;
    v = v * 10 + d;
  }
  return v;
}

/* The server frames what it was told to: a body is held to its Content-Length, so no write of a
 * handler (or a proxied upstream) can spill into what the client reads as the next response. */
static int start(rh_http_req *r, int status, const rh_headers *h, int hold) {
  if (r->head_sent || !r->conn) return -1;
  int64_t length = stated_length(h);
  if (length == -2) return RH_HTTP_BAD_LENGTH;
  if (length < 0 && r->http_minor == 0) r->keep_alive = 0; /* close-delimited for HTTP/1.0 */
  build_head(&r->held, r, status, h, length);
  r->status = status;
  r->head_sent = 1;
  r->chunked = length < 0 && body_allowed(status) && r->http_minor;
  r->length_left = body_allowed(status) && !r->is_head ? length : -1;
  if (hold) return 0;
  rh_http_flush(r);
  return r->conn ? 0 : -1;
}

int rh_http_start(rh_http_req *r, int status, const rh_headers *h) { return start(r, status, h, 0); }
int rh_http_start_held(rh_http_req *r, int status, const rh_headers *h) { return start(r, status, h, 1); }

void rh_http_flush(rh_http_req *r) {
  if (!r->held.len) return;
  if (r->conn) conn_write(r->conn, r->held.data, r->held.len);
  rh_buf_free(&r->held);
}

/* Body bytes after whatever head is held back, in one write. */
static int write_out(rh_http_req *r, const char *p, size_t n) {
  if (!r->held.len) return conn_write(r->conn, p, n);
  rh_buf_append(&r->held, p, n);
  int rc = conn_write(r->conn, r->held.data, r->held.len);
  rh_buf_free(&r->held);
  return rc;
}

int rh_http_write(rh_http_req *r, const char *p, size_t n) {
  if (!r->head_sent || r->finished || !r->conn) return -1;
  if (r->conn->tunnel) {
    if (conn_write(r->conn, p, n) < 0 || !r->conn) return -1;
    return r->conn->write_queued > r->server->lim.write_high_water;
  }
  if (n == 0 || r->is_head || !body_allowed(r->status)) return 0;
  if (r->length_left >= 0 && n > (uint64_t)r->length_left) {
    r->overrun = 1;
    n = (size_t)r->length_left;
    if (n == 0) return -1;
  }
  if (r->length_left >= 0) r->length_left -= (int64_t)n;
  r->bytes_out += n;
  int rc;
  if (r->chunked) {
    rh_buf b = RH_BUF_INIT;
    rh_http_chunk_append(&b, p, n);
    rc = write_out(r, b.data, b.len);
    rh_buf_free(&b);
  } else {
    rc = write_out(r, p, n);
  }
  if (rc < 0 || !r->conn || r->overrun) return -1;
  return r->conn->write_queued > r->server->lim.write_high_water;
}

int rh_http_finish(rh_http_req *r) {
  if (!r->head_sent || r->finished) return -1;
  int rc = 0;
  if (r->length_left > 0) { /* a short body: only closing tells the client it was cut */
    RH_LOG(RH_LOG_WARN, "response_short", RH_INT("missing", r->length_left), RH_STR("request_id", r->id));
    r->keep_alive = 0;
  }
  if (r->conn && r->chunked && !r->is_head) rc = write_out(r, "0\r\n\r\n", 5);
  else rh_http_flush(r);
  response_done(r);
  return r->conn || rc == 0 ? rc : -1;
}

int rh_http_want_body(rh_http_req *r) {
  r->body_wanted = 1;
  if (r->body_done) return 1;
  if (r->body_error || !r->conn) {
    if (!r->body_error) r->body_error = "client closed the connection";
    return -1;
  }
  if (r->expect_continue && !r->head_sent) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    r->expect_continue = 0; /* sent once */
    conn_write(r->conn, cont, sizeof cont - 1);
  }
  return 0;
}

void rh_http_stream_body(rh_http_req *r, const rh_http_req_events *events, void *ud) {
  r->events = events;
  r->ud = ud;
  r->body_wanted = 1;
  if (r->conn && r->expect_continue && !r->head_sent && !r->body_done) rh_http_want_body(r);
  /* bytes buffered before the switch go first */
  if (r->body.len && events->on_body_chunk) {
    events->on_body_chunk(r, r->body.data, r->body.len, ud);
    rh_buf_free(&r->body);
  }
}

/* While the consumer holds the body back (an upstream or a tunnel stream that takes it slower
 * than the client sends), the client is not the slow one: the body timeout stops, and the
 * consumer's own limits (the proxy's timeout, the tunnel's stall timeout) answer for the wait. */
void rh_http_pause_body(rh_http_req *r) {
  rh_http_conn *c = r->conn;
  r->body_paused = 1;
  if (c && c->req == r && c->timer_kind == TIMER_BODY) set_timer(c, TIMER_NONE);
  if (c && c->tunnel) update_reading(c);
}

void rh_http_resume_body(rh_http_req *r) {
  rh_http_conn *c = r->conn;
  if (!r->body_paused) return;
  r->body_paused = 0;
  if (c && c->req == r && !c->msg_done && !c->tunnel && c->timer_kind == TIMER_NONE) set_timer(c, TIMER_BODY);
  if (c && c->tunnel) update_reading(c);
  else if (c) process(c);
}

/* A tunnel's request keeps of its target only the path, which its access line writes when it
 * ends: the rest (a WebSocket's query of ids and options) would weigh on every held socket.
 * Shrunk in place, where glibc can: no new hole in the heap. */
static void keep_path_only(rh_http_req *r) {
  if (!r->target || r->path_len == r->target_len) return;
  memmove(r->target, r->path, r->path_len);
  r->target[r->path_len] = 0;
  char *t = realloc(r->target, r->path_len + 1);
  if (t) r->target = t;
  r->path = r->target;
  r->target_len = r->path_len;
  r->query = NULL;
  r->query_len = 0;
}

int rh_http_tunnel(rh_http_req *r, int status, const rh_headers *h, const rh_http_req_events *events,
                   void *ud) {
  rh_http_conn *c = r->conn;
  if (!c || r->head_sent) return -1;
  rh_buf b = RH_BUF_INIT;
  /* through head.h like every head that crosses a hop (the proxy hands over an upstream's 101
   * fields); as in build_head, a field that fails the check is not written */
  if (rh_head_status_line(&b, status)) rh_head_status_line(&b, 500);
  for (size_t i = 0; h && i < h->n; i++)
    rh_head_header(&b, &h->items[i]);
  rh_head_end(&b);
  /* nothing reads the request's fields once it is a tunnel (the WebSocket's owner took what it
   * needed before the 101): its copies would only weigh on every held socket */
  rh_headers_free(&r->headers);
  keep_path_only(r);
  r->status = status;
  r->head_sent = 1;
  r->events = events;
  r->ud = ud;
  c->tunnel = 1;
  set_timer(c, TIMER_NONE);
  int rc = conn_write(c, b.data, b.len);
  rh_buf_free(&b);
  if (rc == 0 && c->req == r) {
    tunnel_deliver(c);
    if (r->conn) update_reading(r->conn);
  }
  return rc;
}

size_t rh_http_queued(const rh_http_req *r) { return r->conn ? r->conn->write_queued : 0; }

void rh_http_abort(rh_http_req *r) {
  if (r->conn) close_conn(r->conn);
}
