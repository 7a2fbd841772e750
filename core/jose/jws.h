/* jws: verifying JSON Web Signatures with public keys given as JWK parts (RFC 7515/7517/7518,
 * RFC 8037), on OpenSSL 3. RS256 (RSA PKCS#1 v1.5 with SHA-256), ES256 (ECDSA P-256 with
 * SHA-256, the signature as r||s) and EdDSA (Ed25519). No private keys, no JSON here: callers
 * decode the JWK's base64url members into the raw bytes below. */
#ifndef RH_JWS_H
#define RH_JWS_H

#include <stddef.h>

typedef struct {
  const unsigned char *p;
  size_t len;
} rh_bytes;

/* A public key as its JWK members, raw bytes (unused members {NULL, 0}). kty "RSA" uses n, e;
 * kty "EC" (crv "P-256") uses x, y; kty "OKP" (crv "Ed25519") uses x. Borrowed by the call. */
typedef struct {
  const char *kty, *crv;
  rh_bytes n, e, x, y;
} rh_jwk;

/* 1 if sig is alg's signature of input under key, 0 if it is not, -1 if the key or alg cannot
 * be used (err says why, e.g. "ES256 needs an EC P-256 key"). */
int rh_jws_verify(const char *alg, const rh_jwk *key, const void *input, size_t len, const rh_bytes *sig,
                  char *err, size_t errlen);

#endif
