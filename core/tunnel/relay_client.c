/* relay_client: a stream the server opened, executed against the base URL. See relay.h. */
#include <llhttp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/client.h"
#include "http/collect.h"
#include "http/head.h"
#include "net/path.h"
#include "net/url.h"
#include "http/server.h"
#include "net/upconn.h"
#include "tls/tls.h"
#include "tunnel/relay.h"

#define HIGH_WATER (256u * 1024) /* upstream write queue over this: hold the stream's credit */

typedef struct {
  int tls, port, userinfo;
  char host[RH_HOST_MAX + 1];
  const char *path;          /* into the url: path, query and fragment */
  size_t path_off;           /* where path starts in the url */
} url_parts;

typedef struct {
  rh_tstream *s;
  rh_upconn_dialing *dial;
  rh_upconn *u;
  rh_client_parser parser;   /* collects into resp */
  rh_headers resp;
  rh_buf out;                /* request bytes waiting for the connection */
  size_t unacked;            /* request body bytes not yet acknowledged */
  uint64_t left;             /* request body bytes still to come (UINT64_MAX: chunked) */
  int chunked, is_head, head_sent;
} exec;

/* ---- urls ---- */

/* scheme://[userinfo@]host[:port][/path], read by core/net/url. NULL, or why not (the message
 * lives until the next call). u->path points into url. */
static const char *parse_url(const char *url, url_parts *u) {
  static char why[RH_URL_ERRLEN];
  rh_url p;
  if (rh_url_parse(url, "http https", &p)) return memcpy(why, p.err, sizeof why);
  u->tls = p.tls, u->port = p.port, u->userinfo = p.user != NULL;
  memcpy(u->host, p.host, strlen(p.host) + 1); /* RH_HOST_MAX fits */
  u->path = url + p.rest;
  u->path_off = p.rest;
  return NULL;
}

/* An --allow-hosts entry: "host" (the scheme's default port only), "host:port" or "host:*";
 * an IPv6 host in brackets. Read as a listen address (core/net/url), its port made explicit. */
static int entry_allows(const char *entry, const url_parts *u) {
  size_t n = strlen(entry);
  int any = n > 2 && !strcmp(entry + n - 2, ":*");
  int has_port = entry[0] == '[' ? strstr(entry, "]:") != NULL : strchr(entry, ':') != NULL;
  char e[RH_HOST_MAX + 16];
  rh_hostport hp;
  int len = snprintf(e, sizeof e, "%.*s%s", (int)(any ? n - 1 : n), entry, any ? "0" : has_port ? "" : ":0");
  if (len < 0 || (size_t)len >= sizeof e || rh_hostport_parse(e, &hp) || strcasecmp(hp.host, u->host)) return 0;
  return any || (has_port ? hp.port == u->port : u->port == (u->tls ? 443 : 80));
}

static int host_allowed(const rh_texec_conf *c, const url_parts *u) {
  for (size_t i = 0; i < c->nallow; i++)
    if (entry_allows(c->allow_hosts[i], u)) return 1;
  return 0;
}

/* The original's --base-url=http:/ : the relayed path's first segment is the host. */
static int is_quirk(const char *base) { return !strcasecmp(base, "http:/") || !strcasecmp(base, "https:/"); }

/* With the quirk: u gets the host the target's first segment names, *rest what follows it. NULL,
 * or why not (*status 403 for a host not allowed). The message lives until the next call. */
static const char *quirk_authority(const rh_texec_conf *c, const char *target, size_t pl, url_parts *u,
                                   const char **rest, int *status) {
  static char msg[400];
  size_t bl = strlen(c->base_url);
  char *url = malloc(bl + pl + 1);
  if (!url) abort();
  memcpy(url, c->base_url, bl);
  memcpy(url + bl, target, pl);
  url[bl + pl] = 0;
  const char *why = parse_url(url, u);
  free(url);
  u->path = NULL; /* it pointed into url */
  if (why) return why;
  *rest = target + u->path_off - bl;
  if (u->userinfo) return "userinfo in the relayed target";
  if (host_allowed(c, u)) return NULL;
  *status = 403;
  snprintf(msg, sizeof msg, "host %s:%d is not in --allow-hosts", u->host, u->port);
  return msg;
}

/* Without it: u gets base-url's host, out its path without a trailing '/' ("/" when the target
 * has no path to add and base-url none either). */
