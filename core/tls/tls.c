/* tls: OpenSSL over two memory BIOs. rbio holds ciphertext the caller fed us, wbio collects
 * ciphertext OpenSSL wants sent; the caller drains wbio through rh_tls_pending/write.
 *
 * Memory BIOs never shrink, so input and output pass through them in slices of about one
 * record: whatever the caller hands over at once, an idle connection keeps small buffers.
 * OpenSSL's error queue is per thread and shared by every connection, so each operation starts
 * from an empty queue and empties it again once it has turned a failure into a message. */
#include "tls/tls.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define SLICE 16384 /* one TLS record's worth of plaintext */

struct rh_tls_ctx {
  SSL_CTX *ssl;
  int refs;                 /* the owner + one per live connection */
  bool server;
  bool verify;
  bool asked_password;      /* loading the key wanted a passphrase */
  unsigned char *alpn;      /* wire format: length-prefixed names */
  size_t alpn_len;
  char *server_name;        /* client: the name sent and verified instead of the host dialled */
};

struct rh_tls {
  rh_tls_ctx *ctx;
  SSL *ssl;
  BIO *rbio, *wbio;         /* owned by ssl */
  bool hs_done;
  bool failed;
  bool shut_sent;           /* the caller asked for close_notify: no more writes */
  bool shut_later;          /* ... before the handshake finished: send it when it does */
  rh_buf early;             /* writes made before the handshake finished */
  unsigned char head[8];    /* the first bytes received, to explain a peer that is not TLS */
  size_t head_len;
  char alpn[256];
  char err[256];
};

/* ---- errors ---- */

static void set_msg(char *buf, size_t len, const char *msg) {
  if (buf && len) snprintf(buf, len, "%s", msg);
}

/* The earliest error on the queue says what went wrong first; later ones are consequences. */
static const char *queue_reason(char *buf, size_t len) {
  unsigned long e = ERR_peek_error();
  if (!e) return "unknown error";
  if (ERR_SYSTEM_ERROR(e)) return strerror(ERR_GET_REASON(e)); /* "No such file or directory" */
  if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
    return "no PEM data found";
  const char *r = ERR_reason_error_string(e);
  if (r) return r;
  ERR_error_string_n(e, buf, len);
  return buf;
}

static void ctx_err(char *err, size_t errlen, const char *what, const char *file) {
  char tmp[128];
  if (err && errlen) snprintf(err, errlen, "%s %s: %s", what, file, queue_reason(tmp, sizeof tmp));
  ERR_clear_error();
}

static bool is_tls_record(const unsigned char *h, size_t n) {
  /* A TLS peer opens with a handshake record (or an alert refusing ours): type, then 0x03. */
  if (n < 1) return true;
  if (h[0] & 0x80) return true; /* SSLv2-style hello: let OpenSSL's own reason stand */
  if (h[0] != 0x16 && h[0] != 0x15) return false;
  return n < 2 || h[1] == 0x03;
}

static bool looks_like_http_request(const unsigned char *h, size_t n) {
  size_t i = 0;
  while (i < n && h[i] >= 'A' && h[i] <= 'Z') i++;
  return i > 0 && i < n && h[i] == ' ';
}

static void explain_not_tls(rh_tls *t) {
  if (t->ctx->server && looks_like_http_request(t->head, t->head_len))
    set_msg(t->err, sizeof t->err, "not TLS (plain HTTP sent to a TLS port?)");
  else if (!t->ctx->server && t->head_len >= 5 && !memcmp(t->head, "HTTP/", 5))
    set_msg(t->err, sizeof t->err, "not TLS (the server answered in plain HTTP)");
  else
    set_msg(t->err, sizeof t->err, "not TLS (the peer sent something other than a TLS record)");
}

/* OpenSSL 3.0 names TLS 1.3's alerts "unknown": a server that wants a client certificate
 * (Redis with --tls-auth-clients yes) sends certificate_required. */
static const char *alert_name(int alert) {
  if (alert == SSL_AD_CERTIFICATE_REQUIRED) return "certificate required: the server wants a client certificate";
  if (alert == SSL_AD_NO_APPLICATION_PROTOCOL) return "no application protocol";
  if (alert == SSL_AD_MISSING_EXTENSION) return "missing extension";
  return SSL_alert_desc_string_long(alert);
}

