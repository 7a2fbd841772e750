/* ws_pass: WebSocket pass-through for proxy mounts. The upstream is dialled first (its
 * handshake carries the client's subprotocols and the mount's header policy); then the client
 * gets its 101 with the subprotocol the upstream picked, and messages flow both ways through a
 * wslay engine on each side, so both hops are checked and close codes carry across. If the
 * upstream cannot be had, the client still gets its 101 and then close 1011 with the reason
 * (the original's "Upstream WS error" / "Upstream WS timeout"). */
#include <stdlib.h>
#include <string.h>

#include "log/log.h"
#include "proxy/internal.h"
#include "net/upconn.h"
#include "ws/dial.h"
#include "ws/open.h"
#include "ws/ws.h"

/* One pass-through. Holds a reference on req and conf, the upstream connection and a timer;
 * freed once all three are let go and no write is in flight. */
typedef struct {
  rh_http_req *req;
  rh_proxy_conf *conf;
  rh_proxy_upstream up_info;
  rh_proxy_hooks hooks;
  int has_hooks;
  rh_upconn *up;
  rh_ws_dial *dial;          /* while the upstream handshake runs */
  uv_timer_t timer;          /* only to free the call from the loop, after every callback */
  int paused, ended, req_released; /* paused: neither side is read (see update_reading) */
  int counted;               /* in relayhost_websockets_open{side="proxy"} (ws/open.h) */
  char key[25];
  rh_buf head;
  char *protocol;            /* the subprotocol the upstream picked */
  rh_ws *client_ws, *up_ws;  /* set once the tunnel is up */
} wscall;


static void end_tunnel(wscall *c);

int rh_proxy_is_websocket(const rh_http_req *r) {
  const char *why;
  return rh_headers_has_token(&r->headers, "upgrade", "websocket") &&
         rh_ws_check_upgrade(&r->headers, r->method, &why) == 0;
}

static void log_ws(wscall *c, rh_log_level lv, const char *event, const char *error) {
  RH_LOG(lv, event, RH_STR("mount", c->up_info.mount), RH_STR("upstream", c->up_info.host_header),
         RH_STR("error", error), RH_STR("request_id", c->req ? c->req->id : NULL));
}

/* ---- the sockets ---- */

static size_t client_queued(void *ud) {
  wscall *c = ud;
  return c->req ? rh_http_queued(c->req) : 0;
}

static size_t up_queued(void *ud) {
  wscall *c = ud;
  return c->up ? c->up->queued : 0;
}

static int ws_paused(rh_ws *ws) { return ws && rh_ws_read_paused(ws); }

/* Each side's messages become the other side's output, and each side's pings its own: while
 * either side owes its peer more than its engine's bound, neither side is read. */
static void update_reading(wscall *c) {
  if (c->ended) return;
  int paused = ws_paused(c->client_ws) || ws_paused(c->up_ws);
  if (paused == c->paused) return;
  c->paused = paused;
  if (c->req) {
    if (paused) rh_http_pause_body(c->req);
    else rh_http_resume_body(c->req);
  }
  if (c->up) {
    if (paused) rh_upconn_pause(c->up);
    else rh_upconn_resume(c->up);
  }
}

static void up_written(void *owner, size_t queued) {
  (void)queued;
  update_reading(owner);
}

static void up_send(wscall *c, const char *p, size_t n) {
  if (c->up && n) rh_upconn_write(c->up, p, n);
}

/* What the engines want written goes out; a full queue holds both sides back. */
static void flush(wscall *c) {
  rh_buf out = RH_BUF_INIT;
  if (c->up_ws) {
    rh_ws_output(c->up_ws, &out);
    up_send(c, out.data, out.len);
    out.len = 0;
  }
  if (c->client_ws && c->req) {
    rh_ws_output(c->client_ws, &out);
    if (out.len) rh_http_write(c->req, out.data, out.len);
  }
  rh_buf_free(&out);
  if (c->client_ws && c->up_ws && rh_ws_want_close(c->client_ws) && rh_ws_want_close(c->up_ws))
    end_tunnel(c);
  else
    update_reading(c);
}

/* ---- relaying ---- */

static void client_message(void *ud, int opcode, const char *p, size_t n) {
  wscall *c = ud;
  rh_ws_send(c->up_ws, opcode, p, n);
}

