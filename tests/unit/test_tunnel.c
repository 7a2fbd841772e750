/* The git tunnel's frame codec and its multiplexer's credit windows, two ends pumped in memory. */
#include <string.h>
#include <uv.h>

#include "check.h"
#include "tunnel/frame.h"
#include "tunnel/tunnel.h"

static int decodes(const char *p, size_t n, const char **why) {
  rh_tframe f;
  return rh_tframe_decode(p, n, &f, why);
}

static void codec(void) {
  test_name = "codec";
  rh_buf b = RH_BUF_INIT;
  rh_headers h = RH_HEADERS_INIT;
  rh_headers_add(&h, "Authorization", 13, "Basic dTpw", 10);
  rh_headers_add(&h, "X-Empty", 7, "", 0);
  rh_tframe_encode_head(&b, 7, "POST", "/repo.git/git-receive-pack", &h);
  rh_tframe f;
  const char *why = NULL;
  CHECK(rh_tframe_decode(b.data, b.len, &f, &why) == 0);
  CHECK(f.type == RH_TF_HEAD && f.stream == 7);
  char *a, *m;
  rh_headers got = RH_HEADERS_INIT;
  CHECK(rh_tframe_head_parse(&f, &a, &m, &got) == 0);
  CHECK(strcmp(a, "POST") == 0 && strcmp(m, "/repo.git/git-receive-pack") == 0);
  CHECK(got.n == 2 && got.items[1].value_len == 0 && memcmp(got.items[0].value, "Basic dTpw", 10) == 0);
  free(a), free(m), rh_headers_free(&got);
  /* a HEAD whose list is cut short, or padded, is refused */
  CHECK(decodes(b.data, b.len - 1, &why) < 0 && strstr(why, "add up"));
  rh_buf_append(&b, "x", 1);
  CHECK(decodes(b.data, b.len, &why) < 0);
  b.len = 0;

  rh_tframe_encode_u32(&b, RH_TF_RESET, 3, RH_TR_STALLED, "slow");
  CHECK(rh_tframe_decode(b.data, b.len, &f, &why) == 0 && f.value == RH_TR_STALLED && f.len == 4);
  b.len = 0;
  rh_tframe_encode_u32(&b, RH_TF_WINDOW, 3, 0, NULL);
  CHECK(decodes(b.data, b.len, &why) < 0 && strstr(why, "WINDOW"));
  b.len = 0;
  rh_tframe_encode_u32(&b, RH_TF_WINDOW, 3, 0x80000000u, NULL);
  CHECK(decodes(b.data, b.len, &why) < 0);
  b.len = 0;
  rh_tframe_encode(&b, RH_TF_DATA, 1, NULL, 0);
  CHECK(decodes(b.data, b.len, &why) < 0 && strstr(why, "DATA"));
  b.len = 0;
  rh_tframe_encode(&b, RH_TF_PING, 5, "12345678", 8);
  CHECK(decodes(b.data, b.len, &why) < 0 && strstr(why, "stream 0"));
  b.len = 0;
  rh_tframe_encode(&b, RH_TF_END, 0, NULL, 0);
  CHECK(decodes(b.data, b.len, &why) < 0);
  b.len = 0;
  rh_tframe_encode(&b, 9, 1, NULL, 0);
  CHECK(decodes(b.data, b.len, &why) < 0 && strstr(why, "unknown"));
  CHECK(decodes("\x02\0\0", 3, &why) < 0 && strstr(why, "header"));
  rh_buf_free(&b);
  rh_headers_free(&h);
}

/* ---- two ends in memory ---- */

typedef struct {
  rh_tun *peer;
  size_t got;             /* DATA bytes the bridge saw */
  int ends, resets, heads, writable, fails;
  rh_tstream *s;
  int consume;            /* hand credit back at once */
} end;

static end srv, cli;