/* Records why an OpenSSL call failed, in words an operator can act on. */
static int fail(rh_tls *t, int sslerr) {
  char tmp[128];
  unsigned long e = ERR_peek_error();
  int lib = ERR_GET_LIB(e), reason = ERR_GET_REASON(e);
  long vr = SSL_get_verify_result(t->ssl);
  const char *stage = t->hs_done ? "" : "handshake failed: ";
  t->failed = true;
  if (!t->hs_done && !is_tls_record(t->head, t->head_len)) {
    explain_not_tls(t);
  } else if (lib == ERR_LIB_SSL && reason == SSL_R_CERTIFICATE_VERIFY_FAILED && vr != X509_V_OK) {
    snprintf(t->err, sizeof t->err, "certificate verify failed: %s",
             X509_verify_cert_error_string(vr));
  } else if (lib == ERR_LIB_SSL && reason >= SSL_AD_REASON_OFFSET) {
    /* the peer refused us: name its alert rather than OpenSSL's "sslv3 alert …" */
    snprintf(t->err, sizeof t->err, "%speer sent alert (%s)", stage,
             alert_name(reason - SSL_AD_REASON_OFFSET));
  } else if (e) {
    snprintf(t->err, sizeof t->err, "%s%s", stage, queue_reason(tmp, sizeof tmp));
  } else {
    snprintf(t->err, sizeof t->err, "%sTLS error %d", stage, sslerr);
  }
  ERR_clear_error();
  return -1;
}

static int fail_msg(rh_tls *t, const char *msg) {
  if (!t->failed) set_msg(t->err, sizeof t->err, msg);
  t->failed = true;
  return -1;
}

/* ---- contexts ---- */

/* A key file that needs a passphrase must fail, not wait for one on the terminal. */
static int no_password(char *buf, int size, int rwflag, void *ud) {
  rh_tls_ctx *ctx = ud;
  (void)buf, (void)size, (void)rwflag;
  ctx->asked_password = true;
  return -1;
}

static rh_tls_ctx *ctx_new(bool server, char *err, size_t errlen) {
  ERR_clear_error();
  SSL_CTX *ssl = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  rh_tls_ctx *ctx = ssl ? calloc(1, sizeof *ctx) : NULL;
  if (!ctx) {
    set_msg(err, errlen, "cannot create a TLS context");
    SSL_CTX_free(ssl);
    ERR_clear_error();
    return NULL;
  }
  ctx->ssl = ssl;
  ctx->refs = 1;
  ctx->server = server;
  SSL_CTX_set_min_proto_version(ssl, TLS1_2_VERSION);
  /* renegotiation is an old attack surface and would make writes wait on reads */
  SSL_CTX_set_options(ssl, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                             (server ? SSL_OP_CIPHER_SERVER_PREFERENCE : 0));
  /* idle connections give their record buffers back */
  SSL_CTX_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_default_passwd_cb(ssl, no_password);
  SSL_CTX_set_default_passwd_cb_userdata(ssl, ctx);
  return ctx;
}

static void ctx_unref(rh_tls_ctx *ctx) {
  if (!ctx || --ctx->refs > 0) return;
  SSL_CTX_free(ctx->ssl);
  free(ctx->alpn);
  free(ctx->server_name);
  free(ctx);
}

/* The certificate chain and its key into ctx: 0, or -1 (the certificate refused) or -2 (the
 * key refused), with a message naming the file in err. */
static int use_cert(rh_tls_ctx *ctx, const char *cert_file, const char *key_file, char *err,
                    size_t errlen) {
  if (SSL_CTX_use_certificate_chain_file(ctx->ssl, cert_file) != 1) {
    ctx_err(err, errlen, "cannot load certificate chain", cert_file);
    return -1;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx->ssl, key_file, SSL_FILETYPE_PEM) == 1 &&
      SSL_CTX_check_private_key(ctx->ssl) == 1)
    return 0;
  if (ERR_GET_REASON(ERR_peek_error()) == X509_R_KEY_VALUES_MISMATCH) {
    if (err && errlen)
      snprintf(err, errlen, "private key %s does not match the certificate in %s", key_file, cert_file);
    ERR_clear_error();
  } else if (ctx->asked_password) {
    if (err && errlen)
      snprintf(err, errlen, "cannot load private key %s: it is encrypted (passphrases are not supported)",
               key_file);
    ERR_clear_error();
  } else {
    ctx_err(err, errlen, "cannot load private key", key_file);
  }
  return -2;
}

