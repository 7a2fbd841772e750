#include "redis/redis.h"

#include <hiredis/hiredis.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log/log.h"
#include "net/upconn.h"
#include "net/url.h"
#include "redis/slot.h"
#include "tls/tls.h"

/* A command in flight; replies come back in the order commands went out. */
struct rh_redis_cmd {
  rh_redis_cmd *next;
  rh_redis_cb cb;
  void *ud;
  int internal; /* AUTH / SELECT sent on connecting: their replies are checked here */
  char *buf;    /* formatted, while it waits for the connection */
  int len;
  uint64_t sent_at;
  long long wait_ms; /* waits inside Redis by its own timeout (BLPOP …): 0 for ever; -1: none */
};

typedef struct sub {
  struct sub *next;
  char *channel;
  rh_redis_message_cb cb;
  void *ud;
} sub;

struct rh_redis {
  uv_loop_t *loop;
  sub *subs;                  /* set: the connection is a subscriber */
  char host[RH_HOST_MAX + 1];
  char *user, *password;      /* AUTH [user] password on connecting; NULL: none */
  int port, db, tls;
  rh_tls_ctx *tls_ctx;        /* our reference; NULL: the shared default */
  rh_upconn_dialing *dial;
  rh_upconn *up;
  redisReader *reader;
  rh_redis_cmd *head, *tail;  /* sent, awaiting replies */
  rh_redis_cmd *wait_head, *wait_tail; /* issued while dialling: sent once connected */
  uv_timer_t retry;
  uv_timer_t watch;           /* the reply timeout; a subscriber's keepalive PING */
  int timeout_ms;             /* 0: none */
  int closing;                /* handles still to close once freed */
  int second_look;            /* the deadline passed: looked at again after the next poll */
  uint64_t heard_at;          /* when Redis last sent bytes on this connection */
  uint64_t stall_from;        /* an answer due and never given, on a connection given up (0: none) */
  double backoff;
  int ready, freeing;
  int answered;               /* this connection has had a reply: Redis is up, not just its port */
  char failing[300];          /* why connecting fails, as last logged; "" once answered */
};

static void connect_now(rh_redis *r);

static void fail_list(rh_redis_cmd **head, rh_redis_cmd **tail, const char *err) {
  while (*head) {
    rh_redis_cmd *c = *head;
    *head = c->next;
    if (c->cb) c->cb(c->ud, NULL, err);
    if (c->buf) redisFreeCommand(c->buf);
    free(c);
  }
  *tail = NULL;
}

static void fail_pending(rh_redis *r, const char *err) {
  fail_list(&r->head, &r->tail, err);
  fail_list(&r->wait_head, &r->wait_tail, err);
}

static void on_retry(uv_timer_t *t) { connect_now(t->data); }

/* The connection is gone: fail what waited on it (with err) and dial again later. */
static void down(rh_redis *r, const char *why, const char *err) {
  int was_up = r->answered;
  r->ready = r->answered = 0;
  uv_timer_stop(&r->watch);
  if (r->up) rh_upconn_close(r->up);
  r->up = NULL;
  if (r->reader) redisReaderFree(r->reader);
  r->reader = NULL;
  fail_pending(r, err);
  if (was_up)
    RH_LOG(RH_LOG_WARN, "redis_down", RH_STR("host", r->host), RH_INT("port", r->port), RH_STR("error", why));
  else if (!r->freeing && strcmp(r->failing, why)) /* once per reason, not once per retry */
    RH_LOG(RH_LOG_WARN, "redis_unreachable", RH_STR("host", r->host), RH_INT("port", r->port), RH_STR("error", why));
  snprintf(r->failing, sizeof r->failing, "%s", why);
  if (r->freeing) return;
  uv_timer_start(&r->retry, on_retry, (uint64_t)(r->backoff * 1000), 0);
  r->backoff = r->backoff * 2 > 5 ? 5 : r->backoff * 2;
}

static void lost(rh_redis *r, const char *why) {
  char err[400];
  snprintf(err, sizeof err, "redis: connection lost (%s)", why);
  r->stall_from = 0; /* Redis said something (closed, refused): it is down, not silent */
  down(r, why, err);
}

/* ---- the reply timeout ---- */

/* The clock of sent_at and heard_at: the real time, not the loop's (cached when the loop last
 * woke, so a busy loop would date a command earlier than it went out). */
static uint64_t now_ms(void) { return uv_hrtime() / 1000000; }

