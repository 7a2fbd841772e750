/* relay_client: a stream the server opened, executed against the base URL. See relay.h. */
#include <llhttp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/collect.h"
#include "http/server.h"
#include "proxy/upconn.h"
#include "tls/tls.h"
#include "tunnel/relay.h"

#define HIGH_WATER (256u * 1024) /* upstream write queue over this: hold the stream's credit */

typedef struct {
  int tls, port;
  char host[256];
  const char *path;          /* into the url */
} url_parts;

typedef struct {
  rh_tstream *s;
  rh_dial *dial;
  rh_upconn *u;
  rh_collect parser;         /* collects into resp */
  rh_headers resp;
  rh_buf out;                /* request bytes waiting for the connection */
  size_t unacked;            /* request body bytes not yet acknowledged */
  int chunked, is_head, head_sent, done;
} exec;

/* ---- urls ---- */

/* scheme://[userinfo@]host[:port][/path]. NULL, or why not. */
static const char *parse_url(const char *url, url_parts *u) {
  u->tls = strncasecmp(url, "https://", 8) == 0;
  if (!u->tls && strncasecmp(url, "http://", 7) != 0) return "the URL must start with http:// or https://";
  const char *a = url + (u->tls ? 8 : 7), *end = a + strcspn(a, "/?#");
  for (const char *at = a; at < end; at++)
    if (*at == '@') a = at + 1; /* userinfo is not the host */
  const char *colon = NULL;
  if (*a == '[') {
    const char *rb = memchr(a, ']', (size_t)(end - a));
    if (!rb) return "bad IPv6 host";
    colon = rb + 1 < end && rb[1] == ':' ? rb + 1 : NULL;
    if ((size_t)(rb - a - 1) >= sizeof u->host) return "host name too long";
    snprintf(u->host, sizeof u->host, "%.*s", (int)(rb - a - 1), a + 1);
  } else {
    colon = memchr(a, ':', (size_t)(end - a));
    const char *he = colon ? colon : end;
    if ((size_t)(he - a) >= sizeof u->host) return "host name too long";
    snprintf(u->host, sizeof u->host, "%.*s", (int)(he - a), a);
  }
  if (!u->host[0]) return "no host in the URL";
  u->port = u->tls ? 443 : 80;
  if (colon) {
    char *pe;
    long p = strtol(colon + 1, &pe, 10);
    if (pe != end || p <= 0 || p > 65535) return "bad port in the URL";
    u->port = (int)p;
  }
  u->path = *end ? end : "/";
  return NULL;
}

static int host_allowed(const rh_texec_conf *c, const char *host) {
  url_parts base;
  if (!parse_url(c->base_url, &base) && strcasecmp(base.host, host) == 0) return 1;
  for (size_t i = 0; i < c->nallow; i++)
    if (strcasecmp(c->allow_hosts[i], host) == 0) return 1;
  return 0;
}

/* ---- ending ---- */

static void exec_free(exec *e) {
  if (e->dial) rh_dial_cancel(e->dial);
  if (e->u) rh_upconn_close(e->u);
  if (e->s) rh_tstream_release(e->s);
  rh_headers_free(&e->resp);
  rh_buf_free(&e->out);
  free(e);
}

static void fail(exec *e, const char *why) {
  if (e->s) rh_tstream_reset(e->s, RH_TR_UPSTREAM, why);
  exec_free(e);
}

/* Answers the stream here (refused targets): a short text response. */
static void answer(rh_tstream *s, int status, const char *msg) {
  rh_headers h = RH_HEADERS_INIT;
  rh_headers_add(&h, "Content-Type", 12, "text/plain; charset=utf-8", 25);
  rh_tstream_head(s, status, "", &h);
  rh_tstream_write(s, msg, strlen(msg));
  rh_tstream_end(s);
  rh_tstream_release(s);
  rh_headers_free(&h);
}

/* ---- the upstream's response ---- */

static exec *exec_of(llhttp_t *p) { return p->data; }

static int on_headers_complete(llhttp_t *p) {
  exec *e = exec_of(p);
  int st = p->status_code;
  if (rh_collect_interim_head(&e->parser)) return 0; /* 100 Continue and friends stay on this hop */
  rh_headers h = RH_HEADERS_INIT;
  rh_trelay_copy_headers(&e->resp, &h);
  rh_tstream_head(e->s, st, "", &h);
  rh_headers_free(&h);
  e->head_sent = 1;
  return e->is_head ? 1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  exec *e = exec_of(p);
  if (rh_tstream_write(e->s, at, len) == 1 && e->u) rh_upconn_pause(e->u);
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  exec *e = exec_of(p);
  if (!rh_collect_final_message(&e->parser)) return 0;
  e->done = 1;
  return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
  .on_header_field = rh_collect_on_field,
  .on_header_field_complete = rh_collect_on_field_complete,
  .on_header_value = rh_collect_on_value,
  .on_headers_complete = on_headers_complete,
  .on_body = on_body,
  .on_message_complete = on_message_complete,
};

/* 1 when the exchange is over (e is freed). */
static int after_parse(exec *e, llhttp_errno_t rc) {
  if (e->done) {
    rh_tstream_end(e->s);
    exec_free(e);
    return 1;
  }
  if (rc != HPE_OK) {
    char why[160];
    snprintf(why, sizeof why, "bad response from the upstream: %s", llhttp_get_error_reason(&e->parser.llhttp));
    fail(e, why);
    return 1;
  }
  return 0;
}

