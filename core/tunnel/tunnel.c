/* tunnel: streams over one message transport, with credit windows. See tunnel.h. */
#include "tunnel/tunnel.h"

#include <stdlib.h>
#include <string.h>

#include "buf/buf.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "tunnel/frame.h"

#define WINDOW_ACK_AT (RH_TUN_WINDOW / 4) /* announce credit in batches, not per frame */

struct rh_tstream {
  rh_tun *tun;                /* NULL once the tunnel is gone */
  rh_tstream *next;
  uint32_t id;
  rh_tstream_handlers h;
  uint64_t credit;            /* bytes we may still send */
  uint64_t granted;           /* bytes the peer may still send us */
  size_t unannounced;         /* consumed bytes not yet announced with WINDOW */
  rh_buf pending;             /* bytes written over the credit, sent when WINDOW comes */
  double blocked_since;       /* 0, or when the credit ran out with bytes pending */
  double head_deadline;       /* server: 0 once the response HEAD came */
  int sent_end, got_end, over, released, want_writable, busy;
};

struct rh_tun {
  uv_loop_t *loop;
  uv_timer_t timer;
  rh_tun_transport tr;
  rh_tun_opts o;
  int is_server, failed, freeing;
  int over;                   /* the peer left more than the bound unread: closed on the next tick */
  int pong_owed;              /* a PING came while the transport was backed up: answered later */
  int held;                   /* client: streams wait on RH_TUN_CLIENT_QUEUE */
  char pong[8];
  size_t over_queued;
  size_t orphaned;            /* sent by streams now gone, perhaps still queued (at most what is) */
  uint32_t next_id;
  rh_tstream *streams;
  double last_rx, last_ping;
  rh_buf msg;                 /* the message being built */
  rh_tun_stats st;
};

static double now(rh_tun *t) { return (double)uv_now(t->loop) / 1000.0; }

static size_t queued(rh_tun *t) { return t->tr.queued ? t->tr.queued(t->tr.ud) : 0; }

static int backed_up(rh_tun *t) { return !t->is_server && queued(t) > RH_TUN_CLIENT_QUEUE; }

/* Past this the peer is not reading what it asked for: with the credit windows honoured, every
 * stream's data fits in its window, and control frames and heads in the slack. What streams
 * that ended left queued counts too, up to four windows, while it drains. */
static size_t bound(rh_tun *t) {
  size_t orphans = t->orphaned < 4 * (size_t)RH_TUN_WINDOW ? t->orphaned : 4 * (size_t)RH_TUN_WINDOW;
  return (size_t)RH_TUN_WINDOW * t->st.streams_open + orphans + RH_TUN_SLACK;
}

static void tick(uv_timer_t *tm);

/* Over the bound: nothing more is sent, and the tunnel is closed from the timer (the caller may
 * be deep inside a stream, which closing would free under its feet). */
static void over_bound(rh_tun *t, size_t q) {
  t->over = 1;
  t->over_queued = q;
  uv_timer_start(&t->timer, tick, 0, uv_timer_get_repeat(&t->timer));
}

/* Sends the message built in t->msg, followed by p (a DATA frame's body: not copied into msg). */
static int send_msg_with(rh_tun *t, const char *p, size_t n) {
  int rc = t->failed || t->over ? -1 : t->tr.send(t->tr.ud, t->msg.data, t->msg.len, p, n);
  t->msg.len = 0;
  size_t q = rc == 0 ? queued(t) : 0;
  if (q < t->orphaned) t->orphaned = q; /* the peer read that much of it */
  if (q > bound(t)) over_bound(t, q);
  return rc;
}

static int send_msg(rh_tun *t) { return send_msg_with(t, NULL, 0); }

/* ---- streams ---- */

static rh_tstream *find(rh_tun *t, uint32_t id) {
  for (rh_tstream *s = t->streams; s; s = s->next)
    if (s->id == id) return s;
  return NULL;
}

