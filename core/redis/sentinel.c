#include "redis/sentinel.h"

#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log/log.h"
#include "redis/own.h"
#include "redis/seeds.h"
#include "redis/slot.h"

#define MAX_SENTINELS 16
#define MAX_NAME 256
#define SENTINEL_PORT 26379
#define ANSWER_MS 1000   /* a sentinel or a named primary silent this long is given up */
#define CHECK_MS 500     /* how often the primary's connection is looked at between commands */
#define WAIT_MS 250      /* between two rounds of asking, doubling up to MAX_WAIT_MS */
#define MAX_WAIT_MS 2000

typedef struct {
  char host[RH_HOST_MAX + 1];
  int port;
  rh_redis *ask;   /* questions */
  rh_redis *watch; /* subscribed to +switch-master */
} sentinel;

/* IDLE: a primary, or none and nothing under way (the check starts a round). */
enum { IDLE, ASKING, CONFIRMING, WAITING };

struct rh_redis_sentinel {
  uv_loop_t *loop;
  char master[MAX_NAME];
  char *user, *password;             /* the primary's login */
  int timeout_ms;                    /* every connection's reply timeout, as rh_redis_addr has it */
  sentinel sentinels[MAX_SENTINELS];
  int n;
  int state, asking, tried, unknown; /* the round: the sentinel asked, how many were, a nil answer */
  rh_redis_cmd *question;            /* the question or the ROLE in flight */
  rh_redis *candidate;               /* named by a sentinel, not yet confirmed by ROLE */
  char cand_host[RH_HOST_MAX + 1];
  int cand_port;
  rh_redis *primary;                 /* confirmed */
  char host[RH_HOST_MAX + 1];
  int port;
  rh_redis_pool pool;                /* blocking commands' own connections to the primary */
  rh_redis *subr;                    /* the subscriptions' connection: moved to each primary */
  rh_redis_sentinel_op *held, **held_tail; /* asked before the first round ended */
  int started;                       /* the first round has ended */
  uv_timer_t step, check;
  int wait_ms, closed, freeing;
  char why[300];                     /* why there is no primary */
  char last[300];                    /* the round's last failure */
};

struct rh_redis_sentinel_op {
  rh_redis_sentinel *s;
  rh_redis_cb cb;
  void *ud;
  rh_redis_own own;                  /* a blocking command's connection */
  int argc;                          /* held: its arguments, kept until it is sent */
  char **argv;
  size_t *lens;
  rh_redis_sentinel_op *held_next;
};

static void flush_held(rh_redis_sentinel *s);

static void on_step(uv_timer_t *t);
static void on_check(uv_timer_t *t);

/* A new reason for having no primary is logged once, not on every round. */
static void say(rh_redis_sentinel *s, const char *fmt, ...) {
  char why[sizeof s->why];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  if (strcmp(why, s->why) == 0) return;
  snprintf(s->why, sizeof s->why, "%s", why);
  RH_LOG(RH_LOG_WARN, "redis_sentinel", RH_STR("master", s->master), RH_STR("error", why));
}

static rh_redis *open_primary(rh_redis_sentinel *s, const char *host, int port) {
  rh_redis_addr a = { .host = host, .port = port, .user = s->user, .password = s->password,
                      .timeout_ms = s->timeout_ms };
  return rh_redis_open(s->loop, &a);
}

/* Detached before it is freed: freeing fails its commands, whose callbacks may run Lua, which
 * may free this client (a collected relay.redis). */
static void drop_primary(rh_redis_sentinel *s) {
  rh_redis *p = s->primary;
  s->primary = NULL;
  rh_redis_pool_forget(&s->pool);
  if (p) rh_redis_free(p);
}

static void drop_candidate(rh_redis_sentinel *s) {
  rh_redis *c = s->candidate;
  s->candidate = NULL;
  if (c) rh_redis_free(c);
}

/* Whatever round is under way ends, its answer (if it comes) unheard. */
static void stop_round(rh_redis_sentinel *s) {
  if (s->question) rh_redis_cancel(s->question);
  s->question = NULL;
  uv_timer_stop(&s->step);
  drop_candidate(s);
  s->state = IDLE;
}

/* ---- finding the primary ---- */

static void round_failed(rh_redis_sentinel *s) {
  s->state = WAITING;
  uv_timer_start(&s->step, on_step, (uint64_t)s->wait_ms, 0);
  s->wait_ms = s->wait_ms * 2 > MAX_WAIT_MS ? MAX_WAIT_MS : s->wait_ms * 2;
  flush_held(s);
}

