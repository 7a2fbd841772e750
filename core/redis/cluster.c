#include "redis/cluster.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log/log.h"
#include "redis/own.h"
#include "redis/seeds.h"
#include "redis/slot.h"
#include "tls/tls.h"

#define MAX_NODES 256    /* a bound on what MOVED and the map may add */
#define MAX_REDIRECTS 5  /* a command bounced more often than this fails */
#define MAP_WAIT_MS 1000 /* a map read unanswered this long is given up, and another node asked */
#define SUB_CHECK_MS 500 /* how often the subscriptions' node is looked at */

typedef struct {
  char host[RH_HOST_MAX + 1];
  int port;
  rh_redis *r;
  rh_redis_pool pool; /* blocking readers' own connections */
} node;

struct rh_redis_cluster {
  uv_loop_t *loop;
  char *user, *password;
  int tls;
  rh_tls_ctx *tls_ctx;                /* the seeds' ssl_… settings, for every node; NULL: default */
  int timeout_ms;                     /* every node's reply timeout, as rh_redis_addr has it */
  node *nodes;
  int n_nodes;
  uint16_t slot_node[RH_REDIS_SLOTS]; /* node index + 1; 0: not known yet */
  int mapped, refreshing, freeing;
  unsigned map_gen;                   /* the map read that counts; older answers are dropped */
  uint64_t map_asked_at;
  int map_asked;                      /* the node asked last: the next read asks another */
  rh_redis *sub;                      /* subscriptions' own connection */
  int sub_node;                       /* the node it is on */
  uv_timer_t sub_check;               /* moves it when that node is lost */
};

/* A command while it may still be redirected: its arguments are kept to send it again. */
struct rh_redis_cluster_op {
  rh_redis_cluster *c;
  rh_redis_cb cb;
  void *ud;
  int argc, redirects;
  int scan;             /* SCAN: 1 + the index of the primary it runs on */
  int blocking;         /* BLPOP, XREAD BLOCK, …: on a connection of its own, own */
  rh_redis_own own;
  int own_node;         /* whose pool own is from */
  char **argv;
  size_t *lens;
};

static rh_redis *open_node(rh_redis_cluster *c, const node *n);

static int node_at(rh_redis_cluster *c, const char *host, int port) {
  for (int i = 0; i < c->n_nodes; i++)
    if (c->nodes[i].port == port && strcmp(c->nodes[i].host, host) == 0) return i;
  if (c->n_nodes == MAX_NODES || strlen(host) > RH_HOST_MAX) return -1;
  node *n = realloc(c->nodes, sizeof *n * (size_t)(c->n_nodes + 1));
  if (!n) abort();
  c->nodes = n;
  n = &c->nodes[c->n_nodes];
  snprintf(n->host, sizeof n->host, "%s", host);
  n->port = port;
  n->r = open_node(c, n);
  n->pool = (rh_redis_pool){ 0 };
  return c->n_nodes++;
}

/* ---- the slot map ---- */

static void refresh(rh_redis_cluster *c);

/* One range of CLUSTER SLOTS: [start, end, [host, port, id], replicas…]. An empty host is the
 * answering node's own. */
static void map_range(rh_redis_cluster *c, const redisReply *e, const node *from) {
  if (e->type != REDIS_REPLY_ARRAY || e->elements < 3) return;
  const redisReply *a = e->element[0], *b = e->element[1], *p = e->element[2];
  if (a->type != REDIS_REPLY_INTEGER || b->type != REDIS_REPLY_INTEGER || p->type != REDIS_REPLY_ARRAY ||
      p->elements < 2 || p->element[0]->type != REDIS_REPLY_STRING || p->element[1]->type != REDIS_REPLY_INTEGER)
    return;
  char host[RH_HOST_MAX + 1];
  snprintf(host, sizeof host, "%s", p->element[0]->len ? p->element[0]->str : from->host);
  int i = node_at(c, host, (int)p->element[1]->integer);
  if (i < 0) return;
  for (long long s = a->integer; s <= b->integer && s < RH_REDIS_SLOTS; s++)
    if (s >= 0) c->slot_node[s] = (uint16_t)(i + 1);
}

typedef struct {
  rh_redis_cluster *c;
  int from;
  unsigned gen;
} map_read;

