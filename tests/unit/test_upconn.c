/* upconn against a real peer on loopback (a plain socket this test drives): a connection whose
 * reading is paused (backpressure: the WebSocket sessions pause their upstream) must still tell
 * its owner, within a second, that the peer went away, through on_read with an error. Nothing
 * reads it, so only the failed write can say so; what the peer sent before it went still comes
 * first. */
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "check.h"
#include "net/upconn.h"

static uv_loop_t *loop;

typedef struct {
  rh_upconn *u;
  int dialed, errors, bytes, bytes_at_error;
  int slow; /* pauses again after every read, as a busy owner does */
  char err[200];
} owner;

static void on_read(void *ud, const char *p, ssize_t n, const char *err) {
  (void)p;
  owner *o = ud;
  if (n > 0) {
    o->bytes += (int)n;
    if (o->slow) rh_upconn_pause(o->u);
    return;
  }
  o->errors++;
  o->bytes_at_error = o->bytes;
  snprintf(o->err, sizeof o->err, "%s", err ? err : "");
}

static void dialed(void *ud, rh_upconn *u, const char *err) {
  owner *o = ud;
  REQUIRE(u != NULL || !err);
  o->u = u;
  o->dialed = 1;
}

static void timer_done(uv_timer_t *t) { *(int *)t->data = 1; }
static void timer_closed(uv_handle_t *h) { *(int *)h->data = 1; }

/* Runs the loop until *flag or ms have passed. */
static void run_until(int *flag, int ms) {
  int expired = 0, closed = 0;
  uv_timer_t t;
  uv_timer_init(loop, &t);
  t.data = &expired;
  uv_timer_start(&t, timer_done, (uint64_t)ms, 0);
  while (!expired && !*flag) uv_run(loop, UV_RUN_ONCE);
  t.data = &closed;
  uv_close((uv_handle_t *)&t, timer_closed);
  while (!closed) uv_run(loop, UV_RUN_ONCE);
}

static int listener(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  socklen_t len = sizeof sin;
  REQUIRE(fd >= 0 && bind(fd, (struct sockaddr *)&sin, sizeof sin) == 0 && listen(fd, 4) == 0);
  REQUIRE(getsockname(fd, (struct sockaddr *)&sin, &len) == 0);
  *port = ntohs(sin.sin_port);
  return fd;
}

/* A connection owned by o, and the peer's end of it. */
static int connect_pair(owner *o) {
  int port, lfd = listener(&port);
  memset(o, 0, sizeof *o);
  REQUIRE(rh_upconn_dial(loop, "test", "127.0.0.1", port, NULL, dialed, o) != NULL);
  run_until(&o->dialed, 5000);
  REQUIRE(o->u != NULL);
  int peer = accept(lfd, NULL, NULL);
  REQUIRE(peer >= 0);
  close(lfd);
  rh_upconn_own(o->u, o, on_read, NULL);
  return peer;
}

/* The peer goes away at once: a reset, as from a process that died with unread bytes. */
static void reset(int peer) {
  struct linger l = { 1, 0 };
  setsockopt(peer, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  close(peer);
}

static void finish(owner *o) {
  int closed = 0;
  rh_upconn_close(o->u);
  run_until(&closed, 50); /* its handles close */
}

/* Paused with writes queued (the peer stopped reading), then the peer dies. */
static void dies_while_writes_wait(void) {
  test_name = "paused, writes queued, peer dies";
  owner o;
  int peer = connect_pair(&o);
  rh_upconn_pause(o.u);
  static char chunk[65536];
  for (int i = 0; i < 256 && o.u->queued == 0; i++) rh_upconn_write(o.u, chunk, sizeof chunk);
  REQUIRE(o.u->queued > 0);
  reset(peer);
  run_until(&o.errors, 1000);
  CHECK(o.errors == 1);
  CHECK(o.err[0] != 0);
  finish(&o);
}

/* Paused with nothing queued; the peer dies; the next write fails at once. */
static void write_after_death(void) {
  test_name = "paused, peer dies, then a write";
  owner o;
  int peer = connect_pair(&o);
  rh_upconn_pause(o.u);
  reset(peer);
  int never = 0;
  run_until(&never, 100); /* the reset arrives */
  rh_upconn_write(o.u, "hello", 5);
  rh_upconn_write(o.u, "hello", 5);
  CHECK(o.errors == 0); /* never from inside rh_upconn_write: the owner is mid-call */
  run_until(&o.errors, 1000);
  CHECK(o.errors == 1);
  /* reading again: the same loss is not reported twice */
  rh_upconn_resume(o.u);
  run_until(&never, 200);
  CHECK(o.errors == 1);
  finish(&o);
}

/* Paused; the peer answers and dies (an upstream that answered early and reset the upload):
 * the answer reaches the owner, then the loss. */
static void answer_then_death(void) {
  test_name = "paused, peer answers then dies, then a write";
  owner o;
  int peer = connect_pair(&o);
  rh_upconn_pause(o.u);
  REQUIRE(write(peer, "answer", 6) == 6);
  reset(peer);
  int never = 0;
  run_until(&never, 100);
  CHECK(o.bytes == 0); /* paused */
  o.slow = 1;
  rh_upconn_write(o.u, "more body", 9);
  run_until(&o.errors, 1000);
  CHECK(o.errors == 1);
  CHECK(o.bytes_at_error == 6);
  finish(&o);
}

/* While reading, the read side reports (once), after what the peer sent before it went. */
static void reading_reports_once(void) {
  test_name = "reading, peer sends then dies";
  owner o;
  int peer = connect_pair(&o);
  REQUIRE(write(peer, "bye", 3) == 3);
  reset(peer);
  run_until(&o.errors, 1000);
  rh_upconn_write(o.u, "hello", 5);
  int never = 0;
  run_until(&never, 200);
  CHECK(o.errors == 1);
  finish(&o);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN); /* as the host does: a write to a dead peer is an error, not a signal */
  loop = uv_default_loop();
  dies_while_writes_wait();
  write_after_death();
  answer_then_death();
  reading_reports_once();
  uv_loop_close(loop);
  return failures ? 1 : 0;
}
