#include "redis/redis.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log/log.h"
#include "net/upconn.h"
#include "net/url.h"
#include "tls/tls.h"

/* A command in flight; replies come back in the order commands went out. */
struct rh_redis_cmd {
  rh_redis_cmd *next;
  rh_redis_cb cb;
  void *ud;
  int internal; /* AUTH / SELECT sent on connecting: their replies are checked here */
  char *buf;    /* formatted, while it waits for the connection */
  int len;
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
  rh_upconn_dialing *dial;
  rh_upconn *up;
  redisReader *reader;
  rh_redis_cmd *head, *tail;  /* sent, awaiting replies */
  rh_redis_cmd *wait_head, *wait_tail; /* issued while dialling: sent once connected */
  uv_timer_t retry;
  double backoff;
  int ready, freeing;
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

/* The connection is gone: fail what waited on it and dial again later. */
static void lost(rh_redis *r, const char *why) {
  int was_ready = r->ready;
  r->ready = 0;
  if (r->up) rh_upconn_close(r->up);
  r->up = NULL;
  if (r->reader) redisReaderFree(r->reader);
  r->reader = NULL;
  char err[300];
  snprintf(err, sizeof err, "redis: connection lost (%s)", why);
  fail_pending(r, err);
  if (was_ready)
    RH_LOG(RH_LOG_WARN, "redis_down", RH_STR("host", r->host), RH_INT("port", r->port), RH_STR("error", why));
  if (r->freeing) return;
  uv_timer_start(&r->retry, on_retry, (uint64_t)(r->backoff * 1000), 0);
  r->backoff = r->backoff * 2 > 5 ? 5 : r->backoff * 2;
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

static void on_read(void *owner, const char *p, ssize_t n, const char *err) {
  rh_redis *r = owner;
  if (n < 0) { lost(r, err); return; }
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
    if (c->cb) c->cb(c->ud, rep, NULL);
    free(c);
    freeReplyObject(reply);
  }
  if (r->reader && r->reader->err) lost(r, r->reader->errstr);
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
  append(&r->head, &r->tail, c);
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
  r->reader = redisReaderCreate();
  rh_upconn_own(u, r, on_read, NULL);
  if (r->password) send_internal(r, r->user ? 3 : 2, (const char *[]){ "AUTH", r->user ? r->user : r->password, r->password });
  if (r->db) {
    char db[16];
    snprintf(db, sizeof db, "%d", r->db);
    send_internal(r, 2, (const char *[]){ "SELECT", db });
  }
  for (sub *s = r->subs; s; s = s->next) send_internal(r, 2, (const char *[]){ "SUBSCRIBE", s->channel });
  while (r->wait_head) { /* what was asked while dialling */
    rh_redis_cmd *c = r->wait_head;
    r->wait_head = c->next;
    transmit(r, c);
  }
  r->wait_tail = NULL;
  r->ready = 1;
  r->backoff = 0.1;
  RH_LOG(RH_LOG_INFO, "redis_up", RH_STR("host", r->host), RH_INT("port", r->port));
}

static void connect_now(rh_redis *r) {
  rh_tls_ctx *ctx = r->tls ? rh_tls_default_client() : NULL;
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
  snprintf(r->host, sizeof r->host, "%s", a->host);
  r->port = a->port;
  r->tls = a->tls;
  r->db = a->db;
  if (a->password) r->password = strdup(a->password);
  if (a->user) r->user = strdup(a->user);
  r->loop = loop;
  r->backoff = 0.1;
  uv_timer_init(loop, &r->retry);
  r->retry.data = r;
  connect_now(r);
  return r;
}

/* redis[s]://[[user]:password@]host[:port][/db], read by core/net/url. The message leaves the
 * URL out: it may hold the password. */
rh_redis *rh_redis_new(uv_loop_t *loop, const char *url, char *err, size_t errlen) {
  rh_url *u = malloc(sizeof *u);
  if (!u) abort();
  rh_redis_addr a;
  const char *why = rh_redis_parse_url(url, u, &a);
  rh_redis *r = why ? NULL : rh_redis_open(loop, &a);
  if (why) snprintf(err, errlen, "bad redis URL: %s", why);
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

int rh_redis_ready(const rh_redis *r) { return r->ready; }

static void free_redis(uv_handle_t *h) {
  rh_redis *r = h->data;
  while (r->subs) {
    sub *s = r->subs;
    r->subs = s->next;
    free(s->channel);
    free(s);
  }
  free(r->user);
  free(r->password);
  free(r);
}

void rh_redis_free(rh_redis *r) {
  r->freeing = 1;
  uv_timer_stop(&r->retry);
  if (r->dial) rh_upconn_dial_cancel(r->dial);
  r->dial = NULL;
  if (r->up || r->head || r->wait_head) lost(r, "client closed");
  if (r->reader) redisReaderFree(r->reader);
  uv_close((uv_handle_t *)&r->retry, free_redis);
}