static void on_slots(void *ud, redisReply *rep, const char *err) {
  map_read *m = ud;
  rh_redis_cluster *c = m->c;
  int from = m->from, stale = m->gen != c->map_gen;
  free(m);
  if (stale) return; /* given up on: a newer read is in flight or done */
  c->refreshing = 0;
  if (c->freeing) return;
  if (err || rep->type != REDIS_REPLY_ARRAY) {
    RH_LOG(RH_LOG_WARN, "redis_cluster_map", RH_STR("host", c->nodes[from].host), RH_INT("port", c->nodes[from].port),
           RH_STR("error", err ? err : rep->type == REDIS_REPLY_ERROR ? rep->str : "not an array"));
    return;
  }
  node self = c->nodes[from]; /* node_at may move the array */
  memset(c->slot_node, 0, sizeof c->slot_node);
  for (size_t i = 0; i < rep->elements; i++) map_range(c, rep->element[i], &self);
  c->mapped = 1;
}

/* A connected node, the first that is, else the first. */
static int any_node(rh_redis_cluster *c) {
  for (int i = 0; i < c->n_nodes; i++)
    if (rh_redis_ready(c->nodes[i].r)) return i;
  return 0;
}

/* The first connected node after the one asked last, else that next one: a node that has died
 * without its connection noticing yet is not asked twice in a row. */
static int next_node(rh_redis_cluster *c) {
  for (int k = 1; k <= c->n_nodes; k++) {
    int i = (c->map_asked + k) % c->n_nodes;
    if (rh_redis_ready(c->nodes[i].r)) return i;
  }
  return (c->map_asked + 1) % c->n_nodes;
}

/* One map read at a time, but not forever: a read that a dying node never answers would keep
 * the client on the old map through a failover. */
static void refresh(rh_redis_cluster *c) {
  if (c->freeing) return;
  uint64_t now = uv_now(c->loop);
  if (c->refreshing && now - c->map_asked_at < MAP_WAIT_MS) return;
  map_read *m = malloc(sizeof *m);
  if (!m) abort();
  *m = (map_read){ .c = c, .from = next_node(c), .gen = ++c->map_gen };
  static const char *argv[] = { "CLUSTER", "SLOTS" };
  if (!rh_redis_command(c->nodes[m->from].r, 2, argv, NULL, on_slots, m)) {
    free(m);
    c->refreshing = 0;
    return;
  }
  c->refreshing = 1;
  c->map_asked = m->from;
  c->map_asked_at = now;
}

/* ---- commands ---- */

static void release_own(rh_redis_cluster_op *op);

static void op_free(rh_redis_cluster_op *op) {
  release_own(op);
  for (int i = 0; i < op->argc; i++) free(op->argv[i]);
  free(op->argv);
  free(op->lens);
  free(op);
}

static void finish(rh_redis_cluster_op *op, redisReply *rep, const char *err) {
  if (op->cb) op->cb(op->ud, rep, err);
  op_free(op);
}

static void on_reply(void *ud, redisReply *rep, const char *err);

static rh_redis *open_node(rh_redis_cluster *c, const node *n) {
  rh_redis_addr a = { .host = n->host, .port = n->port, .tls = c->tls, .user = c->user, .password = c->password,
                      .tls_ctx = c->tls_ctx, .timeout_ms = c->timeout_ms };
  return rh_redis_open(c->loop, &a);
}

static rh_redis *open_own(void *ud) {
  rh_redis_cluster_op *op = ud;
  return open_node(op->c, &op->c->nodes[op->own_node]);
}

/* A blocking reader ties up its connection until it is answered: it gets one of its own from
 * node i's pool (core/redis/own.h), so the node's other commands do not wait behind it. */
static rh_redis *own_connection(rh_redis_cluster_op *op, int i) {
  op->own_node = i;
  return rh_redis_pool_take(&op->c->nodes[i].pool, &op->own, open_own, op);
}

static void release_own(rh_redis_cluster_op *op) {
  if (op->own.r) rh_redis_pool_give(&op->c->nodes[op->own_node].pool, &op->own, !op->c->freeing);
}

/* Out to node i; asking: preceded by ASKING on the same connection. */
static int send_to(rh_redis_cluster_op *op, int i, int asking) {
  release_own(op);
  rh_redis *r = op->blocking ? own_connection(op, i) : op->c->nodes[i].r;
  if (!r) return -1;
  static const char *ask[] = { "ASKING" };
  if (asking && !rh_redis_command(r, 1, ask, NULL, NULL, NULL)) return -1;
  return rh_redis_command(r, op->argc, (const char **)op->argv, op->lens, on_reply, op) ? 0 : -1;
}

