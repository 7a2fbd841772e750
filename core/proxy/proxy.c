#include "proxy/proxy.h"

#include <inttypes.h>
#include <llhttp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "http/asan.h"
#include "http/collect.h"
#include "http/head.h"
#include "buf/buf.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "net/path.h"
#include "net/url.h"
#include "proxy/internal.h"
#include "net/pool.h"
#include "ws/dial.h"
#include "tls/tls.h"

/* One upstream of a mount's list, with its passive health: fails failures in a row take it out
 * until down_until (the loop's clock, ms). */
typedef struct {
  char *url, *host, *host_header, *pool_key; /* url: the entry as written; host_header checked once */
  int port, fails;
  size_t active;            /* requests in flight on it (least_conn) */
  uint64_t down_until;
} target;

struct rh_proxy_conf {
  int refs;
  char *mount, *base_path, *prefix;
  target *targets;
  size_t ntargets, next;    /* next: where round-robin starts */
  int max_fails, least_conn;
  double fail_timeout;
  char *up_base;            /* base path and prefix joined, no trailing '/': the client's path goes below */
  int preserve_host, follow_redirects, max_retries, retry_on_connect, retry_on_timeout;
  rh_tls_ctx *tls;          /* https upstream: the client context (NULL for http) */
  double backoff, connect_timeout, read_timeout, write_timeout, idle_timeout;
  int retry_statuses[16];
  size_t nretry, max_body, max_idle;
  size_t max_conns, max_queue; /* the connection cap per upstream, and its queue's bound */
  double pool_timeout;         /* how long a request waits in that queue */
  rh_headers extra;
  rh_headers own;           /* the proxy's own fields (enum own_field), checked once */
  char **drop_req, **drop_resp, **allow_req, **allow_resp, **retry_methods;
  size_t ndrop_req, ndrop_resp, nallow_req, nallow_resp, nretry_methods;
  int forwarded_prefix, rewrite_location, rewrite_cookie_path, retry_after;
};

enum own_field { OWN_PROTO_HTTP, OWN_PROTO_HTTPS, OWN_FORWARDED_HOST };

typedef enum { T_NONE, T_CONNECT, T_READ, T_WRITE, T_BACKOFF, T_QUEUE } timer_kind;

/* One proxied exchange. Owns a reference on req and on conf, the upstream connection while it
 * is in use, and its timer; kept for the next one, or freed once the timer is closed, when the
 * exchange is over. */
typedef struct {
  uv_timer_t timer;         /* first: a spare call keeps it open, and call_new clears what follows */
  rh_http_req *req;
  rh_proxy_conf *conf;
  target *to;               /* the upstream of this attempt */
  rh_proxy_hooks hooks;
  int has_hooks;
  rh_upconn *up;
  rh_upconn_dialing *dial;  /* while connecting */
  rh_pool_waiter wait;      /* in the upstream's queue while queued */
  int queued, slot;         /* waiting for a connection slot at to; holding one */
  timer_kind timer_kind;    /* what runs at the deadline (timer_cb) */
  uint64_t timer_due;       /* the deadline, in loop milliseconds; the timer fires no later */
  int attempt;
  rh_buf head;              /* the upstream request head, kept for retries */
  rh_buf replay;            /* the request body so far, while small enough to send again */
  int replay_ok;            /* every body byte is in replay */
  rh_buf pending;           /* body bytes waiting for the connection */
  int chunked_up;           /* re-chunk the client's body for the upstream */
  int head_written, body_sent_any, client_body_done, final_chunk_sent;
  rh_collect parser;        /* collects into resp_headers */
  llhttp_settings_t settings;
  rh_headers resp_headers;
  int resp_head_done, resp_done, resp_started, up_reading_paused;
  rh_headers out_headers;   /* the client's response head, rebuilt: passed on with the first body byte */
  int out_status, head_ready;
  int interims;             /* 1xx heads skipped */
  const char *bad_head;     /* why the response head cannot be passed on */
  int bad_status;           /* and the client's answer instead: 502, or 500 when a hook made it bad */
  int reused;               /* the connection came from the pool (it may have gone stale) */
  int redirects;            /* followed so far */
  char *redirect_to;        /* set while following one: the new request target */
  int status;
  uint64_t resp_length;     /* UINT64_MAX: none */
  int done;                 /* the client has its answer (or is gone); waiting to free */
} call;

#define REPLAY_MAX (64 * 1024)
#define UP_HIGH_WATER (256 * 1024)
#define MAX_INTERIM 16      /* 1xx heads before the answer: more is an upstream gone wrong */
#define QUEUED_BODY_MAX (64 * 1024) /* body read ahead while queued: a queue of bodies stays small */

static rh_metric *m_upstream_errors, *m_retries, *m_ejections, *m_queued;

static void finish(call *c);
static void attempt(call *c, int fresh);
static void give_slot(call *c);
static void up_read(void *owner, const char *p, ssize_t n, const char *err);
static void up_written(void *owner, size_t queued);

/* ---- configuration ---- */

static char **copy_list(const char *const *src, size_t n) {
  if (!src) return NULL;
  char **out = calloc(n + 1, sizeof *out);
  if (!out) abort();
  for (size_t i = 0; i < n; i++) out[i] = strdup(src[i]);
  return out;
}

static void free_list(char **l, size_t n) {
  for (size_t i = 0; l && i < n; i++) free(l[i]);
  free(l);
}

static int in_list(char *const *l, size_t n, const rh_header *f) {
  for (size_t i = 0; i < n; i++)
    if (rh_header_name_eq(f, l[i])) return 1;
  return 0;
}

/* The pool's key: TLS connections are only shared between mounts that verify the same way. */
static char *pool_key(const rh_proxy_conf *c, const target *t, const rh_proxy_opts *o) {
  char key[400];
  if (c->tls)
    snprintf(key, sizeof key, "tls(%.100s,%d):%s:%d", o->ca_file ? o->ca_file : "", o->tls_insecure, t->host, t->port);
  else
    snprintf(key, sizeof key, "%s:%d", t->host, t->port);
  return strdup(key);
}

/* Entry i of the list, http[s]://host[:port][/base], read by core/net/url into targets[i]. No
 * userinfo: the proxy sends none. Every entry shares the first one's scheme and path, so that
 * one request head (and the rewrites) serve whichever is chosen. */
static int parse_target(rh_proxy_conf *c, size_t i, const char *url, const rh_proxy_opts *o, char *err,
                        size_t errlen) {
  rh_url u;
  const char *why = rh_url_parse(url, "http https", &u);
  if (!why && u.user) why = rh_url_refuse(&u, "userinfo");
  size_t blen = why ? 0 : strlen(u.path);
  while (blen && u.path[blen - 1] == '/') blen--;
  if (!why && i > 0 && ((u.tls != 0) != (c->tls != NULL) || strlen(c->base_path) != blen ||
                        strncmp(c->base_path, u.path, blen) != 0))
    why = "every entry needs the first one's scheme and path";
  if (why) {
    snprintf(err, errlen, "target_base_url '%.200s': %s", url, why);
    return -1;
  }
  if (i == 0 && u.tls && !(c->tls = rh_tls_client_ctx(o->ca_file, !o->tls_insecure, err, errlen))) return -1;
  target *t = &c->targets[i];
  t->port = u.port;
  t->host = strdup(u.host);
  t->url = strdup(url);
  char authority[RH_HOST_MAX + 9];
  rh_url_authority(&u, authority, sizeof authority);
  if (!rh_http_is_field_value(authority, strlen(authority))) {
    snprintf(err, errlen, "target_base_url '%.200s': not a Host field value", url);
    return -1;
  }
  t->host_header = strdup(authority); /* host[:port] as written: the port only if given */
  if (i == 0) c->base_path = strndup(u.path, blen);
  t->pool_key = pool_key(c, t, o);
  return 0;
}

static int parse_targets(rh_proxy_conf *c, const rh_proxy_opts *o, char *err, size_t errlen) {
  const char *const *urls = o->target_base_urls ? o->target_base_urls : &o->target_base_url;
  size_t n = o->target_base_urls ? o->ntarget_base_urls : (o->target_base_url ? 1 : 0);
  if (!n || !urls[0]) {
    snprintf(err, errlen, "target_base_url is required");
    return -1;
  }
  c->targets = calloc(n, sizeof *c->targets);
  if (!c->targets) abort();
  for (; c->ntargets < n; c->ntargets++)
    if (parse_target(c, c->ntargets, urls[c->ntargets], o, err, errlen) < 0) return -1;
  return 0;
}

/* X-Forwarded-Proto's two values, and X-Forwarded-Host's name (its value is the client's
 * Host), checked here once rather than for every request. */
