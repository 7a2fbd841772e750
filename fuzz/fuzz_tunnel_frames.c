/* fuzz_tunnel_frames: the git tunnel's frame decoder and multiplexer (core/tunnel).
 *
 * Input: byte 0 picks the role (even: server, odd: client) and what the bridge does; then
 * messages, each a u16 big-endian length and that many bytes, fed to rh_tun_input. The server
 * end opens a stream first (so the peer's frames have one to land on); the client end answers
 * every stream the input opens with a HEAD, some DATA and END, or resets it. Checked beyond the
 * sanitizers: rh_tframe_decode accepts exactly what the protocol allows (a re-encode of an
 * accepted frame is byte-identical), every frame the tunnel sends decodes, a failed tunnel
 * takes no more input, and streams never see more DATA than the window allowed. */
#include <stdint.h>
#include <string.h>
#include <uv.h>

#define FUZZ_TARGET "fuzz_tunnel_frames"
#include "check.h"
#include "tunnel/frame.h"
#include "tunnel/tunnel.h"

static int failed, mode;
static size_t got;
static rh_tstream *opened[8], *mine;
static size_t nopened;

static void reencode_check(const char *p, size_t n, const rh_tframe *f) {
  rh_buf b = RH_BUF_INIT;
  if (f->type == RH_TF_HEAD) {
    char *a, *m;
    rh_headers h = RH_HEADERS_INIT;
    if (rh_tframe_head_parse(f, &a, &m, &h) < 0) FAIL("an accepted HEAD does not parse");
    rh_tframe_encode_head(&b, f->stream, a, m, &h);
    /* method/target go through C strings: a NUL inside one shortens it, so compare without */
    const unsigned char *u = (const unsigned char *)f->payload;
    size_t la = (size_t)u[2] << 8 | u[3], lb = (size_t)u[4 + la] << 8 | u[5 + la];
    if (strlen(a) == la && strlen(m) == lb && (b.len != n || memcmp(b.data, p, n))) FAIL("HEAD does not re-encode");
    free(a), free(m), rh_headers_free(&h);
  } else if (f->type == RH_TF_RESET || f->type == RH_TF_WINDOW) {
    rh_buf_append(&b, p, 5);
    rh_buf_append(&b, p + 5, 4);
    rh_buf_append(&b, f->payload, f->len);
    if (b.len != n || memcmp(b.data, p, n)) FAIL("RESET/WINDOW does not re-encode");
  } else {
    rh_tframe_encode(&b, f->type, f->stream, f->payload, f->len);
    if (b.len != n || memcmp(b.data, p, n)) FAIL("frame does not re-encode");
  }
  rh_buf_free(&b);
}

static int tr_send(void *ud, const char *head, size_t hl, const char *p, size_t n) {
  (void)ud;
  rh_tframe f;
  const char *why;
  rh_buf m = RH_BUF_INIT;
  rh_buf_append(&m, head, hl);
  rh_buf_append(&m, p, n);
  int bad = rh_tframe_decode(m.data, m.len, &f, &why) < 0;
  rh_buf_free(&m);
  if (bad) FAIL("the tunnel sent a frame that does not decode: %s", why);
  return 0;
}

static void s_data(void *ud, const char *p, size_t n) {
  (void)p;
  got += n;
  if (got > (size_t)RH_TUN_WINDOW * 2) FAIL("a stream got more DATA than its window allowed");
  if (mode & 2) rh_tstream_consumed(ud, n);
}
/* The bridge's part after a reset: let go of the stream (once). */
static void s_reset(void *ud, int code, const char *r) {
  (void)code, (void)r;
  for (size_t i = 0; i < nopened; i++)
    if (opened[i] == ud) opened[i] = NULL;
  if (mine == ud) mine = NULL;
  rh_tstream_release(ud);
}
static const rh_tstream_handlers handlers = { NULL, s_data, NULL, s_reset, NULL, NULL };

static void tr_open(void *ud, rh_tstream *s, const char *m, const char *t, const rh_headers *h) {
  (void)ud, (void)m, (void)t, (void)h;
  rh_tstream_handlers sh = handlers;
  sh.ud = s;
  rh_tstream_set_handlers(s, &sh);
  if (mode & 4) {
    rh_tstream_reset(s, RH_TR_REFUSED, "no");
    rh_tstream_release(s);
    return;
  }
  rh_tstream_head(s, 200, "OK", h);
  rh_tstream_write(s, "body", 4);
  rh_tstream_end(s);
  if (nopened < 8) opened[nopened++] = s;
  else rh_tstream_release(s);
}

static void tr_fail(void *ud, int code, const char *r) {
  (void)ud, (void)code, (void)r;
  failed = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  mode = data[0];
  int is_server = !(mode & 1);
  failed = 0, got = 0, nopened = 0;
  uv_loop_t *loop = uv_default_loop();
  rh_tun_transport tr = { tr_send, tr_open, tr_fail, NULL, NULL, NULL };
  rh_tun *t = rh_tun_new(loop, is_server, &tr, NULL);
  mine = NULL;
  if (is_server) {
    rh_tstream_handlers sh = handlers;
    mine = rh_tun_open(t, "GET", "/x", NULL, &sh);
    sh.ud = mine;
    rh_tstream_set_handlers(mine, &sh);
  }
  size_t off = 1;
  while (off + 2 <= size) {
    size_t n = (size_t)data[off] << 8 | data[off + 1];
    off += 2;
    if (n > size - off) n = size - off;
    const char *p = (const char *)data + off;
    rh_tframe f;
    const char *why;
    int ok = rh_tframe_decode(p, n, &f, &why) == 0;
    if (ok) reencode_check(p, n, &f);
    int was_failed = failed;
    int rc = rh_tun_input(t, p, n);
    if (was_failed && rc != -1) FAIL("a failed tunnel took more input");
    if (!ok && rc != -1) FAIL("input that does not decode was accepted");
    off += n;
  }
  for (size_t i = 0; i < nopened; i++)
    if (opened[i]) rh_tstream_release(opened[i]);
  if (mine) rh_tstream_release(mine);
  rh_tun_free(t, "input over");
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;
}
