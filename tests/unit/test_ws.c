/* Unit tests for core/ws: the handshake helpers (accept key, upgrade checks, client key), the
 * UTF-8 check, and a server rh_ws and a client rh_ws pumping bytes into each other in memory:
 * messages both ways, big and fragmented ones, ping/pong, the closing handshake, and every way
 * a peer can break the protocol (each answered with the right close code and a reason), and the
 * bound on what a connection owes a peer that does not read (ping floods, endless fragments).
 * Raw frames are built and parsed by hand here, independently of wslay. */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ws/ws.h"
#include "check.h"



#define S(s) (s), strlen(s)

/* ---- a peer: what its handlers saw ---- */

typedef struct {
  rh_ws *ws;
  int msgs, last_op, nul_ok;
  rh_buf last;
  int closes, close_code;
  char reason[128];
  size_t reason_len;
  int echo;          /* send every message back */
  int close_on_msg;  /* answer a message with a close 1000 "done" */
} peer;

static void on_message(void *ud, int op, const char *d, size_t n) {
  peer *p = ud;
  p->msgs++;
  p->last_op = op;
  p->last.len = 0;
  rh_buf_append(&p->last, d, n);
  p->nul_ok = d[n] == 0;
  if (p->echo) CHECK(rh_ws_send(p->ws, op, d, n) == 0);
  if (p->close_on_msg) CHECK(rh_ws_close(p->ws, 1000, "done") == 0);
}

static void on_close(void *ud, int code, const char *reason, size_t n) {
  peer *p = ud;
  p->closes++;
  p->close_code = code;
  p->reason_len = n < sizeof p->reason ? n : sizeof p->reason - 1;
  memcpy(p->reason, reason, p->reason_len);
  p->reason[p->reason_len] = 0;
}

static rh_ws *peer_open(peer *p, int is_server, size_t max) {
  memset(p, 0, sizeof *p);
  rh_ws_handlers h = { .on_message = on_message, .on_close = on_close, .ud = p };
  p->ws = rh_ws_new(is_server, max, &h);
  return p->ws;
}

static void peer_free(peer *p) {
  rh_ws_free(p->ws);
  rh_buf_free(&p->last);
}

static int last_is(const peer *p, int op, const void *d, size_t n) {
  return p->last_op == op && p->last.len == n && (n == 0 || memcmp(p->last.data, d, n) == 0);
}

/* Moves what `from` has to say into `to`, `piece` bytes per feed (0: all at once). Returns
 * how many bytes moved; *rc gets the last feed's result. */
static size_t move(rh_ws *from, rh_ws *to, size_t piece, int *rc) {
  rh_buf b = RH_BUF_INIT;
  rh_ws_output(from, &b);
  int r = 0;
  for (size_t off = 0; off < b.len;) {
    size_t n = piece && piece < b.len - off ? piece : b.len - off;
    r = rh_ws_feed(to, b.data + off, n);
    off += n;
  }
  if (rc) *rc = r;
  size_t moved = b.len;
  rh_buf_free(&b);
  return moved;
}

static void pump(rh_ws *a, rh_ws *b) {
  while (move(a, b, 0, NULL) + move(b, a, 0, NULL) > 0) {
  }
}

/* ---- raw frames ---- */

static const unsigned char test_mask[4] = { 0x37, 0xfa, 0x21, 0x3d };

static void frame_raw(rh_buf *b, unsigned char first, int masked, const void *p, size_t n) {
  unsigned char h[14];
  size_t hn = 0;
  h[hn++] = first;
  unsigned char m = masked ? 0x80 : 0;
  if (n < 126) {
    h[hn++] = m | (unsigned char)n;
  } else if (n < 65536) {
    h[hn++] = m | 126;
    h[hn++] = (unsigned char)(n >> 8);
    h[hn++] = (unsigned char)n;
  } else {
    h[hn++] = m | 127;
    for (int i = 7; i >= 0; i--) h[hn++] = (unsigned char)((uint64_t)n >> (8 * i));
  }
  if (masked) memcpy(h + hn, test_mask, 4), hn += 4;
  rh_buf_append(b, h, hn);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = ((const unsigned char *)p)[i];
    if (masked) c ^= test_mask[i % 4];
    rh_buf_append(b, &c, 1);
  }
}

static void frame(rh_buf *b, int fin, int op, int masked, const void *p, size_t n) {
  frame_raw(b, (unsigned char)((fin ? 0x80 : 0) | op), masked, p, n);
}

static void close_frame(rh_buf *b, int masked, int code, const char *reason, size_t rlen) {
  char pl[200];
  pl[0] = (char)(code >> 8);
  pl[1] = (char)code;
  memcpy(pl + 2, reason, rlen);
  frame(b, 1, RH_WS_CLOSE, masked, pl, 2 + rlen);
}

typedef struct {
  int fin, op, masked;
  rh_buf payload;
} parsed;

/* Parses the frame at *off in d[0..len); 1 if there was a whole one. */
static int parse(const char *d, size_t len, size_t *off, parsed *f) {
  const unsigned char *p = (const unsigned char *)d + *off;
  size_t avail = len - *off, hn = 2;
  if (avail < 2) return 0;
  f->fin = p[0] >> 7;
  f->op = p[0] & 15;
  f->masked = p[1] >> 7;
  uint64_t n = p[1] & 127;
  if (n == 126) {
    if (avail < 4) return 0;
    n = ((uint64_t)p[2] << 8) | p[3];
    hn = 4;
  } else if (n == 127) {
    if (avail < 10) return 0;
    n = 0;
    for (int i = 0; i < 8; i++) n = (n << 8) | p[2 + i];
    hn = 10;
  }
  const unsigned char *mask = p + hn;
  if (f->masked) hn += 4;
  if (avail < hn || avail - hn < n) return 0;
  f->payload.len = 0;
  for (uint64_t i = 0; i < n; i++) {
    unsigned char c = p[hn + i];
    if (f->masked) c ^= mask[i % 4];
    rh_buf_append(&f->payload, &c, 1);
  }
  *off += hn + n;
  return 1;
}

/* Takes ws's output and finds its close frame: 1 if there is one (code 1005 if it has none),
 * with *all_masked telling whether every frame was masked. */
static int take_close(rh_ws *ws, int *code, char reason[128], int *all_masked) {
  rh_buf b = RH_BUF_INIT;
  parsed f = { 0 };
  size_t off = 0;
  int found = 0, masked = 1;
  rh_ws_output(ws, &b);
  while (parse(b.data, b.len, &off, &f)) {
    masked &= f.masked;
    if (f.op == RH_WS_CLOSE) {
      found = 1;
      *code = f.payload.len >= 2 ? ((unsigned char)f.payload.data[0] << 8) |
                                       (unsigned char)f.payload.data[1]
                                 : 1005;
      size_t rl = f.payload.len > 2 ? f.payload.len - 2 : 0;
      memcpy(reason, f.payload.data + 2, rl);
      reason[rl] = 0;
    }
  }
  if (all_masked) *all_masked = masked;
  CHECK(off == b.len); /* nothing but whole frames */
  rh_buf_free(&f.payload);
  rh_buf_free(&b);
  return found;
}

/* Feeds raw bytes to a fresh server (max 1000), expecting it to fail with `code` and `why`. */
static void expect_server_failure(const rh_buf *raw, size_t piece, int code, const char *why) {
  peer s;
  peer_open(&s, 1, 1000);
  int r = 0;
  for (size_t off = 0; off < raw->len && r == 0;) {
    size_t n = piece && piece < raw->len - off ? piece : raw->len - off;
    r = rh_ws_feed(s.ws, raw->data + off, n);
    off += n;
  }
  CHECK(r == -1);
  CHECK(rh_ws_error(s.ws) && strcmp(rh_ws_error(s.ws), why) == 0);
  if (rh_ws_error(s.ws) && strcmp(rh_ws_error(s.ws), why) != 0)
    fprintf(stderr, "  error was: %s (want %s)\n", rh_ws_error(s.ws), why);
  CHECK(rh_ws_want_close(s.ws));
  CHECK(rh_ws_close_sent(s.ws) == code);
  int got = 0, masked = 1;
  char reason[128] = "";
  CHECK(take_close(s.ws, &got, reason, &masked));
  CHECK(got == code);
  CHECK(strcmp(reason, why) == 0);
  CHECK(!masked); /* a server never masks */
  CHECK(s.msgs == 0 && s.closes == 0);
  /* a failed connection takes nothing more and sends nothing more */
  CHECK(rh_ws_feed(s.ws, S("\x81\x80\0\0\0\0")) == -1);
  CHECK(rh_ws_send(s.ws, RH_WS_TEXT, S("x")) == -1);
  CHECK(rh_ws_close(s.ws, 1000, NULL) == -1);
  rh_buf out = RH_BUF_INIT;
  rh_ws_output(s.ws, &out);
  CHECK(out.len == 0);
  rh_buf_free(&out);
  peer_free(&s);
}