static void own_fields(rh_headers *own) {
  static const char *const fields[][2] = { [OWN_PROTO_HTTP] = { "X-Forwarded-Proto", "http" },
                                           [OWN_PROTO_HTTPS] = { "X-Forwarded-Proto", "https" },
                                           [OWN_FORWARDED_HOST] = { "X-Forwarded-Host", "" } };
  for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
    rh_headers_add(own, fields[i][0], strlen(fields[i][0]), fields[i][1], strlen(fields[i][1]));
    rh_head_check(&own->items[i]);
  }
}

rh_proxy_conf *rh_proxy_conf_new(const rh_proxy_opts *o, char *err, size_t errlen) {
  rh_proxy_conf *c = calloc(1, sizeof *c);
  if (!c) abort();
  c->refs = 1;
  rh_headers_init(&c->extra);
  rh_headers_init(&c->own);
  if (parse_targets(c, o, err, errlen) < 0) {
    c->ntargets++; /* the entry that failed may hold a part */
    rh_proxy_conf_unref(c);
    return NULL;
  }
  const char *m = o->mount ? o->mount : "";
  size_t mlen = strlen(m);
  while (mlen && m[mlen - 1] == '/') mlen--;
  c->mount = strndup(m, mlen);
  c->prefix = strdup(o->upstream_prefix && *o->upstream_prefix ? o->upstream_prefix : "/");
  rh_buf base = RH_BUF_INIT;
  rh_buf_puts(&base, c->base_path);
  if (c->prefix[0] != '/') rh_buf_append(&base, "/", 1);
  rh_buf_puts(&base, c->prefix);
  while (base.len && base.data[base.len - 1] == '/') base.len--;
  rh_buf_append(&base, "", 1);
  c->up_base = base.data;
  c->preserve_host = o->preserve_host;
  c->follow_redirects = o->follow_redirects;
  c->max_retries = o->max_retries;
  c->backoff = o->retry_backoff_factor;
  c->retry_on_connect = o->retry_on_connect;
  c->retry_on_timeout = o->retry_on_timeout;
  static const int dflt[] = { 502, 503, 504 };
  const int *st = o->retry_statuses ? o->retry_statuses : dflt;
  c->nretry = o->retry_statuses ? o->nretry_statuses : 3;
  if (c->nretry > 16) c->nretry = 16;
  memcpy(c->retry_statuses, st, c->nretry * sizeof *st);
  c->connect_timeout = o->connect_timeout > 0 ? o->connect_timeout : 5;
  c->read_timeout = o->read_timeout > 0 ? o->read_timeout : 10;
  c->write_timeout = o->write_timeout > 0 ? o->write_timeout : 10;
  c->max_body = o->max_body;
  c->max_idle = o->max_idle ? o->max_idle : 1024; /* enough that a busy mount does not churn connections */
  c->idle_timeout = o->idle_timeout > 0 ? o->idle_timeout : 60;
  c->max_conns = o->max_conns;
  c->max_queue = o->max_queue ? o->max_queue : 1024;
  c->pool_timeout = o->pool_timeout > 0 ? o->pool_timeout : 10;
  for (size_t i = 0; o->extra_request_headers && i < o->extra_request_headers->n; i++) {
    const rh_header *f = &o->extra_request_headers->items[i];
    rh_headers_add(&c->extra, f->name, f->name_len, f->value, f->value_len);
    rh_head_check(&c->extra.items[c->extra.n - 1]); /* once: a bad one stays unmarked, refused per request */
  }
  own_fields(&c->own);
  c->drop_req = copy_list(o->drop_request_headers, c->ndrop_req = o->ndrop_request);
  c->drop_resp = copy_list(o->drop_response_headers, c->ndrop_resp = o->ndrop_response);
  c->allow_req = copy_list(o->allow_request_headers, c->nallow_req = o->nallow_request);
  c->allow_resp = copy_list(o->allow_response_headers, c->nallow_resp = o->nallow_response);
  c->retry_methods = copy_list(o->retry_methods, c->nretry_methods = o->nretry_methods);
  c->forwarded_prefix = o->forwarded_prefix;
  c->rewrite_location = o->rewrite_location;
  c->rewrite_cookie_path = o->rewrite_cookie_path;
  c->retry_after = o->retry_after;
  c->max_fails = o->max_fails;
  c->least_conn = o->least_conn;
  c->fail_timeout = o->fail_timeout > 0 ? o->fail_timeout : 10;
  return c;
}

void rh_proxy_conf_ref(rh_proxy_conf *c) { c->refs++; }

void rh_proxy_conf_unref(rh_proxy_conf *c) {
  if (--c->refs > 0) return;
  free(c->mount);
  for (size_t i = 0; c->targets && i < c->ntargets; i++) {
    free(c->targets[i].url);
    free(c->targets[i].host);
    free(c->targets[i].host_header);
    free(c->targets[i].pool_key);
  }
  free(c->targets);
  free(c->base_path);
  free(c->prefix);
  free(c->up_base);
  if (c->tls) rh_tls_ctx_free(c->tls);
  rh_headers_free(&c->extra);
  rh_headers_free(&c->own);
  free_list(c->drop_req, c->ndrop_req);
  free_list(c->drop_resp, c->ndrop_resp);
  free_list(c->allow_req, c->nallow_req);
  free_list(c->allow_resp, c->nallow_resp);
  free_list(c->retry_methods, c->nretry_methods);
  free(c);
}

size_t rh_proxy_conf_max_body(const rh_proxy_conf *c) { return c->max_body; }

size_t rh_proxy_conf_count(const rh_proxy_conf *c) { return c->ntargets; }

const char *rh_proxy_conf_url(const rh_proxy_conf *c, size_t i) { return c->targets[i].url; }

static size_t trimmed(const char *s) {
  size_t n = strlen(s);
  while (n && s[n - 1] == '/') n--;
  return n;
}

size_t rh_proxy_conf_find(const rh_proxy_conf *c, const char *url) {
  size_t n = trimmed(url);
  for (size_t i = 0; i < c->ntargets; i++)
    if (trimmed(c->targets[i].url) == n && strncmp(c->targets[i].url, url, n) == 0) return i + 1;
  return 0;
}

/* ---- choosing the upstream ---- */

static uint64_t now_ms(void) { return uv_now(uv_default_loop()); }

/* From start on (round the list), the first upstream not taken out, or with least the one with
 * the fewest requests in flight (ties: the first); when every one is out, the one at start (a
 * request is never refused for want of a healthy upstream). */
static target *choose_from(rh_proxy_conf *c, size_t start, int least) {
  uint64_t now = now_ms();
  target *best = NULL;
  for (size_t i = 0; i < c->ntargets; i++) {
    target *t = &c->targets[(start + i) % c->ntargets];
    if (t->down_until > now || (best && t->active >= best->active)) continue;
    best = t;
    if (!least) break;
  }
  return best ? best : &c->targets[start % c->ntargets];
}

/* The call's upstream, counted in flight there while it has it. */
static void set_target(call *c, target *t) {
  if (c->to) c->to->active--;
  c->to = t;
  if (t) t->active++;
}

/* The access phase's choice (passive health still applies: one taken out gives way to the
 * next in the list), else the balancer's. */
static target *choose(rh_proxy_conf *c, const rh_proxy_hooks *h) {
  if (h && h->upstream) return choose_from(c, h->upstream - 1, 0);
  return choose_from(c, c->next++, c->least_conn);
}

/* Passive health: max_fails failures in a row (connect error, timeout, retried status) take the
 * upstream out for fail_timeout seconds; an answer passed on counts it healthy again. */
static void upstream_failed(rh_proxy_conf *c, target *t) {
  if (c->max_fails <= 0 || ++t->fails < c->max_fails) return;
  t->fails = 0;
  t->down_until = now_ms() + (uint64_t)(c->fail_timeout * 1000);
  RH_LOG(RH_LOG_WARN, "upstream_down", RH_STR("mount", c->mount[0] ? c->mount : "/"),
         RH_STR("upstream", t->pool_key), RH_INT("max_fails", c->max_fails));
  rh_metric_add(m_ejections, (const char *[]){ t->pool_key }, 1);
}

void rh_proxy_conf_upstream(rh_proxy_conf *c, const rh_proxy_hooks *hooks, rh_proxy_upstream *u) {
  const target *t = choose(c, hooks);
  u->host = t->host;
  u->port = t->port;
  u->tls = c->tls;
  u->mount = c->mount[0] ? c->mount : "/";
  u->host_header = t->host_header;
  u->base_path = c->base_path;
  u->connect_timeout = c->connect_timeout;
}

/* ---- paths ---- */

/* The client's path below the mount, placed under the base path and prefix by the one rule for
 * a path under another (net/path.h: dot-segments removed, "%2e" read as a dot, dots behind
 * encoded separators refused, nothing above the mount). NULL, or why the path is refused. */
