/* ws/dial: opens a WebSocket to a server: dial (TCP, TLS), send the handshake, check the 101
 * and its accept key. Used by the proxy's pass-through and by relay.ws.connect. */
#ifndef RH_WS_DIAL_H
#define RH_WS_DIAL_H

#include <stddef.h>
#include <uv.h>
#include "buf/buf.h"
#include "net/upconn.h"

typedef struct rh_ws_dial rh_ws_dial;

/* Success: u carries the session (no owner yet: call rh_upconn_own), protocol is the one the
 * server picked or NULL, rest holds frames that came with the 101. Failure: u NULL, err says
 * why, timed_out tells a slow server from a broken one. Everything lives only during the call. */
typedef void (*rh_ws_dial_cb)(void *ud, rh_upconn *u, const char *protocol, const char *rest,
                              size_t rest_len, const char *err, int timed_out);

/* The fields that make a request a WebSocket handshake (Upgrade, Connection,
 * Sec-WebSocket-Version, Sec-WebSocket-Key: key), written through http/head.h: the one writer of
 * them for every dial (the proxy's pass-through, relay.ws.connect). NULL, or what was wrong. */
const char *rh_ws_dial_fields(rh_buf *b, const char *key);

/* Dials t (net/upconn.h), then sends head: the whole handshake request, with rh_ws_dial_fields
 * for key. timeout bounds the whole handshake. cb runs once, later, unless cancelled. */
rh_ws_dial *rh_ws_dial_start(uv_loop_t *loop, const rh_upconn_target *t, const char *head, size_t head_len,
                             const char *key, double timeout, rh_ws_dial_cb cb, void *ud);
/* cb is not called after this. */
void rh_ws_dial_cancel(rh_ws_dial *d);

#endif