/* ---- handshake ---- */

/* RFC 6455 §1.3's example. */
static void test_accept_key(void) {
  test_name = "accept_key";
  char out[29];
  CHECK(rh_ws_accept_key(S("dGhlIHNhbXBsZSBub25jZQ=="), out) == 0);
  CHECK(strcmp(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0);
  CHECK(rh_ws_accept_ok("dGhlIHNhbXBsZSBub25jZQ==", S("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")));
  CHECK(rh_ws_accept_ok("dGhlIHNhbXBsZSBub25jZQ==", S(" s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\t")));
  CHECK(!rh_ws_accept_ok("dGhlIHNhbXBsZSBub25jZQ==", S("s3pPLMBiTxaQ9kYGzzhZRbK+xoo=")));
  CHECK(!rh_ws_accept_ok("dGhlIHNhbXBsZSBub25jZQ==", S("s3pPLMBiTxaQ9kYGzzhZRbK+xOo")));
  CHECK(!rh_ws_accept_ok("AAAAAAAAAAAAAAAAAAAAAA==", S("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")));
}

static void add(rh_headers *h, const char *name, const char *value) {
  rh_headers_add(h, S(name), S(value));
}

/* The RFC 6455 §1.3 request, minus whatever `skip` names, plus extra fields. */
static void upgrade_headers(rh_headers *h, const char *skip) {
#define KEEP(name) (!skip || strcmp(skip, name) != 0)
  rh_headers_init(h);
  add(h, "Host", "server.example.com");
  if (KEEP("Upgrade")) add(h, "Upgrade", "websocket");
  if (KEEP("Connection")) add(h, "Connection", "Upgrade");
  if (KEEP("Sec-WebSocket-Key")) add(h, "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
  add(h, "Origin", "http://example.com");
  if (KEEP("Sec-WebSocket-Version")) add(h, "Sec-WebSocket-Version", "13");
#undef KEEP
}

static void expect_bad(rh_headers *h, const char *method, const char *why_want) {
  const char *why = NULL;
  CHECK(rh_ws_check_upgrade(h, method, &why) == -1);
  CHECK(why && strcmp(why, why_want) == 0);
  if (why && strcmp(why, why_want) != 0) fprintf(stderr, "  why was: %s\n", why);
  rh_headers_free(h);
}

static void test_check_upgrade(void) {
  test_name = "check_upgrade";
  rh_headers h;
  const char *why = "unset";

  upgrade_headers(&h, NULL);
  CHECK(rh_ws_check_upgrade(&h, "GET", &why) == 0);
  CHECK(why == NULL);
  CHECK(rh_ws_check_upgrade(&h, "GET", NULL) == 0); /* why is optional */
  rh_headers_free(&h);

  /* tokens compare case-insensitively and may sit in lists; values may carry whitespace */
  rh_headers_init(&h);
  add(&h, "upgrade", "WebSocket");
  add(&h, "CONNECTION", "keep-alive, Upgrade");
  add(&h, "sec-websocket-key", " dGhlIHNhbXBsZSBub25jZQ== ");
  add(&h, "sec-websocket-version", " 13");
  CHECK(rh_ws_check_upgrade(&h, "GET", &why) == 0);
  rh_headers_free(&h);

  upgrade_headers(&h, NULL);
  expect_bad(&h, "POST", "method must be GET");
  upgrade_headers(&h, NULL);
  expect_bad(&h, "get", "method must be GET"); /* methods are case-sensitive */
  upgrade_headers(&h, NULL);
  expect_bad(&h, NULL, "method must be GET");
  upgrade_headers(&h, "Upgrade");
  expect_bad(&h, "GET", "missing Upgrade: websocket");
  upgrade_headers(&h, "Upgrade");
  add(&h, "Upgrade", "h2c");
  expect_bad(&h, "GET", "missing Upgrade: websocket");
  upgrade_headers(&h, "Connection");
  expect_bad(&h, "GET", "missing Connection: upgrade");
  upgrade_headers(&h, "Connection");
  add(&h, "Connection", "keep-alive");
  expect_bad(&h, "GET", "missing Connection: upgrade");
  upgrade_headers(&h, "Sec-WebSocket-Version");
  expect_bad(&h, "GET", "missing Sec-WebSocket-Version");
  upgrade_headers(&h, "Sec-WebSocket-Version");
  add(&h, "Sec-WebSocket-Version", "8");
  expect_bad(&h, "GET", RH_WS_WHY_VERSION);
  upgrade_headers(&h, "Sec-WebSocket-Version");
  add(&h, "Sec-WebSocket-Version", "13, 8");
  expect_bad(&h, "GET", "unsupported Sec-WebSocket-Version (want 13)");
  upgrade_headers(&h, NULL);
  add(&h, "Sec-WebSocket-Version", "13");
  expect_bad(&h, "GET", "repeated Sec-WebSocket-Version");
  upgrade_headers(&h, "Sec-WebSocket-Key");
  expect_bad(&h, "GET", "missing Sec-WebSocket-Key");
  upgrade_headers(&h, NULL);
  add(&h, "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
  expect_bad(&h, "GET", "repeated Sec-WebSocket-Key");
  static const char *bad_keys[] = {
    "",
    "dGhlIHNhbXBsZSBub25jZQ",        /* no padding */
    "dGhlIHNhbXBsZSBub25jZQ=",       /* short padding */
    "dGhlIHNhbXBsZSBub25j",          /* 15 bytes */
    "dGhlIHNhbXBsZSBub25jZQ==AA",    /* too long */
    "dGhlIHNhbXBsZSBub25jZ===",      /* padding inside */
    "dGhlIHNhbXBsZSBub2-jZQ==",      /* base64url is not base64 */
    "dGhlIHNhbXBsZSBub25jZQdh",      /* 18 bytes */
    "0123456789abcdef",              /* 16 bytes, not encoded */
  };
  for (size_t i = 0; i < sizeof bad_keys / sizeof *bad_keys; i++) {
    upgrade_headers(&h, "Sec-WebSocket-Key");
    add(&h, "Sec-WebSocket-Key", bad_keys[i]);
    expect_bad(&h, "GET", "invalid Sec-WebSocket-Key (want 16 bytes in base64)");
  }
}

static void test_client_key(void) {
  test_name = "client_key";
  char a[25], b[25];
  rh_ws_client_key(a);
  rh_ws_client_key(b);
  CHECK(strlen(a) == 24 && strlen(b) == 24);
  CHECK(strcmp(a, b) != 0);
  rh_headers h;
  upgrade_headers(&h, "Sec-WebSocket-Key");
  add(&h, "Sec-WebSocket-Key", a);
  CHECK(rh_ws_check_upgrade(&h, "GET", NULL) == 0); /* a server takes our keys */
  rh_headers_free(&h);
  char acc[29];
  CHECK(rh_ws_accept_key(S(a), acc) == 0);
  CHECK(rh_ws_accept_ok(a, S(acc)));
  CHECK(!rh_ws_accept_ok(b, S(acc)));
}

static void test_utf8(void) {
  test_name = "utf8";
  CHECK(rh_ws_utf8_valid(S("")));
  CHECK(rh_ws_utf8_valid(S("plain ASCII, long enough to take the eight-byte path")));
  CHECK(rh_ws_utf8_valid(S("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf")));
  CHECK(rh_ws_utf8_valid(S("\xed\x9f\xbf\xee\x80\x80"))); /* U+D7FF, U+E000 */
  CHECK(rh_ws_utf8_valid("a\0b", 3));                     /* NUL is a character */
  static const char *bad[] = {
    "\x80",             /* lone continuation */
    "\xc3",             /* truncated */
    "\xc3\x28",         /* bad continuation */
    "\xc0\x80",         /* overlong NUL */
    "\xc1\xbf",         /* overlong */
    "\xe0\x80\x80",     /* overlong */
    "\xe0\x9f\xbf",     /* overlong */
    "\xed\xa0\x80",     /* surrogate U+D800 */
    "\xed\xbf\xbf",     /* surrogate U+DFFF */
    "\xf0\x8f\xbf\xbf", /* overlong */
    "\xf4\x90\x80\x80", /* above U+10FFFF */
    "\xf5\x80\x80\x80",
    "\xfe",
    "\xff",
    "\xe2\x82",         /* truncated at the end */
    "abcdefgh\xf0\x9f\x98", /* truncated after the fast path */
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    CHECK(!rh_ws_utf8_valid(bad[i], strlen(bad[i])));
    if (rh_ws_utf8_valid(bad[i], strlen(bad[i]))) fprintf(stderr, "  bad[%zu] passed\n", i);
  }
}

/* ---- connections ---- */

static void test_messages(void) {
  test_name = "messages";
  peer c, s;
  peer_open(&c, 0, 0);
  peer_open(&s, 1, 0);

  CHECK(rh_ws_send(c.ws, RH_WS_TEXT, S("hello server")) == 0);
  rh_buf raw = RH_BUF_INIT;
  rh_ws_output(c.ws, &raw);
  size_t off = 0;
  parsed f = { 0 };
  CHECK(parse(raw.data, raw.len, &off, &f) && off == raw.len);
  CHECK(f.fin && f.op == RH_WS_TEXT && f.masked); /* clients mask */
  CHECK(rh_ws_feed(s.ws, raw.data, raw.len) == 0);
  CHECK(s.msgs == 1 && last_is(&s, RH_WS_TEXT, S("hello server")) && s.nul_ok);

  CHECK(rh_ws_send(s.ws, RH_WS_TEXT, S("hello client")) == 0);
  raw.len = 0;
  rh_ws_output(s.ws, &raw);
  off = 0;
  CHECK(parse(raw.data, raw.len, &off, &f) && !f.masked); /* servers do not */
  CHECK(rh_ws_feed(c.ws, raw.data, raw.len) == 0);
  CHECK(c.msgs == 1 && last_is(&c, RH_WS_TEXT, S("hello client")) && c.nul_ok);

  const char bin[] = { 0, 1, 2, (char)0xff, 0, (char)0x80 };
  CHECK(rh_ws_send(c.ws, RH_WS_BINARY, bin, sizeof bin) == 0);
  CHECK(rh_ws_send(s.ws, RH_WS_BINARY, bin, 3) == 0);
  pump(c.ws, s.ws);
  CHECK(s.msgs == 2 && last_is(&s, RH_WS_BINARY, bin, sizeof bin) && s.nul_ok);
  CHECK(c.msgs == 2 && last_is(&c, RH_WS_BINARY, bin, 3));

  /* empty messages, and several in one read */
  CHECK(rh_ws_send(c.ws, RH_WS_TEXT, "", 0) == 0);
  CHECK(rh_ws_send(c.ws, RH_WS_BINARY, NULL, 0) == 0);
  CHECK(rh_ws_send(c.ws, RH_WS_TEXT, S("third")) == 0);
  pump(c.ws, s.ws);
  CHECK(s.msgs == 5 && last_is(&s, RH_WS_TEXT, S("third")));

  /* a handler may send: an echo server */
  s.echo = 1;
  CHECK(rh_ws_send(c.ws, RH_WS_TEXT, S("caf\xc3\xa9")) == 0);
  CHECK(rh_ws_send(c.ws, RH_WS_BINARY, S("two")) == 0);
  pump(c.ws, s.ws);
  CHECK(c.msgs == 4 && last_is(&c, RH_WS_BINARY, S("two")));

  /* what may not be sent */
  CHECK(rh_ws_send(c.ws, RH_WS_TEXT, S("\xc3\x28")) == -1);
  CHECK(rh_ws_send(c.ws, RH_WS_CLOSE, S("")) == -1);
  CHECK(rh_ws_send(c.ws, 3, S("x")) == -1);
  CHECK(rh_ws_send(c.ws, 0, S("x")) == -1);
  char big[126];
  memset(big, 'p', sizeof big);
  CHECK(rh_ws_send(c.ws, RH_WS_PING, big, 126) == -1);
  CHECK(rh_ws_send(c.ws, RH_WS_PING, big, 125) == 0);
  CHECK(rh_ws_send(c.ws, RH_WS_PONG, big, 126) == -1);

  /* output appends to what the caller already holds */
  raw.len = 0;
  rh_buf_puts(&raw, "held");
  CHECK(rh_ws_send(s.ws, RH_WS_BINARY, S("z")) == 0);
  rh_ws_output(s.ws, &raw);
  CHECK(raw.len == 4 + 3 && memcmp(raw.data, "held\x82\x01z", 7) == 0);

  CHECK(rh_ws_error(c.ws) == NULL && rh_ws_error(s.ws) == NULL);
  CHECK(!rh_ws_want_close(c.ws) && !rh_ws_want_close(s.ws));
  CHECK(rh_ws_close_sent(c.ws) == 0 && rh_ws_close_received(c.ws) == 0);
  rh_buf_free(&f.payload);
  rh_buf_free(&raw);
  peer_free(&c);
  peer_free(&s);
}

static void test_big(void) {
  test_name = "big";
  peer c, s;
  const size_t mib = 1024 * 1024;
  peer_open(&c, 0, mib);
  peer_open(&s, 1, mib);
  char *m = malloc(mib);
  for (size_t i = 0; i < mib; i++) m[i] = (char)(i * 7 + (i >> 10));

  int rc = 0;
  CHECK(rh_ws_send(c.ws, RH_WS_BINARY, m, mib) == 0);
  CHECK(move(c.ws, s.ws, 1000, &rc) > mib && rc == 0); /* in odd pieces */
  CHECK(s.msgs == 1 && last_is(&s, RH_WS_BINARY, m, mib));

  CHECK(rh_ws_send(s.ws, RH_WS_BINARY, m, mib) == 0);
  CHECK(move(s.ws, c.ws, 0, &rc) > mib && rc == 0);
  CHECK(c.msgs == 1 && last_is(&c, RH_WS_BINARY, m, mib));

  /* the 16-bit length form, and text */
  memset(m, 'a', 70000);
  CHECK(rh_ws_send(c.ws, RH_WS_TEXT, m, 300) == 0);
  CHECK(rh_ws_send(c.ws, RH_WS_TEXT, m, 65535) == 0);
  CHECK(rh_ws_send(c.ws, RH_WS_TEXT, m, 65536) == 0);
  CHECK(move(c.ws, s.ws, 4093, &rc) > 0 && rc == 0);
  CHECK(s.msgs == 4 && last_is(&s, RH_WS_TEXT, m, 65536));
  CHECK(rh_ws_error(s.ws) == NULL && rh_ws_error(c.ws) == NULL);
  free(m);
  peer_free(&c);
  peer_free(&s);
}

/* A message sent in two parts is one frame whose payload is both, masked across the seam at
 * every phase of the mask (head lengths 0..5), in every length form; only binary may have a head. */
static void test_parts(void) {
  test_name = "parts";
  peer c, s;
  peer_open(&c, 0, 0);
  peer_open(&s, 1, 0);
  const size_t sizes[] = { 0, 1, 37, 120, 300, 65530, 70000 };
  char *m = malloc(70005);
  for (size_t i = 0; i < 70005; i++) m[i] = (char)(i * 13 + (i >> 9));
  int rc = 0, want = 0;
  for (size_t hl = 0; hl <= 5; hl++) {
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
      CHECK(rh_ws_send_parts(c.ws, RH_WS_BINARY, m, hl, m + hl, sizes[k]) == 0);
      CHECK(move(c.ws, s.ws, 999, &rc) > 0 && rc == 0);
      CHECK(s.msgs == ++want && last_is(&s, RH_WS_BINARY, m, hl + sizes[k]));
    }
  }
  CHECK(rh_ws_send_parts(s.ws, RH_WS_BINARY, m, 5, m + 5, 65536) == 0); /* unmasked, server to client */
  CHECK(move(s.ws, c.ws, 0, &rc) > 0 && rc == 0);
  CHECK(c.msgs == 1 && last_is(&c, RH_WS_BINARY, m, 65541));
  CHECK(rh_ws_send_parts(c.ws, RH_WS_TEXT, S("a"), S("b")) == -1);
  CHECK(rh_ws_send_parts(c.ws, RH_WS_PING, S("a"), S("b")) == -1);
  CHECK(rh_ws_error(s.ws) == NULL && rh_ws_error(c.ws) == NULL);
  free(m);
  peer_free(&c);
  peer_free(&s);
}

/* The mask key of the next frame a fresh client sends. */
static uint32_t next_key(void) {
  peer c;
  peer_open(&c, 0, 0);
  rh_buf b = RH_BUF_INIT;
  CHECK(rh_ws_send(c.ws, RH_WS_BINARY, "k", 1) == 0);
  rh_ws_output(c.ws, &b);
  uint32_t key = 0;
  CHECK(b.len == 7);
  if (b.len == 7) memcpy(&key, b.data + 2, 4);
  rh_buf_free(&b);
  peer_free(&c);
  return key;
}

/* Keys come from a pool: a forked worker must not send the keys its parent sends next. */
static void test_mask_keys_fork(void) {
  test_name = "mask keys after fork";
  uint32_t first = next_key(), second = next_key();
  CHECK(first != second);
  int fd[2];
  CHECK(pipe(fd) == 0);
  pid_t pid = fork();
  if (pid == 0) {
    uint32_t k = next_key();
    _exit(write(fd[1], &k, 4) == 4 ? 0 : 1);
  }
  uint32_t mine = next_key(), child = 0;
  CHECK(read(fd[0], &child, 4) == 4);
  waitpid(pid, NULL, 0);
  close(fd[0]);
  close(fd[1]);
  CHECK(mine != child);
}

static void test_fragmented(void) {
  test_name = "fragmented";
  rh_buf raw = RH_BUF_INIT, out = RH_BUF_INIT;
  frame(&raw, 0, RH_WS_TEXT, 1, S("Hel"));
  frame(&raw, 1, RH_WS_PING, 1, S("mid")); /* control frames may come between fragments */
  frame(&raw, 0, 0, 1, S("lo w\xc3"));     /* a character split across fragments */
  frame(&raw, 0, 0, 1, "", 0);
  frame(&raw, 1, 0, 1, S("\xb6rld"));
  frame(&raw, 0, RH_WS_BINARY, 1, S("ab"));
  frame(&raw, 1, 0, 1, S("c"));

  for (int piece = 0; piece <= 1; piece++) { /* all at once, then byte by byte */
    peer s;
    peer_open(&s, 1, 0);
    if (piece) {
      for (size_t i = 0; i < raw.len; i++) CHECK(rh_ws_feed(s.ws, raw.data + i, 1) == 0);
    } else {
      CHECK(rh_ws_feed(s.ws, raw.data, raw.len) == 0);
    }
    CHECK(s.msgs == 2 && last_is(&s, RH_WS_BINARY, S("abc")));
    out.len = 0;
    rh_ws_output(s.ws, &out);
    size_t off = 0;
    parsed f = { 0 };
    CHECK(parse(out.data, out.len, &off, &f) && off == out.len);
    CHECK(f.op == RH_WS_PONG && f.payload.len == 3 && memcmp(f.payload.data, "mid", 3) == 0);
    rh_buf_free(&f.payload);
    peer_free(&s);
  }

  /* the text message itself */
  peer s;
  peer_open(&s, 1, 0);
  raw.len = 0;
  frame(&raw, 0, RH_WS_TEXT, 1, S("Hel"));
  frame(&raw, 1, 0, 1, S("lo"));
  CHECK(rh_ws_feed(s.ws, raw.data, raw.len) == 0);
  CHECK(s.msgs == 1 && last_is(&s, RH_WS_TEXT, S("Hello")) && s.nul_ok);
  peer_free(&s);

  /* fragments that add up to exactly max_message are fine */
  peer_open(&s, 1, 10);
  raw.len = 0;
  frame(&raw, 0, RH_WS_BINARY, 1, S("12345"));
  frame(&raw, 1, 0, 1, S("67890"));
  CHECK(rh_ws_feed(s.ws, raw.data, raw.len) == 0);
  CHECK(s.msgs == 1 && last_is(&s, RH_WS_BINARY, S("1234567890")));
  peer_free(&s);
  rh_buf_free(&raw);
  rh_buf_free(&out);
}

static void test_ping(void) {
  test_name = "ping";
  peer c, s;
  peer_open(&c, 0, 0);
  peer_open(&s, 1, 0);
  CHECK(rh_ws_send(c.ws, RH_WS_PING, S("abc")) == 0);
  CHECK(move(c.ws, s.ws, 0, NULL) > 0);
  rh_buf out = RH_BUF_INIT;
  rh_ws_output(s.ws, &out);
  CHECK(out.len == 5 && memcmp(out.data, "\x8a\x03" "abc", 5) == 0); /* the pong, unmasked */
  CHECK(rh_ws_feed(c.ws, out.data, out.len) == 0);
  CHECK(c.msgs == 0 && s.msgs == 0); /* pings and pongs are not messages */

  /* the other way, and an empty ping */
  CHECK(rh_ws_send(s.ws, RH_WS_PING, NULL, 0) == 0);
  CHECK(move(s.ws, c.ws, 0, NULL) == 2);
  out.len = 0;
  rh_ws_output(c.ws, &out);
  CHECK(out.len == 6 && (unsigned char)out.data[0] == 0x8a && (unsigned char)out.data[1] == 0x80);
  CHECK(rh_ws_feed(s.ws, out.data, out.len) == 0);
  /* an unasked-for pong is fine */
  CHECK(rh_ws_send(c.ws, RH_WS_PONG, S("hb")) == 0);
  pump(c.ws, s.ws);
  CHECK(rh_ws_error(c.ws) == NULL && rh_ws_error(s.ws) == NULL);
  rh_buf_free(&out);
  peer_free(&c);
  peer_free(&s);
}

static void test_close_handshake(void) {
  test_name = "close_handshake";
  peer c, s;
  peer_open(&c, 0, 0);
  peer_open(&s, 1, 0);
  CHECK(rh_ws_send(s.ws, RH_WS_TEXT, S("in flight")) == 0);
  CHECK(rh_ws_close(c.ws, 1000, "bye") == 0);
  CHECK(rh_ws_close_sent(c.ws) == 1000);
  CHECK(!rh_ws_want_close(c.ws));
  CHECK(rh_ws_close(c.ws, 1000, "again") == -1);
  CHECK(rh_ws_send(c.ws, RH_WS_TEXT, S("late")) == -1);

  CHECK(move(c.ws, s.ws, 0, NULL) > 0);
  CHECK(s.closes == 1 && s.close_code == 1000 && strcmp(s.reason, "bye") == 0);
  CHECK(rh_ws_close_received(s.ws) == 1000 && rh_ws_close_sent(s.ws) == 1000); /* echoed */
  CHECK(rh_ws_want_close(s.ws));
  CHECK(rh_ws_send(s.ws, RH_WS_TEXT, S("too late")) == -1);
  CHECK(rh_ws_close(s.ws, 1001, NULL) == -1);

  CHECK(move(s.ws, c.ws, 0, NULL) > 0);
  CHECK(c.msgs == 1 && last_is(&c, RH_WS_TEXT, S("in flight"))); /* sent before the close */
  CHECK(c.closes == 1 && c.close_code == 1000 && strcmp(c.reason, "bye") == 0);
  CHECK(rh_ws_want_close(c.ws));
  CHECK(rh_ws_close_received(c.ws) == 1000);
  rh_buf out = RH_BUF_INIT;
  rh_ws_output(c.ws, &out);
  CHECK(out.len == 0); /* the client does not answer the echo */
  CHECK(rh_ws_feed(c.ws, S("\x81\x01x")) == 0); /* and reads nothing after it */
  CHECK(c.msgs == 1);
  CHECK(rh_ws_error(c.ws) == NULL && rh_ws_error(s.ws) == NULL);
  peer_free(&c);
  peer_free(&s);

  /* a server closes from inside a handler, without a reason; data sent before the close by
   * the client's echo handler still arrives in order */
  peer_open(&c, 0, 0);
  peer_open(&s, 1, 0);
  s.close_on_msg = 1;
  CHECK(rh_ws_send(c.ws, RH_WS_TEXT, S("please close")) == 0);
  pump(c.ws, s.ws);
  CHECK(c.closes == 1 && c.close_code == 1000 && strcmp(c.reason, "done") == 0);
  CHECK(s.closes == 1 && s.close_code == 1000);
  CHECK(rh_ws_want_close(c.ws) && rh_ws_want_close(s.ws));
  peer_free(&c);
  peer_free(&s);

  /* a message and a close in one read, answered by an echo handler: the echo goes first */
  peer_open(&s, 1, 0);
  s.echo = 1;
  rh_buf raw = RH_BUF_INIT;
  frame(&raw, 1, RH_WS_TEXT, 1, S("last words"));
  close_frame(&raw, 1, 1001, S("going"));
  CHECK(rh_ws_feed(s.ws, raw.data, raw.len) == 0);
  CHECK(s.msgs == 1 && s.closes == 1 && s.close_code == 1001 && strcmp(s.reason, "going") == 0);
  out.len = 0;
  rh_ws_output(s.ws, &out);
  size_t off = 0;
  parsed f = { 0 };
  CHECK(parse(out.data, out.len, &off, &f) && f.op == RH_WS_TEXT);
  CHECK(parse(out.data, out.len, &off, &f) && f.op == RH_WS_CLOSE && f.payload.len == 7 &&
        memcmp(f.payload.data, "\x03\xe9going", 7) == 0);
  CHECK(off == out.len && rh_ws_want_close(s.ws));
  peer_free(&s);

  /* a close without a code is echoed without one, and reported as 1005 */
  peer_open(&s, 1, 0);
  raw.len = 0;
  frame(&raw, 1, RH_WS_CLOSE, 1, "", 0);
  CHECK(rh_ws_feed(s.ws, raw.data, raw.len) == 0);
  CHECK(s.closes == 1 && s.close_code == 1005 && s.reason_len == 0);
  out.len = 0;
  rh_ws_output(s.ws, &out);
  CHECK(out.len == 2 && memcmp(out.data, "\x88\x00", 2) == 0);
  CHECK(rh_ws_close_sent(s.ws) == 1005 && rh_ws_close_received(s.ws) == 1005);
  CHECK(rh_ws_want_close(s.ws));
  peer_free(&s);

  /* codes newer than wslay's list (1012-1014) are accepted and echoed */
  peer_open(&c, 0, 0);
  raw.len = 0;
  close_frame(&raw, 0, 1012, S("restart"));
  CHECK(rh_ws_feed(c.ws, raw.data, raw.len) == 0);
  CHECK(c.closes == 1 && c.close_code == 1012 && strcmp(c.reason, "restart") == 0);
  int code = 0, masked = 0;
  char reason[128];
  CHECK(take_close(c.ws, &code, reason, &masked) && code == 1012 && masked);
  CHECK(rh_ws_want_close(c.ws) && rh_ws_error(c.ws) == NULL);
  peer_free(&c);

  /* a close reason with a multi-byte character, arriving a byte at a time */
  peer_open(&s, 1, 0);
  raw.len = 0;
  close_frame(&raw, 1, 4000, S("fin \xc3\xa9t\xc3\xa9"));
  for (size_t i = 0; i < raw.len; i++) CHECK(rh_ws_feed(s.ws, raw.data + i, 1) == 0);
  CHECK(s.closes == 1 && s.close_code == 4000 && strcmp(s.reason, "fin \xc3\xa9t\xc3\xa9") == 0);
  CHECK(take_close(s.ws, &code, reason, &masked) && code == 4000);
  peer_free(&s);

  /* what rh_ws_close refuses */
  peer_open(&c, 0, 0);
  CHECK(rh_ws_close(c.ws, 1005, NULL) == -1);
  CHECK(rh_ws_close(c.ws, 1006, NULL) == -1);
  CHECK(rh_ws_close(c.ws, 999, NULL) == -1);
  CHECK(rh_ws_close(c.ws, 5000, NULL) == -1);
  CHECK(rh_ws_close(c.ws, 0, "reason without code") == -1);
  char longr[125];
  memset(longr, 'r', 124);
  longr[124] = 0;
  CHECK(rh_ws_close(c.ws, 1000, longr) == -1);
  CHECK(rh_ws_close(c.ws, 1000, "\xc3\x28") == -1);
  longr[123] = 0;
  CHECK(rh_ws_close(c.ws, 4999, longr) == 0);
  CHECK(rh_ws_close_sent(c.ws) == 4999);
  peer_free(&c);

  rh_buf_free(&f.payload);
  rh_buf_free(&raw);
  rh_buf_free(&out);
}

static void test_too_big(void) {
  test_name = "too_big";
  peer c, s;
  peer_open(&c, 0, 0);
  peer_open(&s, 1, 1000);
  char m[1001];
  memset(m, 'x', sizeof m);
  CHECK(rh_ws_send(c.ws, RH_WS_BINARY, m, 1000) == 0);
  CHECK(rh_ws_send(c.ws, RH_WS_BINARY, m, 1001) == 0);
  int rc = 0;
  move(c.ws, s.ws, 0, &rc);
  CHECK(rc == -1);
  CHECK(s.msgs == 1); /* the first one fit */
  CHECK(rh_ws_error(s.ws) && strcmp(rh_ws_error(s.ws), "message too big") == 0);
  CHECK(rh_ws_want_close(s.ws) && rh_ws_close_sent(s.ws) == 1009);
  move(s.ws, c.ws, 0, &rc);
  CHECK(rc == 0);
  CHECK(c.closes == 1 && c.close_code == 1009 && strcmp(c.reason, "message too big") == 0);
  CHECK(rh_ws_want_close(c.ws));
  move(c.ws, s.ws, 0, &rc); /* the client's echo reaches a server that stopped reading */
  CHECK(rc == -1);
  peer_free(&c);
  peer_free(&s);

  /* fragments each small enough, together too big */
  rh_buf raw = RH_BUF_INIT;
  for (int i = 0; i < 3; i++) frame(&raw, 0, i ? 0 : RH_WS_TEXT, 1, m, 400);
  frame(&raw, 1, 0, 1, m, 1);
  expect_server_failure(&raw, 0, 1009, "message too big");
  expect_server_failure(&raw, 7, 1009, "message too big");
  /* a header announcing a huge frame fails with its first payload byte */
  raw.len = 0;
  rh_buf_append(&raw, "\x82\xff\x00\x00\x00\x01\x00\x00\x00\x00" "abcd" "x", 15);
  expect_server_failure(&raw, 0, 1009, "message too big");
  rh_buf_free(&raw);
}

static void test_bad_utf8(void) {
  test_name = "bad_utf8";
  rh_buf raw = RH_BUF_INIT;
  frame(&raw, 1, RH_WS_TEXT, 1, S("ok \xc3\x28"));
  expect_server_failure(&raw, 0, 1007, "invalid UTF-8 in text message");
  expect_server_failure(&raw, 1, 1007, "invalid UTF-8 in text message");
  /* a message that stops in the middle of a character */
  raw.len = 0;
  frame(&raw, 0, RH_WS_TEXT, 1, S("fine"));
  frame(&raw, 1, 0, 1, S("\xe2\x82"));
  expect_server_failure(&raw, 0, 1007, "invalid UTF-8 in text message");
  /* a surrogate in the second fragment */
  raw.len = 0;
  frame(&raw, 0, RH_WS_TEXT, 1, S("fine"));
  frame(&raw, 1, 0, 1, S("\xed\xa0\x80"));
  expect_server_failure(&raw, 0, 1007, "invalid UTF-8 in text message");
  /* binary messages may hold anything */
  peer s;
  peer_open(&s, 1, 0);
  raw.len = 0;
  frame(&raw, 1, RH_WS_BINARY, 1, S("\xc3\x28\xff"));
  CHECK(rh_ws_feed(s.ws, raw.data, raw.len) == 0 && s.msgs == 1);
  peer_free(&s);
  /* a close reason that is not UTF-8 */
  raw.len = 0;
  close_frame(&raw, 1, 1000, S("\xff"));
  expect_server_failure(&raw, 0, 1007, "invalid UTF-8 in close reason");
  rh_buf_free(&raw);
}

/* A whole close frame with a bad code and a reason that is not UTF-8 fails naming the reason, as
 * wslay reads it first (fuzz_ws_frames found the fast reader naming the code); a bad code alone
 * is named. */
static void test_bad_close(void) {
  test_name = "bad_close";
  rh_buf close = RH_BUF_INIT;
  frame(&close, 1, RH_WS_CLOSE, 1, S("\x90\xba\x8e\x8b"));
  expect_server_failure(&close, 0, 1007, "invalid UTF-8 in close reason");
  close.len = 0;
  frame(&close, 1, RH_WS_CLOSE, 1, S("\x90\xba" "ok"));
  expect_server_failure(&close, 0, 1002, "invalid close code");
  rh_buf_free(&close);
}

static void test_protocol_errors(void) {
  test_name = "protocol_errors";
  rh_buf raw = RH_BUF_INIT;

  frame(&raw, 1, RH_WS_TEXT, 0, S("unmasked")); /* clients must mask */
  expect_server_failure(&raw, 0, 1002, "protocol error");
  raw.len = 0;
  rh_buf_puts(&raw, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); /* garbage: 'G' sets reserved bits */
  expect_server_failure(&raw, 0, 1002, "protocol error");
  raw.len = 0;
  frame(&raw, 1, 0, 1, S("orphan")); /* a continuation with nothing to continue */
  expect_server_failure(&raw, 0, 1002, "protocol error");
  raw.len = 0;
  frame(&raw, 0, RH_WS_TEXT, 1, S("a"));
  frame(&raw, 1, RH_WS_TEXT, 1, S("b")); /* a new message before the last one ended */
  expect_server_failure(&raw, 0, 1002, "protocol error");
  raw.len = 0;
  frame(&raw, 1, 3, 1, S("x")); /* reserved data opcode */
  expect_server_failure(&raw, 0, 1002, "protocol error");
  raw.len = 0;
  frame(&raw, 1, 0xb, 1, S("x")); /* reserved control opcode */
  expect_server_failure(&raw, 0, 1002, "protocol error");
  raw.len = 0;
  frame_raw(&raw, 0x80 | 0x40 | RH_WS_TEXT, 1, S("x")); /* RSV1 without an extension */
  expect_server_failure(&raw, 0, 1002, "protocol error");
  raw.len = 0;
  close_frame(&raw, 1, 999, "", 0);
  expect_server_failure(&raw, 0, 1002, "invalid close code");
  raw.len = 0;
  close_frame(&raw, 1, 1005, "", 0); /* a code that must never be on the wire */
  expect_server_failure(&raw, 0, 1002, "invalid close code");
  raw.len = 0;
  frame(&raw, 1, RH_WS_CLOSE, 1, "\x03", 1);
  expect_server_failure(&raw, 0, 1002, "close frame with a 1-byte payload");

  /* malformed frame headers, which wslay's framing refuses outright */
  raw.len = 0;
  frame(&raw, 0, RH_WS_PING, 1, S("x")); /* a fragmented control frame */
  expect_server_failure(&raw, 0, 1002, "malformed frame");
  raw.len = 0;
  rh_buf_append(&raw, "\x89\xfe\x00\x7e", 4); /* a 126-byte ping */
  expect_server_failure(&raw, 0, 1002, "malformed frame");
  raw.len = 0;
  rh_buf_append(&raw, "\x82\xff\x80\x00\x00\x00\x00\x00\x00\x00", 10); /* length bit 63 */
  expect_server_failure(&raw, 0, 1002, "malformed frame");
  raw.len = 0;
  rh_buf_append(&raw, "\x82\xfe\x00\x05" "abcd" "hello", 13); /* length not in shortest form */
  expect_server_failure(&raw, 0, 1002, "malformed frame");
  expect_server_failure(&raw, 1, 1002, "malformed frame");

  /* a client refuses masked frames from a server, and its own close is masked */
  peer c;
  peer_open(&c, 0, 0);
  raw.len = 0;
  frame(&raw, 1, RH_WS_TEXT, 1, S("masked"));
  CHECK(rh_ws_feed(c.ws, raw.data, raw.len) == -1);
  CHECK(rh_ws_error(c.ws) && strcmp(rh_ws_error(c.ws), "protocol error") == 0);
  int code = 0, masked = 0;
  char reason[128];
  CHECK(take_close(c.ws, &code, reason, &masked) && code == 1002 && masked);
  CHECK(strcmp(reason, "protocol error") == 0);
  CHECK(rh_ws_want_close(c.ws) && c.msgs == 0);
  peer_free(&c);

  /* a failure after this end already sent its close: nothing more is sent */
  peer s;
  peer_open(&s, 1, 0);
  CHECK(rh_ws_close(s.ws, 1001, "leaving") == 0);
  CHECK(take_close(s.ws, &code, reason, &masked) && code == 1001);
  raw.len = 0;
  frame(&raw, 1, RH_WS_TEXT, 0, S("unmasked"));
  CHECK(rh_ws_feed(s.ws, raw.data, raw.len) == -1);
  CHECK(rh_ws_want_close(s.ws) && rh_ws_close_sent(s.ws) == 1001);
  rh_buf out = RH_BUF_INIT;
  rh_ws_output(s.ws, &out);
  CHECK(out.len == 0);
  rh_buf_free(&out);
  peer_free(&s);

  /* messages before the bad frame are delivered, and the pong for a ping before it is not
   * sent (only the close goes out after a failure) */
  peer_open(&s, 1, 0);
  raw.len = 0;
  frame(&raw, 1, RH_WS_TEXT, 1, S("good"));
  frame(&raw, 1, RH_WS_PING, 1, S("p"));
  rh_buf_append(&raw, "\xff\xff\xff", 3);
  CHECK(rh_ws_feed(s.ws, raw.data, raw.len) == -1);
  CHECK(s.msgs == 1 && last_is(&s, RH_WS_TEXT, S("good")));
  out.len = 0;
  rh_ws_output(s.ws, &out);
  size_t off = 0;
  parsed f = { 0 };
  CHECK(parse(out.data, out.len, &off, &f) && f.op == RH_WS_CLOSE && off == out.len);
  rh_buf_free(&f.payload);
  rh_buf_free(&out);
  peer_free(&s);
  rh_buf_free(&raw);
}

static void test_free_states(void) {
  test_name = "free_states";
  rh_ws_free(NULL);
  /* freeing with a message half reassembled and output not taken */
  peer s;
  peer_open(&s, 1, 0);
  rh_buf raw = RH_BUF_INIT;
  frame(&raw, 0, RH_WS_BINARY, 1, S("partial"));
  frame(&raw, 1, RH_WS_PING, 1, S("p"));
  rh_buf_append(&raw, "\x80\x85", 2); /* and a continuation header without its payload */
  CHECK(rh_ws_feed(s.ws, raw.data, raw.len) == 0);
  CHECK(rh_ws_send(s.ws, RH_WS_TEXT, S("unsent")) == 0);
  peer_free(&s);
  /* no handlers at all */
  rh_ws *ws = rh_ws_new(1, 0, NULL);
  raw.len = 0;
  frame(&raw, 1, RH_WS_TEXT, 1, S("nobody listens"));
  close_frame(&raw, 1, 1000, "", 0);
  CHECK(rh_ws_feed(ws, raw.data, raw.len) == 0);
  CHECK(rh_ws_want_close(ws));
  rh_ws_free(ws);
  rh_buf_free(&raw);
}

static uint32_t rng = 12345;
static uint32_t rnd(void) { /* xorshift: the same "random" input on every run */
  rng ^= rng << 13;
  rng ^= rng >> 17;
  rng ^= rng << 5;
  return rng;
}

/* Random messages both ways, cut into random pieces: every one arrives whole, in order. */
static void test_random_splits(void) {
  test_name = "random_splits";
  peer c, s;
  peer_open(&c, 0, 0);
  peer_open(&s, 1, 0);
  char m[3000];
  for (int round = 0; round < 300; round++) {
    size_t n = rnd() % sizeof m;
    for (size_t i = 0; i < n; i++) m[i] = (char)(rnd() & 0x7f); /* ASCII: valid text too */
    int op = rnd() % 2 ? RH_WS_TEXT : RH_WS_BINARY;
    peer *to = round % 2 ? &s : &c;
    rh_ws *from = round % 2 ? c.ws : s.ws;
    int before = to->msgs, rc = 0;
    CHECK(rh_ws_send(from, op, m, n) == 0);
    if (rnd() % 3 == 0) CHECK(rh_ws_send(from, RH_WS_PING, S("x")) == 0);
    move(from, to->ws, 1 + rnd() % 200, &rc);
    CHECK(rc == 0);
    CHECK(to->msgs == before + 1 && last_is(to, op, m, n));
    pump(c.ws, s.ws); /* the pongs */
  }
  CHECK(rh_ws_error(c.ws) == NULL && rh_ws_error(s.ws) == NULL);
  peer_free(&c);
  peer_free(&s);
}

/* Random bytes never crash or leak; whenever they fail a connection, a close goes out. */
static void test_garbage(void) {
  test_name = "garbage";
  char g[512];
  for (int round = 0; round < 2000; round++) {
    peer p;
    peer_open(&p, round % 2, 300);
    size_t n = rnd() % sizeof g;
    for (size_t i = 0; i < n; i++) g[i] = (char)rnd();
    if (n && rnd() % 2) g[0] = (char)(0x80 | (rnd() % 3)); /* a plausible first header byte */
    if (n > 1 && rnd() % 2) g[1] = (char)((g[1] & 0x80) | (rnd() % 130));
    int r = 0;
    for (size_t off = 0; off < n && r == 0;) {
      size_t k = 1 + rnd() % 64;
      if (k > n - off) k = n - off;
      r = rh_ws_feed(p.ws, g + off, k);
      off += k;
    }
    if (r == -1) {
      int code = 0;
      char reason[128];
      CHECK(rh_ws_error(p.ws) != NULL && rh_ws_want_close(p.ws));
      CHECK(take_close(p.ws, &code, reason, NULL));
      CHECK(code == 1002 || code == 1007 || code == 1009);
    }
    peer_free(&p);
  }
}

/* ---- backpressure: what a connection owes its peer is bounded ---- */

/* A transport whose peer reads nothing: every byte handed to it stays queued. */
typedef struct {
  size_t queued;
} transport;

static size_t transport_queued(void *ud) { return ((transport *)ud)->queued; }

static rh_ws *open_over(transport *t) {
  t->queued = 0;
  rh_ws_handlers h = { .ud = t, .queued = transport_queued };
  return rh_ws_new(1, 0, &h);
}

/* The caller's half: what the engine has goes to the transport. */
static void take_output(rh_ws *ws, transport *t) {
  rh_buf b = RH_BUF_INIT;
  rh_ws_output(ws, &b);
  t->queued += b.len;
  rh_buf_free(&b);
}

/* Feeds 125-byte pings one read (`per_feed` of them) at a time until the engine says to stop
 * reading; returns the feeds it took (0 if it never said so within `max_feeds`). */
static int ping_until_paused(rh_ws *ws, transport *t, int per_feed, int max_feeds) {
  char pl[125];
  memset(pl, 'p', sizeof pl);
  rh_buf in = RH_BUF_INIT;
  for (int i = 0; i < per_feed; i++) frame(&in, 1, RH_WS_PING, 1, pl, sizeof pl);
  int feeds = 0;
  while (feeds < max_feeds) {
    feeds++;
    CHECK(rh_ws_feed(ws, in.data, in.len) == 0);
    if (t) take_output(ws, t);
    if (rh_ws_read_paused(ws)) break;
  }
  rh_buf_free(&in);
  return feeds < max_feeds ? feeds : 0;
}

/* A ping flood whose pongs are never read: the engine says stop just past the bound, and
 * read again only once the backlog is down to a quarter of it. */
static void test_ping_flood_pauses(void) {
  test_name = "ping_flood_pauses";
  transport t;
  rh_ws *ws = open_over(&t);
  CHECK(!rh_ws_read_paused(ws));
  int feeds = ping_until_paused(ws, &t, 100, 1000);
  REQUIRE(feeds > 0);
  CHECK(t.queued > RH_WS_MAX_QUEUED_DEFAULT && t.queued <= RH_WS_MAX_QUEUED_DEFAULT + 100 * 127);
  CHECK(rh_ws_backlog(ws) == t.queued);
  t.queued = RH_WS_MAX_QUEUED_DEFAULT / 2; /* the peer read some: not enough */
  CHECK(rh_ws_read_paused(ws));
  t.queued = RH_WS_MAX_QUEUED_DEFAULT / 4;
  CHECK(!rh_ws_read_paused(ws));
  CHECK(rh_ws_error(ws) == NULL);
  rh_ws_free(ws);
}

/* Without a transport count, what the caller has not taken counts; and the caller's own
 * messages count as much as the automatic replies. */
static void test_own_output_counts(void) {
  test_name = "own_output_counts";
  rh_ws *ws = rh_ws_new(1, 0, NULL);
  CHECK(ping_until_paused(ws, NULL, 100, 1000) > 0);
  CHECK(rh_ws_backlog(ws) > RH_WS_MAX_QUEUED_DEFAULT);
  rh_buf b = RH_BUF_INIT;
  rh_ws_output(ws, &b);
  rh_buf_free(&b);
  CHECK(!rh_ws_read_paused(ws));
  size_t n = RH_WS_MAX_QUEUED_DEFAULT + 1;
  char *big = calloc(1, n);
  CHECK(rh_ws_send(ws, RH_WS_BINARY, big, n) == 0);
  CHECK(rh_ws_read_paused(ws));
  free(big);
  rh_ws_free(ws);
}

/* The bound can be raised, not lowered below the floor. */
static void test_max_queued(void) {
  test_name = "max_queued";
  transport t;
  rh_ws *ws = open_over(&t);
  rh_ws_set_max_queued(ws, 1000);
  t.queued = RH_WS_MAX_QUEUED_MIN;
  CHECK(!rh_ws_read_paused(ws));
  t.queued++;
  CHECK(rh_ws_read_paused(ws));
  rh_ws_set_max_queued(ws, 4 * RH_WS_MAX_QUEUED_MIN);
  t.queued = 2 * RH_WS_MAX_QUEUED_MIN; /* still paused: not yet down to a quarter */
  CHECK(rh_ws_read_paused(ws));
  t.queued = RH_WS_MAX_QUEUED_MIN;
  CHECK(!rh_ws_read_paused(ws));
  t.queued = 4 * RH_WS_MAX_QUEUED_MIN;
  CHECK(!rh_ws_read_paused(ws));
  rh_ws_free(ws);
}

/* A caller that feeds a paused connection anyway: failed with 1008 at twice the bound, and
 * nothing more is read. */
static void test_overfed_fails_1008(void) {
  test_name = "overfed_fails_1008";
  transport t;
  rh_ws *ws = open_over(&t);
  REQUIRE(ping_until_paused(ws, &t, 100, 1000) > 0);
  char pl[125];
  memset(pl, 'p', sizeof pl);
  rh_buf in = RH_BUF_INIT;
  for (int i = 0; i < 100; i++) frame(&in, 1, RH_WS_PING, 1, pl, sizeof pl);
  int rc = 0, feeds = 0;
  while (rc == 0 && feeds++ < 1000) {
    rc = rh_ws_feed(ws, in.data, in.len);
    if (rc == 0) take_output(ws, &t);
  }
  CHECK(rc == -1);
  CHECK(t.queued >= 2 * RH_WS_MAX_QUEUED_DEFAULT && t.queued < 2 * RH_WS_MAX_QUEUED_DEFAULT + 100 * 127);
  CHECK(rh_ws_error(ws) && strcmp(rh_ws_error(ws), "peer does not read: outgoing queue full") == 0);
  CHECK(rh_ws_want_close(ws) && rh_ws_close_sent(ws) == 1008);
  int code = 0;
  char reason[128];
  CHECK(take_close(ws, &code, reason, NULL) && code == 1008);
  CHECK(rh_ws_feed(ws, in.data, in.len) == -1);
  rh_buf b = RH_BUF_INIT;
  rh_ws_output(ws, &b);
  CHECK(b.len == 0); /* no more pongs */
  rh_buf_free(&b);
  rh_buf_free(&in);
  rh_ws_free(ws);
}

/* Tiny frames and a fragmented message without end: empty continuations cost nothing, and
 * the message is refused 1009 at max_message. */
static void test_endless_fragments(void) {
  test_name = "endless_fragments";
  peer p;
  peer_open(&p, 1, 10000);
  rh_buf in = RH_BUF_INIT;
  frame(&in, 0, RH_WS_TEXT, 1, S("start"));
  for (int i = 0; i < 10000; i++) frame(&in, 0, 0, 1, "", 0);
  CHECK(rh_ws_feed(p.ws, in.data, in.len) == 0 && rh_ws_backlog(p.ws) == 0);
  in.len = 0;
  char chunk[1000];
  memset(chunk, 'f', sizeof chunk);
  int rc = 0;
  for (int i = 0; i < 20 && rc == 0; i++) {
    in.len = 0;
    frame(&in, 0, 0, 1, chunk, sizeof chunk);
    rc = rh_ws_feed(p.ws, in.data, in.len);
  }
  int code = 0;
  char reason[128];
  CHECK(rc == -1 && take_close(p.ws, &code, reason, NULL) && code == 1009);
  CHECK(p.msgs == 0);
  rh_buf_free(&in);
  peer_free(&p);
}

/* A held connection whose only traffic is the pong to a ping now and then keeps no wslay context
 * (8.8 KB) from that pong to the next (issue 17). mallinfo2 sees glibc's heap; under ASan it sees
 * nothing, and then only the pong's being taken is checked. */
static void test_pong_rests(void) {
  test_name = "pong rests";
  peer s;
  peer_open(&s, 1, 0);
  rh_buf pong = RH_BUF_INIT;
  frame(&pong, 1, RH_WS_PONG, 1, NULL, 0);
  size_t before = mallinfo2().uordblks;
  CHECK(rh_ws_feed(s.ws, pong.data, pong.len) == 0);
  CHECK(mallinfo2().uordblks < before + 1024);
  CHECK(rh_ws_error(s.ws) == NULL && s.msgs == 0);
  rh_buf_free(&pong);
  peer_free(&s);
}

/* A held connection's pings and pongs are answered without a wslay context: even where a busy
 * connection would keep one (rest_after an hour, the second read right after the first), a pong,
 * then another pong and a ping, leave less than 1 KB behind (a context is 8.8 KB), and the ping's
 * pong carries its payload; the peer's close is echoed. Run with the fast reader on only. */
static void test_control_no_context(void) {
  test_name = "control frames without a context";
  rh_ws_rest_after(3600);
  peer s;
  peer_open(&s, 1, 0);
  rh_buf in = RH_BUF_INIT, out = RH_BUF_INIT;
  frame(&in, 1, RH_WS_PONG, 1, NULL, 0);
  CHECK(rh_ws_feed(s.ws, in.data, in.len) == 0);
  size_t before = mallinfo2().uordblks;
  in.len = 0;
  frame(&in, 1, RH_WS_PONG, 1, S("x"));
  frame(&in, 1, RH_WS_PING, 1, S("hello")); /* a ping as the last frame of a read */
  CHECK(rh_ws_feed(s.ws, in.data, in.len) == 0);
  rh_ws_output(s.ws, &out);
  CHECK(mallinfo2().uordblks < before + 1024 + out.cap);
  CHECK(out.len == 7 && memcmp(out.data, "\x8a\x05hello", 7) == 0);
  /* the peer's close, whole, is echoed with its code and reason */
  in.len = 0;
  out.len = 0;
  frame(&in, 1, RH_WS_CLOSE, 1, S("\x03\xe8" "bye"));
  CHECK(rh_ws_feed(s.ws, in.data, in.len) == 0);
  rh_ws_output(s.ws, &out);
  CHECK(s.closes == 1 && s.close_code == 1000 && strcmp(s.reason, "bye") == 0);
  CHECK(out.len == 7 && memcmp(out.data, "\x88\x05\x03\xe8" "bye", 7) == 0 && rh_ws_want_close(s.ws));
  rh_buf_free(&in);
  rh_buf_free(&out);
  peer_free(&s);
  rh_ws_rest_after(1.0);
}

/* Binary messages are read by core/ws itself (rh_ws_fast_read), unmasked a word at a time:
 * fragments of every length modulo the mask and the word, a ping between them, any split; and a
 * data frame that breaks into a fragmented binary message fails the connection, as wslay fails
 * one that breaks into a text message. */
static void test_binary_fragments(void) {
  test_name = "binary_fragments";
  unsigned char m[400];
  for (size_t i = 0; i < sizeof m; i++) m[i] = (unsigned char)(i * 13 + 5);
  rh_buf raw = RH_BUF_INIT;
  size_t off = 0;
  for (size_t len = 0; len < 20; off += len++) {
    frame(&raw, 0, len ? 0 : RH_WS_BINARY, 1, m + off, len);
    if (len == 7) frame(&raw, 1, RH_WS_PING, 1, S("p"));
  }
  frame(&raw, 1, 0, 1, m + off, 150); /* the 16-bit length form */
  off += 150;
  static const size_t pieces[] = { 0, 1, 3, 5, 64 };
  for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++) {
    peer s;
    peer_open(&s, 1, 0);
    for (size_t at = 0; at < raw.len;) {
      size_t n = pieces[i] && pieces[i] < raw.len - at ? pieces[i] : raw.len - at;
      int rc = rh_ws_feed(s.ws, raw.data + at, n);
      CHECK(rc == 0);
      at = rc ? raw.len : at + n;
    }
    CHECK(s.msgs == 1 && last_is(&s, RH_WS_BINARY, m, off) && s.nul_ok);
    peer_free(&s);
  }
  raw.len = 0;
  frame(&raw, 0, RH_WS_BINARY, 1, S("a"));
  frame(&raw, 1, RH_WS_BINARY, 1, S("b"));
  expect_server_failure(&raw, 0, 1002, "protocol error");
  expect_server_failure(&raw, 1, 1002, "protocol error");
  raw.len = 0;
  frame(&raw, 0, RH_WS_BINARY, 1, S("a"));
  frame(&raw, 1, RH_WS_TEXT, 1, S("b"));
  expect_server_failure(&raw, 0, 1002, "protocol error");
  rh_buf_free(&raw);
}

static void run_all(void) {
  test_pong_rests();
  test_accept_key();
  test_check_upgrade();
  test_client_key();
  test_utf8();
  test_messages();
  test_big();
  test_parts();
  test_mask_keys_fork();
  test_fragmented();
  test_ping();
  test_close_handshake();
  test_too_big();
  test_bad_utf8();
  test_protocol_errors();
  test_bad_close();
  test_free_states();
  test_random_splits();
  test_garbage();
  test_ping_flood_pauses();
  test_own_output_counts();
  test_max_queued();
  test_overfed_fails_1008();
  test_endless_fragments();
  test_binary_fragments();
}

int main(void) {
  test_control_no_context();
  run_all();
  rh_ws_rest_after(0); /* again, with wslay's context given back at every frame boundary */
  run_all();
  rh_ws_fast_read(0); /* and with every frame read by wslay: the two readers answer alike */
  run_all();
  if (failures) fprintf(stderr, "%d check(s) failed\n", failures);
  else printf("test_ws: all passed\n");
  return failures ? 1 : 0;
}
