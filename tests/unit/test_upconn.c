/* upconn against real peers on loopback (plain sockets this test drives).
 *
 * The dialer: a name that resolves to ::1 and 127.0.0.1 (this process's own /etc/hosts, in a
 * mount namespace of its own) reaches the one address that listens, whichever the resolver puts
 * first; an address that never answers (a listener whose backlog is full drops the SYN) gets its
 * share of connect_timeout and then the next one is tried; alone, it fails as "timed out".
 *
 * The connection: one whose reading is paused (backpressure: the WebSocket sessions pause their
 * upstream) must still tell its owner, within a second, that the peer went away, through on_read
 * with an error. Nothing reads it, so only the failed write can say so; what the peer sent before
 * it went still comes first. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
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
  o->u = u;
  o->dialed = 1;
  snprintf(o->err, sizeof o->err, "%s", err ? err : "");
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

/* A listener on addr (port 0: any) with the given backlog, or -1 if the port is taken. */
static int listen_at(const struct sockaddr *addr, int backlog, int *port) {
  int fd = socket(addr->sa_family, SOCK_STREAM, 0), one = 1;
  struct sockaddr_storage ss;
  socklen_t len = addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  memcpy(&ss, addr, len);
  ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)*port); /* same offset in sockaddr_in6 */
  REQUIRE(fd >= 0);
  if (addr->sa_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, backlog) != 0) {
    close(fd);
    return -1;
  }
  REQUIRE(getsockname(fd, (struct sockaddr *)&ss, &len) == 0);
  *port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  return fd;
}

static int listener(int *port) {
  struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  *port = 0;
  int fd = listen_at((struct sockaddr *)&sin, 4, port);
  REQUIRE(fd >= 0);
  return fd;
}

static void dial(owner *o, const char *host, int port, double timeout) {
  memset(o, 0, sizeof *o);
  rh_upconn_target t = { .key = "test", .host = host, .port = port, .connect_timeout = timeout };
  REQUIRE(rh_upconn_dial(loop, &t, dialed, o) != NULL);
}

/* A connection owned by o, and the peer's end of it. */
static int connect_pair(owner *o) {
  int port, lfd = listener(&port);
  dial(o, "127.0.0.1", port, 5);
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

/* ---- the dialer ---- */

/* A listener that never answers: its backlog is full, so the kernel drops the next SYN. The
 * connections that fill it are returned in fill[2]. */
static int silent_listener(const struct sockaddr *addr, int *port, int fill[2]) {
  int fd = listen_at(addr, 0, port);
  if (fd < 0) return -1;
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  getsockname(fd, (struct sockaddr *)&ss, &len);
  for (int i = 0; i < 2; i++) {
    fill[i] = socket(addr->sa_family, SOCK_STREAM, 0);
    fcntl(fill[i], F_SETFL, O_NONBLOCK);
    connect(fill[i], (struct sockaddr *)&ss, len);
  }
  usleep(100 * 1000);
  return fd;
}

static void no_answer_times_out(void) {
  test_name = "one silent address: timed out after connect_timeout";
  struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  int port = 0, fill[2], fd = silent_listener((struct sockaddr *)&sin, &port, fill);
  REQUIRE(fd >= 0);
  owner o;
  uint64_t t0 = uv_now(loop);
  dial(&o, "127.0.0.1", port, 0.5);
  run_until(&o.dialed, 5000);
  uv_update_time(loop);
  uint64_t took = uv_now(loop) - t0;
  CHECK(o.dialed && o.u == NULL);
  CHECK(strstr(o.err, "timed out") != NULL);
  CHECK(took >= 450 && took < 2500);
  fprintf(stderr, "  %s (%llu ms): %s\n", test_name, (unsigned long long)took, o.err);
  close(fd), close(fill[0]), close(fill[1]);
}

/* This process gets an /etc/hosts of its own in which "dualstack" is ::1 and 127.0.0.1. 0 if it
 * cannot (no mount namespace for us): the caller skips, saying why. Before any thread starts. */
static int private_hosts(void) {
  if (unshare(CLONE_NEWNS) != 0) {
    uid_t uid = getuid();
    gid_t gid = getgid();
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) return 0;
    char map[64];
    FILE *f = fopen("/proc/self/setgroups", "w");
    if (f) fputs("deny", f), fclose(f);
    snprintf(map, sizeof map, "%u %u 1", (unsigned)uid, (unsigned)uid);
    if (!(f = fopen("/proc/self/uid_map", "w"))) return 0;
    fputs(map, f), fclose(f);
    snprintf(map, sizeof map, "%u %u 1", (unsigned)gid, (unsigned)gid);
    if (!(f = fopen("/proc/self/gid_map", "w"))) return 0;
    fputs(map, f), fclose(f);
  }
  char path[] = "/tmp/test_upconn_hosts.XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return 0;
  const char *hosts = "::1 dualstack\n127.0.0.1 dualstack\n127.0.0.1 localhost\n";
  int ok = write(fd, hosts, strlen(hosts)) == (ssize_t)strlen(hosts);
  close(fd);
  ok = ok && mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0 &&
       mount(path, "/etc/hosts", NULL, MS_BIND, NULL) == 0;
  unlink(path); /* the bind mount keeps it */
  return ok;
}