static void unlink_stream(rh_tstream *s) {
  rh_tun *t = s->tun;
  if (!t) return;
  for (rh_tstream **pp = &t->streams; *pp; pp = &(*pp)->next) {
    if (*pp == s) {
      *pp = s->next;
      t->st.streams_open--;
      break;
    }
  }
  t->st.buffered -= s->pending.len;
  t->orphaned += s->credit < RH_TUN_WINDOW ? (size_t)(RH_TUN_WINDOW - s->credit) : 0;
  s->tun = NULL;
}

/* 1 if s was freed. A stream whose handler is running (busy) is freed when it returns. */
static int maybe_free(rh_tstream *s) {
  if (!s->over || !s->released || s->busy) return 0;
  unlink_stream(s);
  rh_buf_free(&s->pending);
  free(s);
  return 1;
}

#define CALL(s, fn, ...)                         \
  do {                                           \
    if ((s)->h.fn) {                             \
      (s)->busy++;                               \
      (s)->h.fn((s)->h.ud, ##__VA_ARGS__);       \
      (s)->busy--;                               \
    }                                            \
  } while (0)

static void set_over(rh_tstream *s) {
  s->over = 1;
  unlink_stream(s);
}

/* Ends the stream here with a local code: the bridge hears on_reset (once). */
static void fail_stream(rh_tstream *s, int code, const char *reason) {
  if (s->over) return;
  if (s->tun) s->tun->st.streams_reset++;
  set_over(s);
  CALL(s, on_reset, code, reason);
  maybe_free(s);
}

static rh_tstream *stream_new(rh_tun *t, uint32_t id) {
  rh_tstream *s = calloc(1, sizeof *s);
  if (!s) abort();
  s->tun = t;
  s->id = id;
  s->credit = s->granted = RH_TUN_WINDOW;
  s->next = t->streams;
  t->streams = s;
  t->st.streams_open++;
  t->st.streams_opened++;
  return s;
}

void rh_tstream_set_handlers(rh_tstream *s, const rh_tstream_handlers *sh) { s->h = *sh; }

static void send_reset(rh_tstream *s, int code, const char *reason) {
  if (s->over || !s->tun) return;
  rh_tframe_encode_u32(&s->tun->msg, RH_TF_RESET, s->id, (uint32_t)code, reason);
  send_msg(s->tun);
}

void rh_tstream_reset(rh_tstream *s, int code, const char *reason) {
  if (s->over) return;
  send_reset(s, code, reason);
  if (s->tun) s->tun->st.streams_reset++;
  set_over(s);
  maybe_free(s);
}

/* A stream whose END went out lives on until the peer's END (or the rest of its pending bytes);
 * one whose END did not is reset. */
void rh_tstream_release(rh_tstream *s) {
  s->released = 1;
  memset(&s->h, 0, sizeof s->h);
  if (!s->over && !s->sent_end) rh_tstream_reset(s, RH_TR_CANCEL, "released");
  else maybe_free(s);
}

/* 1 if s was freed. */
static int check_done(rh_tstream *s) {
  if (!s->over && s->sent_end && s->got_end && !s->pending.len) set_over(s);
  return maybe_free(s);
}

/* Sends what the credit allows from p (n bytes), in frames of at most RH_TF_MAX_DATA. */
static size_t send_data(rh_tstream *s, const char *p, size_t n) {
  size_t sent = 0;
  while (sent < n && s->credit) {
    if (backed_up(s->tun)) {
      s->tun->held = 1;
      break;
    }
    size_t k = n - sent;
    if (k > RH_TF_MAX_DATA) k = RH_TF_MAX_DATA;
    if (k > s->credit) k = (size_t)s->credit;
    rh_tframe_encode(&s->tun->msg, RH_TF_DATA, s->id, NULL, 0); /* the header; the body follows */
    if (send_msg_with(s->tun, p + sent, k) < 0) break;
    s->credit -= k;
    s->tun->st.bytes_out += k;
    sent += k;
  }
  return sent;
}

static void send_end(rh_tstream *s) {
  rh_tframe_encode(&s->tun->msg, RH_TF_END, s->id, NULL, 0);
  send_msg(s->tun);
}

int rh_tstream_write(rh_tstream *s, const char *p, size_t n) {
  rh_tun *t = s->tun;
  if (s->over || !t || s->sent_end) return -1;
  size_t sent = s->pending.len ? 0 : send_data(s, p, n);
  if (sent < n) {
    rh_buf_append(&s->pending, p + sent, n - sent);
    t->st.buffered += n - sent;
  }
  if (s->credit && !s->pending.len) return 0;
  /* out of credit (with or without bytes left over): the source stops until WINDOW comes */
  if (!s->blocked_since) s->blocked_since = now(t);
  s->want_writable = 1;
  return 1;
}

int rh_tstream_end(rh_tstream *s) {
  if (s->over || !s->tun || s->sent_end) return -1;
  s->sent_end = 1;
  if (!s->pending.len) send_end(s); /* else it follows the pending bytes */
  check_done(s);
  return 0;
}

int rh_tstream_head(rh_tstream *s, int status, const char *reason, const rh_headers *h) {
  if (s->over || !s->tun) return -1;
  char st[16];
  snprintf(st, sizeof st, "%d", status);
  rh_tframe_encode_head(&s->tun->msg, s->id, st, reason, h);
  return send_msg(s->tun);
}

void rh_tstream_consumed(rh_tstream *s, size_t n) {
  if (s->over || !s->tun) return;
  s->unannounced += n;
  if (s->unannounced < WINDOW_ACK_AT) return;
  rh_tframe_encode_u32(&s->tun->msg, RH_TF_WINDOW, s->id, (uint32_t)s->unannounced, NULL);
  send_msg(s->tun);
  s->granted += s->unannounced;
  s->unannounced = 0;
}

rh_tstream *rh_tun_open(rh_tun *t, const char *method, const char *target, const rh_headers *h,
                        const rh_tstream_handlers *sh) {
  if (t->failed || t->freeing) return NULL;
  rh_tstream *s = stream_new(t, ++t->next_id);
  s->h = *sh;
  s->head_deadline = now(t) + t->o.head_timeout;
  rh_tframe_encode_head(&t->msg, s->id, method, target, h);
  if (send_msg(t) < 0) {
    set_over(s);
    s->released = 1; /* the caller never saw it */
    maybe_free(s);
    return NULL;
  }
  return s;
}

/* ---- input ---- */

static void fail_tunnel(rh_tun *t, int code, const char *reason) {
  if (t->failed) return;
  t->failed = 1;
  t->tr.on_fail(t->tr.ud, code, reason);
}

static void on_window(rh_tstream *s, uint32_t inc) {
  /* credit comes back for bytes sent: an honest peer never lifts it above the window, and a
   * peer that did would make us queue what it does not read */
  if (s->credit + inc > RH_TUN_WINDOW) {
    send_reset(s, RH_TR_FLOW, "WINDOW beyond the stream's window");
    fail_stream(s, RH_TR_FLOW, "peer granted credit beyond the stream's window");
    return;
  }
  s->credit += inc;
  if (s->pending.len) {
    size_t sent = send_data(s, s->pending.data, s->pending.len);
    rh_buf_consume(&s->pending, sent);
    if (s->tun) s->tun->st.buffered -= sent;
    if (s->pending.len) { /* progress, but still waiting: the stall clock starts over */
      if (s->tun && sent) s->blocked_since = now(s->tun);
      return;
    }
    if (s->sent_end) {
      send_end(s);
      if (check_done(s) || s->over) return;
    }
  }
  if (s->credit) s->blocked_since = 0;
  if (s->credit && s->want_writable) {
    s->want_writable = 0;
    CALL(s, on_writable);
    maybe_free(s);
  }
}

static void on_data(rh_tstream *s, const rh_tframe *f) {
  if (f->len > s->granted) {
    send_reset(s, RH_TR_FLOW, "peer sent over its window");
    fail_stream(s, RH_TR_FLOW, "peer sent over its window");
    return;
  }
  s->granted -= f->len;
  s->tun->st.bytes_in += f->len;
  if (s->released) { /* nobody reads it any more: keep the peer's credit flowing */
    rh_tstream_consumed(s, f->len);
    return;
  }
  CALL(s, on_data, f->payload, f->len);
  maybe_free(s);
}

static void on_head(rh_tun *t, rh_tstream *s, const rh_tframe *f) {
  char *a, *b;
  rh_headers h = RH_HEADERS_INIT;
  rh_tframe_head_parse(f, &a, &b, &h);
  if (!s) {
    s = stream_new(t, f->stream);
    t->tr.on_open(t->tr.ud, s, a, b, &h);
  } else {
    s->head_deadline = 0;
    CALL(s, on_head, a, b, &h);
    maybe_free(s);
  }
  free(a);
  free(b);
  rh_headers_free(&h);
}

static void on_end(rh_tstream *s) {
  s->got_end = 1;
  CALL(s, on_end);
  check_done(s);
}

static void send_pong(rh_tun *t, const char *payload) {
  t->pong_owed = 0;
  rh_tframe_encode(&t->msg, RH_TF_PONG, 0, payload, 8);
  send_msg(t);
}

/* A peer that sends PINGs and does not read the PONGs must not fill our memory with them: while
 * the transport is backed up, only the latest PING is remembered, answered once it drains. */
static void on_ping(rh_tun *t, const rh_tframe *f) {
  if (queued(t) <= RH_TUN_PONG_HOLD) {
    send_pong(t, f->payload);
    return;
  }
  t->st.pongs_held++;
  t->pong_owed = 1;
  memcpy(t->pong, f->payload, sizeof t->pong);
}

static void dispatch(rh_tun *t, const rh_tframe *f) {
  rh_tstream *s = f->stream ? find(t, f->stream) : NULL;
  if (f->type == RH_TF_HEAD && t->is_server && !s) return; /* reset meanwhile (or never ours) */
  if (f->type == RH_TF_HEAD && (t->is_server ? !s->head_deadline : s != NULL)) {
    fail_tunnel(t, 1002, t->is_server ? "second response HEAD on a stream" : "HEAD for a stream already open");
    return;
  }
  switch (f->type) {
  case RH_TF_HEAD: on_head(t, s, f); return;
  case RH_TF_PING: on_ping(t, f); return;
  default: if (!s) return; /* PONG, or a stream reset meanwhile */
  }
  switch (f->type) {
  case RH_TF_DATA: on_data(s, f); break;
  case RH_TF_END: on_end(s); break;
  case RH_TF_WINDOW: on_window(s, f->value); break;
  case RH_TF_RESET: {
    char reason[128];
    snprintf(reason, sizeof reason, "%.*s", (int)(f->len < 127 ? f->len : 127), f->payload);
    fail_stream(s, (int)f->value, reason);
    break;
  }
  default: break;
  }
}

/* Client: streams that waited on RH_TUN_CLIENT_QUEUE go on once the server has read enough. */
static void resume_held(rh_tun *t) {
  if (!t->held || t->failed || backed_up(t)) return;
  t->held = 0;
  rh_tstream *next;
  for (rh_tstream *s = t->streams; s; s = next) {
    next = s->next;
    if (s->pending.len || s->want_writable) on_window(s, 0);
  }
}

void rh_tun_touch(rh_tun *t) { t->last_rx = now(t); }

int rh_tun_input(rh_tun *t, const char *p, size_t n) {
  if (t->failed) return -1;
  t->last_rx = now(t);
  rh_tframe f;
  const char *why;
  if (rh_tframe_decode(p, n, &f, &why) < 0) {
    fail_tunnel(t, 1002, why);
    return -1;
  }
  dispatch(t, &f);
  resume_held(t);
  return t->failed ? -1 : 0;
}

/* ---- the timer: heartbeat, stalls, head timeouts ---- */

static rh_metric *m_closed;

static void close_over_bound(rh_tun *t) {
  char why[120];
  snprintf(why, sizeof why, "peer is not reading: %zu bytes queued, over the tunnel's bound of %zu",
           t->over_queued, bound(t));
  RH_LOG(RH_LOG_WARN, "tunnel_over_bound", RH_INT("queued", t->over_queued), RH_INT("bound", bound(t)),
         RH_INT("streams", t->st.streams_open));
  if (!m_closed) {
    static const char *reason[] = { "reason" };
    const char *err;
    m_closed = rh_metric_register(RH_COUNTER, "relayhost_tunnel_closed_total",
                                  "Tunnels closed by relayhost for breaking a bound", reason, 1, NULL, 0, &err);
  }
  if (m_closed) rh_metric_add(m_closed, (const char *[]){ "over_bound" }, 1);
  fail_tunnel(t, 1008, why);
}

static void tick(uv_timer_t *tm) {
  rh_tun *t = tm->data;
  double n = now(t);
  if (t->failed) return;
  if (t->over) {
    close_over_bound(t);
    return;
  }
  if (t->pong_owed && queued(t) <= RH_TUN_PONG_HOLD) send_pong(t, t->pong);
  resume_held(t);
  if (n - t->last_rx > 3 * t->o.ping_interval) {
    fail_tunnel(t, 1011, "heartbeat timeout");
    return;
  }
  if (n - t->last_ping >= t->o.ping_interval) {
    t->last_ping = n;
    if (t->tr.ping) {
      t->tr.ping(t->tr.ud);
    } else {
      char ping[8] = { 0 };
      memcpy(ping, &n, sizeof ping < sizeof n ? sizeof ping : sizeof n);
      rh_tframe_encode(&t->msg, RH_TF_PING, 0, ping, sizeof ping);
      send_msg(t);
    }
  }
  rh_tstream *s = t->streams;
  while (s) {
    rh_tstream *next = s->next;
    if (s->blocked_since && n - s->blocked_since > t->o.stall_timeout) {
      send_reset(s, RH_TR_STALLED, "peer stopped reading");
      fail_stream(s, RH_TR_STALLED, "peer stopped reading");
    } else if (s->head_deadline && n > s->head_deadline) {
      send_reset(s, RH_TR_CANCEL, "no response head in time");
      fail_stream(s, RH_TR_TIMEOUT, "no response from the relay client in time");
    }
    s = next;
  }
}

rh_tun *rh_tun_new(uv_loop_t *loop, int is_server, const rh_tun_transport *tr, const rh_tun_opts *o) {
  rh_tun *t = calloc(1, sizeof *t);
  if (!t) abort();
  t->loop = loop;
  t->tr = *tr;
  t->is_server = is_server;
  t->o.ping_interval = o && o->ping_interval > 0 ? o->ping_interval : 5;
  t->o.stall_timeout = o && o->stall_timeout > 0 ? o->stall_timeout : 60;
  t->o.head_timeout = o && o->head_timeout > 0 ? o->head_timeout : 60;
  t->last_rx = t->last_ping = now(t);
  uv_timer_init(loop, &t->timer);
  t->timer.data = t;
  double period = t->o.ping_interval < 1 ? t->o.ping_interval : 1;
  uv_timer_start(&t->timer, tick, (uint64_t)(period * 1000), (uint64_t)(period * 1000));
  return t;
}

static void timer_closed(uv_handle_t *h) {
  rh_tun *t = h->data;
  rh_buf_free(&t->msg);
  free(t);
}

void rh_tun_free(rh_tun *t, const char *why) {
  t->freeing = t->failed = 1;
  while (t->streams) fail_stream(t->streams, RH_TR_GONE, why);
  uv_close((uv_handle_t *)&t->timer, timer_closed);
}

void rh_tun_get_stats(const rh_tun *t, rh_tun_stats *st) { *st = t->st; }

const char *rh_tun_reset_name(int code) {
  static const char *names[] = { "?", "cancel", "refused", "upstream", "stalled", "flow", "protocol" };
  if (code >= 1 && code <= 6) return names[code];
  return code == RH_TR_TIMEOUT ? "timeout" : code == RH_TR_GONE ? "gone" : "unknown";
}