/* When Redis owes c's answer: once it has had c (sent, and what was before it answered: the
 * last bytes heard) plus c's own wait inside Redis. */
static uint64_t answer_due(const rh_redis *r, const rh_redis_cmd *c) {
  uint64_t from = c->sent_at > r->heard_at ? c->sent_at : r->heard_at;
  return from + (uint64_t)(c->wait_ms > 0 ? c->wait_ms : 0);
}

/* The oldest command's answer is overdue by more than the timeout: the connection counts as
 * broken (a stopped server, a partition), so it is closed, what waits fails, and it is dialled
 * again; the stall is remembered until Redis says something. */
static void timed_out(rh_redis *r) {
  char why[64], err[RH_HOST_MAX + 128];
  snprintf(why, sizeof why, "no reply for %g s", r->timeout_ms / 1000.0);
  snprintf(err, sizeof err, "redis %s:%d: %s", r->host, r->port, why);
  uint64_t due = answer_due(r, r->head);
  down(r, why, err);
  if (!r->stall_from || due < r->stall_from) r->stall_from = due;
}

static void on_watch(uv_timer_t *t);

/* The timer set for the oldest command's deadline; on a subscriber with nothing asked, for a
 * PING once Redis has been quiet that long (a stopped server is found out there too). */
static void arm(rh_redis *r) {
  const rh_redis_cmd *c = r->head;
  uint64_t now = now_ms(), at;
  r->second_look = 0;
  if (!r->timeout_ms || !r->up || (c && c->wait_ms == 0) || (!c && !r->subs)) {
    uv_timer_stop(&r->watch);
    return;
  }
  at = (c ? answer_due(r, c) : r->heard_at) + (uint64_t)r->timeout_ms;
  uv_timer_start(&r->watch, on_watch, at > now ? at - now : 0, 0);
}

static void send_internal(rh_redis *r, int argc, const char **argv);

/* libuv runs timers before it polls: after the loop was busy for long, the answer may be
 * waiting unread. So a deadline found passed is looked at once more after the next poll. */
static void on_watch(uv_timer_t *t) {
  rh_redis *r = t->data;
  uint64_t now = now_ms(), due = r->head ? answer_due(r, r->head) : r->heard_at;
  int overdue = now >= due + (uint64_t)r->timeout_ms;
  if (overdue && !r->second_look) {
    r->second_look = 1;
    uv_timer_start(&r->watch, on_watch, 1, 0);
  } else if (overdue && r->head) {
    timed_out(r);
  } else if (overdue) {
    send_internal(r, 1, (const char *[]){ "PING" });
  } else {
    arm(r);
  }
}

/* ["message", channel, payload] to the channel's callback; subscribe confirmations pass. */
static int is_message(const redisReply *rep) {
  return rep->type == REDIS_REPLY_ARRAY && rep->elements == 3 && rep->element[0]->type == REDIS_REPLY_STRING &&
         strcmp(rep->element[0]->str, "message") == 0;
}

static void deliver_message(rh_redis *r, const redisReply *rep) {
  const redisReply *ch = rep->element[1], *msg = rep->element[2];
  for (sub *s = r->subs; s; s = s->next)
    if (strcmp(s->channel, ch->str) == 0) s->cb(s->ud, ch->str, msg->str, msg->len);
}

/* The first reply of a connection: TLS, AUTH and SELECT got through, so the backoff starts over
 * (set at connect, a server that refuses the handshake or the password was redialled every
 * 0.1 s, logging redis_up each time). */
static void answered(rh_redis *r) {
  if (r->answered) return;
  r->answered = 1;
  r->backoff = 0.1;
  r->failing[0] = 0;
  RH_LOG(RH_LOG_INFO, "redis_up", RH_STR("host", r->host), RH_INT("port", r->port));
}

static void on_read(void *owner, const char *p, ssize_t n, const char *err) {
  rh_redis *r = owner;
  if (n < 0) { lost(r, err); return; }
  r->heard_at = now_ms();
  r->stall_from = 0;
  redisReaderFeed(r->reader, p, (size_t)n);
  void *reply;
  while (r->reader && redisReaderGetReply(r->reader, &reply) == REDIS_OK && reply) {
    if (r->subs && is_message(reply)) { /* pushed: no command waits for it */
      deliver_message(r, reply);
      freeReplyObject(reply);
      continue;
    }
    rh_redis_cmd *c = r->head;
    if (!c) { freeReplyObject(reply); lost(r, "a reply nobody asked for"); return; }
    r->head = c->next;
    if (!r->head) r->tail = NULL;
    redisReply *rep = reply;
    if (c->internal && rep->type == REDIS_REPLY_ERROR) {
      char why[300];
      snprintf(why, sizeof why, "%s", rep->str);
      free(c);
      freeReplyObject(reply);
      lost(r, why); /* wrong password or db: retried with backoff, logged */
      return;
    }
    answered(r);
    if (c->cb) c->cb(c->ud, rep, NULL);
    free(c);
    freeReplyObject(reply);
  }
  if (r->reader && r->reader->err) lost(r, r->reader->errstr);
  else if (r->up) arm(r);
}