/* dualstack's addresses in the resolver's order (the dialer's order too). */
static void resolver_order(struct sockaddr_storage out[2]) {
  struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res, *ai;
  REQUIRE(getaddrinfo("dualstack", "1", &hints, &res) == 0);
  int n = 0;
  for (ai = res; ai && n < 2; ai = ai->ai_next) memcpy(&out[n++], ai->ai_addr, ai->ai_addrlen);
  freeaddrinfo(res);
  REQUIRE(n == 2 && out[0].ss_family != out[1].ss_family);
}

/* The second address listens on the port; the first refuses. */
static void first_refused_second_answers(void) {
  test_name = "dualstack: the first address refuses, the second answers";
  struct sockaddr_storage order[2];
  resolver_order(order);
  int port = 0, fd = listen_at((struct sockaddr *)&order[1], 4, &port);
  REQUIRE(fd >= 0);
  owner o;
  dial(&o, "dualstack", port, 5);
  run_until(&o.dialed, 5000);
  CHECK(o.u != NULL);
  if (!o.u) fprintf(stderr, "  error: %s\n", o.err);
  if (o.u) {
    int peer = accept(fd, NULL, NULL);
    CHECK(peer >= 0);
    close(peer);
    finish(&o);
  }
  close(fd);
}

/* The first address never answers: after its share of the time (half of connect_timeout, two
 * addresses) the second is tried, and answers. */
static void first_silent_second_answers(void) {
  test_name = "dualstack: the first address is silent, the second answers after its share";
  struct sockaddr_storage order[2];
  resolver_order(order);
  int port = 0, fill[2], good = -1, silent = -1;
  for (int tries = 0; tries < 20 && good < 0; tries++) {
    port = 0;
    silent = silent_listener((struct sockaddr *)&order[0], &port, fill);
    REQUIRE(silent >= 0);
    good = listen_at((struct sockaddr *)&order[1], 4, &port);
    if (good < 0) close(silent), close(fill[0]), close(fill[1]);
  }
  REQUIRE(good >= 0);
  owner o;
  uint64_t t0 = uv_now(loop);
  dial(&o, "dualstack", port, 4);
  run_until(&o.dialed, 8000);
  uv_update_time(loop);
  uint64_t took = uv_now(loop) - t0;
  CHECK(o.u != NULL);
  CHECK(took >= 1900 && took < 3900); /* 2 s, Go's minimum share, is also half of 4 s */
  fprintf(stderr, "  %s (%llu ms) %s\n", test_name, (unsigned long long)took, o.err);
  if (o.u) finish(&o);
  close(good), close(silent), close(fill[0]), close(fill[1]);
}

