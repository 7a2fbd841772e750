/* scan: a validating JSON scanner (see scan.h). Recursive descent over the grammar of RFC 8259;
 * nothing is allocated. */
#include "json/scan.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
  const char *p, *end;
  int depth, max_depth;
} cursor;

static void ws(cursor *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static int hex(char ch) { return (ch >= '0' && ch <= '9') || ((ch | 32) >= 'a' && (ch | 32) <= 'f'); }

/* The code unit of "uXXXX" at p (p[0] is 'u'), or -1. */
static long unit(const char *p, const char *end) {
  if (end - p < 5 || !hex(p[1]) || !hex(p[2]) || !hex(p[3]) || !hex(p[4])) return -1;
  char buf[5] = { p[1], p[2], p[3], p[4], 0 };
  return strtol(buf, NULL, 16);
}

/* At the 'u' of an escape; leaves c at its last hex digit. A surrogate must be a high one
 * followed by "\u" and a low one (lua-cjson and JSON.parse's UTF-8 cannot hold a lone half). */
static int unicode_escape(cursor *c) {
  long u = unit(c->p, c->end);
  if (u < 0 || (u >= 0xDC00 && u <= 0xDFFF)) return -1;
  c->p += 4;
  if (u < 0xD800 || u > 0xDBFF) return 0;
  if (c->end - c->p < 3 || c->p[1] != '\\' || c->p[2] != 'u') return -1;
  long low = unit(c->p + 2, c->end);
  if (low < 0xDC00 || low > 0xDFFF) return -1;
  c->p += 6;
  return 0;
}

/* At the opening quote; leaves c after the closing one. */
static int string(cursor *c, rh_json_value *v) {
  const char *s = ++c->p;
  v->escaped = 0;
  while (c->p < c->end) {
    unsigned char ch = (unsigned char)*c->p;
    if (ch == '"') {
      v->type = RH_JSON_STRING;
      v->p = s;
      v->len = (size_t)(c->p++ - s);
      return 0;
    }
    if (ch < 0x20) return -1;
    if (ch == '\\') {
      v->escaped = 1;
      if (++c->p >= c->end) return -1;
      ch = (unsigned char)*c->p;
      if (ch == 'u') {
        if (unicode_escape(c) < 0) return -1;
      } else if (!strchr("\"\\/bfnrt", ch) || ch == 0) {
        return -1;
      }
    }
    c->p++;
  }
  return -1;
}

static int digits(cursor *c) {
  const char *s = c->p;
  while (c->p < c->end && *c->p >= '0' && *c->p <= '9') c->p++;
  return c->p > s ? 0 : -1;
}

static int number(cursor *c, rh_json_value *v) {
  const char *s = c->p;
  if (*c->p == '-') c->p++;
  if (c->p < c->end && *c->p == '0') c->p++;
  else if (digits(c) < 0) return -1;
  if (c->p < c->end && *c->p == '.') {
    c->p++;
    if (digits(c) < 0) return -1;
  }
  if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
    c->p++;
    if (c->p < c->end && (*c->p == '+' || *c->p == '-')) c->p++;
    if (digits(c) < 0) return -1;
  }
  v->type = RH_JSON_NUMBER;
  v->p = s;
  v->len = (size_t)(c->p - s);
  return 0;
}

static int literal(cursor *c, const char *word, int type, rh_json_value *v) {
  size_t n = strlen(word);
  if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0) return -1;
  v->type = type;
  v->p = c->p;
  v->len = n;
  c->p += n;
  return 0;
}

static int value(cursor *c, rh_json_value *v);

/* At '{' or '['; fn (may be NULL) gets the members of an object. */
static int container(cursor *c, rh_json_value *v, rh_json_member_fn fn, void *ud) {
  char close = *c->p == '{' ? '}' : ']';
  const char *s = c->p++;
  if (++c->depth > c->max_depth) return -1;
  ws(c);
  if (c->p < c->end && *c->p == close) {
    c->p++;
  } else {
    for (;;) {
      rh_json_value key = { 0, NULL, 0, 0 }, item;
      if (close == '}') {
        if (c->p >= c->end || *c->p != '"' || string(c, &key) < 0) return -1;
        ws(c);
        if (c->p >= c->end || *c->p++ != ':') return -1;
        ws(c);
      }
      if (value(c, &item) < 0) return -1;
      if (fn && fn(ud, key.p, key.len, key.escaped, &item) != 0) fn = NULL; /* asked to stop: just check */
      ws(c);
      if (c->p >= c->end) return -1;
      if (*c->p == ',') {
        c->p++;
        ws(c);
        continue;
      }
      if (*c->p++ != close) return -1;
      break;
    }
  }
  c->depth--;
  v->type = close == '}' ? RH_JSON_OBJECT : RH_JSON_ARRAY;
  v->p = s;
  v->len = (size_t)(c->p - s);
  v->escaped = 0;
  return 0;
}

static int value(cursor *c, rh_json_value *v) {
  if (c->p >= c->end) return -1;
  switch (*c->p) {
  case '"': return string(c, v);
  case '{':
  case '[': return container(c, v, NULL, NULL);
  case 't': return literal(c, "true", RH_JSON_TRUE, v);
  case 'f': return literal(c, "false", RH_JSON_FALSE, v);
  case 'n': return literal(c, "null", RH_JSON_NULL, v);
  default:
    if (*c->p == '-' || (*c->p >= '0' && *c->p <= '9')) return number(c, v);
    return -1;
  }
}

int rh_json_scan_object(const char *p, size_t n, int max_depth, rh_json_member_fn fn, void *ud) {
  cursor c = { p, p + n, 0, max_depth };
  rh_json_value v;
  ws(&c);
  if (c.p >= c.end || *c.p != '{' || container(&c, &v, fn, ud) < 0) return -1;
  ws(&c);
  return c.p == c.end ? 0 : -1;
}

double rh_json_number(const rh_json_value *v) {
  char buf[64];
  if (v->type != RH_JSON_NUMBER || v->len >= sizeof buf) return 0;
  memcpy(buf, v->p, v->len);
  buf[v->len] = 0;
  return strtod(buf, NULL);
}
