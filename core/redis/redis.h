/* redis: a Redis client on the loop. hiredis does the protocol (command formatting, reply
 * parsing); the connection is the core's own (core/net/upconn), so rediss:// works the same
 * way as redis:// (Debian's hiredis 0.14 has no TLS).
 *
 * Commands are pipelined in order; each gets its callback exactly once: with the reply, or
 * with an error ("redis: connection lost", "redis: not connected: …", "redis HOST:PORT: no reply
 * for 3 s": RH_REDIS_TIMEOUT_MS). A lost connection is
 * dialled again with backoff (0.1 s doubling to 5 s); the client never gives up, and commands
 * sent while it is down fail at once instead of piling up (Redis down degrades, never blocks). */
#ifndef RH_REDIS_H
#define RH_REDIS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "net/url.h"

struct redisReply;
struct rh_tls_ctx;
typedef struct rh_redis rh_redis;
typedef struct rh_redis_cmd rh_redis_cmd;

/* reply is freed after the callback returns. err NULL on success (an error *reply* is a reply). */
typedef void (*rh_redis_cb)(void *ud, struct redisReply *reply, const char *err);

/* The reply timeout unless told otherwise (go-redis's ReadTimeout; ff-proxy's
 * REDIS_READ_TIMEOUT_SECONDS): a command unanswered this long after Redis owes its answer (a
 * blocking command's own timeout comes first) fails with "redis HOST:PORT: no reply for N s",
 * and the connection is taken for broken: what waits on it fails too, and it is dialled again
 * with the backoff (a subscriber subscribes again). A stopped server or a partition leaves the
 * connection up: without it every caller would wait for ever. A subscriber that has heard
 * nothing for as long sends PING, to find that out too. */
#define RH_REDIS_TIMEOUT_MS 3000

/* redis://[:password@]host[:port][/db] or rediss://…, with a query of ssl_… (rh_redis_url_tls)
 * and socket_timeout (rh_redis_url_timeout); NULL plus err for a bad url or a TLS file that
 * cannot be loaded. */
rh_redis *rh_redis_new(uv_loop_t *loop, const char *url, char *err, size_t errlen);

/* Where one node is and how to log in (the strings are copied). */
typedef struct {
  const char *host, *user, *password; /* user, password: NULL for none; host NULL: not known yet,
                                       * nothing dialled before rh_redis_retarget */
  int port, tls, db;
  struct rh_tls_ctx *tls_ctx; /* with tls: its own context (rh_redis_open takes a reference), or
                               * NULL for the shared one (verified against the system store) */
  int timeout_ms;             /* the reply timeout: 0 for RH_REDIS_TIMEOUT_MS, < 0 for none */
} rh_redis_addr;
rh_redis *rh_redis_open(uv_loop_t *loop, const rh_redis_addr *a);
/* A redis[s]:// URL into a (its strings live in u). NULL, or what was wrong (no URL in it). */
const char *rh_redis_parse_url(const char *url, rh_url *u, rh_redis_addr *a);
/* The URL's userinfo as a login into a (user and password point into u): ":password@",
 * "user:password@" (an ACL user), or a lone "password@". */
void rh_redis_url_auth(const rh_url *u, rh_redis_addr *a);
/* The TLS a rediss:// URL's query asks for, in redis-py's words: ssl_ca_certs=FILE (the CAs to
 * verify the server with, instead of the system store), ssl_certfile=FILE and ssl_keyfile=FILE (a
 * client certificate; the key may be in the certificate's file), ssl_cert_reqs=required|none
 * (none: no verification), and ours, ssl_server_name=NAME (sent as SNI and verified, instead of
 * the host). Values are percent-decoded. *ctx: a new context, or NULL when the query asks for
 * nothing (the shared default serves); the caller drops it with rh_tls_ctx_free. NULL, or what
 * was wrong in err, naming the parameter (and the file); an unknown parameter is refused. */
const char *rh_redis_url_tls(const rh_url *u, struct rh_tls_ctx **ctx, char *err, size_t errlen);
/* socket_timeout=SECONDS (redis-py's name) in the URL's query into *ms, as rh_redis_addr's
 * timeout_ms (left alone when the query has none). NULL, or what was wrong in err. */
const char *rh_redis_url_timeout(const rh_url *u, int *ms, char *err, size_t errlen);
/* "3", "0.5", "0" (none) seconds into *ms, as above; NULL, or the message naming socket_timeout. */
const char *rh_redis_parse_timeout(const char *seconds, int *ms, char *err, size_t errlen);
/* The server has moved (a new primary): what is pending fails, and host:port is dialled now,
 * with the same login; a subscriber subscribes there again. */
void rh_redis_retarget(rh_redis *r, const char *host, int port);
/* Fails what is pending, closes, and frees once libuv is done. */
void rh_redis_free(rh_redis *r);
rh_redis_cmd *rh_redis_command(rh_redis *r, int argc, const char **argv, const size_t *lens,
                               rh_redis_cb cb, void *ud);
/* The callback will not be called (the reply, when it comes, is dropped). */
void rh_redis_cancel(rh_redis_cmd *c);
int rh_redis_ready(const rh_redis *r); /* connected, and Redis has answered on it */
/* The reply timeout from now on, in rh_redis_addr's terms. */
void rh_redis_set_timeout(rh_redis *r, int ms);
/* How long Redis has owed an answer it has not given (nothing heard from it since), counting
 * from the first one due on a connection given up for silence; 0 when it owes none. */
uint64_t rh_redis_stalled_ms(const rh_redis *r);
/* "redis: not connected (why the last connection failed or was lost)", for a command refused. */
void rh_redis_why_down(const rh_redis *r, char *out, size_t outlen);

/* Pub/sub: the connection becomes a subscriber (Redis allows no other commands on it) and
 * subscribes again after every reconnect. cb gets each message of the channel. */
typedef void (*rh_redis_message_cb)(void *ud, const char *channel, const char *msg, size_t len);
int rh_redis_subscribe(rh_redis *r, const char *channel, rh_redis_message_cb cb, void *ud);
int rh_redis_subscriber(const rh_redis *r);

#endif
