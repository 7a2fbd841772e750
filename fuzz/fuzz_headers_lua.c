/* fuzz_headers_lua: the Lua-facing header and query APIs.
 *
 * One LuaJIT state for the run (lua_state.h: JIT off, Lua line coverage fed to libFuzzer), with
 * relay.core preloaded from the C library and the real lua/relay/http.lua and lua/relay/flags.lua
 * loaded from the source tree (http.lua registers the Headers metatable and the weak side table
 * of repeated values that the C side uses).
 *
 * Input: byte 0 picks the part, the rest is its data.
 *  0 headers: fields from the input (sanitized as the HTTP parser guarantees: token names, no
 *    control bytes but HTAB in values) go through rh_lua_push_headers; a list of script-like edits with
 *    arbitrary bytes (set a string, a list, a number, a boolean, nil, a non-string key, the
 *    same first value again, a list with non-strings) is applied through the metatable; then
 *    rh_lua_read_headers. It must either fail with a message (stack: one string more) or give
 *    fields whose names are tokens and whose values have no control byte but HTAB (stack unchanged).
 *    Without edits the round trip must give back every field, values in order per name, and
 *    h:all(name) must list them.
 *  1 query: relay.http.parse_query on the bytes: a table of string keys to strings, true, or
 *    lists of those; never a Lua error.
 *  2 flags: relay.flags.parse on argv (the bytes split at NUL) and an environment ("NAME=value"
 *    in the last argument, split at ';') against declarations of every kind: either values of
 *    the declared types, or an error raised on purpose (a message string, not a runtime error
 *    with a flags.lua:LINE position). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/headers.h"
#include "lua/bind.h"

#define FUZZ_TARGET "fuzz_headers_lua"
#include "check.h"
#include "lua_state.h"
static int known_nul_name;

static lua_State *L;

/* Lua helpers for the query and flags parts; they raise "INVARIANT: …" on a violation. */
static const char helpers[] =
  "local http = require 'relay.http'\n"
  "local flags = require 'relay.flags'\n"
  "local H = {}\n"
  "H.Headers = http.Headers\n"
  "function H.query(q)\n"
  "  local ok, args = pcall(http.parse_query, q)\n"
  "  if not ok then error('INVARIANT: parse_query raised: ' .. tostring(args), 0) end\n"
  "  if type(args) ~= 'table' then error('INVARIANT: parse_query gave a ' .. type(args), 0) end\n"
  "  for k, v in pairs(args) do\n"
  "    if type(k) ~= 'string' then error('INVARIANT: query key of type ' .. type(k), 0) end\n"
  "    local list = type(v) == 'table' and v or { v }\n"
  "    if type(v) == 'table' and #v < 2 then error('INVARIANT: a repeated key with ' .. #v .. ' values', 0) end\n"
  "    for _, x in ipairs(list) do\n"
  "      if type(x) ~= 'string' and x ~= true then error('INVARIANT: query value of type ' .. type(x), 0) end\n"
  "    end\n"
  "  end\n"
  "end\n"
  "local decls = {\n"
  "  { name = 'listen', env = 'RELAY_LISTEN' },\n"
  "  { name = 'port', default = 7000 },\n"
  "  { name = 'offline', default = false },\n"
  "  { name = 'mount', repeatable = true },\n"
  "  { name = 'api-keys', type = 'list' },\n"
  "  { name = 'ratio', type = 'number' },\n"
  "  { name = 'verbose', type = 'boolean', key = 'loud' },\n"
  "  { name = 'token', default = 'x' },\n"
  "  { name = 'needed', required = true, default = nil },\n"
  "}\n"
  "local kinds = { listen = 'string', port = 'number', offline = 'boolean', mount = 'table',\n"
  "  ['api-keys'] = 'table', ratio = 'number', loud = 'boolean', token = 'string', needed = 'string' }\n"
  "function H.flags(argv, env)\n"
  "  local getenv = function(k) return env[k] end\n"
  "  local ok, values, help = pcall(flags.parse, decls, argv, getenv)\n"
  "  if not ok then\n"
  "    if type(values) ~= 'string' then error('INVARIANT: flags.parse raised a ' .. type(values), 0) end\n"
  "    if values:find('flags%.lua:%d+:') then error('INVARIANT: flags.parse failed inside: ' .. values, 0) end\n"
  "    return\n"
  "  end\n"
  "  for key, kind in pairs(kinds) do\n"
  "    local v = values[key]\n"
  "    if v ~= nil and type(v) ~= kind then\n"
  "      error('INVARIANT: flag ' .. key .. ' is a ' .. type(v) .. ', declared ' .. kind, 0)\n"
  "    end\n"
  "    if type(v) == 'number' and (v ~= v or v == math.huge or v == -math.huge) then\n"
  "      error('INVARIANT: flag ' .. key .. ' is ' .. tostring(v), 0)\n"
  "    end\n"
  "    if type(v) == 'table' then\n"
  "      for _, x in ipairs(v) do if type(x) ~= 'string' then error('INVARIANT: list item of type ' .. type(x), 0) end end\n"
  "    end\n"
  "  end\n"
  "  if values.needed == nil and not help then error('INVARIANT: a required flag is missing without an error', 0) end\n"
  "end\n"
  "return H\n";

