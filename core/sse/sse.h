/* sse: Server-Sent Events fan-out in C. Streams are grouped in named channels (the flag proxy
 * uses one per environment); a publish writes one event to every stream of a channel in one
 * write each, without entering Lua. Streams belong to the process, not to a Lua generation, so
 * they live on across reloads.
 *
 * Each held stream owns one reference on its rh_http_req (dropped when the stream ends) and
 * takes the request's events for itself. While a stream is idle for `heartbeat` seconds it gets
 * a ":\n\n" comment, always in a write of its own (the Node SDK drops a whole chunk whose first
 * line is a comment). A stream whose client stops reading (its queue stays over the server's
 * high-water mark when the next event comes) is dropped: the SDK reconnects and re-fetches. */
#ifndef RH_SSE_H
#define RH_SSE_H

#include <stddef.h>
#include <uv.h>
#include "http/server.h"

/* Takes req over (the caller's reference moves to the stream), on loop (its heartbeat timer
 * and clock, handed in like every protocol module's): answers 200 with headers plus
 * the event-stream content type, writes first (may be empty) with the head in one write, and
 * joins channel. 0, or -1 when the client is gone (the reference is released either way). */
int rh_sse_hold(uv_loop_t *loop, rh_http_req *req, const char *channel, const rh_headers *headers,
                const char *first, size_t first_len, double heartbeat);
/* Writes p to every stream of channel (NULL: every channel). Returns how many got it. */
size_t rh_sse_publish(const char *channel, const char *p, size_t n);
/* Ends every stream of channel (NULL: all). Returns how many were closed. */
size_t rh_sse_close(const char *channel);
/* Streams held in channel (NULL: all). */
size_t rh_sse_count(const char *channel);

#endif
