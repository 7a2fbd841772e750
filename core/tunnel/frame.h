/* frame: the git tunnel's frame codec (docs/git-tunnel-protocol.md). One frame per binary
 * WebSocket message: u8 type, u32 stream id (big endian), payload. Pure functions on bytes, so the
 * unit test and the fuzz target exercise exactly what the tunnel runs. */
#ifndef RH_TUNNEL_FRAME_H
#define RH_TUNNEL_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "http/headers.h"
#include "buf/buf.h"

enum {
  RH_TF_HEAD = 1,
  RH_TF_DATA = 2,
  RH_TF_END = 3,
  RH_TF_RESET = 4,
  RH_TF_WINDOW = 5,
  RH_TF_PING = 6,
  RH_TF_PONG = 7,
};

enum { /* RESET codes */
  RH_TR_CANCEL = 1,
  RH_TR_REFUSED = 2,
  RH_TR_UPSTREAM = 3,
  RH_TR_STALLED = 4,
  RH_TR_FLOW = 5,
  RH_TR_PROTOCOL = 6,
};

#define RH_TF_HEADER 5
#define RH_TF_MAX_DATA 65536u
#define RH_TF_MAX_WINDOW 0x7fffffffu

/* A decoded frame; payload points into the message. For RESET and WINDOW, value is the u32 and
 * payload/len the reason (RESET) or nothing. */
typedef struct {
  int type;
  uint32_t stream;
  uint32_t value;
  const char *payload;
  size_t len;
} rh_tframe;

/* Checks everything the protocol says about one message (type, stream id 0 or not, sizes, a
 * HEAD list that adds up). 0, or -1 with *why naming the fault. */
int rh_tframe_decode(const char *p, size_t n, rh_tframe *f, const char **why);

/* Appends one frame to out (out is one message: the caller sends and clears it). */
void rh_tframe_encode(rh_buf *out, int type, uint32_t stream, const char *p, size_t n);
/* RESET (code + reason) and WINDOW (increment, reason NULL). */
void rh_tframe_encode_u32(rh_buf *out, int type, uint32_t stream, uint32_t value, const char *reason);
/* HEAD: a and b (method and target, or status and reason), then h's fields in order. */
void rh_tframe_encode_head(rh_buf *out, uint32_t stream, const char *a, const char *b, const rh_headers *h);
/* Splits a decoded HEAD payload: a and b are malloc'd NUL-terminated strings, h gets the fields.
 * 0, or -1 (a payload rh_tframe_decode did not check). */
int rh_tframe_head_parse(const rh_tframe *f, char **a, char **b, rh_headers *h);

#endif
