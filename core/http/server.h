/* server: the HTTP/1.1 server side of a connection (llhttp), with the host's limits.
 *
 * An rh_http_server owns a listener and its connections. Each connection parses one request at
 * a time; pipelined requests wait, unparsed, until the current response is finished. For each
 * request head the server calls on_request with an rh_http_req; the upper layer answers through
 * rh_http_respond or rh_http_start/write/finish and calls rh_http_req_release when it no longer
 * needs the request. The request stays valid until released, even if the client goes away
 * (req->conn is then NULL and writes return -1).
 *
 * Bad input never reaches on_request: malformed heads and smuggling shapes get 400, oversize
 * heads 431, slow heads 408, each with a log line and a metric, and the connection is closed. */
#ifndef RH_HTTP_SERVER_H
#define RH_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include "http/headers.h"
#include "http/trace.h"
#include "buf/buf.h"

typedef struct rh_http_server rh_http_server;
typedef struct rh_http_conn rh_http_conn;
typedef struct rh_http_req rh_http_req;

typedef struct {
  size_t max_head;           /* request line + headers; over → 431 */
  size_t max_body;           /* default per request; the upper layer may change req->max_body */
  double head_timeout;       /* seconds from a head's first byte to its end; over → 408 */
  double body_timeout;       /* seconds without body progress; over → 408 */
  double keepalive_timeout;  /* idle seconds between requests before a silent close */
  double send_timeout;       /* seconds with bytes queued for the client and none taken; over → close */
  size_t write_high_water;   /* rh_http_write returns 1 above this many queued bytes */
  const struct rh_cidr_list *trusted_proxies; /* whose X-Forwarded-For names the client */
  struct rh_tls_ctx *tls;    /* serve HTTPS with this context (NULL: plain HTTP) */
  const char *name;          /* which listener this is ("main", or a script's); copied */
} rh_http_limits;

typedef struct {
  void (*on_request)(rh_http_req *req, void *ud);  /* a head has been parsed */
  void (*on_body)(rh_http_req *req, void *ud);     /* body complete, or req->body_error set */
  void (*on_drain)(rh_http_req *req, void *ud);    /* queued output fell below high water */
  void (*on_abort)(rh_http_req *req, void *ud);    /* the connection went away */
  void *ud;
} rh_http_handlers;

/* A request may take its events for itself (a proxied request streams its body instead of
 * buffering it): then these replace the server's handlers for that request. */
typedef struct {
  void (*on_body_chunk)(rh_http_req *req, const char *p, size_t n, void *ud); /* streamed body */
  void (*on_body)(rh_http_req *req, void *ud);   /* body complete, or req->body_error set */
  void (*on_drain)(rh_http_req *req, void *ud);
  void (*on_abort)(rh_http_req *req, void *ud);
} rh_http_req_events;

/* Its ints are paired (no padding holes): a held WebSocket keeps one of these for its life. */
struct rh_http_req {
  rh_http_conn *conn;        /* NULL once the connection is closed */
  rh_http_server *server;
  char id[20];               /* request id, hex */
  rh_trace trace;            /* W3C trace context: the client's trace or a new one, our span */
  char peer[64];             /* the client: the socket peer, or per --trusted-proxies */
  char socket_peer[64];
  int tls;                   /* arrived over TLS (scheme https) */
  int refs;
  const char *method;
  char *target;              /* raw request target */
  size_t target_len;
  const char *path;          /* into target: path part and its length */
  size_t path_len;
  const char *query;         /* into target after '?', or NULL */
  size_t query_len;
  rh_headers headers;
  int http_minor;
  int keep_alive;
  int expect_continue;
  int body_paused;           /* a streaming consumer asked to stop reading */
  uint64_t content_length;   /* UINT64_MAX: none given */
  size_t max_body;
  rh_buf body;
  int body_done;
  int overrun;               /* a write went past that length: the rest was dropped */
  const char *body_error;    /* set with on_body when the body failed (413, client gone) */
  int body_wanted;           /* the handler asked for the body: 100-continue sent if needed */
  int status;                /* response status, 0 before the head is sent */
  int head_sent, finished, chunked, is_head;
  int64_t length_left;       /* body bytes the response's Content-Length still owes (-1: none) */
  uint64_t bytes_out;
  uint64_t started_ns;       /* uv_hrtime when the head was parsed */
  rh_buf log_path;           /* the path as the access log writes it, when that differs (a
                              * secret route parameter hidden); empty: path */
  uint64_t body_received;    /* bytes of body seen, streamed or buffered */
  rh_buf held;               /* a response head held back by rh_http_start_held */
  const rh_http_req_events *events; /* NULL: the server's handlers */
  void *ud;                  /* the upper layer's */
};

