/* loopback: the client side of a fuzz target that drives a server on its own libuv loop over a
 * loopback TCP connection (fuzz_http_server, fuzz_framing). The server and the client run in
 * one thread: the client never blocks, and pumps the loop while it waits. Include once, after
 * defining FUZZ_TARGET and including check.h. */
#ifndef RH_FUZZ_LOOPBACK_H
#define RH_FUZZ_LOOPBACK_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "buf/buf.h"

static uv_loop_t loop;
/* Called after every loop turn (a target resumes what its handler paused); may be NULL. */
static void (*after_pump)(void);

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One loop iteration without blocking, then the target's hook. */
static void pump(void) {
  uv_run(&loop, UV_RUN_NOWAIT);
  if (after_pump) after_pump();
}

/* Waits a little for the loop or the client socket, so idle waiting does not spin. */
static void wait_a_little(int fd) {
  struct pollfd p[2] = { { uv_backend_fd(&loop), POLLIN, 0 }, { fd, POLLIN, 0 } };
  int t = uv_backend_timeout(&loop);
  if (t < 0 || t > 5) t = 5;
  poll(p, fd >= 0 ? 2 : 1, t);
}

static int client_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) FAIL("socket: %s", strerror(errno));
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  /* non-blocking from the start: libFuzzer's SIGALRM would interrupt a blocking connect */
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
    if (errno != EINPROGRESS && errno != EINTR) FAIL("connect: %s", strerror(errno));
    struct pollfd pf = { fd, POLLOUT, 0 };
    double deadline = now_s() + 8;
    while (poll(&pf, 1, 100) <= 0)
      if (now_s() > deadline) FAIL("connect: no connection in 8 s");
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) FAIL("connect: %s", strerror(err));
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

/* Reads what is there; returns 1 at EOF or reset. */
static int client_read(int fd, rh_buf *got) {
  char buf[16384];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n > 0) { rh_buf_append(got, buf, (size_t)n); continue; }
    if (n == 0) return 1;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    if (errno == EINTR) continue;
    return 1; /* ECONNRESET: the server closed with input unread */
  }
}

/* Sends all of p (pumping the loop while the socket is full). 0, or -1 if the server went away. */
static int client_send(int fd, const uint8_t *p, size_t n, rh_buf *got, double deadline) {
  while (n) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) { p += w; n -= (size_t)w; continue; }
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      pump();
      if (client_read(fd, got)) return -1;
      if (now_s() > deadline) FAIL("the server stopped reading a %zu-byte remainder", n);
      wait_a_little(fd);
      continue;
    }
    return -1;
  }
  return 0;
}

/* Closes without a TIME_WAIT per input. */
static void client_reset(int fd) {
  struct linger l = { 1, 0 };
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  close(fd);
}

#endif
