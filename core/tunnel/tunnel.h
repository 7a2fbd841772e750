/* tunnel: streams multiplexed over one message transport (a WebSocket), with per-stream credit
 * windows, bounded buffers, stall detection and a heartbeat (docs/git-tunnel-protocol.md).
 *
 * An rh_tun knows nothing of sockets, HTTP or Lua: the owner hands it each message that arrived
 * (rh_tun_input) and gives it a send function; streams talk to whoever bridges them (an HTTP
 * request on the server, an upstream connection on the client) through handlers.
 *
 * Ownership: the owner creates the rh_tun and ends it with rh_tun_free, which resets the streams
 * still open (their on_reset runs). A stream is held by the tunnel and by its bridge: the bridge
 * calls rh_tstream_release once when it no longer touches the stream; the stream is freed when
 * it is released and over (both ENDs crossed, or reset). Handlers run from rh_tun_input, the
 * tunnel's timer or rh_tun_free; they may call any function here except rh_tun_free. */
#ifndef RH_TUNNEL_H
#define RH_TUNNEL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "http/headers.h"
#include "tunnel/frame.h" /* RH_TR_* reset codes */

#define RH_TUN_WINDOW (4u * 1024 * 1024) /* initial credit of each direction of each stream */
#define RH_TUN_SLACK (1024u * 1024)    /* what a tunnel may queue beyond its streams' windows */
#define RH_TUN_PONG_HOLD (64u * 1024)  /* a PING is answered once the transport's queue is under this */
/* Client: over this in the transport's queue, every stream waits as if out of credit. Windows
 * are per stream and a server opens as many as it likes; one that reads nothing must not hold a
 * window per stream here. */
#define RH_TUN_CLIENT_QUEUE (8u * 1024 * 1024)
#define RH_TR_TIMEOUT 100                /* local reset code: no response head in time */
#define RH_TR_GONE 101                   /* local reset code: the tunnel went away */

typedef struct rh_tun rh_tun;
typedef struct rh_tstream rh_tstream;

typedef struct {
  void (*on_head)(void *ud, const char *a, const char *b, const rh_headers *h); /* the peer's HEAD */
  void (*on_data)(void *ud, const char *p, size_t n);  /* call rh_tstream_consumed once handed on */
  void (*on_end)(void *ud);                            /* the peer sent END */
  void (*on_reset)(void *ud, int code, const char *reason); /* the stream is over, failed */
  void (*on_writable)(void *ud);                       /* credit is back after a write returned 1 */
  void *ud;
} rh_tstream_handlers;

typedef struct {
  /* One binary message: head (hl bytes) then p (n bytes; a DATA frame's body, passed apart so
   * it is copied once, by the transport). -1 if the link is gone. */
  int (*send)(void *ud, const char *head, size_t hl, const char *p, size_t n);
  /* Client side: the server opened stream s with a request HEAD. The bridge sets its handlers. */
  void (*on_open)(void *ud, rh_tstream *s, const char *method, const char *target, const rh_headers *h);
  void (*on_fail)(void *ud, int ws_code, const char *reason); /* protocol error or dead heartbeat */
  /* Optional: the heartbeat as the transport's own ping (a WebSocket ping, whose pong the owner
   * reports with rh_tun_touch). NULL: PING frames. */
  void (*ping)(void *ud);
  void *ud;
  /* Optional: bytes the transport holds that the peer has not taken. Above the tunnel's bound
   * (every open stream's full window, plus RH_TUN_SLACK for control frames and heads) the peer
   * is not reading what it asked for: the tunnel is closed with 1008. NULL: no bound. */
  size_t (*queued)(void *ud);
} rh_tun_transport;

typedef struct {
  double ping_interval;  /* seconds; dead after 3 intervals without a frame (default 5) */
  double stall_timeout;  /* a stream without credit this long is reset (default 60) */
  double head_timeout;   /* server: a stream without a response HEAD this long (default 60) */
} rh_tun_opts;

typedef struct {
  uint64_t streams_opened, streams_reset, bytes_in, bytes_out, pongs_held;
  size_t streams_open;
  size_t buffered;       /* bytes waiting for credit, over every stream */
} rh_tun_stats;

/* opts may be NULL for the defaults. t is copied. */
rh_tun *rh_tun_new(uv_loop_t *loop, int is_server, const rh_tun_transport *t, const rh_tun_opts *opts);
/* The peer is alive (bytes came, a pong): for the heartbeat. rh_tun_input implies it. */
void rh_tun_touch(rh_tun *t);
/* One message from the peer. 0, or -1 when it broke the protocol (on_fail has run). */
int rh_tun_input(rh_tun *t, const char *p, size_t n);
/* The transport is gone (or the owner is done): resets every open stream with RH_TR_GONE and
 * frees the tunnel once its timer is closed. */
void rh_tun_free(rh_tun *t, const char *why);
void rh_tun_get_stats(const rh_tun *t, rh_tun_stats *st);

/* Server: opens a stream with a request HEAD. NULL if the link is gone. */
rh_tstream *rh_tun_open(rh_tun *t, const char *method, const char *target, const rh_headers *h,
                        const rh_tstream_handlers *sh);
void rh_tstream_set_handlers(rh_tstream *s, const rh_tstream_handlers *sh);
/* Client: the response HEAD. -1 if the stream is over. */
int rh_tstream_head(rh_tstream *s, int status, const char *reason, const rh_headers *h);
/* Body bytes, any size: what exceeds the credit waits in the stream. 0: write more; 1: out of
 * credit, stop reading the source until on_writable; -1: the stream is over. */
int rh_tstream_write(rh_tstream *s, const char *p, size_t n);
int rh_tstream_end(rh_tstream *s);
/* n bytes given by on_data have left this end: credit goes back to the peer. */
void rh_tstream_consumed(rh_tstream *s, size_t n);
void rh_tstream_reset(rh_tstream *s, int code, const char *reason);
void rh_tstream_release(rh_tstream *s);
const char *rh_tun_reset_name(int code);

#endif