static void up_read(void *owner, const char *p, ssize_t n, const char *err) {
  exec *e = owner;
  if (n > 0) {
    after_parse(e, llhttp_execute(&e->parser.llhttp, p, (size_t)n));
    return;
  }
  /* the connection ended: that completes a body that runs until the close, or cuts one short */
  if (!after_parse(e, llhttp_finish(&e->parser.llhttp))) fail(e, e->head_sent ? "upstream cut the response short" : err);
}

static void up_written(void *owner, size_t queued) {
  exec *e = owner;
  if (queued >= HIGH_WATER || !e->unacked) return;
  rh_tstream_consumed(e->s, e->unacked);
  e->unacked = 0;
}

/* ---- the request ---- */

static void put(exec *e, const char *p, size_t n) {
  if (e->u) rh_upconn_write(e->u, p, n);
  else rh_buf_append(&e->out, p, n);
}

static void req_data(void *ud, const char *p, size_t n) {
  exec *e = ud;
  if (e->chunked) {
    rh_buf b = RH_BUF_INIT;
    rh_http_chunk_append(&b, p, n);
    put(e, b.data, b.len);
    rh_buf_free(&b);
  } else {
    put(e, p, n);
  }
  if (e->u && e->u->queued < HIGH_WATER) rh_tstream_consumed(e->s, n);
  else e->unacked += n;
}

static void req_end(void *ud) {
  exec *e = ud;
  if (e->chunked) put(e, "0\r\n\r\n", 5);
}

static void req_reset(void *ud, int code, const char *reason) {
  (void)code, (void)reason;
  exec_free(ud);
}

static void req_writable(void *ud) {
  exec *e = ud;
  if (e->u) rh_upconn_resume(e->u);
}

static void connected(void *ud, rh_upconn *u, const char *err) {
  exec *e = ud;
  e->dial = NULL;
  if (!u) {
    fail(e, err);
    return;
  }
  e->u = u;
  rh_upconn_own(u, e, up_read, up_written);
  rh_upconn_write(u, e->out.data, e->out.len);
  rh_buf_free(&e->out);
  up_written(e, u->queued);
}

static void build_head(exec *e, const char *method, const url_parts *u, const rh_headers *h, int relay_headers) {
  rh_buf_printf(&e->out, "%s %s HTTP/1.1\r\nHost: ", method, u->path[0] == '/' ? u->path : "/");
  int v6 = strchr(u->host, ':') != NULL, dflt = u->port == (u->tls ? 443 : 80);
  rh_buf_printf(&e->out, v6 ? "[%s]" : "%s", u->host);
  if (!dflt) rh_buf_printf(&e->out, ":%d", u->port);
  rh_buf_puts(&e->out, "\r\nConnection: close\r\n");
  if (e->chunked) rh_buf_puts(&e->out, "Transfer-Encoding: chunked\r\n");
  for (size_t i = 0; i < h->n; i++) {
    const rh_header *f = &h->items[i];
    if (rh_header_hop_by_hop(f) || rh_header_name_eq(f, "host")) continue;
    if (!relay_headers && f->name_len > 8 && strncasecmp(f->name, "x-relay-", 8) == 0) continue;
    rh_buf_printf(&e->out, "%.*s: %.*s\r\n", (int)f->name_len, f->name, (int)f->value_len, f->value);
  }
  rh_buf_puts(&e->out, "\r\n");
}

static const rh_tstream_handlers req_handlers = { NULL, req_data, req_end, req_reset, req_writable, NULL };

void rh_texec_open(uv_loop_t *loop, const rh_texec_conf *c, rh_tstream *s, const char *method,
                   const char *target, const rh_headers *h) {
  size_t bl = strlen(c->base_url), tl = strlen(target);
  char *url = malloc(bl + tl + 1);
  if (!url) abort();
  memcpy(url, c->base_url, bl);
  memcpy(url + bl, target, tl + 1); /* the original concatenates: "http:/" + "/host/x" works */
  url_parts u;
  const char *why = parse_url(url, &u);
  char msg[400];
  if (why) {
    snprintf(msg, sizeof msg, "relay client: base-url + path is not a URL (%s)\n", why);
    answer(s, 400, msg);
  } else if (!host_allowed(c, u.host)) {
    snprintf(msg, sizeof msg, "relay client: host %s is not base-url's host and not in --allow-hosts\n", u.host);
    answer(s, 403, msg);
  } else {
    exec *e = calloc(1, sizeof *e);
    if (!e) abort();
    e->s = s;
    e->is_head = strcmp(method, "HEAD") == 0;
    e->chunked = rh_headers_has_token(h, "transfer-encoding", "chunked");
    rh_collect_init(&e->parser, HTTP_RESPONSE, &settings, e, &e->resp);
    rh_tstream_handlers sh = req_handlers;
    sh.ud = e;
    rh_tstream_set_handlers(s, &sh);
    build_head(e, method, &u, h, c->relay_headers);
    struct rh_tls_ctx *tls = u.tls ? (c->tls ? c->tls : rh_tls_default_client()) : NULL;
    if (u.tls && !tls) fail(e, "no usable CA store for https");
    else if (!(e->dial = rh_dial_start(loop, "tunnel", u.host, u.port, tls, connected, e)))
      fail(e, "cannot start resolving the upstream");
  }
  free(url);
}