static int helpers_ref;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  strict = !(getenv("FUZZ_STRICT") && *getenv("FUZZ_STRICT") == '0'); /* all fixed: fatal */
  L = fuzz_lua_open(NULL);
  helpers_ref = fuzz_lua_load(L, helpers, sizeof helpers - 1, "=fuzz_helpers");
  return 0;
}

/* ---- a small reader over the input ---- */

typedef struct {
  const uint8_t *p;
  size_t n;
} reader;

static int rd_byte(reader *r) {
  if (!r->n) return -1;
  r->n--;
  return *r->p++;
}

/* A length-prefixed byte string (length byte mod 40). */
static size_t rd_str(reader *r, const char **s) {
  int len = rd_byte(r);
  if (len < 0) { *s = ""; return 0; }
  size_t n = (size_t)len % 40;
  if (n > r->n) n = r->n;
  *s = (const char *)r->p;
  r->p += n;
  r->n -= n;
  return n;
}

static int tchar(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* ---- part 0: headers ---- */

/* RFC 9110 field values: no control byte but HTAB (core/http/head.c's rule, written apart here
 * so that the target checks it rather than repeats it). */
static int ctl(char ch) {
  unsigned char c = (unsigned char)ch;
  return (c < 0x20 && c != '\t') || c == 0x7f;
}

static void check_out(const rh_headers *h) {
  for (size_t i = 0; i < h->n; i++) {
    const rh_header *f = &h->items[i];
    if (!f->name_len) FAIL("rh_lua_read_headers gave an empty name");
    for (size_t k = 0; k < f->name_len; k++) {
      unsigned char c = (unsigned char)f->name[k];
      if (tchar(c)) continue;
      if (c == 0) /* valid_name: strchr(tchar, '\0') finds the terminator */
        KNOWN(known_nul_name, "rh_lua_read_headers accepts NUL in a header name");
      else
        FAIL("rh_lua_read_headers gave name byte 0x%02x", c);
    }
    for (size_t k = 0; k < f->value_len; k++) {
      char c = f->value[k];
      if (ctl(c))
        FAIL("rh_lua_read_headers gave value byte 0x%02x in '%.*s'", (unsigned char)c, (int)f->name_len, f->name);
    }
  }
}

static void lower(char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] >= 'A' && s[i] <= 'Z') s[i] = (char)(s[i] + 32);
}

/* Every field of `in` (names lowercased) comes back in `out`, values in order per name, and
 * h:all(name) on the table at t lists them. */