/* ROLE said master: the candidate is the primary from now on. */
static void adopt(rh_redis_sentinel *s) {
  drop_primary(s);
  if (s->freeing) return;
  s->primary = s->candidate;
  s->candidate = NULL;
  snprintf(s->host, sizeof s->host, "%s", s->cand_host);
  s->port = s->cand_port;
  s->state = IDLE;
  s->wait_ms = WAIT_MS;
  s->why[0] = 0;
  if (s->subr) rh_redis_retarget(s->subr, s->host, s->port); /* it subscribes again there */
  RH_LOG(RH_LOG_INFO, "redis_sentinel_primary", RH_STR("master", s->master), RH_STR("host", s->host),
         RH_INT("port", s->port));
  flush_held(s);
}

static void on_role(void *ud, redisReply *rep, const char *err) {
  rh_redis_sentinel *s = ud;
  s->question = NULL;
  uv_timer_stop(&s->step);
  if (s->freeing) return;
  const redisReply *r0 = !err && rep->type == REDIS_REPLY_ARRAY && rep->elements ? rep->element[0] : NULL;
  const char *role = r0 && r0->type == REDIS_REPLY_STRING ? r0->str : NULL;
  if (role && strcmp(role, "master") == 0) {
    adopt(s);
    return;
  }
  if (role) say(s, "%s:%d, named by the sentinels, is not a master but a %s", s->cand_host, s->cand_port, role);
  else say(s, "%s:%d, named by the sentinels, did not answer ROLE: %s", s->cand_host, s->cand_port,
           err ? err : rep->type == REDIS_REPLY_ERROR ? rep->str : "not an array");
  drop_candidate(s);
  round_failed(s);
}

/* Dial host:port and ask it ROLE: nothing is sent there before it says it is the master. */
static void confirm(rh_redis_sentinel *s, const char *host, int port) {
  if (s->primary && s->port == port && strcmp(s->host, host) == 0 && rh_redis_ready(s->primary)) {
    s->state = IDLE; /* where it was, and still connected */
    s->wait_ms = WAIT_MS;
    return;
  }
  drop_candidate(s);
  snprintf(s->cand_host, sizeof s->cand_host, "%s", host);
  s->cand_port = port;
  s->candidate = open_primary(s, host, port);
  static const char *argv[] = { "ROLE" };
  s->question = rh_redis_command(s->candidate, 1, argv, NULL, on_role, s);
  s->state = CONFIRMING;
  uv_timer_start(&s->step, on_step, ANSWER_MS, 0);
}

static void ask_next(rh_redis_sentinel *s);

static void on_addr(void *ud, redisReply *rep, const char *err) {
  rh_redis_sentinel *s = ud;
  s->question = NULL;
  uv_timer_stop(&s->step);
  if (s->freeing) return;
  const sentinel *t = &s->sentinels[s->asking];
  if (!err && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 && rep->element[0]->type == REDIS_REPLY_STRING &&
      rep->element[1]->type == REDIS_REPLY_STRING && rep->element[0]->len <= RH_HOST_MAX) {
    confirm(s, rep->element[0]->str, atoi(rep->element[1]->str));
    return;
  }
  if (!err && rep->type == REDIS_REPLY_NIL) s->unknown = 1;
  else snprintf(s->last, sizeof s->last, "%s:%d: %s", t->host, t->port,
                err ? err : rep->type == REDIS_REPLY_ERROR ? rep->str : "an answer that is not an address");
  s->asking = (s->asking + 1) % s->n;
  ask_next(s);
}

/* The next sentinel not yet asked this round (one that is down is passed over at once). */
static void ask_next(rh_redis_sentinel *s) {
  const char *argv[] = { "SENTINEL", "get-master-addr-by-name", s->master };
  while (s->tried < s->n) {
    s->tried++;
    s->question = rh_redis_command(s->sentinels[s->asking].ask, 3, argv, NULL, on_addr, s);
    if (s->question) {
      uv_timer_start(&s->step, on_step, ANSWER_MS, 0);
      return;
    }
    const sentinel *t = &s->sentinels[s->asking];
    snprintf(s->last, sizeof s->last, "%s:%d: not connected", t->host, t->port);
    s->asking = (s->asking + 1) % s->n;
  }
  if (s->unknown) say(s, "no sentinel knows master '%s'", s->master);
  else say(s, "no sentinel answered (the last: %s)", s->last);
  round_failed(s);
}