static const char *upstream_path(const rh_proxy_conf *cf, const rh_http_req *r, rh_buf *out) {
  size_t mlen = strlen(cf->mount);
  /* the router matched the mount on these bytes; checked again so no caller can place a path
   * beside it ("/apix" is not under "/api") */
  if (r->path_len < mlen || memcmp(r->path, cf->mount, mlen) != 0 ||
      (r->path_len > mlen && r->path[mlen] != '/'))
    return "the path is not under the mount";
  rh_buf_puts(out, cf->up_base);
  return rh_path_normalize(r->path + mlen, r->path_len - mlen, out);
}

/* ---- header rules ---- */

/* Whether the Connection fields name any field but Keep-Alive (hop-by-hop anyway): only then
 * is each field looked for among their tokens. Keep-alive is what nginx answers and HTTP/1.0
 * clients send. */
static int names_fields(const rh_headers *h) { return rh_headers_has_other_token(h, "connection", "keep-alive"); }

/* Hop-by-hop headers, and the ones the Connection header names, never cross the proxy. */
static int crosses(const rh_headers *all, int has_connection, const rh_header *f) {
  if (rh_header_hop_by_hop(f)) return 0;
  if (!has_connection) return 1; /* the usual case: no per-header scan for Connection tokens */
  char name[128];
  if (f->name_len >= sizeof name) return 1;
  memcpy(name, f->name, f->name_len);
  name[f->name_len] = 0;
  return !rh_headers_has_token(all, "connection", name);
}

static void add_str(rh_headers *h, const char *name, const char *value) {
  rh_headers_add(h, name, strlen(name), value, strlen(value));
}

/* The client's handshake fields belong to its hop; the upstream gets its own (but the
 * subprotocols offered, which the upstream chooses from). */
static int websocket_own(const rh_header *f) {
  return f->name_len > 14 && strncasecmp(f->name, "sec-websocket-", 14) == 0 &&
         !rh_header_name_eq(f, "sec-websocket-protocol");
}

enum { BODY_NONE, BODY_LENGTH, BODY_CHUNKED };

static int framing_field(const rh_header *f) {
  return rh_header_name_eq(f, "content-length") || rh_header_name_eq(f, "transfer-encoding");
}

/* Fields this hop writes itself whatever the client, a hook or the mount's extras say: the
 * framing, and the trace (traceparent always, tracestate when the client's trace was not taken:
 * http/trace.h). */
static int hop_own(const rh_http_req *r, const rh_header *f) {
  return framing_field(f) || rh_header_name_eq(f, "traceparent") ||
         (!r->trace.from_client && rh_header_name_eq(f, "tracestate"));
}

/* One field into the upstream head unless the hop writes its own; NULL or what was wrong. */
static const char *put(rh_buf *out, const rh_http_req *r, const rh_header *f) {
  return hop_own(r, f) ? NULL : rh_head_header(out, f);
}

static const char *put_str(rh_buf *out, const char *name, const char *value) {
  return rh_head_field(out, name, strlen(name), value, strlen(value));
}

/* A field whose value this process made (an address, hex digits) or checked before: written
 * without looking at its bytes again, as a checked field of a list is (issue 17: three a request). */
static const char *put_known(rh_buf *out, const char *name, const char *value, size_t vlen) {
  rh_header f = { .name = (char *)name, .name_len = strlen(name), .value = (char *)value, .value_len = vlen,
                  .checked = 1 };
  return rh_head_header(out, &f);
}

/* The client's list (its value checked unless a hook set it), then the peer (the socket's
 * address, formatted here). */
static const char *put_xff(rh_buf *out, const rh_http_req *r, const rh_header *xff) {
  if (!xff) return put_known(out, "X-Forwarded-For", r->socket_peer, strlen(r->socket_peer));
  rh_buf v = RH_BUF_INIT;
  rh_buf_append(&v, xff->value, xff->value_len);
  rh_buf_append(&v, ", ", 2);
  rh_buf_puts(&v, r->socket_peer);
  const char *err = rh_head_field(out, "X-Forwarded-For", 15, v.data, v.len);
  rh_buf_free(&v);
  return err;
}

/* The client's fields (as the hooks left them: in) that the mount passes on; the extras
 * override fields of their names. */
static const char *put_client_fields(rh_proxy_conf *cf, const rh_http_req *r, const rh_headers *in,
                                     int websocket, rh_buf *out) {
  int has_connection = names_fields(in);
  const char *err = NULL;
  for (size_t i = 0; i < in->n && !err; i++) {
    const rh_header *f = &in->items[i];
    if (!crosses(in, has_connection, f) || rh_header_name_eq(f, "host") || rh_header_name_eq(f, "content-length") ||
        rh_header_name_eq(f, "x-forwarded-for") || rh_header_name_eq(f, "x-forwarded-proto") ||
        rh_header_name_eq(f, "x-forwarded-host") || in_list(cf->drop_req, cf->ndrop_req, f) ||
        (cf->forwarded_prefix && rh_header_name_eq(f, "x-forwarded-prefix")) ||
        (websocket && websocket_own(f)) ||
        (cf->allow_req && !in_list(cf->allow_req, cf->nallow_req, f)) || rh_headers_find(&cf->extra, f->name, NULL))
      continue;
    err = put(out, r, f);
  }
  for (size_t i = 0; i < cf->extra.n && !err; i++) err = put(out, r, &cf->extra.items[i]);
  return err;
}

/* The mount's header policy, on the client's fields as the hooks left them (in), written
 * straight into the upstream head (no list of them in between: this runs for every request). */
static const char *put_fields(rh_proxy_conf *cf, const rh_http_req *r, const rh_headers *in, int websocket,
                              const char *host_header, rh_buf *out) {
  const rh_header *host = rh_headers_find(in, "host", NULL);
  const char *err = put_client_fields(cf, r, in, websocket, out);
  /* host_header is a target's, checked when the mount was made */
  if (!err) err = cf->preserve_host && host ? rh_head_field(out, "Host", 4, host->value, host->value_len)
                                           : put_known(out, "Host", host_header, strlen(host_header));
  if (!err) err = put_xff(out, r, rh_headers_find(in, "x-forwarded-for", NULL));
  if (!err) err = rh_head_header(out, &cf->own.items[r->tls ? OWN_PROTO_HTTPS : OWN_PROTO_HTTP]);
  if (!err && host) { /* a checked value under a checked name is checked */
    rh_header xfh = cf->own.items[OWN_FORWARDED_HOST];
    xfh.value = host->value;
    xfh.value_len = host->value_len;
    xfh.checked = xfh.checked && host->checked;
    err = rh_head_header(out, &xfh);
  }
  /* the prefix this proxy stripped; a client's own claim is never passed on beside it */
  if (!err && cf->forwarded_prefix && cf->mount[0]) err = put_str(out, "X-Forwarded-Prefix", cf->mount);
  char tp[RH_TRACEPARENT_LEN + 1];
  rh_trace_header(&r->trace, tp); /* the client's trace, this hop as its parent */
  if (!err) err = put_known(out, "traceparent", tp, RH_TRACEPARENT_LEN); /* hex digits and dashes */
  return err;
}


/* How the client's body goes up; -1 when its framing cannot be trusted: a Content-Length field
 * the server holds no length for (UINT64_MAX is its "none": a length that collides with it must
 * not send the body up unframed, where it would be read as a second request). */
static int request_framing(const rh_http_req *r) {
  if (r->content_length != UINT64_MAX) return BODY_LENGTH;
  if (rh_headers_find(&r->headers, "transfer-encoding", NULL)) return BODY_CHUNKED;
  return rh_headers_find(&r->headers, "content-length", NULL) ? -1 : BODY_NONE;
}

/* The head from its parts, each checked as it is written (http/head.h): NULL, or what was wrong.
 * The framing is ours, never a field passed through. in: the client's fields as the hooks left
 * them. */
static const char *write_head(rh_buf *out, rh_proxy_conf *cf, const rh_proxy_head *head, const rh_headers *in,
                              int framing, const char *host_header, const char *ws_key) {
  const rh_http_req *r = head->req;
  const char *err = rh_head_request_line(out, head->method, strlen(head->method), head->target,
                                         strlen(head->target));
  if (!err) err = put_fields(cf, r, in, ws_key != NULL, host_header, out);
  if (!err && ws_key) {
    err = rh_ws_dial_fields(out, ws_key);
  } else if (!err && framing == BODY_LENGTH) {
    char num[RH_HTTP_U64_MAX];
    err = rh_head_field(out, "Content-Length", 14, num, rh_http_u64(num, r->content_length));
  } else if (!err && framing == BODY_CHUNKED) {
    rh_buf_puts(out, "Transfer-Encoding: chunked\r\n");
  }
  if (!err) rh_head_end(out);
  return err;
}

/* An answer to the client instead of the upstream's: the status, with a body naming why. */
static int refuse(char **body, int status, const char *what, const char *why) {
  rh_buf b = RH_BUF_INIT;
  rh_buf_printf(&b, "%s: %s\n", what, why);
  *body = b.data;
  return status;
}

