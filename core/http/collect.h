/* collect: an llhttp parser that gathers a message's header fields into an rh_headers.
 *
 * llhttp hands a field's name and value over in pieces (a read may end mid-name), and every
 * parser here (server requests, client, proxy and tunnel responses, the WebSocket dial) wants
 * the same whole fields; only what each does once a field or the head is complete differs.
 * So the parser and the collecting state travel together: an rh_collect embeds the llhttp_t,
 * its settings name the rh_collect_on_* callbacks, and an owner that must act on a complete
 * name wraps rh_collect_on_field_complete in its own callback. llhttp's `data` stays the
 * owner's. A response's header fields are held to RH_COLLECT_MAX_RESPONSE_HEAD, so that no client
 * (the proxy, relay.http, the WebSocket dial, the tunnel's relay-client) holds an endless head;
 * past it the callbacks fail with HPE_USER and rh_collect_over says why. Requests have no limit
 * here: the server counts its 431 before llhttp sees the bytes. */
#ifndef RH_COLLECT_H
#define RH_COLLECT_H

#include <llhttp.h>

#include "http/headers.h"

typedef struct {
  llhttp_t llhttp;   /* first member: the callbacks turn their llhttp_t * back into the rh_collect */
  rh_headers *into;  /* where the fields go */
  int in_name;       /* the last field's name may still grow */
  int interim;       /* responses: the message being parsed is a 1xx to skip */
  size_t held;       /* header bytes of this response so far (interim heads included) */
  size_t max_held;   /* 0: no limit */
} rh_collect;

#define RH_COLLECT_MAX_RESPONSE_HEAD ((size_t)64 * 1024) /* nginx holds 4-8 KB */

/* llhttp_init, with llhttp's data set to `data` and the fields going to `into`. */
void rh_collect_init(rh_collect *c, llhttp_type_t type, const llhttp_settings_t *settings, void *data,
                     rh_headers *into);
/* The fields of the messages that follow go to `into` (one list per request on a connection). */
void rh_collect_into(rh_collect *c, rh_headers *into);

/* llhttp's on_header_field, on_header_field_complete and on_header_value; each returns 0, or
 * HPE_USER once a response's fields pass RH_COLLECT_MAX_RESPONSE_HEAD. */
int rh_collect_on_field(llhttp_t *p, const char *at, size_t len);
int rh_collect_on_field_complete(llhttp_t *p);
int rh_collect_on_value(llhttp_t *p, const char *at, size_t len);
/* 1 when the parse stopped because the head passed its limit. */
int rh_collect_over(const rh_collect *c);

/* Responses: 1xx heads other than 101 (100 Continue, 103 Early Hints) are interim: not for the
 * caller, their fields dropped, the real answer follows on the same parser. Call
 * rh_collect_interim_head first in on_headers_complete (1: return 0 and wait for the next head)
 * and rh_collect_final_message first in on_message_complete (0: an interim message ended). */
int rh_collect_interim_head(rh_collect *c);
int rh_collect_final_message(rh_collect *c);

#endif
