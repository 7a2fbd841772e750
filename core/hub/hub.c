/* hub: see hub.h. Two levels of chained hash maps (scope -> its owners and daemon bucket,
 * session -> peer); peers are reference counted by the owner entries that name them. */
#include "hub/hub.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "json/scan.h"

/* ---- a string-keyed map ---- */

typedef struct entry {
  struct entry *next;
  uint64_t hash;
  size_t key_len;
  void *val;
  char key[];
} entry;

typedef struct {
  entry **b;
  size_t nb, n;
} map;

static uint64_t fnv(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h;
}

static entry **find(map *m, const char *k, size_t kl, uint64_t h) {
  if (!m->nb) return NULL;
  entry **e = &m->b[h % m->nb];
  while (*e && !((*e)->hash == h && (*e)->key_len == kl && memcmp((*e)->key, k, kl) == 0)) e = &(*e)->next;
  return e;
}

static void *map_get(map *m, const char *k, size_t kl) {
  entry **e = find(m, k, kl, fnv(k, kl));
  return e && *e ? (*e)->val : NULL;
}

static void grow(map *m) {
  size_t nb = m->nb ? m->nb * 2 : 16;
  entry **b = calloc(nb, sizeof *b);
  if (!b) abort();
  for (size_t i = 0; i < m->nb; i++) {
    for (entry *e = m->b[i], *next; e; e = next) {
      next = e->next;
      e->next = b[e->hash % nb];
      b[e->hash % nb] = e;
    }
  }
  free(m->b);
  m->b = b;
  m->nb = nb;
}

/* Sets k to val (NULL removes it); returns the value it had. */
static void *map_set(map *m, const char *k, size_t kl, void *val) {
  uint64_t h = fnv(k, kl);
  entry **e = find(m, k, kl, h);
  void *old = e && *e ? (*e)->val : NULL;
  if (e && *e) {
    if (val) {
      (*e)->val = val;
    } else {
      entry *gone = *e;
      *e = gone->next;
      free(gone);
      m->n--;
    }
    return old;
  }
  if (!val) return NULL;
  if (m->n >= m->nb) grow(m);
  entry *n = malloc(sizeof *n + kl);
  if (!n) abort();
  n->hash = h;
  n->key_len = kl;
  n->val = val;
  memcpy(n->key, k, kl);
  n->next = m->b[h % m->nb];
  m->b[h % m->nb] = n;
  m->n++;
  return NULL;
}

/* Empties m, handing each value to fn. */
static void map_clear(map *m, void (*fn)(void *val, void *ud), void *ud) {
  for (size_t i = 0; i < m->nb; i++) {
    for (entry *e = m->b[i], *next; e; e = next) {
      next = e->next;
      if (fn) fn(e->val, ud);
      free(e);
    }
  }
  free(m->b);
  m->b = NULL;
  m->nb = m->n = 0;
}

/* ---- the hub ---- */

struct rh_hub_peer {
  void *conn; /* NULL once gone */
  int refs;   /* the connection's, plus one per owner entry */
};

typedef struct {
  map owners;       /* session -> rh_hub_peer */
  double tokens, at; /* daemon bucket */
} scope;

struct rh_hub {
  rh_hub_ops ops;
  double per_minute;
  size_t max_pending;
  map scopes;
  uint64_t frames, bytes;
};

rh_hub *rh_hub_new(const rh_hub_ops *ops, double daemon_per_minute, size_t max_pending) {
  rh_hub *h = calloc(1, sizeof *h);
  if (!h) abort();
  h->ops = *ops;
  h->per_minute = daemon_per_minute;
  h->max_pending = max_pending;
  return h;
}

static void unref(void *val, void *ud) {
  (void)ud;
  rh_hub_peer *p = val;
  if (--p->refs == 0) free(p);
}

static void free_scope(void *val, void *ud) {
  scope *s = val;
  map_clear(&s->owners, unref, ud);
  free(s);
}

void rh_hub_free(rh_hub *h) {
  if (!h) return;
  map_clear(&h->scopes, free_scope, NULL);
  free(h);
}

rh_hub_peer *rh_hub_peer_new(rh_hub *h, void *conn) {
  (void)h;
  rh_hub_peer *p = malloc(sizeof *p);
  if (!p) abort();
  p->conn = conn;
  p->refs = 1;
  return p;
}

void rh_hub_peer_gone(rh_hub *h, rh_hub_peer *p) {
  (void)h;
  p->conn = NULL;
  unref(p, NULL);
}

static scope *get_scope(rh_hub *h, const char *key, int create) {
  size_t kl = strlen(key);
  scope *s = map_get(&h->scopes, key, kl);
  if (!s && create) {
    s = calloc(1, sizeof *s);
    if (!s) abort();
    s->tokens = h->per_minute;
    s->at = -1;
    map_set(&h->scopes, key, kl, s);
  }
  return s;
}