/* Copies the client's fields: the hooks see and change this copy, never the request. */
static void copy_headers(rh_headers *out, const rh_headers *in) {
  for (size_t i = 0; i < in->n; i++) rh_headers_add_field(out, &in->items[i]);
}

/* The target the upstream gets, NUL-terminated: the mount's base, the client's path below the
 * mount, its query. NULL, or why there is none. */
static const char *upstream_target(const rh_proxy_conf *cf, const rh_http_req *r, rh_buf *out) {
  const char *why = upstream_path(cf, r, out);
  if (why) return why;
  if (r->query) {
    rh_buf_append(out, "?", 1);
    rh_buf_append(out, r->query, r->query_len);
  }
  rh_buf_append(out, "", 1);
  return NULL;
}

/* What rh_proxy_build_head was asked for, passed on to its two halves. */
typedef struct {
  rh_proxy_conf *conf;
  const rh_http_req *r;
  const char *host, *ws_key;
  int framing;
  rh_buf *out;
  char **body;
} head_job;

/* write_head, or the 500 a hook's method or path that is not one gets: nothing goes up. */
static int write_or_refuse(const head_job *j, const rh_proxy_head *head, const rh_headers *in) {
  const char *why = write_head(j->out, j->conf, head, in, j->framing, j->host, j->ws_key);
  if (!why) return 0;
  j->out->len = 0;
  RH_LOG(RH_LOG_ERROR, "proxy_head_invalid", RH_STR("error", why), RH_STR("request_id", j->r->id));
  return refuse(j->body, 500, "Internal Server Error: a proxy hook made the request head invalid", why);
}

/* With a hook: it sees and changes copies (method, target, fields), never the request. */
static int build_hooked(const head_job *j, const rh_proxy_hooks *hooks, rh_headers *answer) {
  rh_buf target = RH_BUF_INIT;
  const char *why = upstream_target(j->conf, j->r, &target);
  if (why) {
    rh_buf_free(&target);
    return refuse(j->body, 400, "Bad Request", why);
  }
  rh_headers client = RH_HEADERS_INIT;
  copy_headers(&client, &j->r->headers);
  rh_proxy_head head = { strdup(j->r->method), target.data, 0, &client, j->r, answer };
  int status = hooks->on_request(hooks->ud, &head, j->body);
  if (!status) status = write_or_refuse(j, &head, &client);
  free(head.method);
  free(head.target);
  rh_headers_free(&client);
  return status;
}

/* Without a hook nothing replaces the method or the target: the request's method as it is, and
 * the target built in a buffer kept for the next request (up to 4 KiB), not a malloc, a strdup
 * and their frees a request (issue 17). One loop a process: one buffer. */
static int build_plain(const head_job *j, rh_headers *answer) {
  static rh_buf target;
  target.len = 0;
  const char *why = upstream_target(j->conf, j->r, &target);
  rh_proxy_head head = { (char *)j->r->method, target.data, 0, NULL, j->r, answer };
  int status = why ? refuse(j->body, 400, "Bad Request", why) : write_or_refuse(j, &head, &j->r->headers);
  if (target.cap > 4096) rh_buf_free(&target);
  return status;
}

/* Builds the upstream request head into out: 0, or a status when it is refused or a hook
 * answered (its body in *body, its fields in answer). The phases: the hook sees the client's
 * head, then the mount's header policy applies to what it left. ws_key: a WebSocket handshake
 * with this key instead of body framing. */
int rh_proxy_build_head(rh_proxy_conf *conf, const rh_http_req *r, const rh_proxy_hooks *hooks,
                        const char *host, const char *ws_key, rh_buf *out, int *chunked, char **body, rh_headers *answer) {
  head_job j = { conf, r, host, ws_key, request_framing(r), out, body };
  if (j.framing < 0) return refuse(body, 400, "Bad Request", "the Content-Length is out of range");
  int status = hooks && hooks->on_request ? build_hooked(&j, hooks, answer) : build_plain(&j, answer);
  *chunked = !ws_key && j.framing == BODY_CHUNKED;
  return status;
}

/* An answer instead of the upstream's (a refusal, or a hook's early answer with its fields):
 * text unless the hook named a type, and a 500 names its request id as a handler's does. */
void rh_proxy_early_answer(rh_http_req *req, int status, char *body, rh_headers *fields) {
  rh_buf b = RH_BUF_INIT;
  rh_buf_puts(&b, body ? body : "");
  if (status == 500) rh_buf_printf(&b, "(request id %s)\n", req->id);
  if (!rh_headers_find(fields, "content-type", NULL)) add_str(fields, "Content-Type", "text/plain; charset=utf-8");
  if (status == 500) add_str(fields, "X-Request-Id", req->id);
  rh_http_respond(req, status, fields, b.data ? b.data : "", b.len);
  rh_buf_free(&b);
  free(body);
}

/* ---- answering the client ---- */

static void release_hooks(call *c) {
  if (!c->has_hooks) return;
  c->has_hooks = 0;
  if (c->hooks.release) c->hooks.release(c->hooks.ud);
}

static void log_event(call *c, rh_log_level lv, const char *event, const char *error, int status) {
  char url[600];
  snprintf(url, sizeof url, "http://%s%s", c->to->host_header, c->conf->base_path);
  RH_LOG(lv, event, RH_STR("mount", c->conf->mount[0] ? c->conf->mount : "/"), RH_STR("upstream", url),
         RH_INT("attempt", c->attempt), RH_STR("error", error), RH_INT("status", status),
         RH_STR("request_id", c->req ? c->req->id : NULL));
}

static void answer_text(call *c, int status, const char *prefix, const char *reason) {
  if (c->resp_started || c->req->head_sent) {
    rh_http_abort(c->req); /* the response started: all we can do is cut it */
    return;
  }
  rh_buf b = RH_BUF_INIT;
  rh_buf_printf(&b, "%s%s%s", prefix, reason ? ": " : "", reason ? reason : "");
  rh_headers h = RH_HEADERS_INIT;
  add_str(&h, "Content-Type", "text/plain; charset=utf-8");
  rh_http_respond(c->req, status, &h, b.data, b.len);
  rh_headers_free(&h);
  rh_buf_free(&b);
}

static void fail(call *c, int status, const char *event, const char *reason) {
  const char *code = status == 504 ? "504" : status == 503 ? "503" : "502";
  rh_metric_add(m_upstream_errors, (const char *[]){ code }, 1);
  log_event(c, RH_LOG_WARN, event, reason, status);
  answer_text(c, status, status == 502 ? "Upstream error" : rh_http_reason(status), reason);
  finish(c);
}

/* ---- timers ---- */

static void on_timer(uv_timer_t *t);
static void on_timeout(uv_timer_t *t);
static void on_backoff(uv_timer_t *t);
static void on_queue_timeout(uv_timer_t *t);

static uv_timer_cb timer_cb(timer_kind k) {
  return k == T_BACKOFF ? on_backoff : k == T_QUEUE ? on_queue_timeout : on_timeout;
}

static void arm_timer(call *c, uint64_t now) { uv_timer_start(&c->timer, on_timer, c->timer_due - now, 0); }

/* Lazy, as libuv and nginx do it: a deadline that moves later (every read pushes the read
 * timeout on) is only stored, and the timer, armed no later than it, re-arms for the rest when
 * it fires. A uv_timer_start is a timer-heap removal and insertion, several a request. */
static void set_timer(call *c, timer_kind k, double seconds) {
  c->timer_kind = k;
  if (k == T_NONE) return; /* on_timer finds nothing to do: not stopped, as it may soon be set again */
  uint64_t now = uv_now(c->timer.loop);
  c->timer_due = now + (uint64_t)(seconds * 1000);
  if (uv_is_active((uv_handle_t *)&c->timer) && now + uv_timer_get_due_in(&c->timer) <= c->timer_due) return;
  arm_timer(c, now);
}

static void on_timer(uv_timer_t *t) {
  call *c = t->data;
  uint64_t now = uv_now(t->loop);
  if (c->timer_kind == T_NONE) return;
  if (now < c->timer_due) { arm_timer(c, now); return; }
  timer_cb(c->timer_kind)(t);
}

/* retry_methods: only the methods it names are sent again (NULL: all, as the original). */
static int method_retryable(const call *c) {
  if (!c->conf->retry_methods) return 1;
  for (size_t i = 0; i < c->conf->nretry_methods; i++)
    if (strcmp(c->conf->retry_methods[i], c->req->method) == 0) return 1;
  return 0;
}

static int retry_allowed(call *c) {
  return c->attempt <= c->conf->max_retries && !c->resp_started && !c->done && method_retryable(c) &&
         (!c->body_sent_any || (c->replay_ok && c->client_body_done));
}

/* Lets go of the upstream connection, or of the dial that would have made it. */
static void drop_upstream(call *c) {
  if (c->dial) {
    rh_upconn_dial_cancel(c->dial);
    c->dial = NULL;
  }
  if (!c->up) return;
  rh_upconn_close(c->up);
  c->up = NULL;
}

