/* test_tls: an rh_tls server and an rh_tls client talking through memory, no sockets.
 *
 * The certificates are made at start, with the OpenSSL API, in a fresh temporary directory:
 * a root CA; "server" for localhost + 127.0.0.1 signed by it; an intermediate CA and a "leaf"
 * under it (served as a chain); "other", a self-signed certificate for localhost that no CA
 * vouches for. The directory is removed at exit.
 *
 * TEST_TLS_VERBOSE=1 prints every error message the checks look at. */
#include "tls/tls.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "buf/buf.h"
#include "check.h"



#define CHECK_HAS(s, sub)                                                             \
  do {                                                                                \
    const char *s_ = (s);                                                             \
    if (getenv("TEST_TLS_VERBOSE")) fprintf(stderr, "[%s] %s\n", test_name, s_);       \
    if (!s_ || !strstr(s_, (sub))) {                                                  \
      fprintf(stderr, "FAIL [%s] %s:%d: \"%s\" does not contain \"%s\"\n", test_name, \
              __FILE__, __LINE__, s_ ? s_ : "(null)", (sub));                         \
      exit(1);                                                                        \
    }                                                                                 \
  } while (0)

/* ---- certificates ---- */

static char dir[64];

static const char *path(const char *name) {
  static char bufs[8][512]; /* room for dir + any d_name */
  static int next;
  char *p = bufs[next++ % 8];
  snprintf(p, sizeof bufs[0], "%s/%s", dir, name);
  return p;
}

static void remove_dir(void) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') unlink(path(e->d_name));
  closedir(d);
  rmdir(dir);
}

static void add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value) {
  X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, v3, nid, value);
  REQUIRE(ext);
  REQUIRE(X509_add_ext(x, ext, -1) == 1);
  X509_EXTENSION_free(ext);
}

