/* scan: checks that a text is one well-formed JSON object (RFC 8259) and hands out its
 * top-level members, without building anything. For hot paths that route on a few fields of a
 * frame and pass the frame on untouched. */
#ifndef RH_JSON_SCAN_H
#define RH_JSON_SCAN_H

#include <stddef.h>

enum { RH_JSON_STRING = 1, RH_JSON_NUMBER, RH_JSON_OBJECT, RH_JSON_ARRAY, RH_JSON_TRUE, RH_JSON_FALSE, RH_JSON_NULL };

typedef struct {
  int type;
  const char *p;  /* the value's text: a string's contents without its quotes, else the token */
  size_t len;
  int escaped;    /* a string with backslash escapes (p is the raw, still-escaped text) */
} rh_json_value;

/* Calls fn for each top-level member of the object in p[0..n), in order (a repeated key is
 * reported each time; the last one is what JSON.parse and lua-cjson keep). The key is raw (with
 * its escapes, key_escaped says if any). fn returns 0 to go on. Returns 0 if p is exactly one
 * object (whitespace around it allowed) nested at most max_depth deep, else -1. */
typedef int (*rh_json_member_fn)(void *ud, const char *key, size_t key_len, int key_escaped,
                                 const rh_json_value *v);
int rh_json_scan_object(const char *p, size_t n, int max_depth, rh_json_member_fn fn, void *ud);

/* The number a RH_JSON_NUMBER value denotes. */
double rh_json_number(const rh_json_value *v);

#endif