static void on_backoff(uv_timer_t *t) {
  call *c = t->data;
  c->timer_kind = T_NONE;
  attempt(c, 0);
}

/* A retry goes to the next upstream in the list: the head kept for it gets that one's Host
 * (the field this proxy wrote, unless preserve_host passed the client's on). */
static void move_on(call *c) {
  target *from = c->to;
  set_target(c, choose_from(c->conf, (size_t)(from - c->conf->targets) + 1, c->conf->least_conn));
  if (c->to == from || c->conf->preserve_host) return;
  char old[RH_HOST_MAX + 20];
  int n = snprintf(old, sizeof old, "\r\nHost: %s\r\n", from->host_header);
  const char *at = memmem(c->head.data, c->head.len, old, (size_t)n);
  if (!at) return;
  size_t before = (size_t)(at - c->head.data);
  rh_buf head = RH_BUF_INIT;
  rh_buf_append(&head, c->head.data, before);
  rh_buf_printf(&head, "\r\nHost: %s\r\n", c->to->host_header);
  rh_buf_append(&head, at + n, c->head.len - before - (size_t)n);
  rh_buf_free(&c->head);
  c->head = head;
}

/* Tries again after delay seconds, or (delay < 0) after factor * 2^(n-1) as the original does. */
static void retry_in(call *c, const char *event, const char *reason, int status, double delay) {
  rh_metric_add(m_retries, NULL, 1);
  log_event(c, RH_LOG_INFO, event, reason, status);
  drop_upstream(c);
  give_slot(c); /* not using a connection while it backs off, and maybe bound elsewhere next */
  if (delay < 0) {
    delay = c->conf->backoff;
    for (int i = 1; i < c->attempt; i++) delay *= 2;
  }
  c->attempt++;
  move_on(c);
  set_timer(c, T_BACKOFF, delay);
}

static void retry(call *c, const char *event, const char *reason, int status) {
  retry_in(c, event, reason, status, -1);
}

static void on_timeout(uv_timer_t *t) {
  call *c = t->data;
  timer_kind k = c->timer_kind;
  c->timer_kind = T_NONE;
  const char *what = k == T_CONNECT ? "connect timeout" : k == T_WRITE ? "write timeout" : "read timeout";
  upstream_failed(c->conf, c->to);
  if (c->conf->retry_on_timeout && retry_allowed(c)) { retry(c, "upstream_timeout", what, 0); return; }
  drop_upstream(c);
  fail(c, 504, "upstream_timeout", what);
}

/* ---- the connection cap (net/pool.h's slots) ---- */

static void leave_queue(call *c) {
  if (!c->queued) return;
  c->queued = 0;
  rh_pool_leave(&c->wait);
  rh_metric_add(m_queued, (const char *[]){ c->to->pool_key }, -1);
}

/* Lets go of the call's slot (or its place in the queue); a waiter may be granted it. */
static void give_slot(call *c) {
  leave_queue(c);
  if (!c->slot) return;
  c->slot = 0;
  rh_pool_release(c->to->pool_key);
}

/* Called inside another call's release: the attempt goes on from the loop, not from there. */
static void slot_granted(rh_pool_waiter *w) {
  call *c = (call *)(void *)((char *)w - offsetof(call, wait));
  leave_queue(c);
  c->slot = 1;
  set_timer(c, T_BACKOFF, 0);
}

static void on_queue_timeout(uv_timer_t *t) {
  call *c = t->data;
  c->timer_kind = T_NONE;
  leave_queue(c);
  char why[RH_HOST_MAX + 120];
  snprintf(why, sizeof why, "pool timeout: no connection to %s free within %g s (max_connections %zu)",
           c->to->host_header, c->conf->pool_timeout, c->conf->max_conns);
  /* httpx's PoolTimeout is a timeout as Lilya sees it: retried as one, then 504 */
  if (c->conf->retry_on_timeout && retry_allowed(c)) { retry(c, "upstream_timeout", why, 0); return; }
  fail(c, 504, "upstream_timeout", why);
}

/* 1: the call holds a connection slot at its upstream; 0: it waits in the upstream's queue (or
 * was answered 503, the queue being full). */
static int take_slot(call *c) {
  c->wait.granted = slot_granted;
  rh_pool_slot s = rh_pool_acquire(c->to->pool_key, c->conf->max_conns, c->conf->max_queue, &c->wait);
  if (s == RH_POOL_GRANTED) {
    c->slot = 1;
    return 1;
  }
  if (s == RH_POOL_FULL) {
    char why[RH_HOST_MAX + 120];
    snprintf(why, sizeof why, "queue full: %zu requests already wait for a connection to %s (max_connections %zu)",
             c->conf->max_queue, c->to->host_header, c->conf->max_conns);
    fail(c, 503, "upstream_queue_full", why);
    return 0;
  }
  c->queued = 1;
  rh_metric_add(m_queued, (const char *[]){ c->to->pool_key }, 1);
  set_timer(c, T_QUEUE, c->conf->pool_timeout);
  return 0;
}

/* ---- writing to the upstream ---- */

static size_t up_queued(call *c) { return c->up ? c->up->queued : 0; }

static void up_written(void *owner, size_t queued) {
  call *c = owner;
  if (c->done) return;
  if (c->timer_kind == T_WRITE && queued == 0) set_timer(c, T_READ, c->conf->read_timeout);
  if (queued < UP_HIGH_WATER) rh_http_resume_body(c->req);
}

static void up_send(call *c, const char *p, size_t n) {
  if (!c->up || !n) return;
  rh_upconn_write(c->up, p, n);
  if (c->timer_kind == T_READ || c->timer_kind == T_NONE) set_timer(c, T_WRITE, c->conf->write_timeout);
}

static void send_body_bytes(call *c, const char *p, size_t n) {
  if (c->chunked_up) {
    rh_buf b = RH_BUF_INIT;
    rh_http_chunk_append(&b, p, n);
    up_send(c, b.data, b.len);
    rh_buf_free(&b);
  } else {
    up_send(c, p, n);
  }
  c->body_sent_any = 1;
}

static void send_final_chunk(call *c) {
  if (c->chunked_up && c->client_body_done && !c->final_chunk_sent && c->head_written) {
    c->final_chunk_sent = 1;
    up_send(c, "0\r\n\r\n", 5);
  }
}

/* Head, then whatever body is already here (all of it again on a retry), then the rest as it
 * arrives. */
static void send_request(call *c) {
  up_send(c, c->head.data, c->head.len);
  c->head_written = 1;
  if (c->body_sent_any && c->replay.len) send_body_bytes(c, c->replay.data, c->replay.len);
  else if (c->pending.len) send_body_bytes(c, c->pending.data, c->pending.len);
  c->pending.len = 0;
  send_final_chunk(c);
}

static void on_client_body_chunk(rh_http_req *r, const char *p, size_t n, void *ud) {
  (void)r;
  call *c = ud;
  if (c->replay_ok) {
    if (c->replay.len + n <= REPLAY_MAX) rh_buf_append(&c->replay, p, n);
    else { c->replay_ok = 0; rh_buf_free(&c->replay); }
  }
  if (c->up && c->head_written) send_body_bytes(c, p, n);
  else rh_buf_append(&c->pending, p, n);
  if (up_queued(c) + c->pending.len >= (c->queued ? QUEUED_BODY_MAX : UP_HIGH_WATER)) rh_http_pause_body(c->req);
}

static void on_client_body(rh_http_req *r, void *ud) {
  call *c = ud;
  if (r->body_error) { /* client gone or over the limit: the server answered */
    drop_upstream(c);
    finish(c);
    return;
  }
  c->client_body_done = 1;
  send_final_chunk(c);
}

static void on_client_drain(rh_http_req *r, void *ud) {
  (void)r;
  call *c = ud;
  if (c->up_reading_paused && c->up) {
    c->up_reading_paused = 0;
    rh_upconn_resume(c->up);
  }
}

static void on_client_abort(rh_http_req *r, void *ud) {
  (void)r;
  call *c = ud;
  log_event(c, RH_LOG_INFO, "client_aborted", "client closed the connection", 0);
  drop_upstream(c);
  finish(c);
}

static const rh_http_req_events client_events = { on_client_body_chunk, on_client_body, on_client_drain,
                                                  on_client_abort };

/* ---- reading the response ---- */

static call *call_of(llhttp_t *p) { return p->data; }

static int status_retryable(call *c, int status) {
  for (size_t i = 0; i < c->conf->nretry; i++)
    if (c->conf->retry_statuses[i] == status) return 1;
  return 0;
}

/* retry_after: the retried status's Retry-After, delta-seconds or an HTTP-date, in seconds
 * (capped by the read timeout, so a far date cannot hold the request); -1 for none, or one that
 * is neither. */
