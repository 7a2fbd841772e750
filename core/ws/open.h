/* open: how many WebSocket sessions are open in this process, by side, as the gauge
 * relayhost_websockets_open{side} (for /metrics and the status page):
 *   server  accepted by a script (app:websocket, relay.ws.accept; the tunnel server's)
 *   client  dialled by a script (relay.ws.connect; the tunnel client's)
 *   proxy   passed through a proxy mount (client and upstream together count one)
 * A session counts from its handshake until it is closed or lost. */
#ifndef RH_WS_OPEN_H
#define RH_WS_OPEN_H

/* Registers the gauge with every side at 0, so it is in /metrics before the first session. */
void rh_ws_open_register(void);
/* One session of side opened (+1) or ended (-1). */
void rh_ws_open_add(const char *side, int delta);

#endif