static const char *base_path(const rh_texec_conf *c, size_t pl, url_parts *u, rh_buf *out) {
  const char *why = parse_url(c->base_url, u);
  if (why) return why;
  if (u->userinfo) return "base-url: userinfo not allowed here"; /* it would never be sent */
  size_t bl = strcspn(u->path, "?#");
  while (bl && u->path[bl - 1] == '/') bl--;
  rh_buf_append(out, u->path, bl);
  if (!pl && !bl) rh_buf_append(out, "/", 1);
  return NULL;
}

/* Where a relayed target goes: u gets the scheme, host and port (base-url's, or with the quirk an
 * allowed host of the target's), out the origin-form target: base-url's path and the target's
 * path with its dot-segments resolved and confined under it, then the target's query. Never a
 * concatenated URL: nothing in the target ('@host', ':port') can move it. NULL, or why not
 * (*status: 400 or 403). */
static const char *upstream_target(const rh_texec_conf *c, const char *target, url_parts *u, rh_buf *out,
                                   int *status) {
  *status = 400;
  size_t pl = strcspn(target, "?");
  const char *query = target[pl] ? target + pl + 1 : "", *rest = target;
  if (pl && target[0] != '/') return "the relayed target must start with '/' or '?'";
  int quirk = is_quirk(c->base_url);
  const char *why = quirk ? quirk_authority(c, target, pl, u, &rest, status) : base_path(c, pl, u, out);
  if (why) return why;
  size_t rl = (size_t)(target + pl - rest);
  if ((quirk || rl) && (why = rh_path_normalize(rest, rl, out))) return why;
  if (*query) {
    rh_buf_append(out, "?", 1);
    rh_buf_puts(out, query);
  }
  return NULL;
}

/* ---- ending ---- */

