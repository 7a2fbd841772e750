/* relay_forward: a tunnel pair inside one process, for server-to-server forwarding. See relay.h. */
#include <stdlib.h>
#include <string.h>

#include "tunnel/relay.h"

typedef struct fmsg {
  struct fmsg *next;
  int to_far;
  size_t len;
  char data[];
} fmsg;

struct rh_tfwd {
  uv_loop_t *loop;
  uv_idle_t idle;
  rh_tun *near, *far;
  fmsg *head, *tail;
  char *base_url;
  char **allow;
  size_t nallow;
  struct rh_tls_ctx *tls;
};

static void deliver(uv_idle_t *idle) {
  rh_tfwd *f = idle->data;
  while (f->head) { /* what the deliveries send is appended and delivered in this same turn */
    fmsg *m = f->head;
    f->head = m->next;
    if (!f->head) f->tail = NULL;
    rh_tun_input(m->to_far ? f->far : f->near, m->data, m->len);
    free(m);
  }
  uv_idle_stop(idle);
}

static int enqueue(rh_tfwd *f, int to_far, const char *head, size_t hl, const char *p, size_t n) {
  fmsg *m = malloc(sizeof *m + hl + n);
  if (!m) abort();
  m->next = NULL;
  m->to_far = to_far;
  m->len = hl + n;
  if (hl) memcpy(m->data, head, hl);
  if (n) memcpy(m->data + hl, p, n);
  if (f->tail) f->tail->next = m;
  else f->head = m;
  f->tail = m;
  uv_idle_start(&f->idle, deliver);
  return 0;
}

static int near_send(void *ud, const char *head, size_t hl, const char *p, size_t n) {
  return enqueue(ud, 1, head, hl, p, n);
}

static int far_send(void *ud, const char *head, size_t hl, const char *p, size_t n) {
  return enqueue(ud, 0, head, hl, p, n);
}

static void far_open(void *ud, rh_tstream *s, const char *method, const char *target, const rh_headers *h) {
  rh_tfwd *f = ud;
  rh_texec_conf c = { f->base_url, (const char *const *)f->allow, f->nallow, f->tls, 1 };
  rh_texec_open(f->loop, &c, s, method, target, h);
}

static void no_fail(void *ud, int code, const char *reason) { (void)ud, (void)code, (void)reason; }

rh_tfwd *rh_tfwd_new(uv_loop_t *loop, const rh_texec_conf *conf) {
  rh_tfwd *f = calloc(1, sizeof *f);
  if (!f) abort();
  f->loop = loop;
  f->base_url = strdup(conf->base_url);
  f->allow = calloc(conf->nallow + 1, sizeof *f->allow);
  if (!f->base_url || !f->allow) abort();
  for (size_t i = 0; i < conf->nallow; i++) f->allow[f->nallow++] = strdup(conf->allow_hosts[i]);
  f->tls = conf->tls;
  uv_idle_init(loop, &f->idle);
  f->idle.data = f;
  rh_tun_transport n = { near_send, NULL, no_fail, NULL, f, NULL }, r = { far_send, far_open, no_fail, NULL, f, NULL };
  f->near = rh_tun_new(loop, 1, &n, NULL);
  f->far = rh_tun_new(loop, 0, &r, NULL);
  return f;
}

rh_tun *rh_tfwd_tun(rh_tfwd *f) { return f->near; }

static void idle_closed(uv_handle_t *h) { free(h->data); }

void rh_tfwd_free(rh_tfwd *f) {
  rh_tun_free(f->near, "forwarder closed");
  rh_tun_free(f->far, "forwarder closed");
  while (f->head) {
    fmsg *m = f->head;
    f->head = m->next;
    free(m);
  }
  for (size_t i = 0; i < f->nallow; i++) free(f->allow[i]);
  free(f->allow);
  free(f->base_url);
  uv_close((uv_handle_t *)&f->idle, idle_closed);
}
