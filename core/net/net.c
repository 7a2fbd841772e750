#include "net/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int rh_parse_hostport(const char *s, char *host, size_t hostlen, int *port) {
  const char *colon;
  if (s[0] == '[') {
    const char *close = strchr(s, ']');
    if (!close || close[1] != ':') return -1;
    if ((size_t)(close - s - 1) >= hostlen) return -1;
    memcpy(host, s + 1, (size_t)(close - s - 1));
    host[close - s - 1] = 0;
    colon = close + 1;
  } else if ((colon = strrchr(s, ':'))) {
    size_t n = (size_t)(colon - s);
    if (n >= hostlen) return -1;
    memcpy(host, s, n);
    host[n] = 0;
    if (!n) snprintf(host, hostlen, "0.0.0.0");
  } else {
    snprintf(host, hostlen, "0.0.0.0");
    colon = s - 1;
  }
  char *end;
  long p = strtol(colon + 1, &end, 10);
  if (*end || end == colon + 1 || p < 0 || p > 65535) return -1;
  *port = (int)p;
  return 0;
}

/* Listening sockets handed over by the process this one replaces (a binary upgrade):
 * RELAYHOST_LISTEN_FDS=3,4. rh_listen adopts the one bound to the address it is asked for. */
#define MAX_INHERITED 16
static int inherited[MAX_INHERITED];
static int n_inherited = -1; /* -1: the environment not read yet */

static void read_inherited(void) {
  n_inherited = 0;
  const char *s = getenv("RELAYHOST_LISTEN_FDS");
  while (s && *s && n_inherited < MAX_INHERITED) {
    char *end;
    long fd = strtol(s, &end, 10);
    if (end == s) break;
    if (fd > 2 && fcntl((int)fd, F_SETFD, FD_CLOEXEC) == 0) inherited[n_inherited++] = (int)fd;
    s = *end == ',' ? end + 1 : end;
  }
  unsetenv("RELAYHOST_LISTEN_FDS"); /* our own successor gets a fresh list */
}

/* Same family and address, and the same port (or any, when want asks for port 0). */
static int bound_to(int fd, const struct sockaddr_storage *want) {
  struct sockaddr_storage got;
  socklen_t len = sizeof got;
  if (getsockname(fd, (struct sockaddr *)&got, &len) < 0 || got.ss_family != want->ss_family) return 0;
  if (want->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const void *)want, *b = (const void *)&got;
    return memcmp(&a->sin6_addr, &b->sin6_addr, 16) == 0 && (!a->sin6_port || a->sin6_port == b->sin6_port);
  }
  const struct sockaddr_in *a = (const void *)want, *b = (const void *)&got;
  return a->sin_addr.s_addr == b->sin_addr.s_addr && (!a->sin_port || a->sin_port == b->sin_port);
}

static int adopt_inherited(const struct sockaddr_storage *want) {
  if (n_inherited < 0) read_inherited();
  for (int i = 0; i < n_inherited; i++) {
    int fd = inherited[i];
    if (fd >= 0 && bound_to(fd, want)) {
      inherited[i] = -1;
      return fd;
    }
  }
  return -1;
}

void rh_net_close_inherited(void) {
  if (n_inherited < 0) read_inherited();
  for (int i = 0; i < n_inherited; i++)
    if (inherited[i] >= 0) close(inherited[i]);
  n_inherited = 0;
}

static int share_ports;
void rh_net_share_ports(int on) { share_ports = on; }

static int bind_new(const struct sockaddr_storage *ss, const char *addr, char *err, size_t errlen) {
  int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    int e = errno;
    snprintf(err, errlen, "socket: %s", strerror(e));
    return -e;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (share_ports) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  socklen_t len = ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  if (bind(fd, (const struct sockaddr *)ss, len) < 0) {
    int e = errno;
    snprintf(err, errlen, "listen %s: %s", addr, strerror(e));
    close(fd);
    return -e;
  }
  return fd;
}

int rh_listen(uv_loop_t *loop, uv_tcp_t *tcp, const char *addr, uv_connection_cb cb,
              char *err, size_t errlen) {
  char host[256];
  int port, rc;
  struct sockaddr_storage ss;
  if (rh_parse_hostport(addr, host, sizeof host, &port) < 0) {
    snprintf(err, errlen, "bad listen address '%s' (want HOST:PORT)", addr);
    return UV_EINVAL;
  }
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
    snprintf(err, errlen, "bad listen address '%s' (host must be an IP address)", addr);
    return UV_EINVAL;
  }
  int fd = adopt_inherited(&ss);
  if (fd < 0 && (fd = bind_new(&ss, addr, err, errlen)) < 0) return fd;
  uv_tcp_init(loop, tcp);
  if ((rc = uv_tcp_open(tcp, fd)) == 0) rc = uv_listen((uv_stream_t *)tcp, 1024, cb);
  if (rc) snprintf(err, errlen, "listen %s: %s", addr, uv_strerror(rc));
  return rc;
}

int rh_pick_port(const char *addr, char *out, size_t outlen) {
  char host[256];
  int port;
  if (rh_parse_hostport(addr, host, sizeof host, &port) < 0) return -1;
  if (port != 0) {
    snprintf(out, outlen, "%s", addr);
    return 0;
  }
  struct sockaddr_storage ss;
  if (uv_ip4_addr(host, 0, (struct sockaddr_in *)&ss) != 0 && uv_ip6_addr(host, 0, (struct sockaddr_in6 *)&ss) != 0)
    return -1;
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
  if (fd < 0) return -1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  socklen_t len = ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  if (bind(fd, (struct sockaddr *)&ss, len) < 0 || getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
    close(fd);
    return -1;
  }
  close(fd);
  port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
  snprintf(out, outlen, ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host, port);
  return 0;
}

int rh_bound_port(uv_tcp_t *tcp) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_tcp_getsockname(tcp, (struct sockaddr *)&ss, &len)) return -1;
  if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

void rh_peer_addr(uv_tcp_t *tcp, rh_addr *out) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  memset(out, 0, sizeof *out);
  if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len)) return;
  if (ss.ss_family == AF_INET6) {
    out->family = AF_INET6;
    memcpy(out->addr, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
  } else if (ss.ss_family == AF_INET) {
    out->family = AF_INET;
    memcpy(out->addr, &((struct sockaddr_in *)&ss)->sin_addr, 4);
  }
}

void rh_addr_format(const rh_addr *a, char *out, size_t outlen) {
  if (!a->family || !inet_ntop(a->family, a->addr, out, (socklen_t)outlen)) snprintf(out, outlen, "unknown");
}

void rh_peer_name(uv_tcp_t *tcp, char *out, size_t outlen) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  snprintf(out, outlen, "unknown");
  if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len)) return;
  if (ss.ss_family == AF_INET6) uv_ip6_name((struct sockaddr_in6 *)&ss, out, outlen);
  else uv_ip4_name((struct sockaddr_in *)&ss, out, outlen);
}
