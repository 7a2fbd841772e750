/* fuzz_workspace_frames_lua: the workspace relay's frame checks (lua/relay/workspace/frames.lua on
 * relay.schema) on arbitrary text, as a client, a daemon or a worker could send it.
 *
 * One LuaJIT state for the run (lua_state.h: JIT off, Lua line coverage fed to libFuzzer), with
 * cjson preloaded from the C library and the real modules loaded from the source tree.
 * Invariants (a Lua error "INVARIANT: …" aborts):
 *  - frames.parse, client, daemon (parse and classify in one call) and worker_request never raise;
 *  - a worker request refused gets a message (a string naming what did not fit);
 *  - a frame given a kind carries the fields the hub keys its routing tables on (a nil or
 *    non-string key there would raise in the hub or route to nobody): requestId for key
 *    exchanges and pairing, sessionId for E2EE and key updates, channel for session events;
 *  - relay.schema.check of a deep generic shape never raises on the decoded value. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_TARGET "fuzz_workspace_frames_lua"
#include "check.h"
#include "lua_state.h"

int luaopen_cjson(lua_State *L);


static const char checks[] =
  "local frames = require 'relay.workspace.frames'\n"
  "local S = require 'relay.schema'\n"
  "local function inv(msg) error('INVARIANT: ' .. msg, 0) end\n"
  "local function str(f, k, kind) if type(f[k]) ~= 'string' then inv(kind .. ' without a string ' .. k) end end\n"
  "local needs = {\n"
  "  kex_init = { 'requestId' }, pairing = { 'requestId' }, e2ee = { 'sessionId' }, key_update = { 'sessionId' },\n"
  "  kex_response = { 'requestId', 'sessionId' }, pairing_response = { 'requestId' },\n"
  "  subscribe = { 'channel' }, unsubscribe = { 'channel' }, presence = { 'channel' }, session_event = { 'channel' },\n"
  "}\n"
  "local any = S.any()\n"
  "local generic = S.one_of { S.array(S.map(S.string(), any)), S.map(S.string { max = 64 }, S.one_of { S.string(), S.number(), any }) }\n"
  "for _ = 1, 5 do generic = S.one_of { S.array(generic), S.object({ type = S.optional(S.string()) }, { rest = generic }), any } end\n"
  "local function classify(name, fn, text)\n"
  "  local ok, f, kind = pcall(fn, text)\n"
  "  if not ok then inv(name .. ' raised: ' .. tostring(f)) end\n"
  "  if kind == nil then return end\n"
  "  if type(f) ~= 'table' then inv(name .. ' gave the kind ' .. tostring(kind) .. ' without a frame') end\n"
  "  for _, k in ipairs(needs[kind] or {}) do str(f, k, kind) end\n"
  "end\n"
  "return function(text)\n"
  "  local ok, f = pcall(frames.parse, text)\n"
  "  if not ok then inv('parse raised: ' .. tostring(f)) end\n"
  "  if not f then return end\n"
  "  classify('client', frames.client, text)\n"
  "  classify('daemon', frames.daemon, text)\n"
  "  local okw, good, why = pcall(frames.worker_request, f)\n"
  "  if not okw then inv('worker_request raised: ' .. tostring(good)) end\n"
  "  if good and type(f.path) ~= 'string' then inv('a worker request without a path') end\n"
  "  if not good and type(why) ~= 'string' then inv('worker_request refused without a message') end\n"
  "  local okg, g, gwhy = pcall(S.check, generic, f)\n"
  "  if not okg then inv('schema.check raised: ' .. tostring(g)) end\n"
  "  if not g and type(gwhy) ~= 'string' then inv('schema.check refused without a message') end\n"
  "end\n";

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  static const luaL_Reg cjson[] = { { "cjson", luaopen_cjson }, { NULL, NULL } };
  fuzz_lua_target(cjson, checks, sizeof checks - 1, "=fuzz_workspace_frames_checks");
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_lua_input(data, size);
  return 0;
}