/* issuer NULL: self-signed. san NULL: a CA. */
static X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key,
                       const char *san) {
  static long serial = 1;
  X509 *x = X509_new();
  REQUIRE(x);
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400);
  X509_set_pubkey(x, key);
  X509_NAME *name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
  X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
  add_ext(x, &v3, NID_subject_key_identifier, "hash");
  add_ext(x, &v3, NID_authority_key_identifier, "keyid:always");
  if (san) {
    add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE");
    add_ext(x, &v3, NID_key_usage, "critical,digitalSignature");
    add_ext(x, &v3, NID_ext_key_usage, "serverAuth");
    add_ext(x, &v3, NID_subject_alt_name, san);
  } else {
    add_ext(x, &v3, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign");
  }
  REQUIRE(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
  return x;
}

static void write_pem(const char *name, X509 *a, X509 *b, EVP_PKEY *key) {
  FILE *f = fopen(path(name), "w");
  REQUIRE(f);
  if (a) REQUIRE(PEM_write_X509(f, a) == 1);
  if (b) REQUIRE(PEM_write_X509(f, b) == 1);
  if (key) REQUIRE(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1);
  REQUIRE(fclose(f) == 0);
}

static void make_certs(void) {
  snprintf(dir, sizeof dir, "%s/test_tls.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  REQUIRE(mkdtemp(dir));
  atexit(remove_dir);
  EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *srv_key = EVP_EC_gen("P-256");
  EVP_PKEY *mid_key = EVP_EC_gen("P-256"), *leaf_key = EVP_EC_gen("P-256");
  EVP_PKEY *other_key = EVP_EC_gen("P-256");
  REQUIRE(ca_key && srv_key && mid_key && leaf_key && other_key);
  X509 *ca = make_cert("relayhost test CA", ca_key, NULL, NULL, NULL);
  X509 *srv = make_cert("localhost", srv_key, ca, ca_key, "DNS:localhost,IP:127.0.0.1");
  X509 *mid = make_cert("relayhost test intermediate", mid_key, ca, ca_key, NULL);
  X509 *leaf = make_cert("localhost", leaf_key, mid, mid_key, "DNS:localhost");
  X509 *other = make_cert("localhost", other_key, NULL, NULL, "DNS:localhost");
  write_pem("ca.pem", ca, NULL, NULL);
  write_pem("server.pem", srv, NULL, NULL);
  write_pem("server.key", NULL, NULL, srv_key);
  write_pem("chain.pem", leaf, mid, NULL);
  write_pem("leaf.key", NULL, NULL, leaf_key);
  write_pem("other.pem", other, NULL, NULL);
  write_pem("other.key", NULL, NULL, other_key);
  FILE *f = fopen(path("locked.key"), "w");
  REQUIRE(f);
  REQUIRE(PEM_write_PrivateKey(f, srv_key, EVP_aes_128_cbc(), (const unsigned char *)"pw", 2, NULL,
                             NULL) == 1);
  fclose(f);
  f = fopen(path("garbage.pem"), "w");
  REQUIRE(f);
  fputs("this is not a certificate\n", f);
  fclose(f);
  X509 *certs[] = { ca, srv, mid, leaf, other };
  EVP_PKEY *keys[] = { ca_key, srv_key, mid_key, leaf_key, other_key };
  for (int i = 0; i < 5; i++) {
    X509_free(certs[i]);
    EVP_PKEY_free(keys[i]);
  }
}

/* ---- moving bytes ---- */

typedef struct {
  rh_tls *t;
  rh_buf wire;  /* ciphertext this side produced, not yet delivered */
  rh_buf plain; /* application bytes it received */
  int rc;       /* -1 once rh_tls_read failed */
} side;

typedef struct {
  side c, s;
} pair;

enum { WHOLE, ONE_BYTE, RANDOM };
static int slicing = WHOLE;
static unsigned rng = 12345;

static size_t slice_len(size_t left) {
  size_t k = left;
  if (slicing == ONE_BYTE) k = 1;
  if (slicing == RANDOM) {
    rng = rng * 1103515245u + 12345u;
    k = 1 + (rng >> 8) % 3000;
  }
  return k < left ? k : left;
}

/* Moves what `from` has to send into `to`; the number of bytes moved. */
static size_t deliver(side *from, side *to) {
  rh_tls_pending(from->t, &from->wire);
  size_t n = from->wire.len;
  for (size_t off = 0; off < n && to->rc == 0;) {
    size_t k = slice_len(n - off);
    to->rc = rh_tls_read(to->t, from->wire.data + off, k, &to->plain);
    off += k;
  }
  from->wire.len = 0;
  return n;
}

static void pump(pair *p) {
  while (deliver(&p->c, &p->s) + deliver(&p->s, &p->c) > 0) {}
}

static void open_pair(pair *p, rh_tls_ctx *sctx, rh_tls_ctx *cctx, const char *host) {
  memset(p, 0, sizeof *p);
  p->s.t = rh_tls_new(sctx, NULL);
  p->c.t = rh_tls_new(cctx, host);
  REQUIRE(p->s.t && p->c.t);
}

static void close_pair(pair *p) {
  side *sides[] = { &p->c, &p->s };
  for (int i = 0; i < 2; i++) {
    rh_tls_free(sides[i]->t);
    rh_buf_free(&sides[i]->wire);
    rh_buf_free(&sides[i]->plain);
  }
}

static int connected(pair *p) {
  return p->c.rc == 0 && p->s.rc == 0 && rh_tls_handshake_done(p->c.t) &&
         rh_tls_handshake_done(p->s.t);
}

/* A handshake that must fail on the client: returns the client's reason. */
static void expect_client_fail(rh_tls_ctx *sctx, rh_tls_ctx *cctx, const char *host,
                               const char *reason) {
  pair p;
  open_pair(&p, sctx, cctx, host);
  pump(&p);
  REQUIRE(p.c.rc == -1);
  REQUIRE(!rh_tls_handshake_done(p.c.t));
  CHECK_HAS(rh_tls_error(p.c.t), reason);
  /* the client told the server why, and the server names the alert */
  REQUIRE(p.s.rc == -1);
  CHECK_HAS(rh_tls_error(p.s.t), "peer sent alert");
  /* dead stays dead */
  rh_buf out = RH_BUF_INIT;
  REQUIRE(rh_tls_write(p.c.t, "x", 1, &out) == -1);
  REQUIRE(rh_tls_read(p.c.t, "x", 1, &p.c.plain) == -1);
  REQUIRE(rh_tls_pending(p.c.t, &out) == -1);
  CHECK_HAS(rh_tls_error(p.c.t), reason);
  rh_buf_free(&out);
  close_pair(&p);
}

static void send_bytes(side *from, const char *data, size_t n) {
  REQUIRE(rh_tls_write(from->t, data, n, &from->wire) == 0);
}

static int got(side *s, const char *data, size_t n) {
  return s->plain.len == n && !memcmp(s->plain.data, data, n);
}

static char *pattern(size_t n, unsigned seed) {
  char *p = malloc(n);
  REQUIRE(p);
  for (size_t i = 0; i < n; i++) p[i] = (char)((i * 31 + (i >> 9) + seed) & 0xff);
  return p;
}

/* ---- tests ---- */

static rh_tls_ctx *sctx, *cctx; /* server.pem; client trusting ca.pem */

static rh_tls_ctx *client_ctx(const char *ca, int verify) {
  char err[256] = "";
  rh_tls_ctx *c = rh_tls_client_ctx(ca, verify, err, sizeof err);
  if (!c) fprintf(stderr, "client ctx: %s\n", err);
  REQUIRE(c);
  return c;
}

static rh_tls_ctx *server_ctx(const char *cert, const char *key) {
  char err[256] = "";
  rh_tls_ctx *c = rh_tls_server_ctx(cert, key, err, sizeof err);
  if (!c) fprintf(stderr, "server ctx: %s\n", err);
  REQUIRE(c);
  return c;
}

static void test_handshake_and_echo(void) {
  test_name = "handshake and echo";
  pair p;
  open_pair(&p, sctx, cctx, "localhost");
  REQUIRE(!rh_tls_handshake_done(p.c.t) && !rh_tls_version(p.c.t) && !rh_tls_error(p.c.t));
  REQUIRE(rh_tls_read(p.s.t, NULL, 0, &p.s.plain) == 0);
  pump(&p);
  REQUIRE(connected(&p));
  REQUIRE(!strcmp(rh_tls_version(p.c.t), "TLSv1.3"));
  REQUIRE(!strcmp(rh_tls_sni(p.s.t), "localhost"));
  REQUIRE(!rh_tls_alpn(p.c.t) && !rh_tls_alpn(p.s.t));
  send_bytes(&p.c, "GET / HTTP/1.1\r\n\r\n", 18);
  pump(&p);
  REQUIRE(got(&p.s, "GET / HTTP/1.1\r\n\r\n", 18));
  send_bytes(&p.s, "HTTP/1.1 204 No Content\r\n\r\n", 27);
  pump(&p);
  REQUIRE(got(&p.c, "HTTP/1.1 204 No Content\r\n\r\n", 27));
  /* nothing more to say: nothing moves */
  REQUIRE(deliver(&p.c, &p.s) == 0 && deliver(&p.s, &p.c) == 0);
  close_pair(&p);
}

/* Writes made before the handshake finishes go out once it does, in order. */
static void test_early_writes(void) {
  test_name = "writes before the handshake";
  pair p;
  open_pair(&p, sctx, cctx, "localhost");
  rh_buf hello = RH_BUF_INIT;
  REQUIRE(rh_tls_write(p.c.t, "first ", 6, &hello) == 0);
  REQUIRE(hello.len > 0 && hello.data[0] == 0x16); /* writing first sent the ClientHello */
  REQUIRE(rh_tls_write(p.c.t, "second", 6, &hello) == 0);
  REQUIRE(rh_tls_read(p.s.t, hello.data, hello.len, &p.s.plain) == 0);
  rh_buf_free(&hello);
  REQUIRE(!rh_tls_handshake_done(p.s.t));
  send_bytes(&p.s, "early reply", 11); /* server mid-handshake */
  pump(&p);
  REQUIRE(connected(&p));
  REQUIRE(got(&p.s, "first second", 12));
  REQUIRE(got(&p.c, "early reply", 11));
  close_pair(&p);
}

static void test_bulk(pair *p) {
  size_t big = (size_t)1 << 20;
  char *a = pattern(big, 1), *b = pattern(big, 7);
  send_bytes(&p->c, a, big);
  send_bytes(&p->s, b, big); /* both ways at once */
  pump(p);
  REQUIRE(got(&p->s, a, big));
  REQUIRE(got(&p->c, b, big));
  p->s.plain.len = p->c.plain.len = 0;

  /* many small writes, interleaved both ways, delivered at odd moments */
  rh_buf want_s = RH_BUF_INIT, want_c = RH_BUF_INIT;
  for (int i = 0; i < 5000; i++) {
    size_t n = 1 + (size_t)(i * 7) % 50;
    send_bytes(&p->c, a + i, n);
    rh_buf_append(&want_s, a + i, n);
    if (i % 3 == 0) {
      send_bytes(&p->s, b + i, n);
      rh_buf_append(&want_c, b + i, n);
    }
    if (i % 17 == 0) deliver(&p->c, &p->s);
    if (i % 29 == 0) deliver(&p->s, &p->c);
  }
  pump(p);
  REQUIRE(got(&p->s, want_s.data, want_s.len));
  REQUIRE(got(&p->c, want_c.data, want_c.len));
  p->s.plain.len = p->c.plain.len = 0;
  rh_buf_free(&want_s);
  rh_buf_free(&want_c);
  free(a);
  free(b);
}

static void test_data(void) {
  const char *names[] = { "data, whole deliveries", "data, 1-byte deliveries",
                          "data, random slices" };
  for (int mode = WHOLE; mode <= RANDOM; mode++) {
    test_name = names[mode];
    slicing = mode;
    pair p;
    open_pair(&p, sctx, cctx, "localhost");
    pump(&p);
    REQUIRE(connected(&p));
    if (mode != ONE_BYTE) {
      test_bulk(&p);
    } else { /* a megabyte byte by byte is slow under ASan: a smaller message */
      char *a = pattern(100000, 3);
      send_bytes(&p.c, a, 100000);
      send_bytes(&p.s, a, 5000);
      pump(&p);
      REQUIRE(got(&p.s, a, 100000));
      REQUIRE(got(&p.c, a, 5000));
      free(a);
    }
    close_pair(&p);
  }
  slicing = WHOLE;
}

static void test_tls12(void) {
  test_name = "TLS 1.2";
  rh_tls_ctx *c12 = client_ctx(path("ca.pem"), 1);
  REQUIRE(SSL_CTX_set_max_proto_version(rh_tls_ctx_ssl(c12), TLS1_2_VERSION) == 1);
  pair p;
  open_pair(&p, sctx, c12, "localhost");
  rh_tls_ctx_free(c12); /* the connection keeps its context alive */
  pump(&p);
  REQUIRE(connected(&p));
  REQUIRE(!strcmp(rh_tls_version(p.s.t), "TLSv1.2"));
  REQUIRE(!strcmp(rh_tls_sni(p.s.t), "localhost"));
  test_bulk(&p);
  close_pair(&p);
}

static void test_old_protocol_refused(void) {
  test_name = "TLS 1.1 refused";
  rh_tls_ctx *c11 = client_ctx(NULL, 0);
  SSL_CTX *ssl = rh_tls_ctx_ssl(c11);
  SSL_CTX_set_security_level(ssl, 0);
  REQUIRE(SSL_CTX_set_min_proto_version(ssl, TLS1_VERSION) == 1);
  REQUIRE(SSL_CTX_set_max_proto_version(ssl, TLS1_1_VERSION) == 1);
  REQUIRE(SSL_CTX_set_cipher_list(ssl, "DEFAULT:@SECLEVEL=0") == 1);
  pair p;
  open_pair(&p, sctx, c11, "localhost");
  pump(&p);
  REQUIRE(p.s.rc == -1);
  CHECK_HAS(rh_tls_error(p.s.t), "handshake failed: ");
  CHECK_HAS(rh_tls_error(p.s.t), "protocol");
  REQUIRE(!rh_tls_handshake_done(p.c.t));
  close_pair(&p);
  rh_tls_ctx_free(c11);
}

static void test_chain(void) {
  test_name = "intermediate chain";
  rh_tls_ctx *chain = server_ctx(path("chain.pem"), path("leaf.key"));
  pair p;
  open_pair(&p, chain, cctx, "localhost");
  pump(&p);
  REQUIRE(connected(&p));
  close_pair(&p);
  rh_tls_ctx_free(chain);
}

static void test_verification(void) {
  test_name = "IP literal";
  pair p;
  open_pair(&p, sctx, cctx, "127.0.0.1");
  pump(&p);
  REQUIRE(connected(&p));
  REQUIRE(rh_tls_sni(p.s.t) == NULL); /* no SNI for addresses */
  close_pair(&p);

  test_name = "wrong IP";
  expect_client_fail(sctx, cctx, "127.0.0.2", "certificate verify failed: IP address mismatch");
  expect_client_fail(sctx, cctx, "[::1]", "certificate verify failed: IP address mismatch");

  test_name = "wrong hostname";
  expect_client_fail(sctx, cctx, "example.com", "certificate verify failed: hostname mismatch");
  expect_client_fail(sctx, cctx, "xlocalhost", "certificate verify failed: hostname mismatch");

  test_name = "wrong CA";
  rh_tls_ctx *wrong = client_ctx(path("other.pem"), 1);
  expect_client_fail(sctx, wrong, "localhost",
                     "certificate verify failed: unable to get local issuer certificate");

  test_name = "self-signed server";
  rh_tls_ctx *self = server_ctx(path("other.pem"), path("other.key"));
  expect_client_fail(self, cctx, "localhost", "certificate verify failed: self-signed certificate");

  test_name = "verify=0";
  rh_tls_ctx *lax = client_ctx(path("ca.pem"), 0);
  open_pair(&p, self, lax, "wrong.example");
  pump(&p);
  REQUIRE(connected(&p));
  send_bytes(&p.c, "hi", 2);
  pump(&p);
  REQUIRE(got(&p.s, "hi", 2));
  close_pair(&p);

  test_name = "pinned self-signed certificate";
  open_pair(&p, self, wrong, "localhost");
  pump(&p);
  REQUIRE(connected(&p));
  close_pair(&p);

  rh_tls_ctx_free(wrong);
  rh_tls_ctx_free(self);
  rh_tls_ctx_free(lax);
}

static void test_cert_env(void) {
  test_name = "SSL_CERT_FILE";
  setenv("SSL_CERT_FILE", path("ca.pem"), 1);
  rh_tls_ctx *env = client_ctx(NULL, 1);
  pair p;
  open_pair(&p, sctx, env, "localhost");
  pump(&p);
  REQUIRE(connected(&p));
  close_pair(&p);
  rh_tls_ctx_free(env);

  setenv("SSL_CERT_FILE", path("other.pem"), 1);
  env = client_ctx(NULL, 1);
  expect_client_fail(sctx, env, "localhost", "certificate verify failed");
  rh_tls_ctx_free(env);

  test_name = "ca_file over SSL_CERT_FILE";
  env = client_ctx(path("ca.pem"), 1);
  open_pair(&p, sctx, env, "localhost");
  pump(&p);
  REQUIRE(connected(&p));
  close_pair(&p);
  rh_tls_ctx_free(env);

  test_name = "SSL_CERT_FILE unreadable";
  char err[256] = "";
  setenv("SSL_CERT_FILE", path("missing.pem"), 1);
  REQUIRE(rh_tls_client_ctx(NULL, 1, err, sizeof err) == NULL);
  CHECK_HAS(err, "SSL_CERT_FILE");
  CHECK_HAS(err, "missing.pem");

  test_name = "system store";
  unsetenv("SSL_CERT_FILE");
  env = client_ctx(NULL, 1); /* the test CA is in no system store */
  expect_client_fail(sctx, env, "localhost", "certificate verify failed");
  rh_tls_ctx_free(env);
}

static void test_alpn(void) {
  test_name = "ALPN";
  rh_tls_ctx *s = server_ctx(path("server.pem"), path("server.key"));
  rh_tls_ctx *c = client_ctx(path("ca.pem"), 1);
  REQUIRE(rh_tls_ctx_set_alpn(s, "http/1.1") == 0);
  REQUIRE(rh_tls_ctx_set_alpn(c, "h2,http/1.1") == 0);
  REQUIRE(rh_tls_ctx_set_alpn(c, "") == -1);
  REQUIRE(rh_tls_ctx_set_alpn(c, "h2,,http/1.1") == -1);
  REQUIRE(rh_tls_ctx_set_alpn(c, "h2,") == -1);
  pair p;
  open_pair(&p, s, c, "localhost");
  pump(&p);
  REQUIRE(connected(&p));
  REQUIRE(!strcmp(rh_tls_alpn(p.c.t), "http/1.1") && !strcmp(rh_tls_alpn(p.s.t), "http/1.1"));
  close_pair(&p);

  test_name = "ALPN, no overlap";
  REQUIRE(rh_tls_ctx_set_alpn(c, "h2") == 0);
  open_pair(&p, s, c, "localhost");
  pump(&p);
  REQUIRE(connected(&p));
  REQUIRE(!rh_tls_alpn(p.c.t) && !rh_tls_alpn(p.s.t));
  close_pair(&p);
  rh_tls_ctx_free(s);
  rh_tls_ctx_free(c);
}

static void test_not_tls(void) {
  test_name = "plain HTTP to a TLS server";
  const char *reqs[] = { "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "OPTIONS * HTTP/1.1\r\n\r\n",
                         "GET / HTTP/1.1\r\n" };
  for (int i = 0; i < 3; i++) {
    rh_tls *t = rh_tls_new(sctx, NULL);
    rh_buf plain = RH_BUF_INIT, out = RH_BUF_INIT;
    REQUIRE(rh_tls_read(t, reqs[i], strlen(reqs[i]), &plain) == -1);
    CHECK_HAS(rh_tls_error(t), "not TLS (plain HTTP sent to a TLS port?)");
    REQUIRE(plain.len == 0);
    REQUIRE(rh_tls_pending(t, &out) == -1);
    rh_tls_free(t);
    rh_buf_free(&plain);
    rh_buf_free(&out);
  }

  test_name = "binary garbage to a TLS server";
  rh_tls *t = rh_tls_new(sctx, NULL);
  rh_buf plain = RH_BUF_INIT, out = RH_BUF_INIT;
  REQUIRE(rh_tls_read(t, "\x01\x02\x03\x04\x05\x06\x07\x08", 8, &plain) == -1);
  CHECK_HAS(rh_tls_error(t), "not TLS");
  rh_tls_free(t);

  test_name = "plain HTTP answer to a TLS client";
  t = rh_tls_new(cctx, "localhost");
  REQUIRE(rh_tls_pending(t, &out) == 0 && out.len > 0);
  const char *resp = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
  REQUIRE(rh_tls_read(t, resp, strlen(resp), &plain) == -1);
  CHECK_HAS(rh_tls_error(t), "not TLS (the server answered in plain HTTP)");
  rh_tls_free(t);
  rh_buf_free(&plain);
  rh_buf_free(&out);

  test_name = "corrupted record";
  pair p;
  open_pair(&p, sctx, cctx, "localhost");
  pump(&p);
  REQUIRE(connected(&p));
  send_bytes(&p.c, "secret", 6);
  p.c.wire.data[p.c.wire.len - 3] ^= 0x40;
  pump(&p);
  REQUIRE(p.s.rc == -1 && p.s.plain.len == 0);
  CHECK_HAS(rh_tls_error(p.s.t), "bad record mac");
  REQUIRE(!strstr(rh_tls_error(p.s.t), "handshake"));
  REQUIRE(p.c.rc == -1); /* the server's alert reached the client */
  CHECK_HAS(rh_tls_error(p.c.t), "peer sent alert (bad record mac)");
  close_pair(&p);
}

static void test_close_notify(void) {
  test_name = "close_notify";
  pair p;
  open_pair(&p, sctx, cctx, "localhost");
  pump(&p);
  REQUIRE(connected(&p));
  send_bytes(&p.c, "last words", 10);
  rh_tls_shutdown(p.c.t, &p.c.wire);
  REQUIRE(rh_tls_write(p.c.t, "more", 4, &p.c.wire) == -1);
  CHECK_HAS(rh_tls_error(p.c.t), "write after shutdown");
  REQUIRE(!rh_tls_peer_closed(p.s.t));
  pump(&p);
  REQUIRE(p.s.rc == 0);
  REQUIRE(got(&p.s, "last words", 10));
  REQUIRE(rh_tls_peer_closed(p.s.t));
  REQUIRE(!rh_tls_peer_closed(p.c.t));
  /* half-closed: the server may still answer, then close too */
  send_bytes(&p.s, "reply", 5);
  rh_tls_shutdown(p.s.t, &p.s.wire);
  pump(&p);
  REQUIRE(got(&p.c, "reply", 5));
  REQUIRE(rh_tls_peer_closed(p.c.t));
  /* bytes after close_notify are ignored */
  REQUIRE(rh_tls_read(p.s.t, "junk", 4, &p.s.plain) == 0);
  close_pair(&p);

  test_name = "shutdown during the handshake";
  open_pair(&p, sctx, cctx, "localhost");
  send_bytes(&p.c, "request", 7);
  rh_tls_shutdown(p.c.t, &p.c.wire); /* sent after the held-back write, once connected */
  pump(&p);
  REQUIRE(connected(&p));
  REQUIRE(got(&p.s, "request", 7));
  REQUIRE(rh_tls_peer_closed(p.s.t));
  close_pair(&p);
}

static void test_context_errors(void) {
  test_name = "context errors";
  char err[256] = "";
  REQUIRE(!rh_tls_server_ctx(path("missing.pem"), path("server.key"), err, sizeof err));
  CHECK_HAS(err, "cannot load certificate chain");
  CHECK_HAS(err, "missing.pem");
  REQUIRE(!rh_tls_server_ctx(path("garbage.pem"), path("server.key"), err, sizeof err));
  CHECK_HAS(err, "garbage.pem");
  REQUIRE(!rh_tls_server_ctx(path("server.pem"), path("missing.key"), err, sizeof err));
  CHECK_HAS(err, "cannot load private key");
  REQUIRE(!rh_tls_server_ctx(path("server.pem"), path("locked.key"), err, sizeof err));
  CHECK_HAS(err, "it is encrypted"); /* refused, never prompted for */
  REQUIRE(!rh_tls_server_ctx(path("server.pem"), path("other.key"), err, sizeof err));
  CHECK_HAS(err, "server.pem");
  REQUIRE(!rh_tls_client_ctx(path("missing.pem"), 1, err, sizeof err));
  CHECK_HAS(err, "cannot load CA file");
  REQUIRE(!rh_tls_client_ctx(path("garbage.pem"), 1, err, sizeof err));
  CHECK_HAS(err, "garbage.pem");
  REQUIRE(!rh_tls_server_ctx(path("missing.pem"), path("server.key"), NULL, 0));
}

int main(void) {
  unsetenv("SSL_CERT_FILE");
  unsetenv("SSL_CERT_DIR");
  make_certs();
  sctx = server_ctx(path("server.pem"), path("server.key"));
  cctx = client_ctx(path("ca.pem"), 1);
  test_handshake_and_echo();
  test_early_writes();
  test_data();
  test_tls12();
  test_old_protocol_refused();
  test_chain();
  test_verification();
  test_cert_env();
  test_alpn();
  test_not_tls();
  test_close_notify();
  test_context_errors();
  rh_tls_ctx_free(sctx);
  rh_tls_ctx_free(cctx);
  printf("test_tls: all passed\n");
  return 0;
}