/* "MOVED 3999 127.0.0.1:6381" or "ASK …": the node (added if new), and the slot; -1 if it is
 * neither. */
static int redirect(rh_redis_cluster *c, const char *msg, int *asking, int *slot) {
  *asking = strncmp(msg, "ASK ", 4) == 0;
  if (!*asking && strncmp(msg, "MOVED ", 6) != 0) return -1;
  const char *num = msg + (*asking ? 4 : 6), *addr = strchr(num, ' ');
  const char *colon = addr ? strrchr(addr, ':') : NULL;
  if (!colon || colon - addr - 1 > RH_HOST_MAX) return -1;
  char host[RH_HOST_MAX + 1];
  snprintf(host, sizeof host, "%.*s", (int)(colon - addr - 1), addr + 1);
  *slot = atoi(num);
  return node_at(c, host, atoi(colon + 1));
}

/* ---- SCAN on every primary, one after the other ---- */

/* The primaries, in the order of their first slot: n of them in out. */
static int primaries(const rh_redis_cluster *c, int *out) {
  int n = 0;
  for (int s = 0; s < RH_REDIS_SLOTS; s++) {
    int i = c->slot_node[s] - 1, seen = i < 0;
    for (int k = 0; k < n && !seen; k++) seen = out[k] == i;
    if (!seen) out[n++] = i;
  }
  return n;
}

/* The cursor the caller sees is "P-C" (C on the P-th primary), "0" once the last is done: a
 * loop that runs until the cursor is "0" sees every primary's keys. */
static void scan_reply(rh_redis_cluster_op *op, redisReply *rep) {
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 || rep->element[0]->type != REDIS_REPLY_STRING) {
    finish(op, rep, NULL);
    return;
  }
  int order[MAX_NODES], n = primaries(op->c, order), p = op->scan - 1;
  char cursor[64];
  const char *node_cursor = rep->element[0]->str;
  if (strcmp(node_cursor, "0") != 0) snprintf(cursor, sizeof cursor, "%d-%.40s", p, node_cursor);
  else if (p + 1 < n) snprintf(cursor, sizeof cursor, "%d-0", p + 1);
  else snprintf(cursor, sizeof cursor, "0");
  /* The caller's reply: our cursor and the node's keys (still the node's reply, freed by it). */
  redisReply head = { .type = REDIS_REPLY_STRING, .str = cursor, .len = strlen(cursor) };
  redisReply *elements[2] = { &head, rep->element[1] };
  redisReply outer = { .type = REDIS_REPLY_ARRAY, .elements = 2, .element = elements };
  finish(op, &outer, NULL);
}

/* "0" or "P-C": the primary's place and its cursor (into op->argv[1]); -1 if neither. */
static int scan_cursor(rh_redis_cluster_op *op, int n) {
  const char *s = op->argv[1];
  char *end;
  long p = strcmp(s, "0") == 0 ? 0 : strtol(s, &end, 10);
  if (strcmp(s, "0") != 0 && (end == s || *end != '-' || !end[1] || strspn(end + 1, "0123456789") != strlen(end + 1)))
    return -1;
  if (p < 0 || p >= n) return -1;
  if (strcmp(s, "0") != 0) {
    memmove(op->argv[1], end + 1, strlen(end + 1) + 1);
    op->lens[1] = strlen(op->argv[1]);
  }
  op->scan = (int)p + 1;
  return (int)p;
}

static rh_redis_cluster_op *scan(rh_redis_cluster *c, rh_redis_cluster_op *op, char *err, size_t errlen) {
  int order[MAX_NODES], n = primaries(c, order);
  int p = op->argc >= 2 ? scan_cursor(op, n) : -1;
  if (!n) refresh(c);
  if (p >= 0 && send_to(op, order[p], 0) == 0) return op;
  if (!n) snprintf(err, errlen, "redis cluster: the slot map has not been read yet");
  else if (p < 0) snprintf(err, errlen, "redis cluster: bad SCAN cursor (want 0 or one this client gave)");
  else snprintf(err, errlen, "redis: not connected (%s:%d)", c->nodes[order[p]].host, c->nodes[order[p]].port);
  op_free(op);
  return NULL;
}

