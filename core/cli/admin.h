/* admin: the --admin-listen endpoints every script gets: /health, /ready, /metrics, and the
 * status page (/ and /status.json, status.h). Served in C, so they answer even while a
 * generation is misbehaving. */
#ifndef RH_ADMIN_H
#define RH_ADMIN_H

#include <stddef.h>
#include <uv.h>
#include "http/server.h"
#include "lua/runtime.h"

/* Serves s->admin_listen; main and extra (s->nlisteners of them) are the listeners the status
 * page reports, and must outlive rh_admin_free. */
rh_http_server *rh_admin_start(uv_loop_t *loop, const rh_host_settings *s, rh_http_server *main,
                               rh_http_server *const *extra, char *err, size_t errlen);
void rh_admin_free(rh_http_server *s);

#endif
