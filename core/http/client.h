/* client: a non-blocking HTTP/1.1 client on the loop (one request per connection for now).
 *
 * rh_client_request copies everything it needs from req; the callback runs exactly once, later
 * on the loop (never from inside rh_client_request), unless the operation is cancelled first.
 * The response passed to the callback lives only during the callback. A streaming request
 * (req->on_data) calls back at the head and goes on until the stream ends or is cancelled. */
#ifndef RH_CLIENT_H
#define RH_CLIENT_H

#include <stddef.h>
#include <uv.h>
#include "http/collect.h"
#include "http/headers.h"

typedef struct rh_client_op rh_client_op;

/* Streaming responses (an SSE feed): body bytes as they arrive; p == NULL ends the stream, with
 * err NULL when the response ended cleanly, else why ("timeout", "read: …"). */
typedef void (*rh_client_data_cb)(void *ud, const char *p, size_t n, const char *err);

typedef struct {
  const char *method;          /* NULL: GET */
  const char *url;             /* http[s]://host[:port]/path?query */
  const char *ca_file;         /* https: trust this CA file (else $SSL_CERT_FILE, else the system's) */
  const rh_headers *headers;   /* may be NULL */
  const char *body;
  size_t body_len;
  double timeout;              /* seconds for the whole exchange; <= 0: 30 */
  size_t max_body;             /* response body cap; 0: 64 MiB */
  rh_client_data_cb on_data;   /* streaming: the callback runs once the head is in (empty body),
                                  then the body goes to on_data; timeout bounds each silence */
} rh_client_req;

typedef struct {
  int status;
  rh_headers headers;
  const char *body;
  size_t body_len;
} rh_client_resp;

/* err is NULL on success, else a short message ("timeout", "connect: connection refused",
 * "bad url: …", "response body over max_body", …) and resp is NULL. */
typedef void (*rh_client_cb)(void *ud, const char *err, const rh_client_resp *resp);

rh_client_op *rh_client_request(uv_loop_t *loop, const rh_client_req *req, rh_client_cb cb,
                                void *ud);
void rh_client_cancel(rh_client_op *op);

/* A response parser for a client that reads its own connection (rh_client, the tunnel's
 * relay-client): the head's fields collected (http/collect.h, held to
 * RH_COLLECT_MAX_RESPONSE_HEAD), interim 1xx heads skipped, and the parse paused once the final
 * response is complete (complete set): what follows is not this response's. Its llhttp settings
 * are RH_CLIENT_PARSER_SETTINGS plus the owner's on_headers_complete (which calls
 * rh_collect_interim_head first) and on_body; llhttp's data stays the owner's. */
typedef struct {
  rh_collect c; /* first: rh_client_on_message_complete finds the parser from its llhttp_t */
  int complete;
} rh_client_parser;

#define RH_CLIENT_PARSER_SETTINGS                                                                   \
  .on_header_field = rh_collect_on_field, .on_header_field_complete = rh_collect_on_field_complete, \
  .on_header_value = rh_collect_on_value, .on_message_complete = rh_client_on_message_complete

int rh_client_on_message_complete(llhttp_t *p);
/* Why the parse stopped when llhttp returned an error: "head over 64 KiB" or llhttp's reason. */
const char *rh_client_parser_error(const rh_client_parser *p);

#endif