/* A close from one side goes on to the other: its code and reason (cut to the 123 bytes a close
 * frame holds), or, for a close without a code (1005, which may not be sent), 1000 and none. */
static void pass_close(rh_ws *to, int code, const char *reason, size_t n, const char *none) {
  char r[124];
  snprintf(r, sizeof r, "%.*s", (int)(n < 123 ? n : 123), reason);
  rh_ws_close(to, code == 1005 ? 1000 : code, code == 1005 ? none : r);
}

static void client_close(void *ud, int code, const char *reason, size_t n) {
  pass_close(((wscall *)ud)->up_ws, code, reason, n, "");
}

static void up_message(void *ud, int opcode, const char *p, size_t n) {
  wscall *c = ud;
  rh_ws_send(c->client_ws, opcode, p, n);
}

/* The upstream's close code reaches the client; none at all reads as 1000 "Upstream closed". */
static void up_close(void *ud, int code, const char *reason, size_t n) {
  pass_close(((wscall *)ud)->client_ws, code, reason, n, "Upstream closed");
}

static void on_client_bytes(rh_http_req *r, const char *p, size_t n, void *ud) {
  (void)r;
  wscall *c = ud;
  if (!c->client_ws) return;
  if (rh_ws_feed(c->client_ws, p, n) < 0) {
    log_ws(c, RH_LOG_INFO, "websocket_client_error", rh_ws_error(c->client_ws));
    rh_ws_close(c->up_ws, 1001, "client protocol error");
  }
  flush(c);
}

static void on_client_drain(rh_http_req *r, void *ud) {
  (void)r;
  update_reading(ud);
}

static void release_req(wscall *c) {
  if (c->req_released) return;
  c->req_released = 1;
  c->req->events = NULL;
  c->req->ud = NULL;
  rh_http_req_release(c->req);
  c->req = NULL;
}

static void on_client_gone(rh_http_req *r, void *ud) {
  (void)r;
  wscall *c = ud;
  if (c->up_ws && !rh_ws_want_close(c->up_ws)) {
    rh_ws_close(c->up_ws, 1001, "client went away");
    flush(c);
  }
  release_req(c);
  end_tunnel(c);
}

static const rh_http_req_events client_events = { on_client_bytes, NULL, on_client_drain, on_client_gone };

/* ---- the handshake with the client ---- */

/* 101 to the client; with ok = 0 the tunnel exists only to say close 1011 why. */
static void accept_client(wscall *c, int ok, const char *why) {
  const rh_header *key = rh_headers_find(&c->req->headers, "sec-websocket-key", NULL);
  char accept[29];
  rh_ws_accept_key(key->value, key->value_len, accept);
  rh_headers h = RH_HEADERS_INIT;
  rh_headers_add(&h, "Upgrade", 7, "websocket", 9);
  rh_headers_add(&h, "Connection", 10, "Upgrade", 7);
  rh_headers_add(&h, "Sec-WebSocket-Accept", 20, accept, strlen(accept));
  if (ok && c->protocol) rh_headers_add(&h, "Sec-WebSocket-Protocol", 22, c->protocol, strlen(c->protocol));
  rh_ws_handlers ch = { .on_message = client_message, .on_close = client_close, .ud = c,
                        .queued = client_queued };
  c->client_ws = rh_ws_new(1, 0, &ch);
  int rc = rh_http_tunnel(c->req, 101, &h, &client_events, c);
  rh_headers_free(&h);
  if (rc < 0) return;
  c->counted = ok;
  if (ok) rh_ws_open_add("proxy", 1);
  if (!ok) {
    rh_ws_close(c->client_ws, 1011, why);
    rh_buf out = RH_BUF_INIT;
    rh_ws_output(c->client_ws, &out);
    rh_http_write(c->req, out.data, out.len);
    rh_buf_free(&out);
    end_tunnel(c);
  }
}

static void drop_upstream(wscall *c) {
  if (c->dial) { rh_ws_dial_cancel(c->dial); c->dial = NULL; }
  if (c->up) { rh_upconn_close(c->up); c->up = NULL; }
}

static void fail(wscall *c, const char *client_reason, const char *why) {
  log_ws(c, RH_LOG_WARN, "websocket_error", why);
  drop_upstream(c);
  if (c->req && !c->client_ws) accept_client(c, 0, client_reason);
  else end_tunnel(c);
}