/* A round: the sentinels in turn, starting with the one that answered last. */
static void discover(rh_redis_sentinel *s) {
  if (s->freeing || s->state != IDLE) return;
  s->state = ASKING;
  s->tried = 0;
  s->unknown = 0;
  ask_next(s);
}

/* A silent sentinel or candidate is given up; after a failed round's wait, the next round. */
static void on_step(uv_timer_t *t) {
  rh_redis_sentinel *s = t->data;
  if (s->state == WAITING) {
    s->state = IDLE;
    discover(s);
  } else if (s->state == ASKING) {
    rh_redis_cancel(s->question);
    s->question = NULL;
    snprintf(s->last, sizeof s->last, "%s:%d: no answer in %d ms", s->sentinels[s->asking].host,
             s->sentinels[s->asking].port, ANSWER_MS);
    s->asking = (s->asking + 1) % s->n;
    ask_next(s);
  } else if (s->state == CONFIRMING) {
    say(s, "%s:%d, named by the sentinels, did not answer ROLE in %d ms", s->cand_host, s->cand_port, ANSWER_MS);
    stop_round(s);
    round_failed(s);
  }
}

/* A primary whose connection is gone (a command saw it, or the periodic look) is let go, and
 * the sentinels asked where it is now. */
static void check(rh_redis_sentinel *s) {
  if (s->primary && !rh_redis_ready(s->primary)) {
    say(s, "lost the primary %s:%d", s->host, s->port);
    drop_primary(s);
  }
  if (!s->primary) discover(s);
}

static void on_check(uv_timer_t *t) { check(t->data); }

/* "+switch-master": "name old-host old-port new-host new-port"; every sentinel sends it. */
static void on_switch(void *ud, const char *channel, const char *msg, size_t len) {
  rh_redis_sentinel *s = ud;
  char line[2 * RH_HOST_MAX + MAX_NAME + 64], name[MAX_NAME], from[RH_HOST_MAX + 1], to[RH_HOST_MAX + 1];
  int from_port, to_port;
  (void)channel;
  snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line ? len : sizeof line - 1), msg);
  if (sscanf(line, "%255s %255s %d %255s %d", name, from, &from_port, to, &to_port) != 5 ||
      strcmp(name, s->master) != 0)
    return;
  if (s->primary && s->port == to_port && strcmp(s->host, to) == 0) return;
  if (s->state == CONFIRMING && s->cand_port == to_port && strcmp(s->cand_host, to) == 0) return;
  say(s, "switching from %s:%d to %s:%d", from, from_port, to, to_port);
  stop_round(s);
  drop_primary(s);
  if (!s->freeing) confirm(s, to, to_port);
}

/* ---- commands ---- */

static rh_redis *open_own(void *ud) {
  rh_redis_sentinel *s = ud;
  return open_primary(s, s->host, s->port);
}

static void on_reply(void *ud, redisReply *rep, const char *err) {
  rh_redis_sentinel_op *op = ud;
  rh_redis_sentinel *s = op->s;
  if (op->cb) op->cb(op->ud, rep, err);
  if (err && !s->freeing) uv_timer_start(&s->check, on_check, 0, CHECK_MS); /* the primary gone? */
  rh_redis_pool_give(&s->pool, &op->own, !s->freeing);
  free(op);
}

/* No confirmed primary to send to: err says why (-1). */
static int refuse(rh_redis_sentinel *s, char *err, size_t errlen) {
  if (rh_redis_sentinel_ready(s)) return 0;
  if (s->primary) { /* let go from the loop, not under the caller, whose callbacks would run */
    uv_timer_start(&s->check, on_check, 0, CHECK_MS);
    snprintf(err, errlen, "redis-sentinel: no primary for '%s' (lost the primary %s:%d)", s->master, s->host, s->port);
  } else {
    snprintf(err, errlen, "redis-sentinel: no primary for '%s' (%s)", s->master,
             s->why[0] ? s->why : "asking the sentinels");
  }
  return -1;
}

/* Out to the primary (a blocking command on a connection of its own), or -1 with err. */
static int send_op(rh_redis_sentinel_op *op, int argc, const char **argv, const size_t *lens, char *err,
                   size_t errlen) {
  rh_redis_sentinel *s = op->s;
  if (refuse(s, err, errlen) < 0) return -1;
  rh_redis *r = s->primary;
  if (rh_redis_command_blocks(argc, argv, lens) && !(r = rh_redis_pool_take(&s->pool, &op->own, open_own, s))) {
    snprintf(err, errlen, "redis: too many blocking commands in flight on %s:%d (at most %d)", s->host, s->port,
             RH_REDIS_MAX_OWN);
    return -1;
  }
  if (rh_redis_command(r, argc, argv, lens, on_reply, op)) return 0;
  rh_redis_pool_close(&s->pool, &op->own); /* a spare that has lost its connection: not kept */
  snprintf(err, errlen, "redis: not connected (%s:%d)", s->host, s->port);
  return -1;
}