rh_tls_ctx *rh_tls_server_ctx(const char *cert_file, const char *key_file, char *err,
                              size_t errlen) {
  rh_tls_ctx *ctx = ctx_new(true, err, errlen);
  if (ctx && use_cert(ctx, cert_file, key_file, err, errlen) < 0) {
    ctx_unref(ctx);
    return NULL;
  }
  return ctx;
}

int rh_tls_ctx_use_cert(rh_tls_ctx *ctx, const char *cert_file, const char *key_file, char *err,
                        size_t errlen) {
  ERR_clear_error();
  return use_cert(ctx, cert_file, key_file ? key_file : cert_file, err, errlen);
}

int rh_tls_ctx_set_server_name(rh_tls_ctx *ctx, const char *name) {
  char *copy = name ? strdup(name) : NULL;
  if (name && !copy) return -1;
  free(ctx->server_name);
  ctx->server_name = copy;
  return 0;
}

rh_tls_ctx *rh_tls_ctx_ref(rh_tls_ctx *ctx) {
  ctx->refs++;
  return ctx;
}

rh_tls_ctx *rh_tls_client_ctx(const char *ca_file, int verify, char *err, size_t errlen) {
  rh_tls_ctx *ctx = ctx_new(false, err, errlen);
  if (!ctx) return NULL;
  ctx->verify = verify != 0;
  if (!verify) {
    SSL_CTX_set_verify(ctx->ssl, SSL_VERIFY_NONE, NULL);
    return ctx;
  }
  SSL_CTX_set_verify(ctx->ssl, SSL_VERIFY_PEER, NULL);
  const char *env = getenv("SSL_CERT_FILE");
  int ok;
  if (ca_file && *ca_file) {
    ok = SSL_CTX_load_verify_locations(ctx->ssl, ca_file, NULL);
    if (ok != 1) ctx_err(err, errlen, "cannot load CA file", ca_file);
  } else if (env && *env) {
    ok = SSL_CTX_load_verify_locations(ctx->ssl, env, NULL);
    if (ok != 1) ctx_err(err, errlen, "cannot load CA file from SSL_CERT_FILE", env);
  } else {
    /* also honours $SSL_CERT_DIR; a missing system store is not an error here: verification
     * will say so per peer */
    ok = SSL_CTX_set_default_verify_paths(ctx->ssl);
    if (ok != 1)
      ctx_err(err, errlen, "cannot load the system CA store from", X509_get_default_cert_file());
  }
  if (ok == 1) return ctx;
  ctx_unref(ctx);
  return NULL;
}

/* "h2,http/1.1" -> "\2h2\10http/1.1" */
static int alpn_wire(const char *list, unsigned char **out, size_t *outlen) {
  size_t n = strlen(list);
  unsigned char *w = malloc(n + 1);
  size_t len = 0;
  if (!w) return -1;
  for (const char *p = list;;) {
    const char *end = strchr(p, ',');
    size_t k = end ? (size_t)(end - p) : strlen(p);
    if (k == 0 || k > 255) {
      free(w);
      return -1;
    }
    w[len++] = (unsigned char)k;
    memcpy(w + len, p, k);
    len += k;
    if (!end) break;
    p = end + 1;
  }
  *out = w;
  *outlen = len;
  return 0;
}

/* Server preference: the first of ours that the client offered. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg) {
  const rh_tls_ctx *ctx = arg;
  (void)ssl;
  for (size_t i = 0; i < ctx->alpn_len; i += 1 + ctx->alpn[i]) {
    const unsigned char *ours = ctx->alpn + i;
    for (unsigned int j = 0; j < inlen; j += 1u + in[j]) {
      if (j + 1u + in[j] > inlen) break; /* a malformed list: ignore its tail */
      if (in[j] == ours[0] && !memcmp(in + j + 1, ours + 1, ours[0])) {
        *out = in + j + 1;
        *outlen = in[j];
        return SSL_TLSEXT_ERR_OK;
      }
    }
  }
  return SSL_TLSEXT_ERR_NOACK;
}

