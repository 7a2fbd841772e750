/* lua_crypto: the helpers scripts need for tokens and signatures, on OpenSSL: sha256,
 * hmac_sha256, random bytes, base64 (standard and url-safe), uuid v4, constant-time compare. */
#include <lauxlib.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jose/jws.h"
#include "lua/bind.h"

static int l_sha256(lua_State *L) {
  size_t n;
  const char *p = luaL_checklstring(L, 1, &n);
  unsigned char md[32];
  unsigned int len = sizeof md;
  EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
  lua_pushlstring(L, (const char *)md, len);
  return 1;
}

static int l_hmac_sha256(lua_State *L) {
  size_t klen, n;
  const char *key = luaL_checklstring(L, 1, &klen);
  const char *p = luaL_checklstring(L, 2, &n);
  unsigned char md[32];
  unsigned int len = sizeof md;
  HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)p, n, md, &len);
  lua_pushlstring(L, (const char *)md, len);
  return 1;
}

static int l_random(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 0 && n <= 65536, 1, "0 to 65536 bytes");
  unsigned char buf[65536];
  if (RAND_bytes(buf, (int)n) != 1) return luaL_error(L, "relay.crypto.random: no randomness");
  lua_pushlstring(L, (const char *)buf, (size_t)n);
  return 1;
}

/* Constant time: the time says nothing about where two secrets differ. */
static int l_equal(lua_State *L) {
  size_t a_len, b_len;
  const char *a = luaL_checklstring(L, 1, &a_len), *b = luaL_checklstring(L, 2, &b_len);
  lua_pushboolean(L, a_len == b_len && CRYPTO_memcmp(a, b, a_len) == 0);
  return 1;
}

/* base64_encode(s, url?) — url: the url-safe alphabet without padding (JWT). */
static int l_b64_encode(lua_State *L) {
  size_t n;
  const char *p = luaL_checklstring(L, 1, &n);
  int url = lua_toboolean(L, 2);
  char *out = malloc(4 * ((n + 2) / 3) + 1);
  if (!out) abort();
  int len = EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)p, (int)n);
  if (url) {
    while (len > 0 && out[len - 1] == '=') len--;
    for (int i = 0; i < len; i++) out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
  }
  lua_pushlstring(L, out, (size_t)len);
  free(out);
  return 1;
}

/* Every one of s's m bytes in the standard alphabet or '='. Bounded by m: s has no NUL (strspn
 * here read past the buffer's end, found under ASan by an 11 KB Harness-Target flood). */
static int b64_only(const char *s, size_t m) {
  for (size_t i = 0; i < m; i++) {
    char c = s[i];
    int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/' || c == '=';
    if (!ok) return 0;
  }
  return 1;
}

/* base64_decode(s) -> bytes | nil, err; either alphabet, padding optional. */
static int l_b64_decode(lua_State *L) {
  size_t n;
  const char *p = luaL_checklstring(L, 1, &n);
  char *in = malloc(n + 4);
  if (!in) abort();
  size_t m = 0;
  for (size_t i = 0; i < n; i++) in[m++] = p[i] == '-' ? '+' : p[i] == '_' ? '/' : p[i];
  while (m % 4) in[m++] = '=';
  unsigned char *out = malloc(m / 4 * 3 + 1);
  if (!out) abort();
  int len = EVP_DecodeBlock(out, (unsigned char *)in, (int)m);
  if (len < 0 || !b64_only(in, m)) {
    free(in);
    free(out);
    lua_pushnil(L);
    lua_pushliteral(L, "not base64");
    return 2;
  }
  size_t pad = 0; /* EVP_DecodeBlock counts padding as zero bytes */
  while (pad < 2 && m > pad && in[m - 1 - pad] == '=') pad++;
  lua_pushlstring(L, (const char *)out, (size_t)len - pad);
  free(in);
  free(out);
  return 1;
}

static int l_uuid(lua_State *L) {
  unsigned char b[16];
  RAND_bytes(b, sizeof b);
  b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
  b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
  char s[37];
  snprintf(s, sizeof s, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
           b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
  lua_pushstring(L, s);
  return 1;
}

static rh_bytes field_bytes(lua_State *L, int t, const char *name) {
  rh_bytes b = { NULL, 0 };
  lua_getfield(L, t, name);
  if (lua_isstring(L, -1)) b.p = (const unsigned char *)lua_tolstring(L, -1, &b.len);
  lua_pop(L, 1); /* the string stays alive in the key table */
  return b;
}

/* jws_verify(alg, key, input, signature) -> true | false | nil, err. key: kty, crv and the raw
 * (already base64url-decoded) n, e, x, y of a JWK. */
static int l_jws_verify(lua_State *L) {
  const char *alg = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  size_t len;
  const char *input = luaL_checklstring(L, 3, &len);
  rh_bytes sig;
  sig.p = (const unsigned char *)luaL_checklstring(L, 4, &sig.len);
  lua_getfield(L, 2, "kty");
  lua_getfield(L, 2, "crv");
  rh_jwk k = { lua_tostring(L, -2), lua_tostring(L, -1), field_bytes(L, 2, "n"), field_bytes(L, 2, "e"),
               field_bytes(L, 2, "x"), field_bytes(L, 2, "y") };
  char err[120];
  int rc = rh_jws_verify(alg, &k, input, len, &sig, err, sizeof err);
  if (rc < 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushboolean(L, rc);
  return 1;
}

void rh_lua_register_crypto(lua_State *L) {
  static const luaL_Reg fns[] = {
    { "sha256", l_sha256 }, { "hmac_sha256", l_hmac_sha256 }, { "random", l_random },
    { "constant_time_equal", l_equal }, { "base64_encode", l_b64_encode },
    { "base64_decode", l_b64_decode }, { "uuid", l_uuid }, { "jws_verify", l_jws_verify }, { NULL, NULL },
  };
  luaL_register(L, NULL, fns);
}
