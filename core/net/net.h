/* net: listening sockets on the loop. */
#ifndef RH_NET_H
#define RH_NET_H

#include <stddef.h>
#include <uv.h>

/* A listen address (net/url.h's rh_hostport_parse: "HOST:PORT", "[V6]:PORT", ":PORT", "PORT")
 * as its first address: a name is resolved with getaddrinfo, which blocks (start-up only).
 * 0, or a negative uv error with a message in err. */
int rh_listen_resolve(const char *addr, struct sockaddr_storage *ss, char *err, size_t errlen);

/* Binds and listens on addr and opens tcp on the socket. A socket handed over by a binary
 * upgrade (RELAYHOST_LISTEN_FDS) that is bound to addr is adopted instead of binding anew.
 * 0 ok, or a negative uv error with a message in err. */
int rh_listen(uv_loop_t *loop, uv_tcp_t *tcp, const char *addr, uv_connection_cb cb,
              char *err, size_t errlen);

/* --workers: the listeners of this process bind with SO_REUSEPORT, so that the workers (and a
 * binary upgrade's new workers) share one port. Off by default: a second host started on a
 * port in use must fail, not quietly take half of its connections. */
void rh_net_share_ports(int on);

/* After start-up: closes the sockets a binary upgrade handed over that no listener adopted
 * (the new script listens elsewhere). */
void rh_net_close_inherited(void);

/* For an address with port 0: binds once to learn a free port and writes the address with it
 * to out (so that several workers can then bind the same one). Else copies addr. 0 or -1. */
int rh_pick_port(const char *addr, char *out, size_t outlen);

/* The port tcp is bound to (after rh_listen with port 0). */
int rh_bound_port(uv_tcp_t *tcp);

/* A peer address in 17 bytes, for structures kept per connection. */
typedef struct {
  unsigned char family; /* AF_INET, AF_INET6, 0: unknown */
  unsigned char addr[16];
} rh_addr;

/* The peer of a connected handle. */
void rh_peer_addr(uv_tcp_t *tcp, rh_addr *out);
/* "ip" text of an address ("unknown" when it could not be had). */
void rh_addr_format(const rh_addr *a, char *out, size_t outlen);
/* Both in one step: the peer of a connected handle as text. */
void rh_peer_name(uv_tcp_t *tcp, char *out, size_t outlen);

#endif