static int pipe_send(void *ud, const char *head, size_t hl, const char *p, size_t n) {
  end *e = ud;
  rh_buf m = RH_BUF_INIT;
  rh_buf_append(&m, head, hl);
  rh_buf_append(&m, p, n);
  rh_tun_input(e->peer, m.data, m.len);
  rh_buf_free(&m);
  return 0;
}

static void s_head(void *ud, const char *a, const char *b, const rh_headers *h) { (void)a, (void)b, (void)h; ((end *)ud)->heads++; }
static void s_data(void *ud, const char *p, size_t n) {
  end *e = ud;
  (void)p;
  e->got += n;
  if (e->consume) rh_tstream_consumed(e->s, n);
}
static void s_end(void *ud) { ((end *)ud)->ends++; }
static void s_reset(void *ud, int code, const char *r) { (void)code, (void)r; ((end *)ud)->resets++; }
static void s_writable(void *ud) { ((end *)ud)->writable++; }
static const rh_tstream_handlers srv_h = { s_head, s_data, s_end, s_reset, s_writable, &srv };
static const rh_tstream_handlers cli_h = { s_head, s_data, s_end, s_reset, s_writable, &cli };

static void on_open(void *ud, rh_tstream *s, const char *m, const char *t, const rh_headers *h) {
  (void)ud, (void)m, (void)t, (void)h;
  cli.s = s;
  cli.heads++;
  rh_tstream_set_handlers(s, &cli_h);
}
static void on_fail(void *ud, int code, const char *r) { (void)code, (void)r; ((end *)ud)->fails++; }

static void credit(void) {
  test_name = "credit";
  uv_loop_t *loop = uv_default_loop();
  rh_tun_transport ts = { pipe_send, NULL, on_fail, NULL, &srv, NULL }, tc = { pipe_send, on_open, on_fail, NULL, &cli, NULL };
  rh_tun *a = rh_tun_new(loop, 1, &ts, NULL), *b = rh_tun_new(loop, 0, &tc, NULL);
  srv.peer = b, cli.peer = a;
  srv.s = rh_tun_open(a, "GET", "/x", NULL, &srv_h);
  REQUIRE(srv.s && cli.s && cli.heads == 1);
  /* the client sends 10 MiB to a server that does not consume: 4 MiB cross, the rest waits */
  static char chunk[1 << 20];
  int rc = 0;
  for (int i = 0; i < 10 && rc == 0; i++) rc = rh_tstream_write(cli.s, chunk, sizeof chunk);
  CHECK(rc == 1);
  CHECK(srv.got == RH_TUN_WINDOW);
  rh_tun_stats st;
  rh_tun_get_stats(b, &st);
  CHECK(st.buffered == 0 && st.bytes_out == RH_TUN_WINDOW); /* the write that hit 0 stopped the source */
  /* a second stream flows while the first one is out of credit */
  rh_tstream *c1 = cli.s, *s1 = srv.s;
  rh_tstream *s2 = rh_tun_open(a, "GET", "/y", NULL, &srv_h);
  REQUIRE(s2 && cli.s != c1);
  rh_tstream *c2 = cli.s;
  CHECK(rh_tstream_write(c2, chunk, 5000) == 0);
  CHECK(srv.got == RH_TUN_WINDOW + 5000);
  /* consuming gives credit back; the blocked writer hears on_writable */
  cli.s = c1, srv.s = s1;
  rh_tstream_consumed(s1, RH_TUN_WINDOW);
  CHECK(cli.writable == 1);
  CHECK(rh_tstream_write(c1, chunk, 1000) == 0 && srv.got == RH_TUN_WINDOW + 6000);
  /* END both ways completes stream 1; a RESET on stream 2 reaches the server's bridge */
  CHECK(rh_tstream_end(c1) == 0);
  CHECK(rh_tstream_end(s1) == 0 && srv.ends == 1 && cli.ends == 1);
  rh_tstream_release(s1);
  rh_tstream_release(c1);
  rh_tun_get_stats(a, &st);
  CHECK(st.streams_open == 1);
  rh_tstream_reset(c2, RH_TR_UPSTREAM, "upstream closed");
  CHECK(srv.resets == 1);
  rh_tstream_release(c2);
  rh_tstream_release(s2);
  rh_tun_get_stats(a, &st);
  CHECK(st.streams_open == 0 && st.streams_reset == 1);
  /* a broken frame fails the tunnel with 1002 */
  CHECK(rh_tun_input(b, "\x01\0\0\0\x09\0", 6) < 0 && cli.fails == 1);
  rh_tun_free(a, "test over");
  rh_tun_free(b, "test over");
  uv_run(loop, UV_RUN_DEFAULT);
}

