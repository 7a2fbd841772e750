/* ws: the WebSocket protocol (RFC 6455): wslay reads, we frame what we send; no sockets of its own.
 *
 * Handshake helpers check a server-side upgrade request and compute the accept key; an rh_ws is
 * one side of an open connection. The caller moves the bytes: it hands what it read from the peer
 * to rh_ws_feed, and after every call writes what rh_ws_output gives it. That keeps this layer the
 * same for the server, the WebSocket client, tunnels and the proxy's pass-through, and lets the
 * unit tests pump two ends into each other in memory.
 *
 * What an rh_ws does on its own: answers pings with pongs, reassembles fragmented messages (at
 * most max_message bytes each), checks that text is UTF-8, requires masked frames from clients
 * and unmasked ones from servers, echoes the peer's close, and fails the connection with the
 * right close code when the peer breaks the protocol (1002 protocol error, 1007 invalid UTF-8,
 * 1009 message too big), the close frame carrying a short reason. After a failure it reads
 * nothing more and sends nothing but that close. */
#ifndef RH_WS_H
#define RH_WS_H

#include <stddef.h>

#include "http/headers.h"
#include "buf/buf.h"

enum {
  RH_WS_TEXT = 1,
  RH_WS_BINARY = 2,
  RH_WS_CLOSE = 8,
  RH_WS_PING = 9,
  RH_WS_PONG = 10,
};

#define RH_WS_MAX_MESSAGE_DEFAULT (16u * 1024 * 1024) /* what max_message 0 means */

/* The bound on what one connection may owe its peer (see rh_ws_read_paused), and its floor:
 * reading resumes at a quarter of the bound, and a quarter of the floor is where the HTTP
 * server's drain callback fires (its write_high_water), so a paused peer is always woken. */
#define RH_WS_MAX_QUEUED_DEFAULT (1024u * 1024)
#define RH_WS_MAX_QUEUED_MIN (1024u * 1024)

/* The why of rh_ws_check_upgrade for a version other than 13: RFC 6455 §4.4 wants a 426
 * answer with "Sec-WebSocket-Version: 13" then; every other failure is a plain 400. */
#define RH_WS_WHY_VERSION "unsupported Sec-WebSocket-Version (want 13)"

/* ---- handshake ---- */

/* out = base64(SHA-1(client_key + the RFC 6455 GUID)), NUL-terminated. 0, or -1 if hashing
 * failed. The key is used as given: the caller passes the trimmed header value. */
int rh_ws_accept_key(const char *client_key, size_t len, char out[29]);

/* 1 if `accept` (a Sec-WebSocket-Accept value, surrounding whitespace allowed) is the right
 * answer to client_key (NUL-terminated, as made by rh_ws_client_key); else 0. For clients. */
int rh_ws_accept_ok(const char *client_key, const char *accept, size_t accept_len);

/* Checks a server-side upgrade request (RFC 6455 §4.2.1): method GET, Upgrade has the token
 * "websocket", Connection has "upgrade", exactly one Sec-WebSocket-Version and it is 13, exactly
 * one Sec-WebSocket-Key and it is 16 bytes in base64. 0 if it is one; else -1 and *why (if not
 * NULL) says which rule failed. Host and the HTTP version are the HTTP server's to check. */
int rh_ws_check_upgrade(const rh_headers *h, const char *method, const char **why);

/* A fresh Sec-WebSocket-Key for a client: 16 random bytes in base64, NUL-terminated. */
void rh_ws_client_key(char out[25]);

/* 1 if p[0..n) is well-formed UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF). */
int rh_ws_utf8_valid(const char *p, size_t n);

/* ---- a connection ---- */

typedef struct rh_ws rh_ws;

typedef struct {
  /* A whole message. data stays valid only during the call and has a NUL after data[len]. */
  void (*on_message)(void *ud, int opcode /* RH_WS_TEXT or RH_WS_BINARY */, const char *data,
                     size_t len);
  /* The peer's close frame: its code (1005 if it had none) and reason. The echo is already
   * queued; rh_ws_want_close says when to close the socket. */
  void (*on_close)(void *ud, int code, const char *reason, size_t len);
  void *ud;
  /* Bytes the caller took from rh_ws_output that its transport has not written yet (NULL: it
   * writes everything at once). They count against the connection's bound. */
  size_t (*queued)(void *ud);
} rh_ws_handlers;

/* is_server: this end is the server (expects masked frames, sends unmasked ones). max_message
 * bounds a reassembled message (0: RH_WS_MAX_MESSAGE_DEFAULT). h is copied; its members may be
 * NULL. Handlers run inside rh_ws_feed; they may call rh_ws_send and rh_ws_close, but must not
 * free the rh_ws (set a flag and free it after rh_ws_feed returns). */