/* ---- through a forward proxy that misbehaves (spec/core/forward_proxy_spec.lua has a real one) ---- */

/* Dials origin.example:80 through a proxy on lfd that answers `answer` (NULL: nothing). */
static void through_proxy(owner *o, int lfd, int port, const char *answer, size_t n, double timeout) {
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
  setenv("HTTP_PROXY", url, 1);
  memset(o, 0, sizeof *o);
  rh_upconn_target t = { .key = "test", .host = "origin.example", .port = 80, .connect_timeout = timeout,
                         .via_proxy = 1 };
  REQUIRE(rh_upconn_dial(loop, &t, dialed, o) != NULL);
  int never = 0;
  run_until(&never, 200); /* connected (in the backlog) and the CONNECT sent */
  int peer = accept(lfd, NULL, NULL);
  REQUIRE(peer >= 0);
  char req[512];
  ssize_t got = read(peer, req, sizeof req - 1);
  REQUIRE(got > 0);
  req[got] = 0;
  CHECK(strncmp(req, "CONNECT origin.example:80 HTTP/1.1\r\nHost: origin.example:80\r\n", 60) == 0);
  while (n) {
    ssize_t w = write(peer, answer, n);
    REQUIRE(w > 0);
    answer += w, n -= (size_t)w;
  }
  run_until(&o->dialed, 5000);
  unsetenv("HTTP_PROXY");
  close(peer);
}

static void proxy_misbehaves(void) {
  int port, lfd = listener(&port);
  owner o;
  test_name = "a proxy whose answer to CONNECT never ends";
  static char endless[70 * 1024];
  memset(endless, 'x', sizeof endless);
  memcpy(endless, "HTTP/1.1 200 OK\r\nX: ", 21);
  through_proxy(&o, lfd, port, endless, sizeof endless, 5);
  CHECK(o.dialed && !o.u && strstr(o.err, "answer to CONNECT over 64 KiB"));
  test_name = "a proxy that never answers CONNECT";
  through_proxy(&o, lfd, port, NULL, 0, 0.6);
  CHECK(o.dialed && !o.u && strstr(o.err, "did not answer CONNECT in time"));
  test_name = "a proxy that refuses, with a control byte in its reason";
  const char *no = "HTTP/1.1 403 No\x01Way\r\n\r\n";
  through_proxy(&o, lfd, port, no, strlen(no), 5);
  CHECK(o.dialed && !o.u && strstr(o.err, "(HTTP_PROXY) refused CONNECT origin.example:80: HTTP/1.1 403 No?Way"));
  test_name = "a proxy that says 200 and sends bytes of its own";
  const char *extra = "HTTP/1.1 200 OK\r\n\r\nHELLO";
  through_proxy(&o, lfd, port, extra, strlen(extra), 5);
  CHECK(o.dialed && !o.u && strstr(o.err, "sent bytes after its answer to CONNECT"));
  test_name = "a proxy that opens the tunnel";
  const char *ok = "HTTP/1.0 200 Connection established\r\nProxy-Agent: test\r\n\r\n";
  through_proxy(&o, lfd, port, ok, strlen(ok), 5);
  CHECK(o.dialed && o.u);
  if (o.u) finish(&o);
  close(lfd);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN); /* as the host does: a write to a dead peer is an error, not a signal */
  int own_hosts = private_hosts();
  loop = uv_default_loop();
  if (own_hosts) {
    first_refused_second_answers();
    first_silent_second_answers();
  } else {
    fprintf(stderr, "SKIP the dualstack cases: no mount namespace for an /etc/hosts of our own (%s)\n", strerror(errno));
  }
  no_answer_times_out();
  proxy_misbehaves();
  dies_while_writes_wait();
  write_after_death();
  answer_then_death();
  reading_reports_once();
  uv_loop_close(loop);
  return failures ? 1 : 0;
}
