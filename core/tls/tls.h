/* tls: TLS 1.2+ (OpenSSL 3) between a byte transport and a parser, with no sockets inside.
 *
 * The caller moves the bytes. With one rh_tls per connection:
 *   - socket bytes in:  rh_tls_read(t, in, n, &plain), then rh_tls_pending(t, &out) and send
 *                       `out` (handshake replies, alerts); hand `plain` to the parser.
 *   - bytes to send:    rh_tls_write(t, p, n, &out) and send `out`. Writes made before the
 *                       handshake is done are kept and encrypted when it completes; their
 *                       ciphertext then comes out of the rh_tls_pending that follows rh_tls_read.
 *   - client start:     rh_tls_pending(t, &out) right after connecting sends the ClientHello.
 *   - closing:          rh_tls_shutdown(t, &out) queues close_notify; rh_tls_peer_closed says
 *                       whether the peer sent one (a socket EOF without it may be truncation).
 * On -1 the connection is dead: rh_tls_error says why, rh_tls_pending may still yield an alert
 * worth sending before closing the socket, and every later read or write returns -1 again.
 *
 * Output always goes to rh_bufs the caller owns (appended, never reset). Large reads and writes
 * are processed in record-sized slices, so an idle connection keeps only small buffers.
 * Not thread-safe: a context and its connections belong to one thread (one loop); a context may
 * be shared by any number of connections. */
#ifndef RH_TLS_H
#define RH_TLS_H

#include <stddef.h>
#include "buf/buf.h"

typedef struct rh_tls_ctx rh_tls_ctx; /* an SSL_CTX plus settings; shared by many connections */
typedef struct rh_tls rh_tls;         /* one connection's TLS state */

/* Server context from a PEM certificate chain (leaf first) and a PEM private key (an encrypted
 * key is refused, never prompted for). NULL on failure with a message in err. */
rh_tls_ctx *rh_tls_server_ctx(const char *cert_file, const char *key_file, char *err,
                              size_t errlen);

/* Client context. verify=1 checks the peer's chain against ca_file if given, else against the
 * file named by $SSL_CERT_FILE if set, else the system store (and $SSL_CERT_DIR); verify=0
 * accepts any certificate (tests, explicit opt-out). NULL on failure (unreadable CA file, …)
 * with a message in err. */
rh_tls_ctx *rh_tls_client_ctx(const char *ca_file, int verify, char *err, size_t errlen);

/* A client certificate: the PEM chain (leaf first) and its key (key_file NULL: the key is in
 * cert_file; an encrypted key is refused). 0, or -1 when the certificate was refused and -2
 * when the key was (unreadable, not PEM, encrypted, or not the certificate's), with a message
 * naming the file in err. */
int rh_tls_ctx_use_cert(rh_tls_ctx *ctx, const char *cert_file, const char *key_file, char *err,
                        size_t errlen);

/* Client: the name sent as SNI and checked against the certificate, whatever host is dialled
 * (a Redis reached by IP or through a name its certificate lacks). NULL: the host. 0 ok. */
int rh_tls_ctx_set_server_name(rh_tls_ctx *ctx, const char *name);

/* One more reference, dropped with rh_tls_ctx_free: for an owner that keeps ctx beyond its
 * maker (each of a Redis Cluster client's nodes). Returns ctx. */
rh_tls_ctx *rh_tls_ctx_ref(rh_tls_ctx *ctx);

/* ALPN protocols, comma-separated in preference order ("h2,http/1.1"). A client offers them; a
 * server picks its first one the client offers and carries on without ALPN if none match.
 * Call before rh_tls_new. 0 ok, -1 malformed list. */
int rh_tls_ctx_set_alpn(rh_tls_ctx *ctx, const char *protos);

/* The SSL_CTX underneath, for settings this API does not cover (protocol bounds, ciphers). */
struct ssl_ctx_st *rh_tls_ctx_ssl(rh_tls_ctx *ctx);

/* Drops the caller's reference: connections made from ctx keep it alive until they are freed. */
void rh_tls_ctx_free(rh_tls_ctx *ctx);
/* The client context every caller without a CA file of its own shares (verification on,
 * $SSL_CERT_FILE or the system store); made on first use, kept for the process. NULL if the
 * store cannot be loaded. */
rh_tls_ctx *rh_tls_default_client(void);

/* A connection. Client: host is sent as SNI (not for IP literals, which may be written "[v6]")
 * and, when the context verifies, the certificate must match it (DNS name or IP address);
 * host NULL verifies the chain only. Server: host is ignored. NULL if OpenSSL refuses. */
rh_tls *rh_tls_new(rh_tls_ctx *ctx, const char *host);
void rh_tls_free(rh_tls *t);

/* Feeds n bytes read from the socket; decrypted application bytes are appended to plain.
 * 0 ok (possibly with nothing new), -1 fatal. Bytes after the peer's close_notify are ignored. */
int rh_tls_read(rh_tls *t, const char *in, size_t n, rh_buf *plain);

/* Encrypts n application bytes; ciphertext to send (and anything else pending) is appended to
 * out. 0 ok, -1 fatal, or -1 after rh_tls_shutdown (then only the write is refused). */
int rh_tls_write(rh_tls *t, const char *p, size_t n, rh_buf *out);

/* Bytes the TLS engine wants sent now (handshake records, alerts, close_notify, writes held
 * back until the handshake finished) are appended to out; a client's first call starts the
 * handshake. Returns -1 if the connection has failed (send out anyway, then close), else 0. */
int rh_tls_pending(rh_tls *t, rh_buf *out);

int rh_tls_handshake_done(const rh_tls *t);

/* Queues close_notify (after the handshake, if it is still running) and appends what is ready
 * to out. Reading stays possible until the peer closes too. */
void rh_tls_shutdown(rh_tls *t, rh_buf *out);

int rh_tls_peer_closed(const rh_tls *t); /* the peer sent close_notify */

/* Why the last -1 happened, NULL if none did: "certificate verify failed: …",
 * "handshake failed: …", "not TLS (plain HTTP sent to a TLS port?)", "write after shutdown"
 * (the one failure that leaves the connection usable for reading), … */
const char *rh_tls_error(const rh_tls *t);

const char *rh_tls_alpn(const rh_tls *t);    /* negotiated protocol, NULL if none */
const char *rh_tls_sni(const rh_tls *t);     /* the SNI name (server: the one asked for), or NULL */
const char *rh_tls_version(const rh_tls *t); /* "TLSv1.3", "TLSv1.2", … once negotiated */

#endif
