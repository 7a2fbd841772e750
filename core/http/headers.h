/* headers: an ordered list of header fields. Names compare case-insensitively; repeated
 * fields keep their order. The list owns copies of every name and value, kept in its own arena
 * with the field array (a few blocks, usually one malloc a list: this runs for every field of
 * every proxied head). A name, value or field stays where it is until the list is cleared or
 * freed; rh_headers_remove, rh_headers_set_value and a larger array leave the old bytes in the
 * arena until then. */
#ifndef RH_HEADERS_H
#define RH_HEADERS_H

#include <stddef.h>
#include <string.h>
#include <strings.h>

/* name and value end in a NUL, not counted in their lengths. checked: the name and value passed
 * http/head.h's checks when they were read (a parser's mark, so that the writer of the next hop
 * does not look at every byte again); 0 for a field from anywhere else, and cleared by any change
 * made through this API. */
typedef struct {
  char *name;
  size_t name_len;
  char *value;
  size_t value_len;
  int checked;
} rh_header;

struct rh_headers_block;

typedef struct {
  rh_header *items;
  size_t n, cap;
  struct rh_headers_block *bytes; /* the arena: the newest block first */
} rh_headers;

#define RH_HEADERS_INIT { NULL, 0, 0, NULL }

void rh_headers_init(rh_headers *h);
void rh_headers_free(rh_headers *h);
void rh_headers_clear(rh_headers *h);
/* The bytes rh_headers_clear keeps (its newest arena block): a keeper of cleared lists bounds it. */
size_t rh_headers_kept(const rh_headers *h);
void rh_headers_add(rh_headers *h, const char *name, size_t nlen, const char *value, size_t vlen);
/* A copy of f (a field of another list) at the end, its checked mark kept. */
void rh_headers_add_field(rh_headers *h, const rh_header *f);
/* A field with name_of's name and value_of's value (fields of other lists), marked checked when
 * both are: a checked value under a checked name is checked. */
void rh_headers_add_pair(rh_headers *h, const rh_header *name_of, const rh_header *value_of);
/* Append to the value or the name of the last field (a parser hands them over in pieces:
 * http/collect.h). */
void rh_headers_append_value(rh_headers *h, const char *value, size_t vlen);
void rh_headers_append_name(rh_headers *h, const char *name, size_t nlen);
/* The first field named `name` at index >= *from (from may be NULL for 0); sets *from past it. */
const rh_header *rh_headers_find(const rh_headers *h, const char *name, size_t *from);
size_t rh_headers_count(const rh_headers *h, const char *name);
size_t rh_headers_remove(rh_headers *h, const char *name); /* returns how many were removed */
/* Keeps the fields keep says yes to, in order, moving no bytes. keep is asked about every field
 * while the list is still whole (it may look at the others: a Connection field's tokens). */
void rh_headers_filter(rh_headers *h, int (*keep)(const rh_headers *h, const rh_header *f, void *ud), void *ud);
/* A new value for f, a field of h. */
void rh_headers_set_value(rh_headers *h, rh_header *f, const char *value, size_t vlen);
/* Inline: every head is matched against literal names many times over, and with a literal the
 * length is known when compiling; a name of another length costs one compare. */
static inline int rh_header_name_eq(const rh_header *f, const char *name) {
  size_t n = strlen(name);
  return n == f->name_len && strncasecmp(f->name, name, n) == 0;
}
/* 1 for the fields that belong to one hop (Connection, Keep-Alive, TE, Transfer-Encoding, …). */
int rh_header_hop_by_hop(const rh_header *f);
/* 1 if the comma-separated value list of `name` has token `tok` (case-insensitive). */
int rh_headers_has_token(const rh_headers *h, const char *name, const char *tok);
/* 1 if such a list of `name` has a token other than `tok`. */
int rh_headers_has_other_token(const rh_headers *h, const char *name, const char *tok);

#endif
