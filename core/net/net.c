#include "net/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/url.h"

int rh_listen_resolve(const char *addr, struct sockaddr_storage *ss, char *err, size_t errlen) {
  rh_hostport hp;
  if (rh_hostport_parse(addr, &hp)) {
    snprintf(err, errlen, "bad listen address '%s': %s", addr, hp.err);
    return UV_EINVAL;
  }
  struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV }, *res;
  char port[8];
  snprintf(port, sizeof port, "%d", hp.port);
  int rc = getaddrinfo(hp.host, port, &hints, &res);
  if (rc) {
    snprintf(err, errlen, "listen %s: cannot resolve '%s': %s", addr, hp.host, gai_strerror(rc));
    return UV_EINVAL;
  }
  memcpy(ss, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  return 0;
}

/* " (ip)" when addr names its host otherwise (a name, a wildcard), for messages; else "". */
static void bound_note(const struct sockaddr_storage *ss, const char *addr, char *out, size_t n) {
  int v6 = ss->ss_family == AF_INET6;
  char ip[INET6_ADDRSTRLEN] = "?", lit[INET6_ADDRSTRLEN + 3];
  const void *a = v6 ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
                     : (const void *)&((const struct sockaddr_in *)ss)->sin_addr;
  inet_ntop(ss->ss_family, a, ip, sizeof ip);
  snprintf(lit, sizeof lit, v6 ? "[%s]:" : "%s:", ip);
  if (strncmp(addr, lit, strlen(lit)) == 0) *out = 0;
  else snprintf(out, n, v6 ? " ([%s])" : " (%s)", ip);
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
    char note[INET6_ADDRSTRLEN + 6];
    bound_note(ss, addr, note, sizeof note);
    snprintf(err, errlen, "listen %s%s: %s", addr, note, strerror(e));
    close(fd);
    return -e;
  }
  return fd;
}

int rh_listen(uv_loop_t *loop, uv_tcp_t *tcp, const char *addr, uv_connection_cb cb,
              char *err, size_t errlen) {
  int rc;
  struct sockaddr_storage ss;
  if ((rc = rh_listen_resolve(addr, &ss, err, errlen)) < 0) return rc;
  int fd = adopt_inherited(&ss);
  if (fd < 0 && (fd = bind_new(&ss, addr, err, errlen)) < 0) return fd;
  uv_tcp_init(loop, tcp);
  if ((rc = uv_tcp_open(tcp, fd)) == 0) rc = uv_listen((uv_stream_t *)tcp, 1024, cb);
  if (rc) snprintf(err, errlen, "listen %s: %s", addr, uv_strerror(rc));
  return rc;
}

int rh_pick_port(const char *addr, char *out, size_t outlen) {
  rh_hostport hp;
  struct sockaddr_storage ss;
  char err[300];
  if (rh_hostport_parse(addr, &hp) || rh_listen_resolve(addr, &ss, err, sizeof err) < 0) return -1;
  if (hp.port != 0) {
    snprintf(out, outlen, "%s", addr);
    return 0;
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
  if (fd < 0) return -1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  socklen_t len = ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  if (bind(fd, (struct sockaddr *)&ss, len) < 0 || getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
    close(fd);
    return -1;
  }
  close(fd);
  int port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
  rh_hostport_format(hp.host, port, out, outlen);
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

/* One octet in decimal at p, no leading zeros; returns the end. */
static char *octet(char *p, unsigned v) {
  if (v >= 100) *p++ = (char)('0' + v / 100);
  if (v >= 10) *p++ = (char)('0' + v / 10 % 10);
  *p++ = (char)('0' + v % 10);
  return p;
}

/* Dotted IPv4 by hand: this runs for every request, and inet_ntop costs ~1,700 instructions. */
static int format_ipv4(const unsigned char *b, char *out, size_t outlen) {
  char tmp[16], *p = tmp;
  for (int i = 0; i < 4; i++) {
    if (i) *p++ = '.';
    p = octet(p, b[i]);
  }
  size_t n = (size_t)(p - tmp);
  if (n >= outlen) return 0;
  memcpy(out, tmp, n);
  out[n] = '\0';
  return 1;
}

void rh_addr_format(const rh_addr *a, char *out, size_t outlen) {
  int ok = a->family == AF_INET    ? format_ipv4(a->addr, out, outlen)
           : a->family == AF_INET6 ? inet_ntop(AF_INET6, a->addr, out, (socklen_t)outlen) != NULL
                                   : 0;
  if (!ok) snprintf(out, outlen, "unknown");
}

void rh_peer_name(uv_tcp_t *tcp, char *out, size_t outlen) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  snprintf(out, outlen, "unknown");
  if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len)) return;
  if (ss.ss_family == AF_INET6) uv_ip6_name((struct sockaddr_in6 *)&ss, out, outlen);
  else uv_ip4_name((struct sockaddr_in *)&ss, out, outlen);
}
