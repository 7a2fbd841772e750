/* jws: RS256 / ES256 / EdDSA verification from JWK parts (see jws.h). Keys are built per call
 * with EVP_PKEY_fromdata (callers verify once per connection, not per frame). */
#include "jose/jws.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <stdio.h>
#include <string.h>

static int fail(char *err, size_t errlen, const char *why) {
  snprintf(err, errlen, "%s", why);
  return -1;
}

static int is(const char *a, const char *b) { return a && strcmp(a, b) == 0; }

/* A key from OSSL_PARAMs of one type ("RSA", "EC"); NULL if OpenSSL refuses them. */
static EVP_PKEY *from_params(const char *type, OSSL_PARAM_BLD *bld) {
  OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
  EVP_PKEY *pkey = NULL;
  if (params && ctx && EVP_PKEY_fromdata_init(ctx) == 1)
    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params);
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params);
  return pkey;
}

static EVP_PKEY *rsa_key(const rh_jwk *k) {
  if (k->n.len < 256 || !k->e.len) return NULL; /* under 2048 bits is not a key to trust */
  BIGNUM *n = BN_bin2bn(k->n.p, (int)k->n.len, NULL), *e = BN_bin2bn(k->e.p, (int)k->e.len, NULL);
  OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
  EVP_PKEY *pkey = NULL;
  if (n && e && bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) &&
      OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
    pkey = from_params("RSA", bld);
  OSSL_PARAM_BLD_free(bld);
  BN_free(n);
  BN_free(e);
  return pkey;
}

static EVP_PKEY *p256_key(const rh_jwk *k) {
  if (k->x.len != 32 || k->y.len != 32) return NULL;
  unsigned char point[65];
  point[0] = 0x04; /* uncompressed: x then y */
  memcpy(point + 1, k->x.p, 32);
  memcpy(point + 33, k->y.p, 32);
  OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
  EVP_PKEY *pkey = NULL;
  if (bld && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) &&
      OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point))
    pkey = from_params("EC", bld);
  OSSL_PARAM_BLD_free(bld);
  return pkey;
}

/* JOSE's ES256 signature is r||s, 32 bytes each; OpenSSL wants DER. 0, or -1. */
static int ecdsa_der(const rh_bytes *sig, unsigned char **der, int *der_len) {
  if (sig->len != 64) return -1;
  ECDSA_SIG *es = ECDSA_SIG_new();
  BIGNUM *r = BN_bin2bn(sig->p, 32, NULL), *s = BN_bin2bn(sig->p + 32, 32, NULL);
  if (!es || !r || !s || ECDSA_SIG_set0(es, r, s) != 1) {
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    return -1;
  }
  *der = NULL;
  *der_len = i2d_ECDSA_SIG(es, der);
  ECDSA_SIG_free(es);
  return *der_len > 0 ? 0 : -1;
}

static int digest_verify(EVP_PKEY *pkey, const EVP_MD *md, const void *input, size_t len, const unsigned char *sig,
                         size_t sig_len) {
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  int ok = ctx && EVP_DigestVerifyInit(ctx, NULL, md, NULL, pkey) == 1 &&
           EVP_DigestVerify(ctx, sig, sig_len, input, len) == 1;
  EVP_MD_CTX_free(ctx);
  return ok;
}

int rh_jws_verify(const char *alg, const rh_jwk *k, const void *input, size_t len, const rh_bytes *sig, char *err,
                  size_t errlen) {
  EVP_PKEY *pkey = NULL;
  if (is(alg, "RS256")) {
    if (!is(k->kty, "RSA") || !(pkey = rsa_key(k))) return fail(err, errlen, "RS256 needs an RSA key of 2048 bits or more (n, e)");
    int ok = digest_verify(pkey, EVP_sha256(), input, len, sig->p, sig->len);
    EVP_PKEY_free(pkey);
    return ok;
  }
  if (is(alg, "ES256")) {
    if (!is(k->kty, "EC") || !is(k->crv, "P-256") || !(pkey = p256_key(k)))
      return fail(err, errlen, "ES256 needs an EC P-256 key (x, y)");
    unsigned char *der;
    int der_len, ok = 0;
    if (ecdsa_der(sig, &der, &der_len) == 0) {
      ok = digest_verify(pkey, EVP_sha256(), input, len, der, (size_t)der_len);
      OPENSSL_free(der);
    }
    EVP_PKEY_free(pkey);
    return ok;
  }
  if (is(alg, "EdDSA")) {
    if (!is(k->kty, "OKP") || !is(k->crv, "Ed25519") || k->x.len != 32 ||
        !(pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, k->x.p, k->x.len)))
      return fail(err, errlen, "EdDSA needs an OKP Ed25519 key (x)");
    int ok = digest_verify(pkey, NULL, input, len, sig->p, sig->len);
    EVP_PKEY_free(pkey);
    return ok;
  }
  return fail(err, errlen, "unsupported alg (RS256, ES256, EdDSA)");
}
