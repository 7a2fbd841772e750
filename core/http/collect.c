#include "http/collect.h"

void rh_collect_init(rh_collect *c, llhttp_type_t type, const llhttp_settings_t *settings, void *data,
                     rh_headers *into) {
  llhttp_init(&c->llhttp, type, settings);
  c->llhttp.data = data;
  c->held = 0;
  c->max_held = type == HTTP_RESPONSE ? RH_COLLECT_MAX_RESPONSE_HEAD : 0;
  rh_collect_into(c, into);
}

void rh_collect_into(rh_collect *c, rh_headers *into) {
  c->into = into;
  c->in_name = 0;
  c->interim = 0;
}

/* Only ever called with the llhttp_t of an rh_collect (rh_collect_init's settings). */
static rh_collect *of(llhttp_t *p) { return (rh_collect *)p; }

/* Fields are held until the head ends: one that never ends stops at the limit. */
static int over(rh_collect *c, size_t len) {
  c->held += len;
  return c->max_held && c->held > c->max_held;
}

int rh_collect_over(const rh_collect *c) { return c->max_held && c->held > c->max_held; }

int rh_collect_on_field(llhttp_t *p, const char *at, size_t len) {
  rh_collect *c = of(p);
  if (over(c, len)) return HPE_USER;
  if (c->in_name) rh_headers_append_name(c->into, at, len);
  else rh_headers_add(c->into, at, len, "", 0);
  c->in_name = 1;
  return 0;
}

int rh_collect_on_field_complete(llhttp_t *p) {
  of(p)->in_name = 0;
  return 0;
}

int rh_collect_on_value(llhttp_t *p, const char *at, size_t len) {
  rh_collect *c = of(p);
  if (over(c, len)) return HPE_USER;
  c->in_name = 0;
  c->interim = 0;
  rh_headers_append_value(c->into, at, len);
  return 0;
}

int rh_collect_interim_head(rh_collect *c) {
  int st = c->llhttp.status_code;
  c->interim = st >= 100 && st < 200 && st != 101;
  if (c->interim) rh_headers_clear(c->into);
  return c->interim;
}

int rh_collect_final_message(rh_collect *c) {
  if (!c->interim) return 1;
  c->interim = 0;
  return 0;
}
