/* trace: W3C Trace Context (traceparent) for a request. The client's trace is taken when its
 * traceparent is valid, else one is started (a new trace-id), and relayhost's own span gets a new
 * parent-id for every hop it makes upstream. An invalid traceparent is replaced, never forwarded,
 * and its tracestate goes with it (https://www.w3.org/TR/trace-context/ 4.3, 3.3). */
#ifndef RH_HTTP_TRACE_H
#define RH_HTTP_TRACE_H

#include "http/headers.h"

#define RH_TRACEPARENT_LEN 55

typedef struct {
  char trace_id[33]; /* 32 lowercase hex */
  char span_id[17];  /* ours: the parent-id upstream sees */
  char flags[3];     /* the client's trace-flags, or 01 for a trace started here */
  int from_client;   /* the client's traceparent was valid (its tracestate may pass) */
} rh_trace;

/* From the request's headers: the client's trace, or a new one. */
void rh_trace_begin(rh_trace *t, const rh_headers *h);
/* The traceparent to send upstream: 00-trace_id-span_id-flags, NUL-terminated. */
void rh_trace_header(const rh_trace *t, char out[RH_TRACEPARENT_LEN + 1]);
/* Replaces the trace fields in a list of fields about to go upstream with this hop's own. */
void rh_trace_apply(const rh_trace *t, rh_headers *out);

#endif