/* ---- commands asked before the first round has ended ---- */

/* They wait for it, as a single node's commands wait for its first dial: a script's first calls
 * are not refused only because the sentinels have not answered yet. */
static rh_redis_sentinel_op *hold(rh_redis_sentinel_op *op, int argc, const char **argv, const size_t *lens) {
  op->argc = argc;
  op->argv = malloc(sizeof *op->argv * (size_t)argc);
  op->lens = malloc(sizeof *op->lens * (size_t)argc);
  if (!op->argv || !op->lens) abort();
  for (int i = 0; i < argc; i++) {
    op->lens[i] = lens[i];
    op->argv[i] = malloc(lens[i] + 1);
    if (!op->argv[i]) abort();
    memcpy(op->argv[i], argv[i], lens[i]);
    op->argv[i][lens[i]] = 0;
  }
  *op->s->held_tail = op;
  op->s->held_tail = &op->held_next;
  return op;
}

static void free_args(rh_redis_sentinel_op *op) {
  for (int i = 0; i < op->argc; i++) free(op->argv[i]);
  free(op->argv);
  free(op->lens);
  op->argc = 0;
}

/* Sent now that there is a primary, or failed with why there is none. */
static void send_held(rh_redis_sentinel_op *op) {
  char err[300];
  int sent = op->cb && !op->s->freeing &&
             send_op(op, op->argc, (const char **)op->argv, op->lens, err, sizeof err) == 0;
  free_args(op);
  if (sent) return;
  if (op->s->freeing) snprintf(err, sizeof err, "redis: connection lost (client closed)");
  if (op->cb) op->cb(op->ud, NULL, err);
  free(op);
}

/* The list is taken first: a callback's Lua may free this client, which flushes it too. */
static void flush_held(rh_redis_sentinel *s) {
  rh_redis_sentinel_op *op = s->held;
  s->held = NULL;
  s->held_tail = &s->held;
  s->started = 1;
  while (op) {
    rh_redis_sentinel_op *next = op->held_next;
    send_held(op);
    op = next;
  }
}

rh_redis_sentinel_op *rh_redis_sentinel_command(rh_redis_sentinel *s, int argc, const char **argv,
                                                const size_t *lens, rh_redis_cb cb, void *ud, char *err,
                                                size_t errlen) {
  if (argc < 1) {
    snprintf(err, errlen, "redis-sentinel: a command is needed");
    return NULL;
  }
  size_t n[64];
  if (!lens && argc > 64) {
    snprintf(err, errlen, "redis-sentinel: at most 64 arguments without their lengths");
    return NULL;
  }
  for (int i = 0; !lens && i < argc; i++) n[i] = strlen(argv[i]);
  rh_redis_sentinel_op *op = calloc(1, sizeof *op);
  if (!op) abort();
  *op = (rh_redis_sentinel_op){ .s = s, .cb = cb, .ud = ud };
  if (!s->primary && !s->started) return hold(op, argc, argv, lens ? lens : n);
  if (send_op(op, argc, argv, lens ? lens : n, err, errlen) == 0) return op;
  free(op);
  return NULL;
}

/* A blocking command's connection is closed: a BLPOP answered after nobody waits would pop an
 * element that is then lost. */
void rh_redis_sentinel_cancel(rh_redis_sentinel_op *op) {
  op->cb = NULL;
  rh_redis_pool_close(&op->s->pool, &op->own); /* fails the command: on_reply frees op */
}

void rh_redis_sentinel_set_timeout(rh_redis_sentinel *s, int ms) {
  s->timeout_ms = ms;
  for (int i = 0; i < s->n; i++) {
    rh_redis_set_timeout(s->sentinels[i].ask, ms);
    rh_redis_set_timeout(s->sentinels[i].watch, ms);
  }
  rh_redis *own[] = { s->primary, s->candidate, s->subr };
  for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
    if (own[i]) rh_redis_set_timeout(own[i], ms);
}

uint64_t rh_redis_sentinel_stalled_ms(const rh_redis_sentinel *s) {
  return s->primary ? rh_redis_stalled_ms(s->primary) : 0;
}

int rh_redis_sentinel_ready(const rh_redis_sentinel *s) { return s->primary && rh_redis_ready(s->primary); }