static rh_redis_cmd *new_cmd(int argc, const char **argv, const size_t *lens, rh_redis_cb cb, void *ud,
                             int internal) {
  char *buf;
  int len = redisFormatCommandArgv(&buf, argc, argv, lens);
  if (len < 0) return NULL;
  rh_redis_cmd *c = calloc(1, sizeof *c);
  if (!c) abort();
  c->cb = cb;
  c->ud = ud;
  c->internal = internal;
  c->buf = buf;
  c->len = len;
  c->wait_ms = rh_redis_command_wait_ms(argc, argv, lens);
  return c;
}

static void append(rh_redis_cmd **head, rh_redis_cmd **tail, rh_redis_cmd *c) {
  if (*tail) (*tail)->next = c;
  else *head = c;
  *tail = c;
}

/* Out on the wire, and into the list that replies are matched against. */
static void transmit(rh_redis *r, rh_redis_cmd *c) {
  rh_upconn_write(r->up, c->buf, (size_t)c->len);
  redisFreeCommand(c->buf);
  c->buf = NULL;
  c->next = NULL;
  c->sent_at = now_ms();
  append(&r->head, &r->tail, c);
  if (r->head == c) arm(r); /* the oldest now: its deadline counts */
}

static void send_internal(rh_redis *r, int argc, const char **argv) {
  rh_redis_cmd *c = new_cmd(argc, argv, NULL, NULL, NULL, 1);
  if (c) transmit(r, c);
}

static void dialed(void *ud, rh_upconn *u, const char *err) {
  rh_redis *r = ud;
  r->dial = NULL;
  if (!u) { lost(r, err); return; }
  r->up = u;
  r->heard_at = now_ms();
  r->reader = redisReaderCreate();
  rh_upconn_own(u, r, on_read, NULL);
  if (r->password) send_internal(r, r->user ? 3 : 2, (const char *[]){ "AUTH", r->user ? r->user : r->password, r->password });
  if (r->db) {
    char db[16];
    snprintf(db, sizeof db, "%d", r->db);
    send_internal(r, 2, (const char *[]){ "SELECT", db });
  }
  send_internal(r, 1, (const char *[]){ "PING" }); /* its answer says Redis is up (answered) */
  for (sub *s = r->subs; s; s = s->next) send_internal(r, 2, (const char *[]){ "SUBSCRIBE", s->channel });
  while (r->wait_head) { /* what was asked while dialling */
    rh_redis_cmd *c = r->wait_head;
    r->wait_head = c->next;
    transmit(r, c);
  }
  r->wait_tail = NULL;
  r->ready = 1;
}

static void connect_now(rh_redis *r) {
  rh_tls_ctx *ctx = r->tls ? (r->tls_ctx ? r->tls_ctx : rh_tls_default_client()) : NULL;
  if (r->tls && !ctx) { /* never plain text in place of rediss:// */
    lost(r, "TLS: the system CA store cannot be loaded");
    return;
  }
  rh_upconn_target t = { .key = "redis", .host = r->host, .port = r->port, .tls = ctx };
  r->dial = rh_upconn_dial(r->loop, &t, dialed, r);
}

/* The path: "/" or "/N". */
static const char *parse_db(rh_url *u, int *db) {
  const char *p = u->path + 1;
  size_t n = strlen(p);
  *db = 0;
  if (n > 5 || strspn(p, "0123456789") != n) {
    snprintf(u->err, sizeof u->err, "bad database '%.16s' (want /N)", u->path);
    return u->err;
  }
  for (; *p; p++) *db = *db * 10 + (*p - '0');
  return NULL;
}

/* ":password@" or "user:password@" (AUTH with a user: Redis 6 ACLs); a lone "secret@" is the
 * password, as this client always read it. */
void rh_redis_url_auth(const rh_url *u, rh_redis_addr *a) {
  const char *pw = u->password ? u->password : u->user;
  if (!pw || !*pw) return;
  a->password = pw;
  if (u->password && u->user[0]) a->user = u->user;
}