/* Starts serving on addr. NULL plus err on failure. */
rh_http_server *rh_http_server_start(uv_loop_t *loop, const char *addr, const rh_http_limits *lim,
                                     const rh_http_handlers *h, char *err, size_t errlen);
int rh_http_server_port(rh_http_server *s);
/* The name of the listener a request came in on (rh_http_limits.name). */
const char *rh_http_req_listener(const rh_http_req *r);
/* The listening socket (handed to the successor on a binary upgrade), or -1. */
int rh_http_server_fd(rh_http_server *s);
/* Stops accepting; idle connections close, busy ones after their current response. */
void rh_http_server_stop_accepting(rh_http_server *s);
size_t rh_http_server_connections(rh_http_server *s);
/* Closes every connection and frees the server once all handles are closed. */
void rh_http_server_free(rh_http_server *s);
void rh_http_limits_default(rh_http_limits *lim);

/* Whole response with Content-Length. headers may be NULL. */
int rh_http_respond(rh_http_req *req, int status, const rh_headers *headers, const char *body,
                    size_t len);
/* Streaming: chunked unless headers carry Content-Length, to which the body is then held (a
 * write past it is cut there and returns -1 with req->overrun set; a finish short of it closes
 * the connection). RH_HTTP_BAD_LENGTH when that Content-Length is not a length. */
#define RH_HTTP_BAD_LENGTH (-2)
int rh_http_start(rh_http_req *req, int status, const rh_headers *headers);
/* The same, but the head is held back and goes out with the first body bytes (one write
 * instead of two); the caller calls rh_http_flush before it stops producing for a while. */
int rh_http_start_held(rh_http_req *req, int status, const rh_headers *headers);
void rh_http_flush(rh_http_req *req);
/* -1 closed (or past the Content-Length: req->overrun), 0 ok, 1 over high water (wait for on_drain
 * before writing more). */
int rh_http_write(rh_http_req *req, const char *p, size_t n);
int rh_http_finish(rh_http_req *req);
/* Asks for the body: sends 100 Continue if the client waits for it. 1: the body is complete;
 * 0: on_body follows; -1: it failed (req->body_error says why). */
int rh_http_want_body(rh_http_req *req);
/* Answers status with a short text body and closes the connection, logged and counted like
 * the server's own rejections (413 for a declared body over the route's limit, …). */
void rh_http_reject(rh_http_req *req, int status, const char *reason);
/* Bytes written to the connection that the client has not taken yet (0 once it is closed):
 * what a WebSocket relay measures a slow consumer by. */
size_t rh_http_queued(const rh_http_req *req);
/* Drops the connection (a streamed response that cannot be finished). */
void rh_http_abort(rh_http_req *req);
void rh_http_req_release(rh_http_req *req);
/* Takes the connection over after an upgrade: writes the status line and headers as given (a
 * 101 with its Upgrade/Connection fields), then hands every byte the client sends, starting
 * with any already read past the head, to events->on_body_chunk. Writes go through
 * rh_http_write (raw, no chunking); rh_http_abort closes. The request's headers are freed
 * (req->headers is empty from here on) and its target is cut to the path (req->query is NULL):
 * read what you need of them before. */
int rh_http_tunnel(rh_http_req *req, int status, const rh_headers *headers,
                   const rh_http_req_events *events, void *ud);
/* Streams the body to events->on_body_chunk from now on instead of buffering it. */
void rh_http_stream_body(rh_http_req *req, const rh_http_req_events *events, void *ud);
/* Backpressure for a streamed body: stop and restart reading from the client. */
void rh_http_pause_body(rh_http_req *req);
void rh_http_resume_body(rh_http_req *req);
const char *rh_http_reason(int status);
/* Appends p as one chunk of a chunked body ("size CRLF data CRLF"). */
void rh_http_chunk_append(rh_buf *b, const char *p, size_t n);

#endif
