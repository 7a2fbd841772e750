/* fuzz_ws_frames: core/ws (RFC 6455 over wslay) fed arbitrary bytes from the peer.
 *
 * Input: byte 0 = mode bits, byte 1 = split point, the rest = bytes from the peer.
 *   bit 0: this end is the server (else the client)
 *   bit 1: max_message 64 (else the default)
 *   bit 2: after the input, start the closing handshake ourselves (rh_ws_close 1000)
 *   bit 3: feed byte by byte (else in two pieces at the split point)
 *   bit 4: instead, the rest is an upgrade request's header lines ("Name: value\n", the first
 *          line the method) for rh_ws_check_upgrade / rh_ws_accept_key / rh_ws_accept_ok
 *   bit 5: wslay's context is given back at every frame boundary (rh_ws_rest_after(0)), so
 *          that frames straddle a fresh context (else it is kept, as within a busy second)
 *   bit 6: the transport reports twice the bound queued (a peer that reads nothing): after the
 *          first read the connection is paused, and a caller that feeds it more gets it failed
 *          1008
 * Handlers echo every message back with rh_ws_send (text "close…" also starts the closing
 * handshake, text "ping…" also sends a ping).
 *
 * Invariants (abort() on violation, besides ASan/UBSan/LSan):
 *  - messages delivered are text or binary, text is valid UTF-8, at most max_message bytes,
 *    NUL-terminated; a close delivered has a legal code (or 1005) and a UTF-8 reason <= 123 bytes;
 *  - rh_ws_feed returns -1 exactly when rh_ws_error says why, and a failed end stays failed;
 *  - everything this end writes is well-formed for its peer: frames masked iff this end is a
 *    client, RSV bits clear, known opcodes, control frames unfragmented and <= 125 bytes, at most
 *    one close frame and nothing after it; a second rh_ws of the other role, fed the output,
 *    never fails, and receives exactly the messages rh_ws_send accepted, in order;
 *  - rh_ws_utf8_valid agrees with a byte-by-byte reference decoder;
 *  - the fast reader (binary frames read by core/ws itself) and wslay alone (rh_ws_fast_read(0))
 *    deliver the same messages, and fail or close with the same code and reason. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf/buf.h"
#include "ws/ws.h"

#define FUZZ_TARGET "fuzz_ws_frames"
#include "check.h"

/* ---- reference UTF-8 check: decode, then reject overlongs, surrogates, > U+10FFFF ---- */

