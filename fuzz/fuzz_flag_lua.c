/* fuzz_flag_lua: the flag proxy's config loading, serving and evaluation (lua/relay/flag) on
 * arbitrary JSON, as an upstream or a config directory could hand it over.
 *
 * One LuaJIT state for the run (lua_state.h: JIT off, Lua line coverage fed to libFuzzer), with
 * relay.core and cjson preloaded from the C library and the real lua/relay/flag modules (and
 * relay.harness, the evaluator) loaded from the source tree.
 *
 * Input: three NUL-separated parts: the feature configs (feature_config.json), the segments
 * (segments.json), a target (or anything), decoded as the flag proxy decodes what it loads
 * (relay.json: strict numbers). Items pass the checks offline.load makes (a table
 * with a string `feature` / `identifier`); everything inside them is as the input says.
 * Invariants (a Lua error "INVARIANT: …" aborts):
 *  - Store:set_env never raises, and reloading the same config changes no version;
 *  - the served JSON (feature-configs, target-segments v1 and v2, each item) decodes again, to
 *    as many items as were loaded;
 *  - evaluator.evaluate never raises and gives one of the flag's own variations, or nil with a
 *    reason;
 *  - relay.flag.validate never raises (it passes a config or refuses it with a message), and
 *    every flag of a config it passes evaluates to one of its variations for any target;
 *  - evaluator.bucket (relay.murmur3) is in 1..100 for any string. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_TARGET "fuzz_flag_lua"
#include "check.h"
#include "lua_state.h"

int luaopen_cjson(lua_State *L);

static lua_State *L;
static int check_ref;

static const char checks[] =
  "local json = require 'relay.json'\n"
  "local store_mod = require 'relay.flag.store'\n"
  "local evaluator = require 'relay.harness'\n"
  "local validate = require 'relay.flag.validate'\n"
  "local function inv(msg) error('INVARIANT: ' .. msg, 0) end\n"
  "local function decode(text)\n"
  "  local ok, v = pcall(json.decode, text)\n"
  "  return ok and v or nil\n"
  "end\n"
  "local function items(text, field)\n"
  "  local v, out = decode(text), {}\n"
  "  if type(v) ~= 'table' then return out end\n"
  "  for _, it in ipairs(v) do\n"
  "    if type(it) == 'table' and type(it[field]) == 'string' then out[#out + 1] = it end\n"
  "  end\n"
  "  return out\n"
  "end\n"
  "local function served(what, text, n)\n"
  "  local v = decode(text)\n"
  "  if type(v) ~= 'table' then inv(what .. ' served JSON that does not decode: ' .. tostring(text):sub(1, 200)) end\n"
  "  if n and #v ~= n then inv(what .. ' served ' .. #v .. ' items of ' .. n) end\n"
  "end\n"
  "local store = store_mod.new { and_rules = true }\n"
  "local runs = 0\n"
  "return function(flags_text, segments_text, target_text)\n"
  "  runs = runs + 1\n"
  "  local env = 'env-' .. runs % 64\n"
  "  local flags, segments = items(flags_text, 'feature'), items(segments_text, 'identifier')\n"
  "  local data = { flags = flags, segments = segments, targets = {}, keys = {} }\n"
  "  local ok, err = pcall(store.set_env, store, env, data)\n"
  "  if not ok then inv('set_env raised: ' .. tostring(err)) end\n"
  "  local ok2, again = pcall(store.set_env, store, env, data)\n"
  "  if not ok2 then inv('set_env raised the second time: ' .. tostring(again)) end\n"
  "  if #again > 0 then inv('the same config again gave ' .. #again .. ' events') end\n"
  "  local ok3, e = pcall(function()\n"
  "    served('feature-configs', store:answer(env, 'flag'), #flags)\n"
  "    served('target-segments', store:answer(env, 'segment', nil, false), #segments)\n"
  "    served('target-segments v2', store:answer(env, 'segment', nil, true), #segments)\n"
  "    for _, f in ipairs(flags) do served('a feature config', store:answer(env, 'flag', f.feature)) end\n"
  "    for _, s in ipairs(segments) do served('a segment', store:answer(env, 'segment', s.identifier, true)) end\n"
  "  end)\n"
  "  if not ok3 then if tostring(e):find('^INVARIANT') then error(e, 0) end; inv('serving raised: ' .. tostring(e)) end\n"
  "  local target = decode(target_text)\n"
  "  if type(target) ~= 'table' then target = { identifier = target_text, name = target_text } end\n"
  "  local ctx = { flags = store.envs[env].flag, segments = store.envs[env].segment }\n"
  "  for _, f in ipairs(flags) do\n"
  "    local okv, v, why = pcall(evaluator.evaluate, ctx, f, target)\n"
  "    if not okv then inv('evaluate raised: ' .. tostring(v)) end\n"
  "    if v ~= nil then\n"
  "      local mine = false\n"
  "      for _, x in ipairs(type(f.variations) == 'table' and f.variations or {}) do mine = mine or x == v end\n"
  "      if not mine then inv('evaluate gave a variation that is not the flag\\'s') end\n"
  "    elseif type(why) ~= 'string' then inv('no variation and no reason') end\n"
  "  end\n"
  "  -- the validator never raises, and whatever it passes evaluates to one of the flag's variations\n"
  "  local vd = { flags = decode(flags_text), segments = decode(segments_text) }\n"
  "  local okc, valid, verr = pcall(validate.envs, { e = vd })\n"
  "  if not okc then inv('validate raised: ' .. tostring(valid)) end\n"
  "  if not valid and type(verr) ~= 'string' then inv('validate refused without a message') end\n"
  "  if valid then\n"
  "    local vctx = { flags = {}, segments = {} }\n"
  "    for _, f in ipairs(vd.flags) do vctx.flags[f.feature] = f end\n"
  "    for _, s in ipairs(vd.segments) do vctx.segments[s.identifier] = s end\n"
  "    for _, f in ipairs(vd.flags) do\n"
  "      local okv, v, why = pcall(evaluator.evaluate, vctx, f, target)\n"
  "      if not okv then inv('evaluate raised on a valid config: ' .. tostring(v)) end\n"
  "      if v == nil then inv('a valid flag evaluated to nothing: ' .. tostring(why)) end\n"
  "    end\n"
  "  end\n"
  "  local b = evaluator.bucket(target_text, flags_text)\n"
  "  if type(b) ~= 'number' or b < 1 or b > 100 or b ~= math.floor(b) then inv('bucket ' .. tostring(b)) end\n"
  "end\n";

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  static const luaL_Reg cjson[] = { { "cjson", luaopen_cjson }, { NULL, NULL } };
  L = fuzz_lua_open(cjson);
  check_ref = fuzz_lua_load(L, checks, sizeof checks - 1, "=fuzz_flag_checks");
  return 0;
}

/* The next NUL-terminated part of the input (the rest when there is no NUL). */
static const char *part(const uint8_t **p, size_t *n, size_t *len) {
  const uint8_t *start = *p, *nul = memchr(start, 0, *n);
  *len = nul ? (size_t)(nul - start) : *n;
  *p += nul ? *len + 1 : *len;
  *n -= nul ? *len + 1 : *len;
  return (const char *)start;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t l1, l2, l3;
  const char *flags = part(&data, &size, &l1), *segs = part(&data, &size, &l2), *target = part(&data, &size, &l3);
  lua_rawgeti(L, LUA_REGISTRYINDEX, check_ref);
  lua_pushlstring(L, flags, l1);
  lua_pushlstring(L, segs, l2);
  lua_pushlstring(L, target, l3);
  if (lua_pcall(L, 3, 0, 0) != 0) FAIL("%s", lua_tostring(L, -1));
  lua_gc(L, LUA_GCSTEP, 0);
  return 0;
}
