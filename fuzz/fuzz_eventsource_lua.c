/* fuzz_eventsource_lua: relay.eventsource's SSE client parser (lua/relay/eventsource.lua, the
 * real file; pure Lua) on a hostile or broken upstream's text/event-stream, cut into chunks
 * anywhere, against a reference written in this file from the WHATWG HTML rules.
 *
 * One LuaJIT state for the run (lua_state.h: JIT off, Lua line coverage fed to libFuzzer).
 *
 * Input: byte 0 sets MAX_EVENT (below 128: the module's own, 1 MiB; else 2 * (byte - 128), so
 * the limit is reached); byte 1 % 8 = how many chunk lengths follow, one byte each, used in
 * turn to cut the rest (0: an empty chunk; all 0 or none: the rest in one chunk); the rest is
 * the stream.
 *
 * The reference (`reference` below) reads the whole stream at once by "Interpreting an event
 * stream": one leading UTF-8 BOM skipped; lines end in CRLF, LF or a lone CR; ":" starts a
 * comment; "field: value" (one space after the colon dropped), a line without a colon is a
 * field with an empty value; data appends value and LF to the data buffer; event sets the type
 * (an empty one is "message"); id sets the last event id unless it holds a NUL, and the id
 * stays for later events (nil before any); retry and other fields are ignored; a blank line
 * dispatches when the data buffer is not empty (so `data:` alone dispatches an event with empty
 * data), with its last LF removed, and empties data and type; an unterminated last event is not
 * dispatched. Bytes are not UTF-8 decoded (the parser hands on bytes; a browser would put
 * U+FFFD for invalid sequences).
 *
 * The stream is fed three ways: whole, in the input's chunks, and a byte at a time (when it is
 * at most 512 bytes). Invariants (a Lua error "INVARIANT: …" aborts):
 *  1. feed never raises; it returns true, or nil and a message exactly when the bytes since the
 *     end of the last blank line exceed MAX_EVENT after a chunk; once refused it takes nothing
 *     more (nil and a message again, no event);
 *  2+3. each way gives the reference's events (event, data, id; no other field), in order, up
 *     to where it was refused (so the ways agree with each other);
 *  4. the bytes the parser holds (strings reachable from its upvalues), besides the last id,
 *     are at most MAX_EVENT after a feed that returned true, MAX_EVENT plus the chunk
 *     otherwise, next to nothing once refused (64 bytes of slack for its own constants). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_TARGET "fuzz_eventsource_lua"
#include "check.h"
#include "lua_state.h"


static const char checks[] =
  "local es = require 'relay.eventsource'\n"
  "local DEFAULT_MAX = es.MAX_EVENT\n"
  "local BOM = '\\239\\187\\191'\n"
  "local function inv(msg) error('INVARIANT: ' .. msg, 0) end\n"
  "\n"
  "-- The reference: WHATWG HTML \"Interpreting an event stream\", over the whole stream at once.\n"
  "-- Events carry `at`, the offset of their blank line's end of line (a parser fed the stream up\n"
  "-- to there has seen it); blanks: each blank line's end of line, first and last byte; ids: each\n"
  "-- id field's value and end of line.\n"
  "local function reference(s)\n"
  "  local events, blanks, ids = {}, {}, {}\n"
  "  local data, etype, id = '', '', nil\n"
  "  local pos = s:sub(1, 3) == BOM and 4 or 1\n"
  "  while true do\n"
  "    local e = s:find('[\\r\\n]', pos)\n"
  "    if not e then break end -- the last line has not ended: the event is not dispatched\n"
  "    local line = s:sub(pos, e - 1)\n"
  "    pos = s:sub(e, e + 1) == '\\r\\n' and e + 2 or e + 1\n"
  "    local colon = line:find(':', 1, true)\n"
  "    local name, value = line, ''\n"
  "    if colon then name, value = line:sub(1, colon - 1), (line:sub(colon + 1):gsub('^ ', '')) end\n"
  "    if line == '' then\n"
  "      blanks[#blanks + 1] = { e, pos - 1 }\n"
  "      if data ~= '' then\n"
  "        local ev = { event = etype ~= '' and etype or 'message', data = data:sub(1, -2), id = id }\n"
  "        events[#events + 1] = { ev = ev, at = e }\n"
  "      end\n"
  "      data, etype = '', ''\n"
  "    elseif colon == 1 then -- a comment\n"
  "    elseif name == 'data' then data = data .. value .. '\\n'\n"
  "    elseif name == 'event' then etype = value\n"
  "    elseif name == 'id' and not value:find('\\0', 1, true) then\n"
  "      id = value\n"
  "      ids[#ids + 1] = { e, value }\n"
  "    end -- retry and unknown fields: nothing to deliver\n"
  "  end\n"
  "  return events, blanks, ids\n"
  "end\n"
  "\n"
  "-- Where the event being read after the first P bytes began: just after the last blank line.\n"
  "local function mark(blanks, P)\n"
  "  local m = 0\n"
  "  for _, b in ipairs(blanks) do\n"
  "    if b[1] > P then break end\n"
  "    m = math.min(b[2], P)\n"
  "  end\n"
  "  return m\n"
  "end\n"
  "\n"
  "local function id_at(ids, P)\n"
  "  local id = ''\n"
  "  for _, x in ipairs(ids) do\n"
  "    if x[1] > P then break end\n"
  "    id = x[2]\n"
  "  end\n"
  "  return id\n"
  "end\n"
  "\n"
  "-- The bytes a parser holds: strings reachable from its upvalues (through tables and Lua\n"
  "-- functions), not counting modules or the callback.\n"
  "local modules = {}\n"
  "for _, m in pairs(package.loaded) do modules[m] = true end\n"
  "local function held(feed, callback)\n"
  "  local seen, n = { [callback] = true }, 0\n"
  "  local function walk(v)\n"
  "    local t = type(v)\n"
  "    if t == 'string' then n = n + #v return end\n"
  "    if (t ~= 'table' and t ~= 'function') or seen[v] or modules[v] then return end\n"
  "    seen[v] = true\n"
  "    if t == 'table' then\n"
  "      for _, x in pairs(v) do walk(x) end\n"
  "    elseif debug.getinfo(v, 'S').what == 'Lua' then\n"
  "      local i = 1\n"
  "      while debug.getupvalue(v, i) do -- a variable shared by closures is counted once\n"
  "        local uid = debug.upvalueid(v, i)\n"
  "        if not seen[uid] then seen[uid] = true; walk(select(2, debug.getupvalue(v, i))) end\n"
  "        i = i + 1\n"
  "      end\n"
  "    end\n"
  "  end\n"
  "  walk(feed)\n"
  "  return n\n"
  "end\n"
  "\n"
  "local SLACK = 64 -- the parser's own constant strings held as upvalues\n"
  "\n"
  "local function show(x) return (('%q'):format(tostring(x)):gsub('\\\\\\n', '\\\\n')) end\n"
  "\n"
  "-- Feeds `chunks` to a fresh parser with MAX_EVENT = max and checks it against the reference.\n"
  "local function check(how, chunks, max, want, blanks, ids)\n"
  "  es.MAX_EVENT = max\n"
  "  local got = {}\n"
  "  local function callback(ev) got[#got + 1] = ev end\n"
  "  local feed = es.parser(callback)\n"
  "  local P, refused = 0, false\n"
  "  for k, c in ipairs(chunks) do\n"
  "    local ok, r, why = pcall(feed, c)\n"
  "    if not ok then inv(how .. ': feed raised: ' .. tostring(r)) end\n"
  "    P = P + #c\n"
  "    local pending = P - mark(blanks, P)\n"
  "    if r == true then\n"
  "      if pending > max then inv(('%s: chunk %d left %d bytes of an event (MAX_EVENT %d) and feed said true'):format(how, k, pending, max)) end\n"
  "    elseif r == nil and type(why) == 'string' then\n"
  "      if pending <= max then inv(('%s: chunk %d refused (%s) with %d bytes of an event (MAX_EVENT %d)'):format(how, k, why, pending, max)) end\n"
  "      refused = true\n"
  "    else\n"
  "      inv(how .. ': feed returned ' .. show(r) .. ', ' .. show(why))\n"
  "    end\n"
  "    local h = held(feed, callback) - #id_at(ids, P)\n"
  "    local bound = refused and SLACK or (r == true and max or max + #c) + SLACK\n"
  "    if h > bound then inv(('%s: after chunk %d the parser holds %d bytes (bound %d)'):format(how, k, h, bound)) end\n"
  "    if refused then\n"
  "      local n = #got\n"
  "      local again, why2 = feed('data: x\\n\\n\\n')\n"
  "      if again ~= nil or type(why2) ~= 'string' or #got ~= n then inv(how .. ': a refused parser took more') end\n"
  "      break\n"
  "    end\n"
  "  end\n"
  "  local i = 0\n"
  "  for _, w in ipairs(want) do\n"
  "    if w.at > P then break end\n"
  "    i = i + 1\n"
  "    local g = got[i]\n"
  "    if g == nil then inv(('%s: event %d missing: %s'):format(how, i, show(w.ev.data))) end\n"
  "    for key in pairs(g) do\n"
  "      if key ~= 'event' and key ~= 'data' and key ~= 'id' then inv(how .. ': an event has a field ' .. show(key)) end\n"
  "    end\n"
  "    for _, key in ipairs { 'event', 'data', 'id' } do\n"
  "      if g[key] ~= w.ev[key] then\n"
  "        inv(('%s: event %d has %s = %s, the reference %s'):format(how, i, key, show(g[key]), show(w.ev[key])))\n"
  "      end\n"
  "    end\n"
  "  end\n"
  "  if #got ~= i then inv(('%s: %d events, the reference %d'):format(how, #got, i)) end\n"
  "end\n"
  "\n"
  "-- input: byte 1: MAX_EVENT (below 128: the default; else 2 * (b - 128)); byte 2: how many\n"
  "-- chunk lengths follow (mod 8), each a byte, used in turn until the stream is cut up (0: an\n"
  "-- empty chunk; all 0 or none: one chunk); the rest is the stream.\n"
  "return function(input)\n"
  "  local b1, b2 = input:byte(1, 2)\n"
  "  local max = (b1 or 0) < 128 and DEFAULT_MAX or 2 * (b1 - 128)\n"
  "  local n = (b2 or 0) % 8\n"
  "  local lens = { input:byte(3, 2 + n) }\n"
  "  local stream = input:sub(3 + n)\n"
  "  local want, blanks, ids = reference(stream)\n"
  "  local ok, err = pcall(function()\n"
  "    check('whole', { stream }, max, want, blanks, ids)\n"
  "    local total = 0\n"
  "    for _, l in ipairs(lens) do total = total + l end\n"
  "    local chunks, pos, k = {}, 1, 0\n"
  "    while pos <= #stream do\n"
  "      local l = total > 0 and lens[k % #lens + 1] or #stream\n"
  "      chunks[#chunks + 1] = stream:sub(pos, pos + l - 1)\n"
  "      pos, k = pos + l, k + 1\n"
  "    end\n"
  "    check('chunks', chunks, max, want, blanks, ids)\n"
  "    if #stream <= 512 then\n"
  "      local bytes = {}\n"
  "      for i = 1, #stream do bytes[i] = stream:sub(i, i) end\n"
  "      check('bytes', bytes, max, want, blanks, ids)\n"
  "    end\n"
  "  end)\n"
  "  es.MAX_EVENT = DEFAULT_MAX\n"
  "  if not ok then error(err, 0) end\n"
  "end\n";

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fuzz_lua_target(NULL, checks, sizeof checks - 1, "=fuzz_eventsource_checks");
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_lua_input(data, size);
  return 0;
}
