/* fuzz_jws: JWS signature verification (core/jose) with real keys and hostile ones.
 *
 * Three key pairs are made once with OpenSSL (RSA 2048, EC P-256, Ed25519); their public parts
 * go to rh_jws_verify as JWK members, the way the workspace relay's JWKS path hands them over.
 * Input: byte 0 = mode, byte 1 = a selector, the rest = data.
 *  mode even: data is a message; key (selector % 3) signs it. The signature must verify (1);
 *    with one bit flipped (at selector) it must not (0); under another algorithm's key the
 *    answer is 0 or -1 with a reason, never 1.
 *  mode odd: everything from the input: alg (selector), kty and crv, the key members n, e, x, y,
 *    the signed input and the signature, each a u8 length and bytes. The answer is -1 with a
 *    reason, 0 or 1, and 1 only when the key members are one of our real keys (nobody forges).
 *  mode 2 (mod 4): data is a JWS header (any bytes). The token header.claims is signed with the
 *    real Ed25519 key and goes through relay.jwt.verify_jwks (the real lua/relay/jwt.lua, in
 *    LuaJIT; lua_state.h) with that key's JWK. It must not raise; a header with a "crit" member
 *    (RFC 7515 4.1.11: this verifier understands no extension) is refused with a crit reason; a
 *    header that is an object with alg EdDSA, no crit and no kid but ours verifies.
 * Sanitizers check the rest (OpenSSL's own allocations freed: LSan). */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jose/jws.h"

#define FUZZ_TARGET "fuzz_jws"
#include "check.h"
#include "lua_state.h"

int luaopen_cjson(lua_State *L);

typedef struct {
  const char *alg, *kty, *crv;
  EVP_PKEY *pkey;
  unsigned char n[512], e[8], x[32], y[32];
  size_t nlen, elen;
  rh_jwk jwk;
} keypair;

static keypair keys[3];

static void bn_param(EVP_PKEY *k, const char *name, unsigned char *out, size_t cap, size_t *len) {
  BIGNUM *bn = NULL;
  if (EVP_PKEY_get_bn_param(k, name, &bn) != 1 || (size_t)BN_num_bytes(bn) > cap) FAIL("key param %s", name);
  *len = (size_t)BN_bn2bin(bn, out);
  BN_free(bn);
}

static void make_keys(void) {
  keypair *rsa = &keys[0], *ec = &keys[1], *ed = &keys[2];
  rsa->alg = "RS256", rsa->kty = "RSA";
  rsa->pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
  ec->alg = "ES256", ec->kty = "EC", ec->crv = "P-256";
  ec->pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  ed->alg = "EdDSA", ed->kty = "OKP", ed->crv = "Ed25519";
  ed->pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
  if (!rsa->pkey || !ec->pkey || !ed->pkey) FAIL("key generation");
  bn_param(rsa->pkey, OSSL_PKEY_PARAM_RSA_N, rsa->n, sizeof rsa->n, &rsa->nlen);
  bn_param(rsa->pkey, OSSL_PKEY_PARAM_RSA_E, rsa->e, sizeof rsa->e, &rsa->elen);
  rsa->jwk = (rh_jwk){ "RSA", NULL, { rsa->n, rsa->nlen }, { rsa->e, rsa->elen }, { 0 }, { 0 } };
  unsigned char point[65];
  size_t plen = 0;
  if (EVP_PKEY_get_octet_string_param(ec->pkey, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point, &plen) != 1 || plen != 65)
    FAIL("EC public point");
  memcpy(ec->x, point + 1, 32);
  memcpy(ec->y, point + 33, 32);
  ec->jwk = (rh_jwk){ "EC", "P-256", { 0 }, { 0 }, { ec->x, 32 }, { ec->y, 32 } };
  size_t xlen = 32;
  if (EVP_PKEY_get_raw_public_key(ed->pkey, ed->x, &xlen) != 1 || xlen != 32) FAIL("Ed25519 public key");
  ed->jwk = (rh_jwk){ "OKP", "Ed25519", { 0 }, { 0 }, { ed->x, 32 }, { 0 } };
}

