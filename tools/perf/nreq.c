#define _GNU_SOURCE
/* nreq: exactly N keep-alive GETs over C connections, one thread, epoll; every answer must be
 * 200 with a Content-Length body. NREQ_BROWSER=1 adds ~450 bytes of browser-like fields;
 * NREQ_HEADER="Name: value" adds one field; NREQ_BODY=... sends a POST with that body instead.
 * Usage: nreq HOST PORT PATH N C  (tools/perf/per-request builds and runs it) */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
typedef struct { int fd; char buf[65536]; size_t len; } conn;
static char req[8192]; static size_t reqlen;
static long sent, done, total, bad;
static void send_one(conn *c) {
  if (sent >= total) { close(c->fd); c->fd = -1; return; }
  sent++;
  if (write(c->fd, req, reqlen) != (ssize_t)reqlen) { perror("write"); exit(1); }
}
/* returns bytes of one complete response at the start of buf, or 0 */
static size_t complete(conn *c) {
  char *e = memmem(c->buf, c->len, "\r\n\r\n", 4);
  if (!e) return 0;
  size_t hl = (size_t)(e - c->buf) + 4;
  char *cl = memmem(c->buf, hl, "Content-Length: ", 16);
  if (!cl) cl = memmem(c->buf, hl, "content-length: ", 16);
  if (!cl) { fprintf(stderr, "no content-length:\n%.*s\n", (int)hl, c->buf); exit(1); }
  size_t bl = strtoul(cl + 16, NULL, 10);
  if (c->len < hl + bl) return 0;
  if (memcmp(c->buf, "HTTP/1.1 200", 12) != 0) bad++;
  return hl + bl;
}
int main(int argc, char **argv) {
  if (argc < 6) { fprintf(stderr, "nreq HOST PORT PATH N C\n"); return 2; }
  total = atol(argv[4]); int nc = atoi(argv[5]);
  static char extra[4096] = "";
  const char *browser = getenv("NREQ_BROWSER"); /* a browser-like head: ~450 bytes of fields */
  if (browser && *browser == '1')
    snprintf(extra, sizeof extra, "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
             "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n"
             "Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n"
             "Cookie: session=0123456789abcdef0123456789abcdef; theme=dark; consent=yes\r\n"
             "X-Internal-Token: secret\r\nUpgrade-Insecure-Requests: 1\r\nSec-Fetch-Dest: document\r\n"
             "Sec-Fetch-Mode: navigate\r\nSec-Fetch-Site: none\r\nSec-Fetch-User: ?1\r\n");
  const char *field = getenv("NREQ_HEADER"), *body = getenv("NREQ_BODY");
  static char more[4096] = "";
  if (field && *field) snprintf(more, sizeof more, "%s\r\n", field);
  if (body) snprintf(more + strlen(more), sizeof more - strlen(more), "Content-Type: application/json\r\nContent-Length: %zu\r\n", strlen(body));
  static char reqbuf[8192];
  reqlen = (size_t)snprintf(reqbuf, sizeof reqbuf, "%s %s HTTP/1.1\r\nHost: %s:%s\r\n%s%s\r\n%s", body ? "POST" : "GET", argv[3],
                            argv[1], argv[2], extra, more, body ? body : "");
  memcpy(req, reqbuf, reqlen < sizeof req ? reqlen : sizeof req);
  int ep = epoll_create1(0);
  conn *cs = calloc((size_t)nc, sizeof *cs);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2])) };
  inet_pton(AF_INET, argv[1], &a.sin_addr);
  for (int i = 0; i < nc; i++) {
    cs[i].fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(cs[i].fd, (struct sockaddr *)&a, sizeof a) < 0) { perror("connect"); return 1; }
    int one = 1; setsockopt(cs[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &cs[i] };
    epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
  }
  for (int i = 0; i < nc; i++) send_one(&cs[i]);
  struct epoll_event evs[256];
  while (done < total) {
    int n = epoll_wait(ep, evs, 256, 10000);
    if (n <= 0) { fprintf(stderr, "stalled at %ld/%ld\n", done, total); return 1; }
    for (int i = 0; i < n; i++) {
      conn *c = evs[i].data.ptr;
      ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
      if (r <= 0) { fprintf(stderr, "connection closed at %ld/%ld\n", done, total); return 1; }
      c->len += (size_t)r;
      size_t k;
      while ((k = complete(c))) {
        memmove(c->buf, c->buf + k, c->len - k); c->len -= k; done++;
        send_one(c);
        if (c->fd < 0) break;
      }
    }
  }
  printf("%ld requests, %ld not 200\n", done, bad);
  return bad != 0;
}
