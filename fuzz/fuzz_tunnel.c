/* fuzz_tunnel: the git tunnel's frame decoder and stream multiplexer (core/tunnel) fed arbitrary
 * messages from the peer.
 *
 * Input: byte 0 = mode, then messages, each a u16 length (big endian) and that many bytes.
 *   bit 0: this end is the server (it opens streams 1 and 2 first), else the client
 *   bit 1: every message also goes through the decoder checks alone (round trips)
 * The client's bridge answers each stream the peer opens with a HEAD and a DATA, ends it when
 * the peer ends, and releases it when it is over; the server's bridge consumes what it gets.
 *
 * Invariants (abort() on violation, besides ASan/UBSan/LSan):
 *  - rh_tframe_decode fails exactly with a reason; a frame it accepts has a known type and
 *    re-encodes to the same bytes (HEAD through rh_tframe_head_parse and back);
 *  - rh_tun_input returns -1 exactly when on_fail ran, and after that the input is not used;
 *  - every message this end sends is a frame rh_tframe_decode accepts;
 *  - rh_tun_free leaves nothing behind (LSan), with any mix of streams open. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "log/buf.h"
#include "tunnel/frame.h"
#include "tunnel/tunnel.h"

#define FUZZ_TARGET "fuzz_tunnel"
#include "check.h"

/* ---- the codec alone ---- */

static void same_bytes(const rh_buf *b, const uint8_t *p, size_t n, const char *what) {
  if (b->len != n || memcmp(b->data, p, n) != 0)
    FAIL("%s frame of %zu bytes re-encodes to %zu different bytes", what, n, b->len);
}

static void same_head(const rh_headers *x, const rh_headers *y) {
  if (x->n != y->n) FAIL("HEAD round trip: %zu fields became %zu", x->n, y->n);
  for (size_t i = 0; i < x->n; i++)
    if (x->items[i].name_len != y->items[i].name_len || x->items[i].value_len != y->items[i].value_len ||
        memcmp(x->items[i].name, y->items[i].name, x->items[i].name_len) != 0 ||
        memcmp(x->items[i].value, y->items[i].value, x->items[i].value_len) != 0)
      FAIL("HEAD round trip: field %zu differs", i);
}

/* HEAD: parse, encode again, parse again: the same strings and fields (the first two come back
 * as C strings, so they compare up to a NUL). */
static void check_head_round_trip(const rh_tframe *f) {
  char *a = NULL, *b = NULL, *a2 = NULL, *b2 = NULL;
  rh_headers h = RH_HEADERS_INIT, h2 = RH_HEADERS_INIT;
  if (rh_tframe_head_parse(f, &a, &b, &h) < 0) FAIL("a HEAD the decoder accepted does not parse");
  rh_buf out = RH_BUF_INIT;
  rh_tframe_encode_head(&out, f->stream, a, b, &h);
  rh_tframe g;
  const char *why;
  if (rh_tframe_decode(out.data, out.len, &g, &why) < 0) FAIL("a re-encoded HEAD fails: %s", why);
  if (g.type != RH_TF_HEAD || g.stream != f->stream) FAIL("a re-encoded HEAD changed type or stream");
  if (rh_tframe_head_parse(&g, &a2, &b2, &h2) < 0) FAIL("a re-encoded HEAD does not parse");
  if (strcmp(a, a2) != 0 || strcmp(b, b2) != 0) FAIL("HEAD round trip changed the first strings");
  same_head(&h, &h2);
  rh_buf_free(&out);
  rh_headers_free(&h);
  rh_headers_free(&h2);
  free(a);
  free(b);
  free(a2);
  free(b2);
}

static void check_decode(const uint8_t *p, size_t n) {
  rh_tframe f;
  const char *why = NULL;
  if (rh_tframe_decode((const char *)p, n, &f, &why) < 0) {
    if (!why || !*why) FAIL("decode failed without a reason");
    return;
  }
  if (f.type < RH_TF_HEAD || f.type > RH_TF_PONG) FAIL("decode accepted type %d", f.type);
  rh_buf out = RH_BUF_INIT;
  switch (f.type) {
  case RH_TF_HEAD: check_head_round_trip(&f); break;
  case RH_TF_RESET:
  case RH_TF_WINDOW: {
    char reason[256] = "";
    if (f.type == RH_TF_RESET && f.len < sizeof reason) memcpy(reason, f.payload, f.len);
    rh_tframe_encode_u32(&out, f.type, f.stream, f.value, f.type == RH_TF_RESET ? reason : NULL);
    if (f.type == RH_TF_WINDOW || (f.len < sizeof reason && !memchr(f.payload, 0, f.len)))
      same_bytes(&out, p, n, f.type == RH_TF_RESET ? "RESET" : "WINDOW");
    break;
  }
  default:
    rh_tframe_encode(&out, f.type, f.stream, f.payload, f.len);
    same_bytes(&out, p, n, "DATA/END/PING/PONG");
  }
  rh_buf_free(&out);
}

