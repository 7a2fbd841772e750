/* relay: the git tunnel's two bridges between HTTP and tunnel streams.
 *
 * Server side (rh_trelay): one client request on /v1/relay/<key>/<path> becomes one stream: its
 * head and streamed body go out, the response head and body come back and are written to the
 * client. The request body is read only as fast as the stream's credit allows; response bytes
 * are acknowledged once the client's socket has taken them.
 *
 * Client side (rh_texec): a stream the server opened becomes one HTTP/1.1 exchange with the
 * base URL, on a fresh upstream connection, both bodies streamed under the same credit rules.
 * The target stays on base-url's scheme, host and port, its path under base-url's path
 * (rh_path_normalize); the head is rebuilt from checked parts (http/head.h).
 *
 * Both ends treat the other as hostile: every relayed head is checked, and each body is framed
 * by the end that writes it (chunked, or held to its Content-Length). */
#ifndef RH_TUNNEL_RELAY_H
#define RH_TUNNEL_RELAY_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "http/server.h"
#include "buf/buf.h"
#include "tunnel/tunnel.h"

struct rh_tls_ctx;

typedef struct rh_trelay rh_trelay;
/* The exchange is over: status is what the client got (0 if its connection was cut), err NULL
 * on success or a short reason. Runs once, unless rh_trelay_cancel came first. */
typedef void (*rh_trelay_done)(void *ud, int status, const char *err);

/* Relays req (the caller keeps its reference; it must stay valid until done or cancel) as
 * method + target through t, with extra (may be NULL) added to its headers. NULL if the tunnel
 * cannot open a stream. */
rh_trelay *rh_trelay_start(rh_tun *t, rh_http_req *req, const char *target, const rh_headers *extra,
                           rh_trelay_done done, void *ud);
/* The caller gives up: the stream is reset, the client's connection cut if its response began. */
void rh_trelay_cancel(rh_trelay *r);

typedef struct {
  const char *base_url;          /* http[s]://host[:port][/path], or the quirk "http:/" */
  /* with base_url "http:/" (the target's first segment is the host): the hosts it may name,
   * "host" (default port), "host:port" or "host:*" */
  const char *const *allow_hosts;
  size_t nallow;
  struct rh_tls_ctx *tls;        /* for https targets (NULL: the default client context) */
  int relay_headers;             /* pass X-Relay-* on (forwarding to another relay-server); else
                                    the relay's own headers stop here */
} rh_texec_conf;

/* Executes the request a server opened as s. Answers the stream itself when the target is not
 * allowed (403) or the head is bad (400: a method, target or field that fails http/head.h, a
 * path that climbs above base-url's, a bad Content-Length); resets it with RH_TR_UPSTREAM when the upstream fails before
 * its head. conf is read during the call only. */
void rh_texec_open(uv_loop_t *loop, const rh_texec_conf *conf, rh_tstream *s, const char *method,
                   const char *target, const rh_headers *h);

/* Where a relayed request goes and how its body is framed (chunked, or exactly left bytes). */
typedef struct {
  int tls, port, chunked;
  char host[256];
  uint64_t left;
} rh_texec_up;

/* The upstream request head rh_texec_open sends for method, target and h: NULL with the head
 * appended to out and up filled, or why not (*status: 400, or 403 for a host not allowed).
 * Pure, so the fuzz target checks exactly what the client writes. */
const char *rh_texec_head(const rh_texec_conf *c, const char *method, const char *target, const rh_headers *h,
                          rh_texec_up *up, rh_buf *out, int *status);

/* A forwarder: a tunnel pair inside this process whose far end executes every stream against
 * conf's base URL. A server hands a request to another server through it (rh_trelay_start on
 * rh_tfwd_tun) with the same streaming and credit rules as a real tunnel. Messages cross on the
 * next turn of the loop, never from inside the sender's call. conf is copied. */
typedef struct rh_tfwd rh_tfwd;
rh_tfwd *rh_tfwd_new(uv_loop_t *loop, const rh_texec_conf *conf);
rh_tun *rh_tfwd_tun(rh_tfwd *f);
void rh_tfwd_free(rh_tfwd *f); /* resets what is in flight */

/* A relayed head's Content-Length: digits only, every copy the same. 0 with *len (UINT64_MAX
 * when there is none), or -1. Each end frames the body it relays by it, never trusting the
 * far end's bytes to match. */
int rh_trelay_content_length(const rh_headers *h, uint64_t *len);

/* A relay client's response head (status as it came in the HEAD frame): NULL with *code and
 * *len (its Content-Length, UINT64_MAX for none) when it may go to the git user, else what is
 * wrong (a status not 200..599, a name not a token, a value with a control byte, a bad length). */
const char *rh_trelay_check_head(const char *status, const rh_headers *h, int *code, uint64_t *len);

/* The fields of `from` that cross a hop: not hop-by-hop, not Host. */
void rh_trelay_copy_headers(const rh_headers *from, rh_headers *to);

#endif
