/* relay: the git tunnel's two bridges between HTTP and tunnel streams.
 *
 * Server side (rh_trelay): one client request on /v1/relay/<key>/<path> becomes one stream: its
 * head and streamed body go out, the response head and body come back and are written to the
 * client. The request body is read only as fast as the stream's credit allows; response bytes
 * are acknowledged once the client's socket has taken them.
 *
 * Client side (rh_texec): a stream the server opened becomes one HTTP/1.1 exchange with the
 * base URL (string concatenation, like the original relay-client), on a fresh upstream
 * connection, both bodies streamed under the same credit rules. */
#ifndef RH_TUNNEL_RELAY_H
#define RH_TUNNEL_RELAY_H

#include <stddef.h>
#include <uv.h>

#include "http/server.h"
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
  const char *const *allow_hosts; /* hosts other than base_url's that a target may name */
  size_t nallow;
  struct rh_tls_ctx *tls;        /* for https targets (NULL: the default client context) */
  int relay_headers;             /* pass X-Relay-* on (forwarding to another relay-server); else
                                    the relay's own headers stop here */
} rh_texec_conf;

/* Executes the request a server opened as s. Answers the stream itself when the target is not
 * allowed (403) or not a URL (400); resets it with RH_TR_UPSTREAM when the upstream fails before
 * its head. conf is read during the call only. */
void rh_texec_open(uv_loop_t *loop, const rh_texec_conf *conf, rh_tstream *s, const char *method,
                   const char *target, const rh_headers *h);

/* A forwarder: a tunnel pair inside this process whose far end executes every stream against
 * conf's base URL. A server hands a request to another server through it (rh_trelay_start on
 * rh_tfwd_tun) with the same streaming and credit rules as a real tunnel. Messages cross on the
 * next turn of the loop, never from inside the sender's call. conf is copied. */
typedef struct rh_tfwd rh_tfwd;
rh_tfwd *rh_tfwd_new(uv_loop_t *loop, const rh_texec_conf *conf);
rh_tun *rh_tfwd_tun(rh_tfwd *f);
void rh_tfwd_free(rh_tfwd *f); /* resets what is in flight */

/* The fields of `from` that cross a hop: not hop-by-hop, not Host. */
void rh_trelay_copy_headers(const rh_headers *from, rh_headers *to);

#endif