const char *rh_redis_parse_url(const char *url, rh_url *u, rh_redis_addr *a) {
  memset(a, 0, sizeof *a);
  const char *why = rh_url_parse(url, "redis rediss", u);
  if (!why) why = parse_db(u, &a->db);
  if (why) return why;
  a->host = u->host;
  a->port = u->port;
  a->tls = u->tls;
  rh_redis_url_auth(u, a);
  return NULL;
}

rh_redis *rh_redis_open(uv_loop_t *loop, const rh_redis_addr *a) {
  rh_redis *r = calloc(1, sizeof *r);
  if (!r) abort();
  snprintf(r->host, sizeof r->host, "%s", a->host ? a->host : "");
  r->port = a->port;
  r->tls = a->tls;
  if (a->tls && a->tls_ctx) r->tls_ctx = rh_tls_ctx_ref(a->tls_ctx);
  r->db = a->db;
  if (a->password) r->password = strdup(a->password);
  if (a->user) r->user = strdup(a->user);
  r->loop = loop;
  r->backoff = 0.1;
  r->timeout_ms = a->timeout_ms < 0 ? 0 : a->timeout_ms ? a->timeout_ms : RH_REDIS_TIMEOUT_MS;
  uv_timer_init(loop, &r->retry);
  uv_timer_init(loop, &r->watch);
  r->retry.data = r->watch.data = r;
  if (a->host) connect_now(r);
  return r;
}

void rh_redis_retarget(rh_redis *r, const char *host, int port) {
  uv_timer_stop(&r->retry);
  if (r->dial) rh_upconn_dial_cancel(r->dial);
  r->dial = NULL;
  if (r->up || r->head || r->wait_head) lost(r, "moved to another server");
  uv_timer_stop(&r->retry); /* lost's backoff: the new server is dialled now */
  snprintf(r->host, sizeof r->host, "%s", host);
  r->port = port;
  r->backoff = 0.1;
  connect_now(r);
}

/* ---- TLS settings from the URL's query ---- */

typedef struct {
  char ca[PATH_MAX], cert[PATH_MAX], key[PATH_MAX], name[RH_HOST_MAX + 1];
  int none, any;
} url_tls;

static const char *failf(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return err;
}

static int unhex(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  c |= 0x20;
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* p[0..n) percent-decoded into out: 0, or -1 if malformed, holding %00, or too long. */
static int decode_value(const char *p, size_t n, char *out, size_t outlen) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++, k++) {
    int c = (unsigned char)p[i];
    if (c == '%') {
      if (i + 2 >= n || unhex(p[i + 1]) < 0 || unhex(p[i + 2]) < 0) return -1;
      c = unhex(p[i + 1]) * 16 + unhex(p[i + 2]);
      i += 2;
    }
    if (!c || k + 1 >= outlen) return -1;
    out[k] = (char)c;
  }
  out[k] = 0;
  return 0;
}

#define PARAMS "ssl_ca_certs, ssl_certfile, ssl_keyfile, ssl_cert_reqs, ssl_server_name, socket_timeout"

static int is_param(const char *k, size_t kn, const char *name) { return strlen(name) == kn && !memcmp(name, k, kn); }

/* Where the value of parameter k goes; NULL for an unknown one. */
static char *param_slot(url_tls *t, const char *k, size_t kn, size_t *cap) {
  static const struct { const char *name; size_t off, cap; } slots[] = {
    { "ssl_ca_certs", offsetof(url_tls, ca), sizeof ((url_tls *)0)->ca },
    { "ssl_certfile", offsetof(url_tls, cert), sizeof ((url_tls *)0)->cert },
    { "ssl_keyfile", offsetof(url_tls, key), sizeof ((url_tls *)0)->key },
    { "ssl_server_name", offsetof(url_tls, name), sizeof ((url_tls *)0)->name },
  };
  for (size_t i = 0; i < sizeof slots / sizeof slots[0]; i++)
    if (strlen(slots[i].name) == kn && !memcmp(slots[i].name, k, kn)) {
      *cap = slots[i].cap;
      return (char *)t + slots[i].off;
    }
  return NULL;
}