static double retry_after(call *c) {
  const rh_header *f = c->conf->retry_after ? rh_headers_find(&c->resp_headers, "retry-after", NULL) : NULL;
  if (!f || !f->value_len || f->value_len > 40) return -1;
  char v[48], *end;
  snprintf(v, sizeof v, "%.*s", (int)f->value_len, f->value);
  double s;
  if (strspn(v, "0123456789") == f->value_len) {
    s = strtod(v, &end);
  } else {
    struct tm tm = { 0 };
    end = strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!end || *end) return -1;
    s = difftime(timegm(&tm), time(NULL));
    if (s < 0) s = 0;
  }
  return s > c->conf->read_timeout ? c->conf->read_timeout : s;
}

/* A path at the upstream's base (up_base, then its end, '/', '?' or '#') moved under the mount,
 * appended to out; 0 if it is not at the base (it stays as the upstream wrote it). */
static int into_mount(const rh_proxy_conf *cf, const char *p, size_t n, rh_buf *out) {
  size_t blen = strlen(cf->up_base);
  if (n < blen || memcmp(p, cf->up_base, blen) != 0) return 0;
  if (n > blen && !strchr("/?#", p[blen])) return 0;
  rh_buf_puts(out, cf->mount);
  if (!cf->mount[0] && (n == blen || p[blen] != '/')) rh_buf_append(out, "/", 1);
  rh_buf_append(out, p + blen, n - blen);
  return 1;
}

/* The length of "scheme://authority" when v is an absolute URL on this upstream (its Host as
 * sent, or with the port spelled out); 0 otherwise. */
static size_t upstream_origin(const rh_proxy_conf *cf, const target *t, const char *v, size_t n) {
  const char *scheme = cf->tls ? "https://" : "http://";
  size_t slen = strlen(scheme);
  if (n < slen || strncasecmp(v, scheme, slen) != 0) return 0;
  size_t alen = strcspn(v + slen, "/?#");
  char spelled[RH_HOST_MAX + 16];
  snprintf(spelled, sizeof spelled, strchr(t->host, ':') ? "[%s]:%d" : "%s:%d", t->host, t->port);
  const char *forms[] = { t->host_header, spelled };
  for (size_t i = 0; i < 2; i++)
    if (strlen(forms[i]) == alen && strncasecmp(v + slen, forms[i], alen) == 0) return slen + alen;
  return 0;
}

/* rewrite_location: Location and Content-Location at the upstream's base become the mount's
 * path (nginx's proxy_redirect default: "http://up:port/base/x" -> "/prefix/x"). A URL anywhere
 * else, and a result that is not a field value, stay as the upstream sent them. */
static void rewrite_locations(const rh_proxy_conf *cf, const target *t, rh_headers *h) {
  for (size_t i = 0; cf->rewrite_location && i < h->n; i++) {
    rh_header *f = &h->items[i];
    if (!rh_header_name_eq(f, "location") && !rh_header_name_eq(f, "content-location")) continue;
    size_t o = upstream_origin(cf, t, f->value, f->value_len);
    rh_buf v = RH_BUF_INIT;
    if (o && into_mount(cf, f->value + o, f->value_len - o, &v) && rh_http_is_field_value(v.data, v.len))
      rh_headers_set_value(h, f, v.data, v.len);
    rh_buf_free(&v);
  }
}

/* One Set-Cookie value rebuilt: Domain as the hook said (NULL: kept, "": dropped, else set) and
 * Path moved under the mount when rewrite_cookie_path is on and it is at the upstream's base.
 * The first part is the cookie's name=value, never an attribute. */
static void rebuild_cookie(const rh_proxy_conf *cf, const char *value, const char *domain, rh_buf *v) {
  int had = 0, first = 1;
  char *copy = strdup(value), *save = NULL;
  for (char *part = strtok_r(copy, ";", &save); part; part = strtok_r(NULL, ";", &save), first = 0) {
    while (*part == ' ' || *part == '\t') part++;
    size_t n = strlen(part);
    while (n && (part[n - 1] == ' ' || part[n - 1] == '\t')) part[--n] = 0;
    if (!n) continue;
    int is_domain = !first && domain && strncasecmp(part, "domain=", 7) == 0;
    if (is_domain && !*domain) continue;
    if (v->len) rh_buf_append(v, "; ", 2);
    size_t mark = v->len;
    if (is_domain) { rh_buf_printf(v, "Domain=%s", domain); had = 1; continue; }
    if (!first && cf->rewrite_cookie_path && strncasecmp(part, "path=", 5) == 0 && n > 5) {
      rh_buf_puts(v, "Path=");
      if (into_mount(cf, part + 5, n - 5, v)) continue;
      v->len = mark;
    }
    rh_buf_append(v, part, n);
  }
  if (domain && !had && *domain) rh_buf_printf(v, "; Domain=%s", domain);
  free(copy);
}

/* Each Set-Cookie through the domain hook (NULL keeps it, "" drops Domain, else sets Domain)
 * and the path rule. */
static void rewrite_cookies(call *c, rh_headers *h) {
  int hook = c->has_hooks && c->hooks.rewrite_cookie_domain;
  if ((!hook && !c->conf->rewrite_cookie_path) || !rh_headers_find(h, "set-cookie", NULL)) return;
  rh_headers out = RH_HEADERS_INIT; /* the usual response has no cookie: no copy */
  for (size_t i = 0; i < h->n; i++) {
    rh_header *f = &h->items[i];
    int cookie = rh_header_name_eq(f, "set-cookie");
    char *domain = cookie && hook ? c->hooks.rewrite_cookie_domain(c->hooks.ud, f->value) : NULL;
    if (!domain && !(cookie && c->conf->rewrite_cookie_path)) {
      rh_headers_add_field(&out, f);
      continue;
    }
    rh_buf v = RH_BUF_INIT;
    rebuild_cookie(c->conf, f->value, domain, &v);
    int ok = rh_http_is_field_value(v.data ? v.data : "", v.len); /* else as the upstream sent it */
    rh_headers_add(&out, f->name, f->name_len, ok ? (v.data ? v.data : "") : f->value, ok ? v.len : f->value_len);
    rh_buf_free(&v);
    free(domain);
  }
  rh_headers_free(h);
  *h = out;
}

/* follow_redirects: a 3xx whose Location stays on this upstream, for a request without a body
 * (so it can be sent again), at most 5 times. Returns the new target or NULL (pass it on). */
static char *redirect_target(call *c) {
  int s = c->status;
  int has_body = c->chunked_up || (c->req->content_length != UINT64_MAX && c->req->content_length > 0);
  if (!(s == 301 || s == 302 || s == 303 || s == 307 || s == 308) || c->redirects >= 5 || has_body)
    return NULL;
  const rh_header *loc = rh_headers_find(&c->resp_headers, "location", NULL);
  if (!loc || !loc->value_len) return NULL;
  const char *v = loc->value;
  char origin[400];
  snprintf(origin, sizeof origin, "%s://%s", c->conf->tls ? "https" : "http", c->to->host_header);
  size_t olen = strlen(origin);
  if (strncasecmp(v, origin, olen) == 0 && (v[olen] == '/' || v[olen] == 0)) v += olen;
  if (v[0] != '/' || v[1] == '/') return NULL; /* elsewhere: the client follows it if it wants */
  if (!rh_http_is_target(v, strlen(v))) return NULL; /* not one a request line can carry: passed on */
  return strdup(v);
}

/* Sends the request again to the Location, on the same upstream; 303 (and 301/302 after POST)
 * become GET, as browsers do. */
static void follow_redirect(call *c) {
  char *target = c->redirect_to;
  c->redirect_to = NULL;
  c->redirects++;
  const char *line_end = strstr(c->head.data, "\r\n");
  const char *method = c->req->method;
  if (c->status == 303 || ((c->status == 301 || c->status == 302) && strcmp(method, "POST") == 0)) method = "GET";
  rh_buf head = RH_BUF_INIT;
  rh_head_request_line(&head, method, strlen(method), target, strlen(target)); /* checked above */
  rh_buf_append(&head, line_end + 2, c->head.len - (size_t)(line_end + 2 - c->head.data));
  rh_buf_free(&c->head);
  c->head = head;
  log_event(c, RH_LOG_INFO, "upstream_redirect_followed", target, c->status);
  free(target);
  drop_upstream(c);
  attempt(c, 0);
}

typedef struct {
  const rh_proxy_conf *cf;
  int has_connection;
} resp_policy;

static int resp_passes(const rh_headers *in, const rh_header *f, void *ud) {
  const resp_policy *p = ud;
  const rh_proxy_conf *cf = p->cf;
  return crosses(in, p->has_connection, f) && !rh_header_name_eq(f, "content-length") &&
         !in_list(cf->drop_resp, cf->ndrop_resp, f) && (!cf->allow_resp || in_list(cf->allow_resp, cf->nallow_resp, f));
}

