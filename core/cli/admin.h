/* admin: the --admin-listen endpoints every script gets: /health, /ready, /metrics. Served
 * in C, so they answer even while a generation is misbehaving. */
#ifndef RH_ADMIN_H
#define RH_ADMIN_H

#include <stddef.h>
#include <uv.h>
#include "http/server.h"

rh_http_server *rh_admin_start(uv_loop_t *loop, const char *addr, char *err, size_t errlen);
void rh_admin_free(rh_http_server *s);

#endif
