/* fuzz_json_scan: core/json/scan.c against lua-cjson (what the workspace relay's script path
 * decodes frames with), and core/hub on top of it.
 *
 * Invariants: whatever rh_json_scan_object accepts, cjson.decode accepts too (with invalid
 * numbers off, as JSON allows) and gives a table: the C fast path never takes a frame the script
 * would refuse. Each unescaped top-level key the scanner reports is a key of that table. The hub
 * never delivers a frame the scanner refuses. Nothing crashes, leaks or reads out of bounds. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub/hub.h"
#include "json/scan.h"

#define FUZZ_TARGET "fuzz_json_scan"
#include "check.h"

int luaopen_cjson(lua_State *L);

static lua_State *L;

typedef struct {
  int bad;
} keys_ud;

/* The decoded table is at the top of L's stack. */
static int key_present(void *ud, const char *k, size_t kl, int escaped, const rh_json_value *v) {
  (void)v;
  if (escaped) return 0;
  lua_pushlstring(L, k, kl);
  lua_rawget(L, -2);
  if (lua_isnil(L, -1)) ((keys_ud *)ud)->bad = 1;
  lua_pop(L, 1);
  return 0;
}

static int sent;
static int fake_send(void *c, const char *p, size_t n) {
  (void)c, (void)p, (void)n;
  sent++;
  return 0;
}
static size_t fake_queued(void *c) {
  (void)c;
  return 0;
}

static void close_lua(void) { lua_close(L); } /* cjson's buffers are not leaks */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!L) {
    L = luaL_newstate();
    atexit(close_lua);
    luaL_openlibs(L);
    luaopen_cjson(L);
    lua_getfield(L, -1, "decode_invalid_numbers");
    lua_pushboolean(L, 0);
    lua_call(L, 1, 0);
    lua_getfield(L, -1, "decode");
    lua_setglobal(L, "json_decode");
    lua_settop(L, 0);
  }
  const char *p = (const char *)data;
  keys_ud k = { 0 };
  int accepted = rh_json_scan_object(p, size, 1000, NULL, NULL) == 0;
  if (accepted) {
    lua_getglobal(L, "json_decode");
    lua_pushlstring(L, p, size);
    if (lua_pcall(L, 1, 1, 0) != 0) FAIL("scan accepted what cjson refuses: %s", lua_tostring(L, -1));
    if (!lua_istable(L, -1)) FAIL("scan accepted a non-object");
    rh_json_scan_object(p, size, 1000, key_present, &k);
    if (k.bad) FAIL("scan reported a key cjson does not have");
    lua_settop(L, 0);
  }
  static const rh_hub_ops ops = { fake_send, fake_queued };
  rh_hub *h = rh_hub_new(&ops, 1e9, 1 << 20);
  rh_hub_peer *peer = rh_hub_peer_new(h, h);
  /* every session id up to 8 bytes drawn from the input owns the peer, so routing gets reached */
  for (size_t i = 0; i + 1 < size && i < 64; i += 8) {
    char id[9];
    size_t n = size - i < 8 ? size - i : 8;
    memcpy(id, p + i, n);
    id[n] = 0;
    rh_hub_own(h, "s", id, peer);
  }
  rh_hub_own(h, "s", "a", peer);
  sent = 0;
  int took = rh_hub_daemon_frame(h, "s", NULL, p, size, 0);
  if (took && !accepted) FAIL("the hub delivered a frame the scanner refuses");
  if (took != (sent == 1)) FAIL("the hub's answer and its sends disagree");
  rh_hub_peer_gone(h, peer);
  rh_hub_free(h);
  return 0;
}