int rh_tls_ctx_set_alpn(rh_tls_ctx *ctx, const char *protos) {
  unsigned char *w;
  size_t len;
  if (!protos || alpn_wire(protos, &w, &len) < 0) return -1;
  if (!ctx->server && SSL_CTX_set_alpn_protos(ctx->ssl, w, (unsigned int)len) != 0) {
    free(w);
    ERR_clear_error();
    return -1;
  }
  free(ctx->alpn);
  ctx->alpn = w;
  ctx->alpn_len = len;
  if (ctx->server) SSL_CTX_set_alpn_select_cb(ctx->ssl, alpn_select, ctx);
  return 0;
}

struct ssl_ctx_st *rh_tls_ctx_ssl(rh_tls_ctx *ctx) { return ctx->ssl; }

void rh_tls_ctx_free(rh_tls_ctx *ctx) { ctx_unref(ctx); }

/* ---- connections ---- */

/* SNI and name checks for a client. IP literals are matched as addresses and never sent as
 * SNI (RFC 6066 forbids it). */
static int set_peer_name(rh_tls *t, const char *host) {
  char lit[64];
  unsigned char addr[16];
  size_t n = strlen(host);
  if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof lit) {
    memcpy(lit, host + 1, n - 2);
    lit[n - 2] = '\0';
    host = lit;
  }
  bool ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
  if (ip) {
    if (!t->ctx->verify) return 0;
    return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), host) == 1 ? 0 : -1;
  }
  if (SSL_set_tlsext_host_name(t->ssl, host) != 1) return -1;
  if (!t->ctx->verify) return 0;
  SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  return SSL_set1_host(t->ssl, host) == 1 ? 0 : -1;
}

rh_tls *rh_tls_new(rh_tls_ctx *ctx, const char *host) {
  ERR_clear_error();
  rh_tls *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->ctx = ctx;
  ctx->refs++;
  t->ssl = SSL_new(ctx->ssl);
  t->rbio = BIO_new(BIO_s_mem());
  t->wbio = BIO_new(BIO_s_mem());
  if (!t->ssl || !t->rbio || !t->wbio) {
    BIO_free(t->rbio);
    BIO_free(t->wbio);
    t->rbio = t->wbio = NULL;
    rh_tls_free(t);
    return NULL;
  }
  BIO_set_mem_eof_return(t->rbio, -1); /* empty means "wait for more", not end of stream */
  SSL_set_bio(t->ssl, t->rbio, t->wbio);
  if (ctx->server) {
    SSL_set_accept_state(t->ssl);
  } else {
    SSL_set_connect_state(t->ssl);
    if (ctx->server_name) host = ctx->server_name;
    if (host && set_peer_name(t, host) < 0) {
      rh_tls_free(t);
      return NULL;
    }
  }
  return t;
}

void rh_tls_free(rh_tls *t) {
  if (!t) return;
  SSL_free(t->ssl); /* frees both BIOs */
  rh_buf_free(&t->early);
  ctx_unref(t->ctx);
  free(t);
  ERR_clear_error();
}

static void drain(rh_tls *t, rh_buf *out) {
  size_t n = BIO_ctrl_pending(t->wbio), got = 0;
  if (!n) return;
  rh_buf_reserve(out, n);
  if (BIO_read_ex(t->wbio, out->data + out->len, n, &got) == 1) out->len += got;
}

/* Encrypts into wbio in record-sized slices; out (if any) takes each slice as it is made. */
static int seal(rh_tls *t, const char *p, size_t n, rh_buf *out) {
  while (n) {
    size_t k = n < SLICE ? n : SLICE, done = 0;
    ERR_clear_error();
    if (SSL_write_ex(t->ssl, p, k, &done) != 1) return fail(t, SSL_get_error(t->ssl, 0));
    p += done;
    n -= done;
    if (out) drain(t, out);
  }
  return 0;
}

static int send_close_notify(rh_tls *t) {
  ERR_clear_error();
  SSL_shutdown(t->ssl); /* 0 means "sent, peer's not seen yet": all we want */
  ERR_clear_error();
  return 0;
}