/* The mount's response policy on the upstream's fields (as the hooks left them), which become
 * the client's head: filtered where they are, not copied (this runs for every response).
 * resp_headers gets the emptied list back, for a trailer section. */
static void response_headers(call *c) {
  rh_headers spare = c->out_headers;
  rh_headers_clear(&spare);
  c->out_headers = c->resp_headers;
  c->resp_headers = spare;
  rh_headers *out = &c->out_headers;
  resp_policy p = { c->conf, names_fields(out) };
  rh_headers_filter(out, resp_passes, &p);
  if (c->resp_length != UINT64_MAX) {
    char len[RH_HTTP_U64_MAX];
    rh_headers_add(out, "Content-Length", 14, len, rh_http_u64(len, c->resp_length));
  }
}

/* The head is not passed on: the client gets status instead, and the upstream connection is
 * dropped. Returns llhttp's error, which stops the parser. */
static int refuse_head(call *c, int status, const char *why) {
  c->bad_head = why;
  c->bad_status = status;
  return HPE_USER;
}

/* What makes the upstream's head one the client cannot be given: NULL if none. The fields are
 * checked here, where a bad one costs the upstream the answer; the server's writer would only
 * leave it out. */
static const char *bad_response_head(call *c, const llhttp_t *p) {
  if (c->status == 101) return "101 Switching Protocols to a request that did not ask to upgrade";
  if (c->status < 200 || c->status > 599) return "an invalid status code";
  /* the client's head states it as a signed 64-bit length (and UINT64_MAX is our "none") */
  if ((p->flags & F_CONTENT_LENGTH) && p->content_length > INT64_MAX) return "a Content-Length out of range";
  rh_headers *h = &c->resp_headers;
  for (size_t i = 0; i < h->n; i++)
    if (rh_head_check(&h->items[i])) return "an invalid header field"; /* marks it: checked once */
  return NULL;
}

/* The client's head from the upstream's (out_status, out_headers): the cookie and response
 * hooks, then the header rules. 0 if a hook failed or left a status that is not a final one. */
static int client_head(call *c) {
  rewrite_cookies(c, &c->resp_headers);
  rewrite_locations(c->conf, c->to, &c->resp_headers);
  rh_proxy_head head = { NULL, NULL, c->status, &c->resp_headers, c->req, NULL };
  if (c->has_hooks && c->hooks.on_response) c->hooks.on_response(c->hooks.ud, &head);
  release_hooks(c);
  response_headers(c); /* the policy after the hooks: what they add obeys it too */
  c->out_status = head.status;
  if (head.status >= 200 && head.status <= 599) return 1;
  RH_LOG(RH_LOG_ERROR, "proxy_hook_error", RH_STR("hook", "on_response"),
         RH_STR("error", head.status < 0 ? "the hook failed" : "status out of range (200..599)"),
         RH_STR("request_id", c->req->id));
  return 0;
}

static int cb_headers_complete(llhttp_t *p) {
  call *c = call_of(p);
  if (rh_collect_interim_head(&c->parser)) /* 100 Continue, 103 Early Hints: not for the client */
    return ++c->interims > MAX_INTERIM ? refuse_head(c, 502, "too many interim (1xx) responses") : 0;
  c->status = p->status_code;
  const char *bad = bad_response_head(c, p);
  if (bad) return refuse_head(c, 502, bad);
  c->resp_length = (p->flags & F_CONTENT_LENGTH) ? p->content_length : UINT64_MAX;
  c->resp_head_done = 1;
  if (c->conf->follow_redirects && (c->redirect_to = redirect_target(c))) return HPE_PAUSED;
  if (status_retryable(c, c->status) && c->conf->max_retries > 0 && retry_allowed(c)) return HPE_PAUSED;
  if (!client_head(c)) return refuse_head(c, 500, "the on_response hook failed or set an invalid status");
  c->head_ready = 1; /* goes out with the first body bytes, or at the end of this read */
  return c->req->is_head ? 1 : 0;
}

/* The client's response starts: the head goes to the server (held until body bytes or a flush). */
static void pass_head(call *c) {
  if (!c->head_ready) return;
  c->head_ready = 0;
  c->resp_started = 1;
  rh_http_start_held(c->req, c->out_status, &c->out_headers);
}

/* An upstream that never ends its head gets a 502 once its fields pass the limit
 * (http/collect.h), not the process's memory. */
static int over_limit(llhttp_t *p, int rc) {
  call *c = call_of(p);
  return rc && rh_collect_over(&c->parser) ? refuse_head(c, 502, "the response head is over 64 KiB") : rc;
}

static int cb_field(llhttp_t *p, const char *at, size_t len) { return over_limit(p, rh_collect_on_field(p, at, len)); }
static int cb_value(llhttp_t *p, const char *at, size_t len) { return over_limit(p, rh_collect_on_value(p, at, len)); }

static int cb_body(llhttp_t *p, const char *at, size_t len) {
  call *c = call_of(p);
  pass_head(c);
  if (rh_http_write(c->req, at, len) == 1) c->up_reading_paused = 1;
  return c->done ? HPE_USER : 0; /* a failed write may have ended the exchange */
}

static int cb_message_complete(llhttp_t *p) {
  call *c = call_of(p);
  if (!rh_collect_final_message(&c->parser)) return 0;
  c->resp_done = 1;
  return HPE_PAUSED;
}

static void init_parser(call *c) {
  llhttp_settings_init(&c->settings);
  c->settings.on_header_field = cb_field;
  c->settings.on_header_value = cb_value;
  c->settings.on_header_field_complete = rh_collect_on_field_complete;
  c->settings.on_headers_complete = cb_headers_complete;
  c->settings.on_body = cb_body;
  c->settings.on_message_complete = cb_message_complete;
  rh_collect_init(&c->parser, HTTP_RESPONSE, &c->settings, c, &c->resp_headers);
  rh_headers_clear(&c->resp_headers);
  c->resp_head_done = c->resp_done = c->interims = 0;
}

/* The response is complete: finish the client's, and park the connection when both sides
 * ended cleanly. */
static void response_complete(call *c) {
  if (c->done) return;
  int reusable = llhttp_should_keep_alive(&c->parser.llhttp) && c->client_body_done && c->pending.len == 0;
  set_timer(c, T_NONE, 0);
  pass_head(c);
  rh_http_finish(c->req);
  c->to->fails = 0;
  if (c->up) {
    c->up->served++;
    if (reusable) rh_pool_put(c->up, c->conf->idle_timeout, c->conf->max_idle);
    else rh_upconn_close(c->up);
    c->up = NULL;
  }
  finish(c);
}

static void upstream_closed(call *c, const char *why) {
  /* a body delimited by the close is complete now (llhttp_finish reports the pause our
   * on_message_complete asks for, so resp_done says it, not its result) */
  if (c->resp_head_done && !c->resp_done) llhttp_finish(&c->parser.llhttp);
  if (c->resp_done) {
    response_complete(c);
    return;
  }
  drop_upstream(c);
  if (c->resp_started) {
    log_event(c, RH_LOG_WARN, "upstream_error", why, c->status);
    rh_http_abort(c->req);
    finish(c);
    return;
  }
  /* a pooled connection the upstream had closed meanwhile: once more on a fresh one */
  if (c->reused && !c->resp_head_done && (!c->body_sent_any || (c->replay_ok && c->client_body_done))) {
    attempt(c, 1);
    return;
  }
  fail(c, 502, "upstream_error", why);
}

/* A response head refused in cb_headers_complete: nothing went to the client yet, so it gets a
 * whole answer; what the upstream sent after the head is never read. */
static void refuse_response(call *c) {
  drop_upstream(c);
  if (c->bad_status != 500) {
    fail(c, 502, "upstream_error", c->bad_head);
    return;
  }
  rh_headers h = RH_HEADERS_INIT; /* the script's, logged by the hook */
  rh_buf b = RH_BUF_INIT;
  rh_buf_printf(&b, "Internal Server Error: %s ", c->bad_head);
  rh_proxy_early_answer(c->req, 500, b.data, &h);
  rh_headers_free(&h);
  finish(c);
}