rh_ws *rh_ws_new(int is_server, size_t max_message, const rh_ws_handlers *h);
void rh_ws_free(rh_ws *ws);

/* Backpressure. Everything this end owes the peer counts against one bound per connection
 * (max_queued, default RH_WS_MAX_QUEUED_DEFAULT, at least RH_WS_MAX_QUEUED_MIN): its own
 * messages, the pongs and the close echo it answers with on its own, and what the transport
 * still holds (handlers.queued). Over the bound the peer must not be read from: a peer that
 * floods pings or messages and never reads what they bring back would otherwise grow the
 * queue without end. The caller asks rh_ws_read_paused after every rh_ws_feed and rh_ws_send,
 * and whenever its transport's queue shrinks, and stops or restarts reading the socket by the
 * answer; it says 1 over the bound and 0 again once the backlog is down to a quarter of it.
 * A caller that feeds a paused connection anyway sees it fail with 1008 once the backlog is
 * twice the bound. */
void rh_ws_set_max_queued(rh_ws *ws, size_t max_queued);
int rh_ws_read_paused(rh_ws *ws);
/* What this end owes the peer now: its output not yet taken by rh_ws_output, plus
 * handlers.queued. */
size_t rh_ws_backlog(const rh_ws *ws);

/* How long wslay's context is kept after it was made before a connection at rest between
 * frames gives it back, while the peer keeps sending: a peer whose bytes come further apart than
 * this (a pong now and then) gives it back at once (default 1 s; the fuzzer and tests use 0 to go
 * through every path). */
void rh_ws_rest_after(double seconds);

/* Binary data frames are read here, unmasked a word at a time, and so are well-formed control
 * frames that arrive whole in one rh_ws_feed (a held connection's pings and pongs); every other
 * frame by wslay.
 * 0 sends every frame to wslay: for the fuzzer and tests, to hold the two readers to the same
 * answers. Default 1. */
void rh_ws_fast_read(int on);

/* Bytes from the peer, any split. Calls the handlers for what they complete. 0, or -1 once the
 * connection has failed (rh_ws_error says why; the close frame is in the output). Input after a
 * close or a failure is ignored. */
int rh_ws_feed(rh_ws *ws, const char *in, size_t n);

/* Queues a message: RH_WS_TEXT (must be UTF-8), RH_WS_BINARY, RH_WS_PING or RH_WS_PONG (at most
 * 125 bytes). 0, or -1 if the opcode or payload is not allowed or a close was already queued
 * or received (the echo is the last frame). */
int rh_ws_send(rh_ws *ws, int opcode, const char *p, size_t n);
/* The same for a binary message whose payload is head (hl bytes) then p: one frame, each byte
 * copied once, for a caller that frames its own messages (the tunnel). -1 also for another
 * opcode with a head. */
int rh_ws_send_parts(rh_ws *ws, int opcode, const char *head, size_t hl, const char *p, size_t n);

/* Starts the closing handshake: a close frame with code (1000-1003, 1007-1014, 3000-4999; or 0
 * for none) and reason (may be NULL; at most 123 bytes of UTF-8). 0, or -1 if the arguments are
 * not allowed or a close was already queued or received. Messages from the peer are still delivered until
 * its close arrives. */
int rh_ws_close(rh_ws *ws, int code, const char *reason);

/* Appends everything that is ready to go to the peer (frames are masked when this is a client)
 * to `out`, and forgets it. Call it after every rh_ws_new/feed/send/close. */
void rh_ws_output(rh_ws *ws, rh_buf *out);
/* The same for a caller that writes the output at once (its transport copying what it cannot
 * take): the bytes ready for the peer, in place, valid until the next call on ws; then
 * rh_ws_output_done forgets them and keeps the buffer if its capacity is at most keep, so a
 * connection that sends in batches does not allocate one anew for each. */
const char *rh_ws_output_peek(const rh_ws *ws, size_t *n);
void rh_ws_output_done(rh_ws *ws, size_t keep);

/* 1 when the closing handshake is done (close sent and received) or the connection failed:
 * flush the output, then close the socket. */
int rh_ws_want_close(const rh_ws *ws);

/* Why the connection failed, or NULL if it did not. */
const char *rh_ws_error(const rh_ws *ws);

/* The code of the close frame this end sent or queued (0 if none; 1005 for one without a code),
 * and of the one it received (0 if none; 1005 for one without a code). For logs and metrics. */
int rh_ws_close_sent(const rh_ws *ws);
int rh_ws_close_received(const rh_ws *ws);

#endif