/* Before a primary is confirmed, the connection waits for adopt to name one. */
int rh_redis_sentinel_subscribe(rh_redis_sentinel *s, const char *channel, rh_redis_message_cb cb, void *ud) {
  if (!s->subr) s->subr = open_primary(s, s->primary ? s->host : NULL, s->port);
  return rh_redis_subscribe(s->subr, channel, cb, ud);
}

/* ---- the URL ---- */

typedef struct {
  rh_redis_sentinel *s;
  char *err;
  size_t errlen;
} parsing;

static const char *take_master(rh_redis_sentinel *s, const rh_url *u) {
  const char *name = u->path + 1;
  if (!*name || strchr(name, '/')) return "no master name (want redis-sentinel://host:port,host:port/mastername)";
  if (strlen(name) >= MAX_NAME) return "master name too long";
  snprintf(s->master, sizeof s->master, "%s", name);
  return NULL;
}

/* One sentinel's URL: its address; the master's name and the login (the same in each). */
static int add_sentinel(void *ud, const char *url) {
  parsing *p = ud;
  rh_redis_sentinel *s = p->s;
  rh_url *u = malloc(sizeof *u);
  if (!u) abort();
  char q[300];
  struct rh_tls_ctx *none = NULL; /* the query's ssl_… are refused: redis-sentinel:// is not TLS */
  const char *why = rh_url_parse(url, "redis-sentinel", u);
  if (!why) why = rh_redis_url_tls(u, &none, q, sizeof q);
  if (!why) why = rh_redis_url_timeout(u, &s->timeout_ms, q, sizeof q);
  if (!why) why = take_master(s, u);
  if (!why && s->n == MAX_SENTINELS) why = "too many sentinels";
  if (!why) {
    rh_redis_addr a = { 0 };
    rh_redis_url_auth(u, &a);
    if (!s->password && a.password) s->password = strdup(a.password);
    if (!s->user && a.user) s->user = strdup(a.user);
    sentinel *t = &s->sentinels[s->n++];
    snprintf(t->host, sizeof t->host, "%s", u->host);
    t->port = u->port_given ? u->port : SENTINEL_PORT;
  }
  if (why) snprintf(p->err, p->errlen, "redis-sentinel: bad URL: %s", why);
  free(u);
  return why ? -1 : 0;
}

/* A connection to ask on, and one that listens for switches, to every sentinel. */
static void open_sentinels(rh_redis_sentinel *s) {
  for (int i = 0; i < s->n; i++) {
    rh_redis_addr a = { .host = s->sentinels[i].host, .port = s->sentinels[i].port, .timeout_ms = s->timeout_ms };
    s->sentinels[i].ask = rh_redis_open(s->loop, &a);
    s->sentinels[i].watch = rh_redis_open(s->loop, &a);
    rh_redis_subscribe(s->sentinels[i].watch, "+switch-master", on_switch, s);
  }
}

static void closed(uv_handle_t *h) {
  rh_redis_sentinel *s = h->data;
  if (++s->closed < 2) return;
  free(s->user);
  free(s->password);
  free(s);
}

rh_redis_sentinel *rh_redis_sentinel_new(uv_loop_t *loop, const char *url, char *err, size_t errlen) {
  rh_redis_sentinel *s = calloc(1, sizeof *s);
  if (!s) abort();
  s->loop = loop;
  s->wait_ms = WAIT_MS;
  uv_timer_init(loop, &s->step);
  uv_timer_init(loop, &s->check);
  s->step.data = s->check.data = s;
  s->held_tail = &s->held;
  if (rh_redis_each_seed(url, add_sentinel, &(parsing){ s, err, errlen }) < 0) {
    rh_redis_sentinel_free(s);
    return NULL;
  }
  open_sentinels(s);
  discover(s);
  uv_timer_start(&s->check, on_check, CHECK_MS, CHECK_MS);
  return s;
}

void rh_redis_sentinel_free(rh_redis_sentinel *s) {
  s->freeing = 1;
  stop_round(s);
  flush_held(s);
  rh_redis_pool_free(&s->pool); /* closing a command's connection fails it, which frees op */
  for (int i = 0; i < s->n; i++) {
    rh_redis_free(s->sentinels[i].ask);
    rh_redis_free(s->sentinels[i].watch);
  }
  drop_primary(s);
  rh_redis *subr = s->subr;
  s->subr = NULL;
  if (subr) rh_redis_free(subr);
  uv_close((uv_handle_t *)&s->step, closed);
  uv_close((uv_handle_t *)&s->check, closed);
}