static void up_read(void *owner, const char *data, ssize_t n, const char *err) {
  call *c = owner;
  if (n < 0) { upstream_closed(c, err); return; }
  if (c->timer_kind == T_READ) set_timer(c, T_READ, c->conf->read_timeout);
  llhttp_errno_t err_ = llhttp_execute(&c->parser.llhttp, data, (size_t)n);
  if (c->done) return; /* the client went away while we wrote to it */
  if (c->bad_head) { refuse_response(c); return; }
  if (err_ == HPE_PAUSED && c->redirect_to) { follow_redirect(c); return; }
  if (err_ == HPE_PAUSED && !c->resp_done) { /* a retryable status, before anything went downstream */
    double wait = retry_after(c);
    char why[64];
    snprintf(why, sizeof why, wait < 0 ? "status %d" : "status %d, Retry-After %.3f s", c->status, wait);
    upstream_failed(c->conf, c->to);
    retry_in(c, "upstream_retryable_status", why, c->status, wait);
    return;
  }
  if (err_ == HPE_PAUSED || c->resp_done) { response_complete(c); return; }
  if (err_ != HPE_OK) {
    drop_upstream(c);
    if (c->resp_started) { rh_http_abort(c->req); finish(c); return; }
    fail(c, 502, "upstream_error", llhttp_get_error_reason(&c->parser.llhttp));
    return;
  }
  pass_head(c);
  if (c->resp_started) rh_http_flush(c->req); /* a head whose body is not here yet */
  if (c->up_reading_paused && c->up) rh_upconn_pause(c->up);
}

/* ---- connecting ---- */

static void connected(call *c) {
  init_parser(c);
  rh_upconn_own(c->up, c, up_read, up_written);
  set_timer(c, T_WRITE, c->conf->write_timeout);
  send_request(c);
}

static void dialed(void *ud, rh_upconn *u, const char *err) {
  call *c = ud;
  c->dial = NULL;
  if (!u) {
    upstream_failed(c->conf, c->to);
    if (c->conf->retry_on_connect && retry_allowed(c)) { retry(c, "upstream_retryable_error", err, 0); return; }
    fail(c, 502, "upstream_error", err);
    return;
  }
  RH_LOG(RH_LOG_DEBUG, "upstream_connect", RH_STR("upstream", c->to->pool_key), RH_STR("request_id", c->req->id));
  c->up = u;
  connected(c);
}

static void attempt(call *c, int fresh) {
  if (!c->slot && !take_slot(c)) return; /* queued: slot_granted comes back here */
  c->head_written = c->final_chunk_sent = 0;
  rh_upconn *u = fresh ? NULL : rh_pool_take(c->to->pool_key);
  c->reused = u != NULL;
  if (u) {
    c->up = u;
    connected(c);
    return;
  }
  set_timer(c, T_CONNECT, c->conf->connect_timeout);
  /* a mount's upstreams are the services next to us: direct, whatever HTTPS_PROXY says */
  rh_upconn_target t = { .key = c->to->pool_key, .host = c->to->host, .port = c->to->port,
                         .tls = c->conf->tls, .connect_timeout = c->conf->connect_timeout };
  c->dial = rh_upconn_dial(uv_default_loop(), &t, dialed, c);
}

/* ---- lifetime ---- */

/* Finished calls kept for the next requests (issue 17: a calloc, a timer's init and close, and
 * the head buffer's and both header lists' first allocations a request otherwise). At most
 * SPARE_CALLS a process (one loop serves them all), each keeping buffers and header blocks of at
 * most SPARE_KEEP bytes, its timer open but unreferenced (maybe still armed: on_timer finds
 * T_NONE). A finished call rests until the loop's check phase first: the callbacks that finished
 * it still read c->done on their way out, and a request started below them must not get it.
 * Under ASan none are kept, so a use after the end is still caught. */
#ifdef RH_UNDER_ASAN
#define SPARE_CALLS 0
#else
#define SPARE_CALLS 64
#endif
#define SPARE_KEEP 4096
static call *spare_calls[SPARE_CALLS + 1], *resting[SPARE_CALLS + 1];
static size_t nspare, nresting;
static uv_check_t rest_check;

/* What a finished call still holds for others: its conf, its upstream's count, a redirect. */
static void let_go(call *c) {
  free(c->redirect_to);
  set_target(c, NULL);
  rh_proxy_conf_unref(c->conf);
}

static void free_call(uv_handle_t *h) {
  call *c = h->data;
  let_go(c);
  rh_buf_free(&c->head);
  rh_buf_free(&c->replay);
  rh_buf_free(&c->pending);
  rh_headers_free(&c->resp_headers);
  rh_headers_free(&c->out_headers);
  free(c);
}

static void trim_buf(rh_buf *b) {
  if (b->cap > SPARE_KEEP) rh_buf_free(b);
  b->len = 0;
}

static void trim_headers(rh_headers *h) {
  if (rh_headers_kept(h) > SPARE_KEEP) rh_headers_free(h);
  else rh_headers_clear(h);
}

/* The check phase: the calls that finished in this loop turn become spares. */
static void rested(uv_check_t *h) {
  while (nresting) {
    call *c = resting[--nresting];
    let_go(c);
    trim_buf(&c->head);
    trim_buf(&c->replay);
    trim_buf(&c->pending);
    trim_headers(&c->resp_headers);
    trim_headers(&c->out_headers);
    uv_unref((uv_handle_t *)&c->timer);
    spare_calls[nspare++] = c;
  }
  uv_check_stop(h);
}

static void call_end(call *c) {
  if (nspare + nresting == SPARE_CALLS) {
    uv_close((uv_handle_t *)&c->timer, free_call);
    return;
  }
  if (!rest_check.loop) {
    uv_check_init(uv_default_loop(), &rest_check);
    uv_unref((uv_handle_t *)&rest_check); /* never what keeps the loop running */
  }
  if (!nresting) uv_check_start(&rest_check, rested);
  resting[nresting++] = c;
}

/* As calloc'd, but a spare's timer stays open and its buffers and header blocks are kept, empty. */
static call *call_new(void) {
  if (!nspare) {
    call *c = calloc(1, sizeof *c);
    if (!c) abort();
    rh_headers_init(&c->resp_headers);
    rh_headers_init(&c->out_headers);
    uv_timer_init(uv_default_loop(), &c->timer);
    c->timer.data = c;
    return c;
  }
  call *c = spare_calls[--nspare];
  rh_buf head = c->head, replay = c->replay, pending = c->pending;
  rh_headers resp = c->resp_headers, out = c->out_headers;
  memset(&c->req, 0, sizeof *c - offsetof(call, req));
  c->head = head;
  c->replay = replay;
  c->pending = pending;
  c->resp_headers = resp;
  c->out_headers = out;
  uv_ref((uv_handle_t *)&c->timer);
  return c;
}

/* Ends the exchange; the call is kept or freed once the callbacks above have returned. */
static void finish(call *c) {
  if (c->done) return;
  c->done = 1;
  release_hooks(c);
  set_timer(c, T_NONE, 0);
  drop_upstream(c);
  give_slot(c);
  c->req->events = NULL;
  c->req->ud = NULL;
  rh_http_resume_body(c->req); /* whatever is left of the body is read past, not held up */
  rh_http_req_release(c->req);
  c->req = NULL; /* it may be freed now: nothing below may touch it */
  call_end(c);
}

void rh_proxy_start(rh_http_req *req, rh_proxy_conf *conf, const rh_proxy_hooks *hooks) {
  if (!m_upstream_errors) {
    const char *e;
    static const char *code[] = { "code" };
    m_upstream_errors = rh_metric_register(RH_COUNTER, "relayhost_proxy_upstream_errors_total",
                                           "Proxied requests answered 502/503/504 by the proxy", code, 1,
                                           NULL, 0, &e);
    m_retries = rh_metric_register(RH_COUNTER, "relayhost_proxy_retries_total",
                                   "Upstream attempts retried", NULL, 0, NULL, 0, &e);
    static const char *upstream[] = { "upstream" };
    m_ejections = rh_metric_register(RH_COUNTER, "relayhost_proxy_upstream_ejections_total",
                                     "Upstreams taken out for fail_timeout after max_fails failures in a row",
                                     upstream, 1, NULL, 0, &e);
    m_queued = rh_metric_register(RH_GAUGE, "relayhost_proxy_upstream_queued",
                                  "Requests waiting for a connection slot (limits.max_connections) per upstream",
                                  upstream, 1, NULL, 0, &e);
  }
  if (rh_proxy_is_websocket(req)) { /* the WebSocket path keeps its own state */
    rh_proxy_ws_start(req, conf, hooks);
    return;
  }
  call *c = call_new();
  c->req = req;
  c->conf = conf;
  rh_proxy_conf_ref(conf);
  if (hooks) {
    c->hooks = *hooks;
    c->has_hooks = 1;
  }
  c->attempt = 1;
  c->replay_ok = 1;
  char *body = NULL;
  rh_headers fields = RH_HEADERS_INIT;
  set_target(c, choose(conf, hooks));
  int answer = rh_proxy_build_head(conf, req, c->has_hooks ? &c->hooks : NULL, c->to->host_header, NULL, &c->head,
                                   &c->chunked_up, &body, &fields);
  if (answer) {
    rh_proxy_early_answer(req, answer, body, &fields);
    rh_headers_free(&fields);
    finish(c);
    return;
  }
  c->client_body_done = req->body_done && !req->body.len;
  rh_http_stream_body(req, &client_events, c);
  if (req->body_done) c->client_body_done = 1;
  attempt(c, 0);
}
