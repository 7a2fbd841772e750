/* sse: channels of held event streams, a heartbeat timer, and fan-out writes. */
#include "sse/sse.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

typedef struct sse_chan sse_chan;

/* One held stream. Owns one reference on req; lives in its channel's list until it ends. */
typedef struct sse_stream {
  rh_http_req *req;
  uv_loop_t *loop;           /* the one the caller handed in: the clock of last_write */
  sse_chan *chan;
  struct sse_stream *prev, *next;
  double heartbeat, last_write;
  int slow;                  /* last write left the queue over high water; cleared by on_drain */
  int busy, gone;            /* inside our own write/finish; the connection closed meanwhile */
} sse_stream;

/* A channel owns its name; freed when its last stream leaves. */
struct sse_chan {
  char *name;
  sse_stream *streams;
  size_t n;
  sse_chan *next;
};

static sse_chan *chans;
static size_t total;
static uv_timer_t *tick;     /* malloc'd while any stream is held; freed by its close callback */

static double now_s(uv_loop_t *loop) { return (double)uv_now(loop) / 1000.0; }

static sse_chan *find_chan(const char *name) {
  for (sse_chan *c = chans; c; c = c->next)
    if (strcmp(c->name, name) == 0) return c;
  return NULL;
}

static sse_chan *get_chan(const char *name) {
  sse_chan *c = find_chan(name);
  if (c) return c;
  c = calloc(1, sizeof *c);
  if (!c || !(c->name = strdup(name))) abort();
  c->next = chans;
  chans = c;
  return c;
}

static void drop_chan(sse_chan *c) {
  sse_chan **pp = &chans;
  while (*pp && *pp != c) pp = &(*pp)->next;
  if (*pp) *pp = c->next;
  free(c->name);
  free(c);
}

static void free_tick(uv_handle_t *h) { free(h); }

/* Unlinks s and releases its request; the tick timer goes with the last stream. */
static void stream_end(sse_stream *s) {
  sse_chan *c = s->chan;
  if (s->prev) s->prev->next = s->next;
  else c->streams = s->next;
  if (s->next) s->next->prev = s->prev;
  if (--c->n == 0) drop_chan(c);
  s->req->events = NULL;
  s->req->ud = NULL;
  rh_http_req_release(s->req);
  free(s);
  if (--total == 0 && tick) {
    uv_timer_stop(tick);
    uv_close((uv_handle_t *)tick, free_tick);
    tick = NULL;
  }
}

/* A close inside our own write or finish only marks the stream: the caller ends it. */
static void on_abort(rh_http_req *req, void *ud) {
  (void)req;
  sse_stream *s = ud;
  if (s->busy) s->gone = 1;
  else stream_end(s);
}

static void on_drain(rh_http_req *req, void *ud) {
  (void)req;
  ((sse_stream *)ud)->slow = 0;
}

static const rh_http_req_events stream_events = { NULL, NULL, on_drain, on_abort };

/* Writes to one stream; a client that has not drained the previous write is dropped. Returns 1
 * when written, 0 when the stream ended (s is freed then). */
static int stream_write(sse_stream *s, const char *p, size_t n) {
  s->busy = 1;
  int rc = s->slow ? -1 : rh_http_write(s->req, p, n);
  if (rc < 0 && !s->gone && s->req->conn) rh_http_abort(s->req);
  s->busy = 0;
  if (rc < 0 || s->gone) {
    stream_end(s);
    return 0;
  }
  s->slow = rc == 1;
  s->last_write = now_s(s->loop);
  return 1;
}

/* Calls fn on every stream of channel (NULL: every channel); fn may end the stream it gets, so
 * the next ones are read before. Returns how many calls returned 1. */
typedef int (*stream_fn)(sse_stream *s, void *arg);
static size_t each_stream(const char *channel, stream_fn fn, void *arg) {
  size_t counted = 0;
  for (sse_chan *c = chans, *cn; c; c = cn) {
    cn = c->next; /* the channel may go with its last stream */
    if (channel && strcmp(c->name, channel) != 0) continue;
    for (sse_stream *s = c->streams, *sn; s; s = sn) {
      sn = s->next;
      counted += (size_t)fn(s, arg);
    }
  }
  return counted;
}

static int heartbeat_one(sse_stream *s, void *arg) {
  double now = *(double *)arg;
  if (s->heartbeat > 0 && now - s->last_write >= s->heartbeat) return stream_write(s, ":\n\n", 3);
  return 0;
}

static void on_tick(uv_timer_t *t) {
  double now = now_s(t->loop);
  each_stream(NULL, heartbeat_one, &now);
}

static void ensure_tick(uv_loop_t *loop) {
  if (tick) return;
  tick = malloc(sizeof *tick);
  if (!tick) abort();
  uv_timer_init(loop, tick);
  uv_unref((uv_handle_t *)tick);
  uv_timer_start(tick, on_tick, 250, 250);
}

int rh_sse_hold(uv_loop_t *loop, rh_http_req *req, const char *channel, const rh_headers *headers,
                const char *first, size_t first_len, double heartbeat) {
  rh_headers h = RH_HEADERS_INIT;
  for (size_t i = 0; headers && i < headers->n; i++)
    rh_headers_add(&h, headers->items[i].name, headers->items[i].name_len, headers->items[i].value,
                   headers->items[i].value_len);
  if (!rh_headers_find(&h, "content-type", NULL))
    rh_headers_add(&h, "Content-Type", 12, "text/event-stream", 17);
  rh_headers_add(&h, "Cache-Control", 13, "no-cache", 8);
  int rc = rh_http_start_held(req, 200, &h);
  rh_headers_free(&h);
  if (rc == 0 && first_len) rc = rh_http_write(req, first, first_len) < 0 ? -1 : 0;
  else if (rc == 0) rh_http_flush(req);
  if (rc < 0 || !req->conn) {
    if (req->conn) rh_http_abort(req);
    rh_http_req_release(req);
    return -1;
  }
  sse_stream *s = calloc(1, sizeof *s);
  if (!s) abort();
  s->req = req;
  s->heartbeat = heartbeat;
  s->loop = loop;
  s->last_write = now_s(loop);
  s->chan = get_chan(channel);
  s->next = s->chan->streams;
  if (s->next) s->next->prev = s;
  s->chan->streams = s;
  s->chan->n++;
  total++;
  req->events = &stream_events;
  req->ud = s;
  ensure_tick(loop);
  return 0;
}

typedef struct {
  const char *p;
  size_t n;
} event_bytes;

static int publish_one(sse_stream *s, void *arg) {
  const event_bytes *ev = arg;
  return stream_write(s, ev->p, ev->n);
}

size_t rh_sse_publish(const char *channel, const char *p, size_t n) {
  event_bytes ev = { p, n };
  return each_stream(channel, publish_one, &ev);
}

static int close_one(sse_stream *s, void *arg) {
  (void)arg;
  s->req->keep_alive = 0; /* the SDK reconnects on a fresh connection */
  s->busy = 1;            /* a close inside finish only marks it: we end it here */
  rh_http_finish(s->req);
  stream_end(s);
  return 1;
}

size_t rh_sse_close(const char *channel) { return each_stream(channel, close_one, NULL); }

size_t rh_sse_count(const char *channel) {
  if (!channel) return total;
  sse_chan *c = find_chan(channel);
  return c ? c->n : 0;
}