/* The JWS signature of msg: PKCS#1 v1.5, r||s (not DER), or Ed25519's 64 bytes. */
static size_t sign(const keypair *k, const uint8_t *msg, size_t n, unsigned char *sig, size_t cap) {
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  size_t len = cap;
  unsigned char der[128];
  int ed = k == &keys[2], ec = k == &keys[1];
  if (EVP_DigestSignInit(md, NULL, ed ? NULL : EVP_sha256(), NULL, k->pkey) != 1) FAIL("sign init");
  if (ec) len = sizeof der;
  if (EVP_DigestSign(md, ec ? der : sig, &len, msg, n) != 1) FAIL("sign");
  EVP_MD_CTX_free(md);
  if (!ec) return len;
  const unsigned char *p = der;
  ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)len);
  if (!es) FAIL("ECDSA signature");
  BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32);
  BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32);
  ECDSA_SIG_free(es);
  return 64;
}

static int verify(const char *alg, const rh_jwk *key, const void *in, size_t n, const unsigned char *sig, size_t slen) {
  char err[256] = "";
  rh_bytes s = { sig, slen };
  int rc = rh_jws_verify(alg, key, in, n, &s, err, sizeof err);
  if (rc < -1 || rc > 1) FAIL("rh_jws_verify returned %d", rc);
  if (rc == -1 && !err[0]) FAIL("-1 without a reason (alg %s)", alg ? alg : "(null)");
  return rc;
}

static void signed_round(int which, int bit, const uint8_t *msg, size_t n) {
  const keypair *k = &keys[which];
  unsigned char sig[512];
  size_t slen = sign(k, msg, n, sig, sizeof sig);
  if (verify(k->alg, &k->jwk, msg, n, sig, slen) != 1) FAIL("%s: a good signature does not verify", k->alg);
  sig[(bit / 8) % slen] ^= (unsigned char)(1u << (bit % 8));
  if (verify(k->alg, &k->jwk, msg, n, sig, slen) != 0) FAIL("%s: a flipped bit still verifies", k->alg);
  sig[(bit / 8) % slen] ^= (unsigned char)(1u << (bit % 8));
  for (int other = 0; other < 3; other++)
    if (other != which && verify(keys[other].alg, &keys[other].jwk, msg, n, sig, slen) == 1)
      FAIL("%s's signature verifies as %s", k->alg, keys[other].alg);
}

/* Takes a u8 length and that many bytes (fewer at the end). */
static rh_bytes take(const uint8_t **p, size_t *n) {
  rh_bytes b = { NULL, 0 };
  if (*n == 0) return b;
  size_t len = **p;
  (*p)++, (*n)--;
  if (len > *n) len = *n;
  b.p = *p, b.len = len;
  *p += len, *n -= len;
  return b;
}

static int is_real_key(const rh_jwk *j) {
  for (int i = 0; i < 3; i++) {
    const rh_jwk *r = &keys[i].jwk;
    if (j->x.len == r->x.len && (!r->x.len || memcmp(j->x.p, r->x.p, r->x.len) == 0) &&
        j->n.len == r->n.len && (!r->n.len || memcmp(j->n.p, r->n.p, r->n.len) == 0))
      return 1;
  }
  return 0;
}

static void hostile_round(int selector, const uint8_t *p, size_t n) {
  static const char *algs[] = { "RS256", "ES256", "EdDSA", "HS256", "none", "RS384", "", NULL };
  static const char *ktys[] = { "RSA", "EC", "OKP", "oct", "", NULL };
  static const char *crvs[] = { "P-256", "Ed25519", "P-384", "X25519", NULL };
  const char *alg = algs[selector % 8];
  rh_jwk k = { ktys[(selector >> 3) % 6], crvs[(selector >> 5) % 5], { 0 }, { 0 }, { 0 }, { 0 } };
  k.n = take(&p, &n), k.e = take(&p, &n), k.x = take(&p, &n), k.y = take(&p, &n);
  rh_bytes in = take(&p, &n), sig = take(&p, &n);
  int rc = verify(alg, &k, in.p, in.len, sig.p, sig.len);
  if (rc == 1 && !is_real_key(&k)) FAIL("%s verified with a key nobody holds", alg ? alg : "(null)");
}