/* ---- the upstream ---- */

static void upstream_bytes(wscall *c, const char *p, size_t n) {
  if (rh_ws_feed(c->up_ws, p, n) < 0) {
    log_ws(c, RH_LOG_WARN, "websocket_error", rh_ws_error(c->up_ws));
    rh_ws_close(c->client_ws, 1011, "Upstream WS error");
  }
  flush(c);
}

static void up_read(void *owner, const char *p, ssize_t n, const char *err) {
  wscall *c = owner;
  (void)err;
  if (n > 0) { upstream_bytes(c, p, (size_t)n); return; }
  if (!rh_ws_want_close(c->client_ws)) { /* gone without a close frame */
    rh_ws_close(c->client_ws, 1000, "Upstream closed");
    drop_upstream(c);
    flush(c);
    end_tunnel(c);
  } else {
    end_tunnel(c);
  }
}

/* The upstream said 101 (or could not be had): open the client's side either way. */
static void upstream_ready(void *ud, rh_upconn *u, const char *protocol, const char *rest, size_t n,
                           const char *err, int timed_out) {
  wscall *c = ud;
  c->dial = NULL;
  if (!u) {
    fail(c, timed_out ? "Upstream WS timeout" : "Upstream WS error", err);
    return;
  }
  c->up = u;
  if (protocol) c->protocol = strdup(protocol);
  rh_ws_handlers uh = { .on_message = up_message, .on_close = up_close, .ud = c, .queued = up_queued };
  c->up_ws = rh_ws_new(0, 0, &uh);
  rh_upconn_own(u, c, up_read, up_written);
  accept_client(c, 1, NULL);
  if (n && c->up_ws) rh_ws_feed(c->up_ws, rest, n);
  flush(c);
}

/* ---- lifetime ---- */

static void free_call(uv_handle_t *h) {
  wscall *c = h->data;
  rh_buf_free(&c->head);
  if (c->client_ws) rh_ws_free(c->client_ws);
  if (c->up_ws) rh_ws_free(c->up_ws);
  free(c->protocol);
  rh_proxy_conf_unref(c->conf);
  free(c);
}

/* Both sides are done (or one is gone): close gracefully and let go. */
static void end_tunnel(wscall *c) {
  if (c->ended) return;
  c->ended = 1;
  if (c->counted) rh_ws_open_add("proxy", -1);
  c->counted = 0;
  if (c->has_hooks && c->hooks.release) c->hooks.release(c->hooks.ud);
  c->has_hooks = 0;
  drop_upstream(c);
  if (c->req) {
    rh_http_finish(c->req); /* flushes what is queued, then closes */
    release_req(c);
  }
  uv_close((uv_handle_t *)&c->timer, free_call); /* frees c */
}

void rh_proxy_ws_start(rh_http_req *req, rh_proxy_conf *conf, const rh_proxy_hooks *hooks) {
  wscall *c = calloc(1, sizeof *c);
  if (!c) abort();
  c->req = req;
  c->conf = conf;
  rh_proxy_conf_ref(conf);
  rh_proxy_conf_upstream(conf, hooks, &c->up_info);
  if (hooks) { c->hooks = *hooks; c->has_hooks = 1; }
  uv_timer_init(uv_default_loop(), &c->timer);
  c->timer.data = c;
  req->events = &client_events; /* the upgrade request has no body to buffer */
  req->ud = c;
  rh_ws_client_key(c->key);
  char *body = NULL;
  int chunked;
  rh_headers fields = RH_HEADERS_INIT;
  int answer = rh_proxy_build_head(conf, req, c->has_hooks ? &c->hooks : NULL, c->up_info.host_header, c->key,
                                   &c->head, &chunked, &body, &fields);
  if (answer) {
    rh_proxy_early_answer(req, answer, body, &fields);
    rh_headers_free(&fields);
    end_tunnel(c);
    return;
  }
  /* a mount's upstreams are the services next to us: direct, whatever HTTPS_PROXY says */
  rh_upconn_target t = { .key = "websocket", .host = c->up_info.host, .port = c->up_info.port,
                         .tls = c->up_info.tls, .connect_timeout = c->up_info.connect_timeout };
  c->dial = rh_ws_dial_start(uv_default_loop(), &t, c->head.data, c->head.len, c->key, c->up_info.connect_timeout,
                             upstream_ready, c);
}