/* One name=value of the query. */
static const char *take_param(void *ud, const char *k, size_t kn, const char *v, size_t vn, char *err,
                              size_t errlen) {
  url_tls *t = ud;
  char buf[16];
  size_t cap;
  if (is_param(k, kn, "socket_timeout")) return NULL; /* rh_redis_url_timeout's */
  char *slot = param_slot(t, k, kn, &cap);
  if (!slot && !(kn == 13 && !memcmp(k, "ssl_cert_reqs", 13)))
    return failf(err, errlen, "unknown parameter '%.*s' (want " PARAMS ")", (int)(kn > 40 ? 40 : kn), k);
  if (!slot) slot = buf, cap = sizeof buf;
  if (decode_value(v, vn, slot, cap) < 0 || !*slot)
    return failf(err, errlen, "%.*s: empty, too long or badly percent-encoded", (int)kn, k);
  t->any = 1;
  if (slot != buf) return NULL;
  if (strcasecmp(buf, "none") && strcasecmp(buf, "required"))
    return failf(err, errlen, "ssl_cert_reqs: '%s' (want required or none)", buf);
  t->none = strcasecmp(buf, "none") == 0;
  return NULL;
}

typedef const char *(*param_fn)(void *ud, const char *k, size_t kn, const char *v, size_t vn, char *err,
                                 size_t errlen);

/* Each name=value of the query to fn, until one is refused. */
static const char *each_param(const char *q, param_fn fn, void *ud, char *err, size_t errlen) {
  while (q && *q) {
    size_t n = strcspn(q, "&");
    const char *eq = memchr(q, '=', n);
    size_t kn = eq ? (size_t)(eq - q) : n;
    if (n && fn(ud, q, kn, q + kn + (eq != NULL), n - kn - (eq != NULL), err, errlen)) return err;
    q += n + (q[n] == '&');
  }
  return NULL;
}


/* The context the settings ask for; the message names the parameter that was refused. */
static rh_tls_ctx *make_ctx(const url_tls *t, char *err, size_t errlen) {
  char why[600];
  rh_tls_ctx *c = rh_tls_client_ctx(t->ca[0] ? t->ca : NULL, !t->none, why, sizeof why);
  if (!c) {
    failf(err, errlen, "%s%s", t->ca[0] ? "ssl_ca_certs: " : "", why);
    return NULL;
  }
  int rc = t->cert[0] ? rh_tls_ctx_use_cert(c, t->cert, t->key[0] ? t->key : NULL, why, sizeof why) : 0;
  if (rc == 0 && t->name[0] && rh_tls_ctx_set_server_name(c, t->name) < 0) abort();
  if (rc == 0) return c;
  failf(err, errlen, "%s: %s", rc == -1 ? "ssl_certfile" : "ssl_keyfile", why);
  rh_tls_ctx_free(c);
  return NULL;
}

const char *rh_redis_url_tls(const rh_url *u, rh_tls_ctx **ctx, char *err, size_t errlen) {
  url_tls *t = calloc(1, sizeof *t);
  if (!t) abort();
  *ctx = NULL;
  const char *why = each_param(u->query, take_param, t, err, errlen);
  if (!why && t->any && !u->tls)
    why = failf(err, errlen, "ssl_* parameters are for rediss:// (TLS); this URL is %s://", u->scheme);
  if (!why && t->key[0] && !t->cert[0]) why = failf(err, errlen, "ssl_keyfile needs ssl_certfile");
  if (!why && t->any) *ctx = make_ctx(t, err, errlen);
  if (!why && t->any && !*ctx) why = err;
  free(t);
  return why;
}

/* ---- the reply timeout from the URL's query ---- */

const char *rh_redis_parse_timeout(const char *s, int *ms, char *err, size_t errlen) {
  char *end;
  double t = s ? strtod(s, &end) : -1;
  if (!s || end == s || *end || !(t >= 0 && t <= 86400))
    return failf(err, errlen, "socket_timeout: '%.20s' (want seconds, 0 for none, at most 86400)", s ? s : "?");
  *ms = t == 0 ? -1 : t * 1000 < 1 ? 1 : (int)(t * 1000 + 0.5);
  return NULL;
}

static const char *timeout_param(void *ms, const char *k, size_t kn, const char *v, size_t vn, char *err,
                                 size_t errlen) {
  char num[32];
  if (!is_param(k, kn, "socket_timeout")) return NULL; /* rh_redis_url_tls's */
  if (decode_value(v, vn, num, sizeof num) < 0) snprintf(num, sizeof num, "%.*s", (int)(vn > 20 ? 20 : vn), v);
  return rh_redis_parse_timeout(num, ms, err, errlen);
}

const char *rh_redis_url_timeout(const rh_url *u, int *ms, char *err, size_t errlen) {
  return each_param(u->query, timeout_param, ms, err, errlen);
}