static void on_reply(void *ud, redisReply *rep, const char *err) {
  rh_redis_cluster_op *op = ud;
  rh_redis_cluster *c = op->c;
  if (op->scan && !err && !c->freeing) {
    scan_reply(op, rep);
    return;
  }
  if (err && !c->freeing) refresh(c); /* a node gone: failover, perhaps */
  int asking, slot, to = -1;
  if (!err && !c->freeing && rep->type == REDIS_REPLY_ERROR && op->redirects < MAX_REDIRECTS)
    to = redirect(c, rep->str, &asking, &slot);
  if (to < 0) { finish(op, rep, err); return; }
  op->redirects++;
  if (!asking) {
    if (slot >= 0 && slot < RH_REDIS_SLOTS) c->slot_node[slot] = (uint16_t)(to + 1);
    refresh(c);
  }
  if (send_to(op, to, asking) < 0) finish(op, NULL, "redis: not connected (the node a redirection named)");
}

static rh_redis_cluster_op *op_new(rh_redis_cluster *c, int argc, const char **argv, const size_t *lens,
                                   rh_redis_cb cb, void *ud) {
  rh_redis_cluster_op *op = calloc(1, sizeof *op);
  if (!op) abort();
  *op = (rh_redis_cluster_op){ .c = c, .cb = cb, .ud = ud, .argc = argc };
  op->argv = malloc(sizeof *op->argv * (size_t)argc);
  op->lens = malloc(sizeof *op->lens * (size_t)argc);
  if (!op->argv || !op->lens) abort();
  for (int i = 0; i < argc; i++) {
    op->lens[i] = lens ? lens[i] : strlen(argv[i]);
    op->argv[i] = malloc(op->lens[i] + 1);
    if (!op->argv[i]) abort();
    memcpy(op->argv[i], argv[i], op->lens[i]);
    op->argv[i][op->lens[i]] = 0;
  }
  op->blocking = rh_redis_command_blocks(argc, (const char **)op->argv, op->lens);
  return op;
}

rh_redis_cluster_op *rh_redis_cluster_command(rh_redis_cluster *c, int argc, const char **argv,
                                              const size_t *lens, rh_redis_cb cb, void *ud, char *err,
                                              size_t errlen) {
  if (argc < 1) {
    snprintf(err, errlen, "redis cluster: a command is needed");
    return NULL;
  }
  rh_redis_cluster_op *op = op_new(c, argc, argv, lens, cb, ud); /* lens filled in, NULs at the ends */
  if (strcasecmp(op->argv[0], "SCAN") == 0) return scan(c, op, err, errlen);
  int slot = rh_redis_command_slot(argc, (const char **)op->argv, op->lens, err, errlen);
  if (slot < 0) {
    op_free(op);
    return NULL;
  }
  if (!c->mapped) refresh(c);
  int i = slot < RH_REDIS_SLOTS && c->slot_node[slot] ? c->slot_node[slot] - 1 : any_node(c);
  int full = op->blocking && rh_redis_pool_full(&c->nodes[i].pool);
  if (!full && send_to(op, i, 0) == 0) return op;
  op_free(op);
  if (full) {
    snprintf(err, errlen, "redis: too many blocking commands in flight on %s:%d (at most %d)", c->nodes[i].host,
             c->nodes[i].port, RH_REDIS_MAX_OWN);
    return NULL;
  }
  refresh(c);
  snprintf(err, errlen, "redis: not connected (%s:%d)", c->nodes[i].host, c->nodes[i].port);
  return NULL;
}

void rh_redis_cluster_cancel(rh_redis_cluster_op *op) { op->cb = NULL; }

void rh_redis_cluster_set_timeout(rh_redis_cluster *c, int ms) {
  c->timeout_ms = ms;
  for (int i = 0; i < c->n_nodes; i++) rh_redis_set_timeout(c->nodes[i].r, ms);
  if (c->sub) rh_redis_set_timeout(c->sub, ms);
}

uint64_t rh_redis_cluster_stalled_ms(const rh_redis_cluster *c) {
  uint64_t most = 0;
  for (int i = 0; i < c->n_nodes; i++) {
    uint64_t ms = rh_redis_stalled_ms(c->nodes[i].r);
    if (ms > most) most = ms;
  }
  return most;
}