void rh_hub_own(rh_hub *h, const char *scope_key, const char *session, rh_hub_peer *peer) {
  scope *s = get_scope(h, scope_key, peer != NULL);
  if (!s) return;
  if (peer) peer->refs++;
  rh_hub_peer *old = map_set(&s->owners, session, strlen(session), peer);
  if (old) unref(old, NULL);
}

void rh_hub_clear_scope(rh_hub *h, const char *scope_key) {
  scope *s = map_set(&h->scopes, scope_key, strlen(scope_key), NULL);
  if (s) free_scope(s, NULL);
}

static int take_token(rh_hub *h, scope *s, double now) {
  if (s->at >= 0) s->tokens = fmin(h->per_minute, s->tokens + (now - s->at) * h->per_minute / 60);
  s->at = now;
  if (s->tokens < 1) return 0;
  s->tokens -= 1;
  return 1;
}

int rh_hub_daemon_allow(rh_hub *h, const char *scope_key, double now) {
  return take_token(h, get_scope(h, scope_key, 1), now);
}

/* ---- reading a daemon frame ---- */

typedef struct {
  rh_json_value type, version, profile, session, epoch, seq, iv, tag, ciphertext, next_epoch;
} fields;

static int key_is(const char *k, size_t kl, const char *name) { return strlen(name) == kl && memcmp(k, name, kl) == 0; }

static int collect(void *ud, const char *k, size_t kl, int escaped, const rh_json_value *v) {
  fields *f = ud;
  if (escaped) return 0;
  static const struct { const char *name; size_t off; } names[] = {
    { "type", offsetof(fields, type) },       { "version", offsetof(fields, version) },
    { "profile", offsetof(fields, profile) }, { "sessionId", offsetof(fields, session) },
    { "epoch", offsetof(fields, epoch) },     { "seq", offsetof(fields, seq) },
    { "iv", offsetof(fields, iv) },           { "tag", offsetof(fields, tag) },
    { "ciphertext", offsetof(fields, ciphertext) }, { "nextEpoch", offsetof(fields, next_epoch) },
  };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (key_is(k, kl, names[i].name)) *(rh_json_value *)((char *)f + names[i].off) = *v; /* the last one wins */
  return 0;
}

static int str_is(const rh_json_value *v, const char *s) {
  return v->type == RH_JSON_STRING && !v->escaped && v->len == strlen(s) && memcmp(v->p, s, v->len) == 0;
}

/* A plain string (no escapes) with something other than spaces in it. */
static int nonempty(const rh_json_value *v) {
  if (v->type != RH_JSON_STRING || v->escaped) return 0;
  for (size_t i = 0; i < v->len; i++)
    if (v->p[i] != ' ') return 1;
  return 0;
}

static int int_min(const rh_json_value *v, double min) {
  double d = rh_json_number(v);
  return v->type == RH_JSON_NUMBER && isfinite(d) && d == floor(d) && d >= min;
}

static int strength(const rh_json_value *v) { return str_is(v, "noise-ik") ? 1 : str_is(v, "noise-ikpsk2") ? 2 : 0; }

/* The frames the hub delivers itself (frames.lua's e2ee and key_update shapes). */
static int deliverable(const fields *f) {
  if (str_is(&f->type, "e2ee"))
    return f->version.type == RH_JSON_NUMBER && rh_json_number(&f->version) == 2 && strength(&f->profile) &&
           nonempty(&f->session) && int_min(&f->epoch, 1) && int_min(&f->seq, 1) && nonempty(&f->iv) &&
           nonempty(&f->tag) && nonempty(&f->ciphertext);
  return str_is(&f->type, "relay_key_update_required") && f->session.type == RH_JSON_STRING && !f->session.escaped &&
         f->next_epoch.type == RH_JSON_NUMBER && (!f->profile.type || strength(&f->profile));
}

int rh_hub_daemon_frame(rh_hub *h, const char *scope_key, const char *claimed, const char *p, size_t n, double now) {
  fields f;
  memset(&f, 0, sizeof f);
  if (rh_json_scan_object(p, n, 1000, collect, &f) < 0 || !deliverable(&f)) return 0;
  if (claimed && f.profile.type) { /* a downgrade is the script's to refuse */
    rh_json_value c = { RH_JSON_STRING, claimed, strlen(claimed), 0 };
    if (strength(&f.profile) < strength(&c)) return 0;
  }
  scope *s = get_scope(h, scope_key, 0);
  if (!s) return 0;
  rh_hub_peer *owner = map_get(&s->owners, f.session.p, f.session.len);
  if (!owner) return 0;
  if (!owner->conn) { /* its connection is gone: forget it here, let the script drop the frame */
    map_set(&s->owners, f.session.p, f.session.len, NULL);
    unref(owner, NULL);
    return 0;
  }
  if (h->ops.queued(owner->conn) > h->max_pending || !take_token(h, s, now)) return 0;
  if (h->ops.send(owner->conn, p, n) < 0) return 0;
  h->frames++;
  h->bytes += n;
  return 1;
}

void rh_hub_stats(const rh_hub *h, uint64_t *frames, uint64_t *bytes) {
  *frames = h->frames;
  *bytes = h->bytes;
}