/* redis[s]://[[user]:password@]host[:port][/db][?ssl_…], read by core/net/url. The message
 * leaves the URL out: it may hold the password. */
rh_redis *rh_redis_new(uv_loop_t *loop, const char *url, char *err, size_t errlen) {
  rh_url *u = malloc(sizeof *u);
  if (!u) abort();
  rh_redis_addr a;
  rh_redis *r = NULL;
  char why[800];
  if (rh_redis_parse_url(url, u, &a)) snprintf(err, errlen, "bad redis URL: %s", u->err);
  else if (rh_redis_url_tls(u, &a.tls_ctx, why, sizeof why)) snprintf(err, errlen, "redis TLS: %s", why);
  else if (rh_redis_url_timeout(u, &a.timeout_ms, why, sizeof why)) snprintf(err, errlen, "bad redis URL: %s", why);
  else r = rh_redis_open(loop, &a);
  if (a.tls_ctx) rh_tls_ctx_free(a.tls_ctx); /* r holds its own reference */
  free(u);
  return r;
}

rh_redis_cmd *rh_redis_command(rh_redis *r, int argc, const char **argv, const size_t *lens,
                               rh_redis_cb cb, void *ud) {
  if (!r->ready && !r->dial) return NULL; /* down and backing off: the caller says so at once */
  rh_redis_cmd *c = new_cmd(argc, argv, lens, cb, ud, 0);
  if (!c) return NULL;
  if (r->ready) transmit(r, c);
  else append(&r->wait_head, &r->wait_tail, c);
  return c;
}

int rh_redis_subscribe(rh_redis *r, const char *channel, rh_redis_message_cb cb, void *ud) {
  sub *s = calloc(1, sizeof *s);
  if (!s) abort();
  s->channel = strdup(channel);
  s->cb = cb;
  s->ud = ud;
  s->next = r->subs;
  r->subs = s;
  if (r->ready) send_internal(r, 2, (const char *[]){ "SUBSCRIBE", channel });
  return 0;
}

int rh_redis_subscriber(const rh_redis *r) { return r->subs != NULL; }

void rh_redis_cancel(rh_redis_cmd *c) {
  c->cb = NULL;
}

int rh_redis_ready(const rh_redis *r) { return r->ready && r->answered; }

void rh_redis_set_timeout(rh_redis *r, int ms) {
  r->timeout_ms = ms < 0 ? 0 : ms ? ms : RH_REDIS_TIMEOUT_MS;
  if (r->up) arm(r);
}

/* The oldest command a caller asked, if Redis owes its answer some time: the connection's own
 * (AUTH, PING, SUBSCRIBE on connecting) are left out, so that a new connection whose answer sits
 * unread while the loop is busy (a reload loading its script) does not count as a stall. */
static const rh_redis_cmd *first_asked(const rh_redis *r) {
  const rh_redis_cmd *c = r->head;
  while (c && c->internal) c = c->next;
  return c && c->wait_ms != 0 ? c : NULL;
}

uint64_t rh_redis_stalled_ms(const rh_redis *r) {
  uint64_t from = r->stall_from, now = now_ms();
  const rh_redis_cmd *c = r->up ? first_asked(r) : NULL;
  if (c && (!from || answer_due(r, c) < from)) from = answer_due(r, c);
  return from && now > from ? now - from : 0;
}

void rh_redis_why_down(const rh_redis *r, char *out, size_t outlen) {
  if (r->failing[0]) snprintf(out, outlen, "redis: not connected (%s)", r->failing);
  else snprintf(out, outlen, "redis: not connected");
}

static void free_redis(uv_handle_t *h) {
  rh_redis *r = h->data;
  if (--r->closing) return;
  while (r->subs) {
    sub *s = r->subs;
    r->subs = s->next;
    free(s->channel);
    free(s);
  }
  free(r->user);
  free(r->password);
  if (r->tls_ctx) rh_tls_ctx_free(r->tls_ctx);
  free(r);
}

void rh_redis_free(rh_redis *r) {
  r->freeing = 1;
  uv_timer_stop(&r->retry);
  if (r->dial) rh_upconn_dial_cancel(r->dial);
  r->dial = NULL;
  if (r->up || r->head || r->wait_head) lost(r, "client closed");
  if (r->reader) redisReaderFree(r->reader);
  r->closing = 2;
  uv_close((uv_handle_t *)&r->retry, free_redis);
  uv_close((uv_handle_t *)&r->watch, free_redis);
}