static void exec_free(exec *e) {
  if (e->dial) rh_upconn_dial_cancel(e->dial);
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
  if (rh_collect_interim_head(&e->parser.c)) return 0; /* 100 Continue and friends stay on this hop */
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

static const llhttp_settings_t settings = {
  RH_CLIENT_PARSER_SETTINGS,
  .on_headers_complete = on_headers_complete,
  .on_body = on_body,
};

/* 1 when the exchange is over (e is freed). */
static int after_parse(exec *e, llhttp_errno_t rc) {
  if (e->parser.complete) {
    rh_tstream_end(e->s);
    exec_free(e);
    return 1;
  }
  if (rc != HPE_OK) {
    char why[160];
    snprintf(why, sizeof why, "bad response from the upstream: %s", rh_client_parser_error(&e->parser));
    fail(e, why);
    return 1;
  }
  return 0;
}

static void up_read(void *owner, const char *p, ssize_t n, const char *err) {
  exec *e = owner;
  if (n > 0) {
    after_parse(e, llhttp_execute(&e->parser.c.llhttp, p, (size_t)n));
    return;
  }
  /* the connection ended: that completes a body that runs until the close, or cuts one short */
  if (!after_parse(e, llhttp_finish(&e->parser.c.llhttp))) fail(e, e->head_sent ? "upstream cut the response short" : err);
}

static void up_written(void *owner, size_t queued) {
  exec *e = owner;
  if (queued >= HIGH_WATER || !e->unacked) return;
  rh_tstream_consumed(e->s, e->unacked);
  e->unacked = 0;
}

/* ---- the request ---- */

/* Request bytes to the upstream, as one chunk when chunk is set. Until it is connected they wait
 * in e->out; after, e->out is where a chunk is framed (kept: one chunk's size). */
static void put(exec *e, const char *p, size_t n, int chunk) {
  if (e->u && !chunk) {
    rh_upconn_write(e->u, p, n);
    return;
  }
  if (chunk) rh_http_chunk_append(&e->out, p, n);
  else rh_buf_append(&e->out, p, n);
  if (!e->u) return;
  rh_upconn_write(e->u, e->out.data, e->out.len);
  e->out.len = 0;
}

/* The body is framed here, never as the server says: chunked, or exactly its Content-Length
 * (none: no body). A server that sends more, or ends short, loses the exchange. */
static void req_data(void *ud, const char *p, size_t n) {
  exec *e = ud;
  if (!e->chunked && n > e->left) {
    fail(e, "request body longer than its Content-Length");
    return;
  }
  if (!e->chunked) e->left -= n;
  put(e, p, n, e->chunked);
  if (e->u && e->u->queued < HIGH_WATER) rh_tstream_consumed(e->s, n);
  else e->unacked += n;
}

static void req_end(void *ud) {
  exec *e = ud;
  if (e->chunked) put(e, "0\r\n\r\n", 5, 0);
  else if (e->left) fail(e, "request body shorter than its Content-Length");
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

/* What never crosses to the upstream: hop-by-hop fields, Host, the length (framed here), and
 * unless forwarding, the relay's own X-Relay-*. */
static int skip_field(const rh_header *f) {
  return rh_header_hop_by_hop(f) || rh_header_name_eq(f, "host") || rh_header_name_eq(f, "content-length");
}

static int skip_field_relay(const rh_header *f) {
  return skip_field(f) || (f->name_len > 8 && strncasecmp(f->name, "x-relay-", 8) == 0);
}

/* The upstream's request head, rebuilt from checked parts. NULL, or what was wrong. */
static const char *build_head(rh_buf *b, const char *method, const rh_buf *target, const rh_texec_up *up,
                              const rh_headers *h, int relay_headers) {
  const char *err = rh_head_request_line(b, method, strlen(method), target->data, target->len);
  char host[300];
  int v6 = strchr(up->host, ':') != NULL, dflt = up->port == (up->tls ? 443 : 80);
  int hl = snprintf(host, sizeof host, v6 ? "[%s]" : "%s", up->host);
  if (!dflt) hl += snprintf(host + hl, sizeof host - (size_t)hl, ":%d", up->port);
  if (!err) err = rh_head_field(b, "Host", 4, host, (size_t)hl);
  if (!err) err = rh_head_field(b, "Connection", 10, "close", 5);
  if (!err && up->chunked) err = rh_head_field(b, "Transfer-Encoding", 17, "chunked", 7);
  if (!err && !up->chunked && up->left) {
    char len[24];
    err = rh_head_field(b, "Content-Length", 14, len, (size_t)snprintf(len, sizeof len, "%llu", (unsigned long long)up->left));
  }
  if (!err) err = rh_head_fields(b, h, relay_headers ? skip_field : skip_field_relay);
  if (!err) rh_head_end(b);
  return err;
}

/* The request's body framing: chunked, a Content-Length, or none. -1 if the length is bad. */
static int body_framing(rh_texec_up *up, const rh_headers *h) {
  up->chunked = rh_headers_has_token(h, "transfer-encoding", "chunked");
  if (up->chunked) {
    up->left = UINT64_MAX;
    return 0;
  }
  if (rh_trelay_content_length(h, &up->left) < 0) return -1;
  if (up->left == UINT64_MAX) up->left = 0;
  return 0;
}

const char *rh_texec_head(const rh_texec_conf *c, const char *method, const char *target, const rh_headers *h,
                          rh_texec_up *up, rh_buf *out, int *status) {
  url_parts u;
  rh_buf path = RH_BUF_INIT;
  const char *why = upstream_target(c, target, &u, &path, status);
  if (!why) {
    *status = 400;
    up->tls = u.tls, up->port = u.port;
    memcpy(up->host, u.host, sizeof up->host);
    why = body_framing(up, h) < 0 ? "bad or conflicting Content-Length"
                                  : build_head(out, method, &path, up, h, c->relay_headers);
  }
  rh_buf_free(&path);
  return why;
}

static const rh_tstream_handlers req_handlers = { NULL, req_data, req_end, req_reset, req_writable, NULL };

void rh_texec_open(uv_loop_t *loop, const rh_texec_conf *c, rh_tstream *s, const char *method,
                   const char *target, const rh_headers *h) {
  rh_texec_up up;
  rh_buf head = RH_BUF_INIT;
  int status;
  const char *why = rh_texec_head(c, method, target, h, &up, &head, &status);
  if (why) {
    char msg[600];
    snprintf(msg, sizeof msg, "relay client: %s (%s)\n", status == 403 ? "target not allowed" : "bad request", why);
    answer(s, status, msg);
    rh_buf_free(&head);
    return;
  }
  exec *e = calloc(1, sizeof *e);
  if (!e) abort();
  e->s = s;
  e->out = head;
  e->is_head = strcmp(method, "HEAD") == 0;
  e->chunked = up.chunked;
  e->left = up.left;
  rh_collect_init(&e->parser.c, HTTP_RESPONSE, &settings, e, &e->resp);
  rh_tstream_handlers sh = req_handlers;
  sh.ud = e;
  rh_tstream_set_handlers(s, &sh);
  struct rh_tls_ctx *tls = up.tls ? (c->tls ? c->tls : rh_tls_default_client()) : NULL;
  rh_upconn_target t = { .key = "tunnel", .host = up.host, .port = up.port, .tls = tls, .via_proxy = 1 };
  if (up.tls && !tls) fail(e, "no usable CA store for https");
  else e->dial = rh_upconn_dial(loop, &t, connected, e);
}
