/* proxy: forwards a server request to an upstream and streams both bodies, with keep-alive
 * pools, timeouts, retries and the header rules every mount shares.
 *
 * A mount's settings live in an rh_proxy_conf (refcounted: the route holds one reference,
 * every request in flight another). Policy reaches the engine as hooks on the heads only: the
 * body bytes never leave C. */
#ifndef RH_PROXY_H
#define RH_PROXY_H

#include <stddef.h>
#include "http/headers.h"
#include "http/server.h"

typedef struct rh_proxy_conf rh_proxy_conf;

typedef struct {
  const char *mount;               /* the prefix stripped from the client's path ("/auth") */
  const char *target_base_url;     /* http://host[:port][/base] */
  /* or a list of them (same scheme and path), chosen round-robin per request; NULL: the one above */
  const char *const *target_base_urls;
  size_t ntarget_base_urls;
  int max_fails;                   /* failures in a row that take an upstream out (0: never) */
  double fail_timeout;             /* seconds it stays out */
  int least_conn;                  /* choose the upstream with the fewest requests in flight */
  const char *upstream_prefix;     /* joined after the base path; default "/" */
  int preserve_host;
  int follow_redirects;            /* follow 3xx to the same upstream (GET/HEAD-like requests) */
  int max_retries;
  double retry_backoff_factor;     /* sleep before retry n: factor * 2^(n-1) */
  const int *retry_statuses;       /* NULL: 502, 503, 504 */
  size_t nretry_statuses;
  int retry_on_connect, retry_on_timeout;
  double connect_timeout, read_timeout, write_timeout; /* seconds */
  size_t max_body;                 /* request body limit (413); 0: the server default */
  const rh_headers *extra_request_headers;
  const char *const *drop_request_headers, *const *drop_response_headers;
  const char *const *allow_request_headers, *const *allow_response_headers; /* NULL: all */
  size_t ndrop_request, ndrop_response, nallow_request, nallow_response;
  const char *ca_file;             /* https upstreams: trust this CA file (else $SSL_CERT_FILE, system) */
  int tls_insecure;                /* https upstreams: skip verification (tests, explicit opt-out) */
  size_t max_idle;                 /* pooled idle connections per upstream */
  double idle_timeout;
  /* the connection cap (HAProxy's maxconn, httpx's max_connections): requests past max_conns
   * connections in use to an upstream wait, up to max_queue of them, pool_timeout seconds each */
  size_t max_conns;                /* 0: no cap */
  size_t max_queue;                /* 0: 1024 */
  double pool_timeout;             /* 0: 10 */
  /* gateway options (off by default: Lilya sends and rewrites none of these) */
  int forwarded_prefix;            /* X-Forwarded-Prefix: the mount (the client's own is dropped) */
  int rewrite_location;            /* Location/Content-Location at the upstream base -> the mount */
  int rewrite_cookie_path;         /* Set-Cookie Path under the upstream base -> the mount */
  const char *const *retry_methods; /* NULL: every method may be retried */
  size_t nretry_methods;
  int retry_after;                 /* a retried status's Retry-After replaces the backoff */
} rh_proxy_opts;

/* The head a hook may change: for requests method, path (with query) and headers; for
 * responses status and headers. The phases: on_request sees the client's fields and the
 * mount's header policy (drop/allow/extra, Host, X-Forwarded-*) applies to what it leaves;
 * on_response (after the cookie hook) sees the upstream's fields, and the policy applies after
 * it too. */
typedef struct {
  char *method;
  char *target;                    /* path?query as sent upstream; malloc'd, hooks may replace */
  int status;
  rh_headers *headers;
  const rh_http_req *req;          /* the client's request, read-only */
  rh_headers *answer;              /* on_request: the fields of an early answer (its status) */
} rh_proxy_head;

typedef struct {
  /* Before forwarding. Returns 0 to go on, or a status (>= 100) with *body (malloc'd) and
   * head->answer's fields to answer the client without contacting the upstream. A 500 gets the
   * request id added. */
  int (*on_request)(void *ud, rh_proxy_head *head, char **body);
  void (*on_response)(void *ud, rh_proxy_head *head); /* a status < 0: it failed (500) */
  /* Each Set-Cookie value: NULL keeps it, "" drops Domain, other strings set it (malloc'd). */
  char *(*rewrite_cookie_domain)(void *ud, const char *cookie);
  void (*release)(void *ud);       /* the hooks are no longer needed for this request */
  void *ud;
  size_t upstream;                 /* the access phase's choice in the mount's list, from 1; 0: none */
} rh_proxy_hooks;

/* NULL plus a message in err for bad options (an unparsable target_base_url, …). */
rh_proxy_conf *rh_proxy_conf_new(const rh_proxy_opts *opts, char *err, size_t errlen);
void rh_proxy_conf_ref(rh_proxy_conf *c);
void rh_proxy_conf_unref(rh_proxy_conf *c);
size_t rh_proxy_conf_max_body(const rh_proxy_conf *c);
/* The entry of the mount's list written as url (a trailing '/' aside), from 1; 0: none. */
size_t rh_proxy_conf_find(const rh_proxy_conf *c, const char *url);
/* How many upstreams the list has, and entry i (from 0) as written. */
size_t rh_proxy_conf_count(const rh_proxy_conf *c);
const char *rh_proxy_conf_url(const rh_proxy_conf *c, size_t i);

/* Takes over req (and the caller's reference on it) until the exchange is over. hooks may be
 * NULL; hooks->release runs once the heads are done or the request failed. */
void rh_proxy_start(rh_http_req *req, rh_proxy_conf *conf, const rh_proxy_hooks *hooks);

/* Answers status with body (malloc'd or NULL, freed here) and fields instead of the upstream:
 * a refusal, a hook's early answer. Text unless fields name a type; a 500 names the request
 * id (in the body and X-Request-Id) as a handler's error does. */
void rh_proxy_early_answer(rh_http_req *req, int status, char *body, rh_headers *fields);

#endif
