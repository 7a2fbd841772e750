/* cidr: address ranges, for --trusted-proxies. */
#ifndef RH_CIDR_H
#define RH_CIDR_H

#include <stddef.h>

typedef struct rh_cidr_list rh_cidr_list;

/* "10.0.0.0/8, 127.0.0.1, ::1/128". NULL plus a message in err on a bad entry. An empty
 * string gives an empty list (nothing trusted). */
rh_cidr_list *rh_cidr_parse(const char *spec, char *err, size_t errlen);
void rh_cidr_free(rh_cidr_list *l);
/* 1 if the textual address ip is in one of the ranges. */
int rh_cidr_contains(const rh_cidr_list *l, const char *ip);
/* The client address for a request from peer with X-Forwarded-For value xff (may be NULL):
 * peer itself unless peer is trusted; then the last hop of xff that is not trusted (or the
 * first hop if all are). Writes into out. */
void rh_client_address(const rh_cidr_list *l, const char *peer, const char *xff, size_t xff_len,
                       char *out, size_t outlen);

#endif