static void check_round_trip(const rh_headers *in, const rh_headers *out, int t) {
  if (in->n != out->n) FAIL("round trip: %zu fields in, %zu out", in->n, out->n);
  for (size_t i = 0; i < in->n; i++) {
    char name[64];
    size_t nl = in->items[i].name_len;
    memcpy(name, in->items[i].name, nl);
    name[nl] = 0;
    lower(name, nl);
    /* the k-th field named `name` in `in` is the k-th one in `out` */
    size_t k = 0;
    for (size_t j = 0; j < i; j++) k += rh_header_name_eq(&in->items[j], name);
    size_t from = 0;
    const rh_header *f = NULL;
    for (size_t j = 0; j <= k; j++) f = rh_headers_find(out, name, &from);
    if (!f) FAIL("round trip: field %s #%zu missing", name, k);
    if (f->value_len != in->items[i].value_len || memcmp(f->value, in->items[i].value, f->value_len))
      FAIL("round trip: field %s #%zu has another value", name, k);
    /* h:all(name)[k+1] */
    lua_rawgeti(L, LUA_REGISTRYINDEX, helpers_ref);
    lua_getfield(L, -1, "Headers");
    lua_getfield(L, -1, "all");
    lua_pushvalue(L, t);
    lua_pushstring(L, name);
    if (lua_pcall(L, 2, 1, 0)) FAIL("h:all raised: %s", lua_tostring(L, -1));
    if (lua_objlen(L, -1) != rh_headers_count(in, name))
      FAIL("h:all('%s') has %zu values, %zu were pushed", name, lua_objlen(L, -1), rh_headers_count(in, name));
    lua_rawgeti(L, -1, (int)k + 1);
    size_t vl;
    const char *v = lua_tolstring(L, -1, &vl);
    if (!v || vl != f->value_len || memcmp(v, f->value, vl)) FAIL("h:all('%s')[%zu] differs", name, k + 1);
    lua_pop(L, 4);
  }
}

/* h[name] = value through the metatable, as a script does. Value on top of the stack. */
static int set_field(lua_State *S) {
  lua_settable(S, 1);
  return 0;
}

static void edit(int t, int op, reader *r) {
  const char *name, *val, *val2;
  size_t nl = rd_str(r, &name);
  int top = lua_gettop(L);
  lua_pushcfunction(L, set_field);
  lua_pushvalue(L, t);
  switch (op % 9) {
  case 0: /* h[name] = "value" */
    lua_pushlstring(L, name, nl);
    { size_t vl = rd_str(r, &val); lua_pushlstring(L, val, vl); }
    break;
  case 1: { /* h[name] = { "v1", "v2" } */
    lua_pushlstring(L, name, nl);
    size_t vl = rd_str(r, &val), vl2 = rd_str(r, &val2);
    lua_createtable(L, 2, 0);
    lua_pushlstring(L, val, vl);
    lua_rawseti(L, -2, 1);
    lua_pushlstring(L, val2, vl2);
    lua_rawseti(L, -2, 2);
    break;
  }
  case 2: /* h[name] = number */
    lua_pushlstring(L, name, nl);
    lua_pushnumber(L, (lua_Number)(rd_byte(r) - 100) / 7.0);
    break;
  case 3: /* h[name] = boolean */
    lua_pushlstring(L, name, nl);
    lua_pushboolean(L, rd_byte(r) & 1);
    break;
  case 4: /* h[name] = nil */
    lua_pushlstring(L, name, nl);
    lua_pushnil(L);
    break;
  case 5: /* h[number] = "value" */
    lua_pushnumber(L, rd_byte(r));
    { size_t vl = rd_str(r, &val); lua_pushlstring(L, val, vl); }
    break;
  case 6: /* h[name] = h[name] (a repeated field set to its own first value) */
    lua_pushlstring(L, name, nl);
    lua_pushlstring(L, name, nl);
    lua_rawget(L, t);
    break;
  case 7: /* h[name] = { "v", true, {} } */
    lua_pushlstring(L, name, nl);
    lua_createtable(L, 3, 0);
    { size_t vl = rd_str(r, &val); lua_pushlstring(L, val, vl); }
    lua_rawseti(L, -2, 1);
    lua_pushboolean(L, 1);
    lua_rawseti(L, -2, 2);
    lua_newtable(L);
    lua_rawseti(L, -2, 3);
    break;
  default: /* rawset h[name] = "value", around the metatable */
    lua_pop(L, 2);
    lua_pushlstring(L, name, nl);
    { size_t vl = rd_str(r, &val); lua_pushlstring(L, val, vl); }
    lua_rawset(L, t);
    return;
  }
  if (lua_pcall(L, 3, 0, 0)) lua_pop(L, 1); /* the metatable may refuse (a non-string key) */
  lua_settop(L, top);
}

static int read_headers_protected(lua_State *S) {
  rh_headers *out = lua_touserdata(S, 1);
  lua_remove(S, 1); /* the table is at 1 now */
  int rc = rh_lua_read_headers(S, 1, out);
  lua_pushinteger(S, rc);
  lua_insert(S, 1);
  return lua_gettop(S);
}