/* ---- the multiplexer ---- */

static int failed;

static int on_send(void *ud, const char *p, size_t n) {
  (void)ud;
  rh_tframe f;
  const char *why;
  if (rh_tframe_decode(p, n, &f, &why) < 0) FAIL("this end sent a frame its own decoder refuses: %s", why);
  return 0;
}

static void on_fail(void *ud, int code, const char *reason) {
  (void)ud;
  if (!reason) FAIL("on_fail without a reason (code %d)", code);
  failed = 1;
}

/* client bridge: ud is the stream */
static void c_head(void *ud, const char *a, const char *b, const rh_headers *h) { (void)ud; (void)a; (void)b; (void)h; }
static void c_data(void *ud, const char *p, size_t n) { (void)p; rh_tstream_consumed(ud, n); }
static void c_end(void *ud) {
  rh_tstream_end(ud);
  rh_tstream_release(ud);
}
static void c_reset(void *ud, int code, const char *reason) {
  (void)code;
  (void)reason;
  rh_tstream_release(ud);
}
static void c_writable(void *ud) { (void)ud; }

static void on_open(void *ud, rh_tstream *s, const char *method, const char *target, const rh_headers *h) {
  (void)ud;
  (void)method;
  (void)target;
  (void)h;
  rh_tstream_handlers sh = { c_head, c_data, c_end, c_reset, c_writable, s };
  rh_tstream_set_handlers(s, &sh);
  rh_tstream_head(s, 200, "OK", NULL);
  rh_tstream_write(s, "hello", 5);
}

/* server bridge: consumes, releases when over */
static void s_reset(void *ud, int code, const char *reason) {
  (void)code;
  (void)reason;
  rh_tstream **slot = ud;
  if (*slot) rh_tstream_release(*slot);
  *slot = NULL;
}
static void s_end(void *ud) {
  rh_tstream **slot = ud;
  if (*slot) rh_tstream_release(*slot);
  *slot = NULL;
}
static rh_tstream *s_streams[2];
static void s_data0(void *ud, const char *p, size_t n) { (void)p; rh_tstream **slot = ud; if (*slot) rh_tstream_consumed(*slot, n); }

static void run_tunnel(int server, const uint8_t *p, size_t n, int decode_too) {
  uv_loop_t *loop = uv_default_loop();
  rh_tun_transport tr = { on_send, server ? NULL : on_open, on_fail, NULL };
  rh_tun *t = rh_tun_new(loop, server, &tr, NULL);
  failed = 0;
  if (server) {
    for (int i = 0; i < 2; i++) {
      rh_tstream_handlers sh = { c_head, s_data0, s_end, s_reset, c_writable, &s_streams[i] };
      s_streams[i] = rh_tun_open(t, "GET", "/repo.git/info/refs", NULL, &sh);
      if (s_streams[i]) rh_tstream_end(s_streams[i]);
    }
  }
  while (n >= 2 && !failed) {
    size_t len = (size_t)p[0] << 8 | p[1];
    p += 2;
    n -= 2;
    if (len > n) len = n;
    if (decode_too) check_decode(p, len);
    int rc = rh_tun_input(t, (const char *)p, len);
    if ((rc < 0) != failed) FAIL("rh_tun_input returned %d but on_fail %s", rc, failed ? "ran" : "did not run");
    p += len;
    n -= len;
  }
  rh_tun_free(t, "fuzz input over");
  for (int i = 0; i < 2; i++)
    if (s_streams[i]) FAIL("rh_tun_free left server stream %d without its reset", i);
  uv_run(loop, UV_RUN_NOWAIT); /* the tunnel's timer closes */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  int mode = data[0];
  run_tunnel(mode & 1, data + 1, size - 1, mode & 2);
  return 0;
}