/* ---- mode 2: a hostile header through relay.jwt ---- */

static lua_State *L;
static int token_ref;

/* Raises "INVARIANT: …" on a violation. */
static const char token_check[] =
  "local jwt, cjson, core = require 'relay.jwt', require 'cjson', require 'relay.core'\n"
  "local function b64(s) return core.base64_encode(s, true) end\n"
  "return function(header, sign, x)\n"
  "  local input = b64(header) .. '.' .. b64('{\"sub\":\"u\",\"exp\":4000000000}')\n"
  "  local token = input .. '.' .. b64(sign(input))\n"
  "  local keys = { { kty = 'OKP', crv = 'Ed25519', kid = 'k', x = b64(x) } }\n"
  "  local ok, claims, err = pcall(jwt.verify_jwks, token, keys, { now = 1e9 })\n"
  "  if not ok then error('INVARIANT: verify_jwks raised: ' .. tostring(claims), 0) end\n"
  "  local dok, h = pcall(cjson.decode, header)\n"
  "  if not (dok and type(h) == 'table') then\n"
  "    if claims then error('INVARIANT: a header that is not an object verified', 0) end\n"
  "    return\n"
  "  end\n"
  "  if h.crit ~= nil then\n"
  "    if claims then error('INVARIANT: a header with crit verified', 0) end\n"
  "    if h.alg == 'EdDSA' and not tostring(err):find('crit', 1, true) then\n"
  "      error('INVARIANT: crit refused for another reason: ' .. tostring(err), 0)\n"
  "    end\n"
  "  elseif h.alg == 'EdDSA' and (h.kid == nil or h.kid == 'k') and not claims then\n"
  "    error('INVARIANT: a good EdDSA token refused: ' .. tostring(err), 0)\n"
  "  elseif h.alg ~= 'EdDSA' and claims then\n"
  "    error('INVARIANT: alg ' .. tostring(h.alg) .. ' verified with an Ed25519 key', 0)\n"
  "  end\n"
  "end\n";

/* sign(input) -> the Ed25519 signature under our key. */
static int l_sign(lua_State *S) {
  size_t n;
  const char *in = luaL_checklstring(S, 1, &n);
  unsigned char sig[64];
  lua_pushlstring(S, (const char *)sig, sign(&keys[2], (const uint8_t *)in, n, sig, sizeof sig));
  return 1;
}

static void token_round(const uint8_t *header, size_t n) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, token_ref);
  lua_pushlstring(L, (const char *)header, n);
  lua_pushcfunction(L, l_sign);
  lua_pushlstring(L, (const char *)keys[2].x, 32);
  if (lua_pcall(L, 3, 0, 0)) FAIL("%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "(not a string)");
  if (lua_gettop(L) != 0) FAIL("Lua stack at %d after an input", lua_gettop(L));
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  make_keys();
  static const luaL_Reg cjson[] = { { "cjson", luaopen_cjson }, { NULL, NULL } };
  L = fuzz_lua_open(cjson);
  token_ref = fuzz_lua_load(L, token_check, sizeof token_check - 1, "=fuzz_jws_token");
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static unsigned long runs;
  if (size < 2) return 0;
  if (data[0] & 1) hostile_round(data[1], data + 2, size - 2);
  else if ((data[0] & 3) == 2) token_round(data + 1, size - 1);
  else signed_round(data[1] % 3, data[1] * 7 + (data[0] >> 1), data + 2, size - 2);
  if (++runs % 256 == 0) lua_gc(L, LUA_GCCOLLECT, 0);
  return 0;
}