static void part_headers(reader *r) {
  rh_headers in = RH_HEADERS_INIT;
  int nfields = rd_byte(r);
  nfields = nfields < 0 ? 0 : nfields % 12;
  for (int i = 0; i < nfields; i++) {
    const char *s;
    size_t nl = rd_str(r, &s);
    char name[64], value[64];
    size_t k = 0;
    for (size_t j = 0; j < nl && k < sizeof name; j++)
      if (tchar((unsigned char)s[j])) name[k++] = s[j];
    if (!k) name[k++] = 'x';
    size_t vl = rd_str(r, &s);
    for (size_t j = 0; j < vl; j++) value[j] = ctl(s[j]) ? ' ' : s[j];
    rh_headers_add(&in, name, k, value, vl);
  }
  int base = lua_gettop(L);
  rh_lua_push_headers(L, &in);
  int t = lua_gettop(L);
  int nedits = 0;
  int op;
  while ((op = rd_byte(r)) >= 0) {
    edit(t, op, r);
    nedits++;
  }
  if (lua_gettop(L) != t) FAIL("an edit left the stack at %d, not %d", lua_gettop(L), t);
  /* rh_lua_read_headers with the table in a protected call: only memory errors may raise */
  rh_headers out = RH_HEADERS_INIT;
  lua_pushcfunction(L, read_headers_protected);
  lua_pushlightuserdata(L, &out);
  lua_pushvalue(L, t);
  if (lua_pcall(L, 2, LUA_MULTRET, 0)) FAIL("rh_lua_read_headers raised: %s", lua_tostring(L, -1));
  int rc = (int)lua_tointeger(L, t + 1);
  int extra = lua_gettop(L) - (t + 2); /* above the result and the table */
  if (rc == 0) {
    if (extra != 0) FAIL("rh_lua_read_headers succeeded leaving %d values", extra);
    check_out(&out);
    if (!nedits) check_round_trip(&in, &out, t);
  } else if (rc == -1) {
    if (extra != 1 || !lua_isstring(L, -1)) FAIL("rh_lua_read_headers failed without a message");
    if (!nedits) FAIL("round trip of valid fields failed: %s", lua_tostring(L, -1));
  } else {
    FAIL("rh_lua_read_headers returned %d", rc);
  }
  lua_settop(L, base);
  rh_headers_free(&in);
  rh_headers_free(&out);
}

/* ---- parts 1 and 2: query and flags, checked in Lua ---- */

static void call_helper(const char *fn, int nargs) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, helpers_ref);
  lua_getfield(L, -1, fn);
  lua_remove(L, -2);
  lua_insert(L, -1 - nargs);
  if (lua_pcall(L, nargs, 0, 0)) {
    const char *msg = lua_tostring(L, -1);
    FAIL("%s", msg ? msg : "(error object is not a string)");
  }
}

static void part_flags(const uint8_t *p, size_t n) {
  lua_newtable(L); /* argv */
  lua_newtable(L); /* env */
  int argc = 0;
  while (n && argc < 16) {
    const uint8_t *z = memchr(p, 0, n);
    size_t len = z ? (size_t)(z - p) : n;
    if (!z) { /* the last piece: NAME=value;NAME=value */
      const char *s = (const char *)p, *e = s + len;
      while (s < e) {
        const char *semi = memchr(s, ';', (size_t)(e - s)), *end = semi ? semi : e;
        const char *eq = memchr(s, '=', (size_t)(end - s));
        if (eq) {
          lua_pushlstring(L, s, (size_t)(eq - s));
          lua_pushlstring(L, eq + 1, (size_t)(end - eq - 1));
          lua_rawset(L, -3);
        }
        s = semi ? semi + 1 : e;
      }
      break;
    }
    lua_pushlstring(L, (const char *)p, len);
    lua_rawseti(L, -3, ++argc);
    p += len + 1;
    n -= len + 1;
  }
  call_helper("flags", 2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static unsigned long runs;
  if (size < 1) return 0;
  reader r = { data + 1, size - 1 };
  switch (data[0] % 3) {
  case 0: part_headers(&r); break;
  case 1:
    lua_pushlstring(L, (const char *)data + 1, size - 1);
    call_helper("query", 1);
    break;
  default: part_flags(data + 1, size - 1); break;
  }
  if (lua_gettop(L) != 0) FAIL("Lua stack at %d after an input", lua_gettop(L));
  if (++runs % 256 == 0) lua_gc(L, LUA_GCCOLLECT, 0);
  return 0;
}