static int ref_utf8(const uint8_t *p, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint8_t c = p[i];
    uint32_t cp;
    size_t len;
    if (c < 0x80) { i++; continue; }
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
    else return 0;
    if (n - i < len) return 0;
    for (size_t k = 1; k < len; k++) {
      if ((p[i + k] & 0xC0) != 0x80) return 0;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    static const uint32_t min[5] = { 0, 0, 0x80, 0x800, 0x10000 };
    if (cp < min[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    i += len;
  }
  return 1;
}

static void check_utf8(const uint8_t *p, size_t n) {
  int got = rh_ws_utf8_valid((const char *)p, n), want = ref_utf8(p, n);
  if (got != want) FAIL("rh_ws_utf8_valid says %d, reference %d, for %zu bytes", got, want, n);
}

/* ---- the end under test ---- */

typedef struct {
  uint8_t *data;
  size_t len;
  int opcode;
} msg;

typedef struct {
  msg *items;
  size_t n, cap;
} msg_list;

static void list_add(msg_list *l, int opcode, const char *p, size_t n) {
  if (l->n == l->cap) {
    l->cap = l->cap ? l->cap * 2 : 8;
    l->items = realloc(l->items, l->cap * sizeof *l->items);
    if (!l->items) abort();
  }
  msg *m = &l->items[l->n++];
  m->data = malloc(n ? n : 1);
  if (!m->data) abort();
  if (n) memcpy(m->data, p, n);
  m->len = n;
  m->opcode = opcode;
}

static void list_free(msg_list *l) {
  for (size_t i = 0; i < l->n; i++) free(l->items[i].data);
  free(l->items);
  memset(l, 0, sizeof *l);
}

typedef struct {
  rh_ws *ws;
  size_t max_message;
  msg_list sent;     /* what rh_ws_send accepted (text/binary) */
  msg_list got;      /* every message delivered */
  int closes;        /* on_close calls */
  size_t queued;     /* what the transport reports it holds */
  int told_paused;   /* what rh_ws_read_paused said after the last read */
} end_state;

static size_t transport_queued(void *ud) { return ((end_state *)ud)->queued; }

static void on_message(void *ud, int opcode, const char *data, size_t len) {
  end_state *e = ud;
  if (opcode != RH_WS_TEXT && opcode != RH_WS_BINARY) FAIL("message with opcode %d", opcode);
  if (len > e->max_message) FAIL("message of %zu bytes over max_message %zu", len, e->max_message);
  if (data[len] != 0) FAIL("message not NUL-terminated");
  if (opcode == RH_WS_TEXT && !ref_utf8((const uint8_t *)data, len)) FAIL("text message not UTF-8");
  if (e->closes) FAIL("message after the peer's close");
  list_add(&e->got, opcode, data, len);
  if (rh_ws_send(e->ws, opcode, data, len) == 0) list_add(&e->sent, opcode, data, len);
  if (opcode == RH_WS_TEXT && len >= 4 && memcmp(data, "ping", 4) == 0)
    rh_ws_send(e->ws, RH_WS_PING, data, len > 125 ? 125 : len);
  if (opcode == RH_WS_TEXT && len >= 5 && memcmp(data, "close", 5) == 0)
    rh_ws_close(e->ws, 1000, "bye");
}

static int code_ok(int code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

static void on_close(void *ud, int code, const char *reason, size_t len) {
  end_state *e = ud;
  if (e->closes++) FAIL("on_close called twice");
  if (code != 1005 && !code_ok(code)) FAIL("close delivered with code %d", code);
  if (code == 1005 && len) FAIL("close without a code but with a reason");
  if (len > 123) FAIL("close reason of %zu bytes", len);
  if (!ref_utf8((const uint8_t *)reason, len)) FAIL("close reason not UTF-8");
  /* a handler may still try to send: it must be refused, not put after the close */
  rh_ws_send(e->ws, RH_WS_BINARY, "late", 4);
}

static int feed(end_state *e, const uint8_t *p, size_t n, rh_buf *out) {
  int was_failed = rh_ws_error(e->ws) != NULL;
  int overfed = n && e->told_paused && !was_failed && !rh_ws_close_received(e->ws) && !rh_ws_close_sent(e->ws);
  int rc = rh_ws_feed(e->ws, (const char *)p, n);
  const char *err = rh_ws_error(e->ws);
  if ((rc < 0) != (err != NULL)) FAIL("rh_ws_feed returned %d, error %s", rc, err ? err : "(none)");
  if (was_failed && !err) FAIL("a failed connection came back");
  if (overfed && (rc != -1 || rh_ws_close_sent(e->ws) != 1008))
    FAIL("fed while paused at twice the bound, yet rc %d close %d", rc, rh_ws_close_sent(e->ws));
  e->told_paused = rh_ws_read_paused(e->ws);
  if (e->queued && n && !e->told_paused) FAIL("not paused over the bound");
  rh_ws_output(e->ws, out);
  return rc;
}

/* ---- checking the output ---- */

/* Walks the frames this end wrote. */
static void walk_frames(const rh_buf *out, int from_server) {
  if (!out->len) return;
  const uint8_t *p = (const uint8_t *)out->data, *end = p + out->len;
  int closed = 0, in_fragmented = 0;
  while (p < end) {
    if (closed) FAIL("%zu bytes written after a close frame", (size_t)(end - p));
    if (end - p < 2) FAIL("truncated frame header");
    int fin = p[0] >> 7, rsv = (p[0] >> 4) & 7, op = p[0] & 15, masked = p[1] >> 7;
    uint64_t len = p[1] & 127;
    size_t hdr = 2;
    if (rsv) FAIL("frame with RSV bits %d", rsv);
    if (masked != !from_server) FAIL("frame from the %s %smasked", from_server ? "server" : "client", masked ? "" : "not ");
    if (len == 126) {
      if (end - p < 4) FAIL("truncated frame header");
      len = ((uint64_t)p[2] << 8) | p[3];
      hdr = 4;
    } else if (len == 127) {
      if (end - p < 10) FAIL("truncated frame header");
      len = 0;
      for (int i = 0; i < 8; i++) len = (len << 8) | p[2 + i];
      hdr = 10;
    }
    hdr += masked ? 4 : 0;
    if ((uint64_t)(end - p) < hdr || (uint64_t)(end - p) - hdr < len) FAIL("truncated frame");
    if (op & 8) {
      if (!fin) FAIL("fragmented control frame");
      if (len > 125) FAIL("control frame of %llu bytes", (unsigned long long)len);
      if (op != RH_WS_CLOSE && op != RH_WS_PING && op != RH_WS_PONG) FAIL("opcode %d", op);
      if (op == RH_WS_CLOSE) closed = 1;
    } else if (op == 0) {
      if (!in_fragmented) FAIL("continuation frame without a start");
      in_fragmented = !fin;
    } else if (op == RH_WS_TEXT || op == RH_WS_BINARY) {
      if (in_fragmented) FAIL("data frame inside a fragmented message");
      in_fragmented = !fin;
    } else {
      FAIL("opcode %d", op);
    }
    p += hdr + len;
  }
}

typedef struct {
  msg_list got;
  int close_code;
} peer_state;

static void peer_message(void *ud, int opcode, const char *data, size_t len) {
  list_add(&((peer_state *)ud)->got, opcode, data, len);
}

static void peer_close(void *ud, int code, const char *reason, size_t len) {
  (void)reason, (void)len;
  ((peer_state *)ud)->close_code = code;
}

static void check_output(end_state *e, int is_server, const rh_buf *out) {
  walk_frames(out, is_server);
  peer_state ps = { 0 };
  rh_ws_handlers h = { .on_message = peer_message, .on_close = peer_close, .ud = &ps };
  rh_ws *peer = rh_ws_new(!is_server, SIZE_MAX, &h);
  if (out->len) rh_ws_feed(peer, out->data, out->len);
  if (rh_ws_error(peer)) FAIL("the peer rejects what this end wrote: %s", rh_ws_error(peer));
  if (ps.got.n != e->sent.n) FAIL("%zu messages sent, the peer got %zu", e->sent.n, ps.got.n);
  for (size_t i = 0; i < ps.got.n; i++) {
    msg *a = &e->sent.items[i], *b = &ps.got.items[i];
    if (a->opcode != b->opcode || a->len != b->len || memcmp(a->data, b->data, a->len) != 0)
      FAIL("message %zu differs between what was sent and what the peer got", i);
  }
  int sent = rh_ws_close_sent(e->ws);
  if (ps.close_code && ps.close_code != sent)
    FAIL("the peer got close %d, this end says it sent %d", ps.close_code, sent);
  if (sent && !ps.close_code) FAIL("this end says it sent close %d, the peer got none", sent);
  rh_ws_free(peer);
  list_free(&ps.got);
}

/* ---- the handshake helpers ---- */

static int b64c(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

static void fuzz_handshake(const uint8_t *p, size_t n) {
  rh_headers h = RH_HEADERS_INIT;
  char method[32] = "";
  size_t line = 0;
  while (n) {
    const uint8_t *nl = memchr(p, '\n', n);
    size_t len = nl ? (size_t)(nl - p) : n;
    if (line++ == 0) {
      snprintf(method, sizeof method, "%.*s", (int)len, (const char *)p);
    } else {
      const uint8_t *colon = memchr(p, ':', len);
      size_t nlen = colon ? (size_t)(colon - p) : len;
      size_t voff = colon ? nlen + 1 : len;
      rh_headers_add(&h, (const char *)p, nlen, (const char *)p + voff, len - voff);
    }
    p += len + (nl != NULL);
    n -= len + (nl != NULL);
  }
  const char *why = NULL;
  int rc = rh_ws_check_upgrade(&h, method, &why);
  if ((rc == 0) != (why == NULL)) FAIL("rh_ws_check_upgrade %d with why %s", rc, why ? why : "(none)");
  if (rc == 0) {
    if (strcmp(method, "GET") != 0) FAIL("upgrade accepted for method %s", method);
    if (rh_headers_count(&h, "sec-websocket-key") != 1) FAIL("upgrade accepted without exactly one key");
    const rh_header *k = rh_headers_find(&h, "sec-websocket-key", NULL);
    const char *v = k->value;
    size_t vl = k->value_len;
    while (vl && (*v == ' ' || *v == '\t')) v++, vl--;
    while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) vl--;
    if (vl != 24 || v[22] != '=' || v[23] != '=') FAIL("upgrade accepted with a key of %zu bytes", vl);
    for (size_t i = 0; i < 22; i++)
      if (!b64c(v[i])) FAIL("upgrade accepted with a key that is not base64");
    char key[25], accept[29];
    memcpy(key, v, 24);
    key[24] = 0;
    if (rh_ws_accept_key(key, 24, accept) != 0) FAIL("rh_ws_accept_key failed");
    if (strlen(accept) != 28) FAIL("accept key of %zu characters", strlen(accept));
    if (!rh_ws_accept_ok(key, accept, 28)) FAIL("rh_ws_accept_ok refuses its own answer");
  }
  /* any value as a Sec-WebSocket-Accept: 0 or 1, never a crash */
  for (size_t i = 0; i < h.n; i++) {
    char key[25];
    rh_ws_client_key(key);
    if (rh_ws_accept_ok(key, h.items[i].value, h.items[i].value_len) != 0)
      FAIL("a random key accepted by an arbitrary value");
  }
  rh_headers_free(&h);
}

/* What one run ends with, for comparing the two readers. */
typedef struct {
  msg_list got;
  char error[128];
  int close_sent, close_received;
} outcome;

static void run(const uint8_t *data, size_t size, outcome *o) {
  uint8_t mode = data[0];
  int is_server = mode & 1;
  rh_ws_rest_after(mode & 32 ? 0 : 3600);
  size_t max_message = (mode & 2) ? 64 : 0;
  const uint8_t *in = data + 2;
  size_t n = size - 2;

  end_state e = { 0 };
  e.max_message = max_message ? max_message : RH_WS_MAX_MESSAGE_DEFAULT;
  if (mode & 64) e.queued = 2 * RH_WS_MAX_QUEUED_MIN;
  rh_ws_handlers h = { .on_message = on_message, .on_close = on_close, .ud = &e, .queued = transport_queued };
  e.ws = rh_ws_new(is_server, max_message, &h);
  rh_buf out = RH_BUF_INIT;
  rh_ws_output(e.ws, &out);
  if (mode & 8) {
    for (size_t i = 0; i < n; i++) feed(&e, in + i, 1, &out);
  } else {
    size_t cut = (size_t)data[1] * n / 255;
    feed(&e, in, cut, &out);
    feed(&e, in + cut, n - cut, &out);
  }
  feed(&e, in, 0, &out); /* an empty read changes nothing */
  if (mode & 4) {
    int may = !rh_ws_error(e.ws) && !rh_ws_close_sent(e.ws);
    int rc = rh_ws_close(e.ws, 1000, "done");
    if ((rc == 0) != may) FAIL("rh_ws_close returned %d (failed %d, close sent %d)", rc,
                                rh_ws_error(e.ws) != NULL, rh_ws_close_sent(e.ws));
    rh_ws_output(e.ws, &out);
  }
  if (rh_ws_want_close(e.ws) && !rh_ws_close_sent(e.ws)) FAIL("want_close without a close sent");
  if (rh_ws_error(e.ws) && !rh_ws_close_sent(e.ws)) FAIL("failed without a close frame");
  check_output(&e, is_server, &out);
  o->got = e.got;
  snprintf(o->error, sizeof o->error, "%s", rh_ws_error(e.ws) ? rh_ws_error(e.ws) : "");
  o->close_sent = rh_ws_close_sent(e.ws);
  o->close_received = rh_ws_close_received(e.ws);
  rh_ws_free(e.ws);
  rh_buf_free(&out);
  list_free(&e.sent);
}

static void same_outcome(const outcome *a, const outcome *b) {
  if (strcmp(a->error, b->error)) FAIL("fast reader failed with '%s', wslay alone with '%s'", a->error, b->error);
  if (a->close_sent != b->close_sent || a->close_received != b->close_received)
    FAIL("fast reader closes %d/%d, wslay alone %d/%d", a->close_sent, a->close_received, b->close_sent,
         b->close_received);
  if (a->got.n != b->got.n) FAIL("fast reader delivered %zu messages, wslay alone %zu", a->got.n, b->got.n);
  for (size_t i = 0; i < a->got.n; i++) {
    const msg *x = &a->got.items[i], *y = &b->got.items[i];
    if (x->opcode != y->opcode || x->len != y->len || memcmp(x->data, y->data, x->len) != 0)
      FAIL("message %zu differs between the fast reader and wslay alone", i);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  if (data[0] & 16) {
    fuzz_handshake(data + 2, size - 2);
    return 0;
  }
  check_utf8(data + 2, size - 2);
  check_utf8(data, size);
  outcome fast = { 0 }, slow = { 0 };
  run(data, size, &fast);
  rh_ws_fast_read(0);
  run(data, size, &slow);
  rh_ws_fast_read(1);
  same_outcome(&fast, &slow);
  list_free(&fast.got);
  list_free(&slow.got);
  return 0;
}
