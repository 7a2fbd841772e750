/* internal: what the HTTP and WebSocket halves of the proxy share. Not for other modules. */
#ifndef RH_PROXY_INTERNAL_H
#define RH_PROXY_INTERNAL_H

#include "buf/buf.h"
#include "proxy/proxy.h"

struct rh_tls_ctx;

typedef struct {
  const char *host, *host_header, *base_path, *mount;
  int port;
  struct rh_tls_ctx *tls;   /* NULL for http/ws */
  double connect_timeout;
} rh_proxy_upstream;

/* Chooses the upstream in the mount's list: the one hooks->upstream names, else the next
 * (round-robin), skipping one taken out. */
void rh_proxy_conf_upstream(rh_proxy_conf *c, const rh_proxy_hooks *hooks, rh_proxy_upstream *u);
/* host: the Host the upstream gets (the chosen upstream's), unless preserve_host. */
int rh_proxy_build_head(rh_proxy_conf *conf, const rh_http_req *r, const rh_proxy_hooks *hooks,
                        const char *host, const char *ws_key, rh_buf *out, int *chunked, char **body, rh_headers *answer);


/* WebSocket pass-through (ws_pass.c). */
int rh_proxy_is_websocket(const rh_http_req *r);
void rh_proxy_ws_start(rh_http_req *req, rh_proxy_conf *conf, const rh_proxy_hooks *hooks);

#endif
