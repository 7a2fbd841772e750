/* status: what the admin listener's status page shows, as /status.json.
 *
 * The numbers come from the metrics registry that /metrics renders (requests by status class,
 * latency buckets, connections, generations, reloads, upstream errors), so the two agree; what
 * the registry does not hold is read where it lives (listeners and their connections, the
 * upstream pool). A timer samples the counters every RH_STATUS_INTERVAL seconds into a fixed
 * ring for the page's chart; scripts add panels of their own through relay.status (init.lua),
 * called here on the current generation. Nothing secret is read: no flag, token or key. */
#ifndef RH_STATUS_H
#define RH_STATUS_H

#include <stddef.h>
#include <uv.h>

#include "buf/buf.h"
#include "http/server.h"
#include "lua/runtime.h"

#define RH_STATUS_INTERVAL 2
#define RH_STATUS_SAMPLES 180 /* six minutes of history */

/* Starts sampling. main/extra are the servers bound for s->listen and s->listeners (extra has
 * s->nlisteners), admin the admin listener's; all must outlive rh_status_stop. */
void rh_status_start(uv_loop_t *loop, const rh_host_settings *s, rh_http_server *main,
                     rh_http_server *const *extra, rh_http_server *admin);
void rh_status_stop(void);
/* The JSON document of /status.json, appended to b. */
void rh_status_json(rh_buf *b);

/* The page itself: core/cli/status.html, embedded by CMake (status_html.c in the build tree). */
extern const char rh_status_html[];
extern const size_t rh_status_html_len;

#endif