static int on_handshake_done(rh_tls *t) {
  const unsigned char *a = NULL;
  unsigned int alen = 0;
  t->hs_done = true;
  SSL_get0_alpn_selected(t->ssl, &a, &alen);
  if (a && alen) {
    memcpy(t->alpn, a, alen); /* alen < 256 by the wire format */
    t->alpn[alen] = '\0';
  }
  /* held-back writes: their ciphertext waits in wbio for the next rh_tls_pending */
  int rc = seal(t, t->early.data, t->early.len, NULL);
  rh_buf_free(&t->early);
  if (rc == 0 && t->shut_later) send_close_notify(t);
  return rc;
}

static int handshake(rh_tls *t) {
  if (t->hs_done || t->failed) return t->failed ? -1 : 0;
  ERR_clear_error();
  int r = SSL_do_handshake(t->ssl);
  if (r == 1) return on_handshake_done(t);
  int e = SSL_get_error(t->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
  return fail(t, e);
}

/* Decrypts everything rbio holds into plain. */
static int unseal(rh_tls *t, rh_buf *plain) {
  while (!rh_tls_peer_closed(t)) {
    size_t got = 0;
    rh_buf_reserve(plain, SLICE);
    ERR_clear_error();
    if (SSL_read_ex(t->ssl, plain->data + plain->len, plain->cap - plain->len, &got) == 1) {
      plain->len += got;
      continue;
    }
    int e = SSL_get_error(t->ssl, 0);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
    if (e == SSL_ERROR_ZERO_RETURN) return 0; /* close_notify */
    return fail(t, e);
  }
  return 0;
}

static void keep_head(rh_tls *t, const char *in, size_t n) {
  size_t k = sizeof t->head - t->head_len;
  if (k > n) k = n;
  memcpy(t->head + t->head_len, in, k);
  t->head_len += k;
}

int rh_tls_read(rh_tls *t, const char *in, size_t n, rh_buf *plain) {
  if (t->failed) return -1;
  if (n) keep_head(t, in, n);
  for (size_t off = 0;;) {
    size_t k = n - off < SLICE ? n - off : SLICE, put = 0;
    if (k && (BIO_write_ex(t->rbio, in + off, k, &put) != 1 || put != k))
      return fail_msg(t, "out of memory");
    off += k;
    if (handshake(t) < 0) return -1;
    if (t->hs_done && unseal(t, plain) < 0) return -1;
    if (off == n) return 0;
  }
}

int rh_tls_write(rh_tls *t, const char *p, size_t n, rh_buf *out) {
  if (t->failed) return -1;
  if (t->shut_sent) { /* a caller's mistake, not the connection's: reading goes on */
    set_msg(t->err, sizeof t->err, "write after shutdown");
    return -1;
  }
  if (t->hs_done) return seal(t, p, n, out);
  rh_buf_append(&t->early, p, n);
  int rc = handshake(t); /* a client that writes first also starts the handshake */
  drain(t, out);
  return rc;
}

int rh_tls_pending(rh_tls *t, rh_buf *out) {
  if (!t->hs_done && !t->failed) handshake(t);
  drain(t, out);
  return t->failed ? -1 : 0;
}

int rh_tls_handshake_done(const rh_tls *t) { return t->hs_done; }

void rh_tls_shutdown(rh_tls *t, rh_buf *out) {
  if (!t->failed && !t->shut_sent) {
    t->shut_sent = true;
    if (t->hs_done) send_close_notify(t);
    else t->shut_later = true;
  }
  drain(t, out);
}

int rh_tls_peer_closed(const rh_tls *t) {
  return (SSL_get_shutdown(t->ssl) & SSL_RECEIVED_SHUTDOWN) != 0;
}

const char *rh_tls_error(const rh_tls *t) { return t->err[0] ? t->err : NULL; }

const char *rh_tls_alpn(const rh_tls *t) { return t->alpn[0] ? t->alpn : NULL; }

const char *rh_tls_sni(const rh_tls *t) {
  return SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
}

const char *rh_tls_version(const rh_tls *t) { return t->hs_done ? SSL_get_version(t->ssl) : NULL; }

rh_tls_ctx *rh_tls_default_client(void) {
  static rh_tls_ctx *ctx;
  char err[256];
  if (!ctx) ctx = rh_tls_client_ctx(NULL, 1, err, sizeof err);
  return ctx;
}