int rh_redis_cluster_ready(const rh_redis_cluster *c) {
  for (int i = 0; c->mapped && i < c->n_nodes; i++)
    if (rh_redis_ready(c->nodes[i].r)) return 1;
  return 0;
}

/* Classic pub/sub reaches every node, so the subscriptions move to any node that is up when
 * theirs is lost (a failover may never bring it back). */
static void on_sub_check(uv_timer_t *t) {
  rh_redis_cluster *c = t->data;
  if (rh_redis_ready(c->sub) || rh_redis_ready(c->nodes[c->sub_node].r)) return;
  int i = any_node(c);
  if (i == c->sub_node || !rh_redis_ready(c->nodes[i].r)) return;
  c->sub_node = i;
  RH_LOG(RH_LOG_INFO, "redis_cluster_subscriber_moved", RH_STR("host", c->nodes[i].host),
         RH_INT("port", c->nodes[i].port));
  rh_redis_retarget(c->sub, c->nodes[i].host, c->nodes[i].port);
}

int rh_redis_cluster_subscribe(rh_redis_cluster *c, const char *channel, rh_redis_message_cb cb, void *ud) {
  if (!c->sub) {
    c->sub = open_node(c, &c->nodes[0]);
    uv_timer_start(&c->sub_check, on_sub_check, SUB_CHECK_MS, SUB_CHECK_MS);
  }
  return rh_redis_subscribe(c->sub, channel, cb, ud);
}

/* ---- seeds ---- */

/* The first seed's ssl_… settings (every seed has the same query) make the nodes' context; its
 * socket_timeout is every node's. */
static const char *seed_query(rh_redis_cluster *c, const rh_url *u, char *err, size_t errlen) {
  char why[800];
  if (c->n_nodes) return NULL;
  if (rh_redis_url_tls(u, &c->tls_ctx, why, sizeof why)) snprintf(err, errlen, "redis TLS: %s", why);
  else if (rh_redis_url_timeout(u, &c->timeout_ms, why, sizeof why))
    snprintf(err, errlen, "bad redis cluster seed: %s", why);
  else return NULL;
  return err;
}

typedef struct {
  rh_redis_cluster *c;
  char *err;
  size_t errlen;
} seeding;

/* One seed's URL: its node, and the login and TLS that apply to every node. */
static int add_seed(void *ud, const char *url) {
  seeding *sd = ud;
  rh_redis_cluster *c = sd->c;
  rh_url *u = malloc(sizeof *u);
  if (!u) abort();
  rh_redis_addr a;
  const char *why = rh_redis_parse_url(url, u, &a);
  if (!why && a.db) why = "a cluster has only database 0";
  if (!why && seed_query(c, u, sd->err, sd->errlen)) {
    free(u);
    return -1;
  }
  if (!why) {
    c->tls = a.tls;
    if (!c->password && a.password) c->password = strdup(a.password);
    if (!c->user && a.user) c->user = strdup(a.user);
    if (node_at(c, a.host, a.port) < 0) why = "too many seeds";
  }
  if (why) snprintf(sd->err, sd->errlen, "bad redis cluster seed: %s", why);
  free(u);
  return why ? -1 : 0;
}

rh_redis_cluster *rh_redis_cluster_new(uv_loop_t *loop, const char *seeds, char *err, size_t errlen) {
  rh_redis_cluster *c = calloc(1, sizeof *c);
  if (!c) abort();
  c->loop = loop;
  uv_timer_init(loop, &c->sub_check);
  c->sub_check.data = c;
  if (rh_redis_each_seed(seeds, add_seed, &(seeding){ c, err, errlen }) < 0) {
    rh_redis_cluster_free(c);
    return NULL;
  }
  refresh(c);
  return c;
}

static void closed(uv_handle_t *h) { free(h->data); }

void rh_redis_cluster_free(rh_redis_cluster *c) {
  c->freeing = 1;
  for (int i = 0; i < c->n_nodes; i++) /* closing a reader's own connection fails it, freeing op */
    rh_redis_pool_free(&c->nodes[i].pool);
  for (int i = 0; i < c->n_nodes; i++) rh_redis_free(c->nodes[i].r);
  if (c->sub) rh_redis_free(c->sub);
  free(c->nodes);
  free(c->user);
  free(c->password);
  if (c->tls_ctx) rh_tls_ctx_free(c->tls_ctx);
  uv_close((uv_handle_t *)&c->sub_check, closed);
}
