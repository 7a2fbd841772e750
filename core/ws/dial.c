#include "ws/dial.h"

#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/collect.h"
#include "http/head.h"
#include "http/headers.h"
#include "buf/buf.h"
#include "ws/ws.h"

/* One handshake. Freed when its timer handle is closed. */
struct rh_ws_dial {
  uv_timer_t timer;
  rh_upconn_dialing *dial;
  rh_upconn *up;
  rh_buf head;
  char key[32];
  rh_collect parser;    /* collects into headers */
  llhttp_settings_t settings;
  rh_headers headers;
  int status, done;
  rh_ws_dial_cb cb;
  void *ud;
};

const char *rh_ws_dial_fields(rh_buf *b, const char *key) {
  rh_buf_puts(b, "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n");
  return rh_head_field(b, "Sec-WebSocket-Key", 17, key, strlen(key));
}

static void free_dial(uv_handle_t *h) {
  rh_ws_dial *d = h->data;
  rh_buf_free(&d->head);
  rh_headers_free(&d->headers);
  free(d);
}

/* Ends the handshake: the callback once (unless cancelled), then the memory. */
static void finish(rh_ws_dial *d, rh_upconn *u, const char *protocol, const char *rest, size_t n,
                   const char *err, int timed_out) {
  if (d->done) return;
  d->done = 1;
  uv_timer_stop(&d->timer);
  if (d->dial) rh_upconn_dial_cancel(d->dial);
  d->dial = NULL;
  if (!u && d->up) rh_upconn_close(d->up);
  d->up = NULL;
  if (u) rh_upconn_own(u, NULL, NULL, NULL);
  if (d->cb) d->cb(d->ud, u, protocol, rest, n, err, timed_out);
  uv_close((uv_handle_t *)&d->timer, free_dial);
}

static rh_ws_dial *of(llhttp_t *p) { return p->data; }

static int cb_headers_done(llhttp_t *p) {
  rh_ws_dial *d = of(p);
  d->status = p->status_code;
  return d->status == 101 ? 0 : HPE_USER;
}

static void accepted(rh_ws_dial *d, const char *rest, size_t n) {
  const rh_header *acc = rh_headers_find(&d->headers, "sec-websocket-accept", NULL);
  if (!acc || !rh_ws_accept_ok(d->key, acc->value, acc->value_len)) {
    finish(d, NULL, NULL, NULL, 0, "the server's Sec-WebSocket-Accept does not match", 0);
    return;
  }
  const rh_header *proto = rh_headers_find(&d->headers, "sec-websocket-protocol", NULL);
  char *protocol = proto ? strndup(proto->value, proto->value_len) : NULL;
  finish(d, d->up, protocol, rest, n, NULL, 0);
  free(protocol);
}

static void on_read(void *owner, const char *p, ssize_t n, const char *err) {
  rh_ws_dial *d = owner;
  if (n < 0) {
    finish(d, NULL, NULL, NULL, 0, err, 0);
    return;
  }
  llhttp_errno_t e = llhttp_execute(&d->parser.llhttp, p, (size_t)n);
  if (e == HPE_PAUSED_UPGRADE) {
    const char *at = llhttp_get_error_pos(&d->parser.llhttp);
    accepted(d, at, (size_t)(p + n - at));
  } else if (d->status && d->status != 101) { /* refused in on_headers_complete */
    char why[64];
    snprintf(why, sizeof why, "the server answered %d instead of 101", d->status);
    finish(d, NULL, NULL, NULL, 0, why, 0);
  } else if (rh_collect_over(&d->parser)) {
    finish(d, NULL, NULL, NULL, 0, "the server's handshake head is over 64 KiB", 0);
  } else if (e != HPE_OK) {
    finish(d, NULL, NULL, NULL, 0, llhttp_get_error_reason(&d->parser.llhttp), 0);
  }
}

static void dialed(void *ud, rh_upconn *u, const char *err) {
  rh_ws_dial *d = ud;
  d->dial = NULL;
  if (!u) {
    finish(d, NULL, NULL, NULL, 0, err, 0);
    return;
  }
  d->up = u;
  llhttp_settings_init(&d->settings);
  d->settings.on_header_field = rh_collect_on_field;
  d->settings.on_header_value = rh_collect_on_value;
  d->settings.on_header_field_complete = rh_collect_on_field_complete;
  d->settings.on_headers_complete = cb_headers_done;
  rh_collect_init(&d->parser, HTTP_RESPONSE, &d->settings, d, &d->headers);
  rh_upconn_own(u, d, on_read, NULL);
  rh_upconn_write(u, d->head.data, d->head.len);
}

static void on_timeout(uv_timer_t *t) {
  finish(t->data, NULL, NULL, NULL, 0, "handshake timeout", 1);
}

rh_ws_dial *rh_ws_dial_start(uv_loop_t *loop, const rh_upconn_target *t, const char *head, size_t head_len,
                             const char *key, double timeout, rh_ws_dial_cb cb, void *ud) {
  rh_ws_dial *d = calloc(1, sizeof *d);
  if (!d) abort();
  d->cb = cb;
  d->ud = ud;
  snprintf(d->key, sizeof d->key, "%s", key);
  rh_buf_append(&d->head, head, head_len);
  rh_headers_init(&d->headers);
  uv_timer_init(loop, &d->timer);
  d->timer.data = d;
  uv_timer_start(&d->timer, on_timeout, (uint64_t)((timeout > 0 ? timeout : 10) * 1000), 0);
  d->dial = rh_upconn_dial(loop, t, dialed, d);
  return d;
}

void rh_ws_dial_cancel(rh_ws_dial *d) {
  d->cb = NULL;
  finish(d, NULL, NULL, NULL, 0, NULL, 0);
}
