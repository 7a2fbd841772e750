/* LD_PRELOAD shim for tools/perf/epoll-order: records which descriptors each epoll_wait (or
 * epoll_pwait) returned, in order, as "turn fd" lines in $EPOLL_ORDER_OUT. The first
 * $EPOLL_ORDER_SKIP turns (the warm-up) are not recorded; at most MAX_EVENTS events are. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>

#define MAX_EVENTS 250000

static int recorded[MAX_EVENTS][2];
static int nrecorded, turn, written;
static long turns_seen;

static void write_out(void) {
  const char *path = getenv("EPOLL_ORDER_OUT");
  FILE *f = path && !written ? fopen(path, "w") : NULL;
  written = 1;
  if (!f) return;
  for (int i = 0; i < nrecorded; i++) fprintf(f, "%d %d\n", recorded[i][0], recorded[i][1]);
  fclose(f);
}

static void record(const struct epoll_event *e, int n) {
  const char *skip = getenv("EPOLL_ORDER_SKIP");
  if (n <= 0 || written || ++turns_seen <= (skip ? atol(skip) : 0)) return;
  turn++;
  for (int i = 0; i < n && nrecorded < MAX_EVENTS; i++, nrecorded++) {
    recorded[nrecorded][0] = turn;
    recorded[nrecorded][1] = e[i].data.fd; /* libuv and HAProxy both register the fd there */
  }
  if (nrecorded == MAX_EVENTS) write_out();
}

int epoll_wait(int fd, struct epoll_event *e, int max, int timeout) {
  static int (*real)(int, struct epoll_event *, int, int);
  if (!real) real = (int (*)(int, struct epoll_event *, int, int))dlsym(RTLD_NEXT, "epoll_wait");
  int n = real(fd, e, max, timeout);
  record(e, n);
  return n;
}

int epoll_pwait(int fd, struct epoll_event *e, int max, int timeout, const sigset_t *mask) {
  static int (*real)(int, struct epoll_event *, int, int, const sigset_t *);
  if (!real) real = (int (*)(int, struct epoll_event *, int, int, const sigset_t *))dlsym(RTLD_NEXT, "epoll_pwait");
  int n = real(fd, e, max, timeout, mask);
  record(e, n);
  return n;
}

__attribute__((destructor)) static void at_exit(void) { write_out(); }