/* ---- a peer that does not read: what the server's end holds is bounded ---- */

static size_t sent_msgs, queue_bytes;
static int fail_code;

static int count_send(void *ud, const char *head, size_t hl, const char *p, size_t n) {
  (void)ud, (void)head, (void)p;
  sent_msgs++;
  queue_bytes += hl + n;
  return 0;
}
static size_t get_queued(void *ud) { (void)ud; return queue_bytes; }
static void note_fail(void *ud, int code, const char *r) { (void)ud, (void)r; fail_code = code; }

static void feed_u32(rh_tun *t, int type, uint32_t stream, uint32_t v) {
  rh_buf b = RH_BUF_INIT;
  rh_tframe_encode_u32(&b, type, stream, v, NULL);
  rh_tun_input(t, b.data, b.len);
  rh_buf_free(&b);
}

static void bounds(void) {
  test_name = "bounds";
  uv_loop_t *loop = uv_default_loop();
  rh_tun_transport tr = { count_send, NULL, note_fail, NULL, NULL, get_queued };
  rh_tun *t = rh_tun_new(loop, 1, &tr, NULL);
  srv = (end){ 0 };
  srv.s = rh_tun_open(t, "POST", "/x", NULL, &srv_h);
  REQUIRE(srv.s);
  /* a WINDOW that lifts the credit over the window is refused: the stream is reset (flow) */
  feed_u32(t, RH_TF_WINDOW, 1, 0x7fffffffu);
  CHECK(srv.resets == 1);
  rh_tstream_release(srv.s);
  /* PINGs from a peer that leaves our bytes unread: one PONG goes out, the rest wait for a
   * drain and only the latest is answered then */
  queue_bytes = RH_TUN_PONG_HOLD + 1;
  size_t before = sent_msgs;
  rh_buf b = RH_BUF_INIT;
  rh_tframe_encode(&b, RH_TF_PING, 0, "12345678", 8);
  for (int i = 0; i < 100000; i++) rh_tun_input(t, b.data, b.len);
  rh_buf_free(&b);
  CHECK(sent_msgs == before);
  rh_tun_stats st;
  rh_tun_get_stats(t, &st);
  CHECK(st.pongs_held == 100000);
  queue_bytes = 0;
  uv_run(loop, UV_RUN_ONCE); /* the tick sends the one PONG owed */
  CHECK(sent_msgs == before + 1);
  /* a queue over the tunnel's bound closes it with 1008 on the next turn */
  queue_bytes = RH_TUN_SLACK + 4 * (size_t)RH_TUN_WINDOW + 1;
  rh_tstream *s = rh_tun_open(t, "GET", "/y", NULL, &srv_h);
  CHECK(s != NULL && fail_code == 0);
  uv_run(loop, UV_RUN_NOWAIT);
  CHECK(fail_code == 1008);
  if (s) rh_tstream_release(s);
  rh_tun_free(t, "test over");
  uv_run(loop, UV_RUN_DEFAULT);
}

int main(void) {
  codec();
  credit();
  bounds();
  if (failures) fprintf(stderr, "%d failure(s)\n", failures);
  return failures ? 1 : 0;
}
