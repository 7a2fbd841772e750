#include "ws/ws.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <wslay/wslay.h>

/* ---- handshake ---- */

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

int rh_ws_accept_key(const char *client_key, size_t len, char out[29]) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  int ok = c && EVP_DigestInit_ex(c, EVP_sha1(), NULL) == 1 &&
           EVP_DigestUpdate(c, client_key, len) == 1 &&
           EVP_DigestUpdate(c, ws_guid, sizeof ws_guid - 1) == 1 &&
           EVP_DigestFinal_ex(c, md, &mdlen) == 1 && mdlen == 20;
  EVP_MD_CTX_free(c);
  out[0] = 0;
  if (!ok) return -1;
  EVP_EncodeBlock((unsigned char *)out, md, 20); /* 28 characters and a NUL */
  return 0;
}

static int is_ows(char c) { return c == ' ' || c == '\t'; }

static void trim(const char **s, size_t *n) {
  while (*n && is_ows(**s)) (*s)++, (*n)--;
  while (*n && is_ows((*s)[*n - 1])) (*n)--;
}

int rh_ws_accept_ok(const char *client_key, const char *accept, size_t accept_len) {
  char want[29];
  if (rh_ws_accept_key(client_key, strlen(client_key), want) != 0) return 0;
  trim(&accept, &accept_len);
  return accept_len == 28 && memcmp(accept, want, 28) == 0;
}

static int is_b64(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/';
}

/* 16 bytes in base64 is exactly 22 alphabet characters and "==". */
static int key_ok(const rh_header *f) {
  const char *s = f->value;
  size_t n = f->value_len;
  trim(&s, &n);
  if (n != 24 || s[22] != '=' || s[23] != '=') return 0;
  for (size_t i = 0; i < 22; i++)
    if (!is_b64(s[i])) return 0;
  return 1;
}

static int value_is(const rh_header *f, const char *want) {
  const char *s = f->value;
  size_t n = f->value_len;
  trim(&s, &n);
  return n == strlen(want) && memcmp(s, want, n) == 0;
}

static const char *upgrade_problem(const rh_headers *h, const char *method) {
  const rh_header *f;
  if (!method || strcmp(method, "GET") != 0) return "method must be GET";
  if (!rh_headers_has_token(h, "Upgrade", "websocket")) return "missing Upgrade: websocket";
  if (!rh_headers_has_token(h, "Connection", "upgrade")) return "missing Connection: upgrade";
  if (!(f = rh_headers_find(h, "Sec-WebSocket-Version", NULL)))
    return "missing Sec-WebSocket-Version";
  if (rh_headers_count(h, "Sec-WebSocket-Version") > 1) return "repeated Sec-WebSocket-Version";
  if (!value_is(f, "13")) return RH_WS_WHY_VERSION;
  if (!(f = rh_headers_find(h, "Sec-WebSocket-Key", NULL))) return "missing Sec-WebSocket-Key";
  if (rh_headers_count(h, "Sec-WebSocket-Key") > 1) return "repeated Sec-WebSocket-Key";
  if (!key_ok(f)) return "invalid Sec-WebSocket-Key (want 16 bytes in base64)";
  return NULL;
}

int rh_ws_check_upgrade(const rh_headers *h, const char *method, const char **why) {
  const char *w = upgrade_problem(h, method);
  if (why) *why = w;
  return w ? -1 : 0;
}

void rh_ws_client_key(char out[25]) {
  unsigned char nonce[16];
  /* The key only proves the client speaks WebSocket, but a broken RNG is not worth hiding. */
  if (RAND_bytes(nonce, sizeof nonce) != 1) abort();
  EVP_EncodeBlock((unsigned char *)out, nonce, sizeof nonce);
}

/* ---- UTF-8 ---- */

/* Whether 8 bytes at p are all ASCII: lets long ASCII text skip the byte-wise checks. */
static int ascii8(const unsigned char *p) {
  uint64_t w;
  memcpy(&w, p, 8);
  return (w & 0x8080808080808080ull) == 0;
}

/* The well-formed sequences of Unicode 15 table 3-7: the lead byte sets the length and the
 * allowed range of the second byte (which rules out overlongs, surrogates and > U+10FFFF). */
int rh_ws_utf8_valid(const char *s, size_t n) {
  if (!n) return 1; /* s may be NULL then */
  const unsigned char *p = (const unsigned char *)s, *end = p + n;
  while (p < end) {
    if ((size_t)(end - p) >= 8 && ascii8(p)) {
      p += 8;
      continue;
    }
    unsigned c = *p, lo = 0x80, hi = 0xBF;
    size_t more;
    if (c < 0x80) { p++; continue; }
    if (c >= 0xC2 && c <= 0xDF) more = 1;
    else if (c == 0xE0) more = 2, lo = 0xA0;
    else if (c == 0xED) more = 2, hi = 0x9F;
    else if (c >= 0xE1 && c <= 0xEF) more = 2;
    else if (c == 0xF0) more = 3, lo = 0x90;
    else if (c == 0xF4) more = 3, hi = 0x8F;
    else if (c >= 0xF1 && c <= 0xF3) more = 3;
    else return 0;
    if ((size_t)(end - p) <= more || p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i <= more; i++)
      if ((p[i] & 0xC0) != 0x80) return 0;
    p += more + 1;
  }
  return 1;
}

/* ---- a connection ---- */

/* wslay reads and checks what the peer sends; what we send we frame ourselves (one frame per
 * message, straight into `out`: no copy into wslay's queue and none out of it). wslay's context
 * is 8.8 KB of buffers, so it exists only while the peer is mid-frame or mid-message, or has
 * been sending within the last second: at rest between frames after that it is freed, and made
 * anew when bytes come (see rest). A busy connection does not pay for a new context per message
 * (~170 ns each). What only a frame being read needs lives beside the context (rh_ws_rx), so a
 * relay's thousands of quiet connections cost only the small struct rh_ws. */
typedef struct {
  wslay_event_context_ptr ctx;
  uint64_t in_total;     /* bytes handed to this ctx */
  uint64_t in_framed;    /* of those, the bytes of frames it has finished */
  uint64_t frame_hdr;    /* header length of the frame being received */
  uint64_t frame_len;
  double born;           /* when ctx was made (coarse monotonic seconds) */
  const char *in;        /* what rh_ws_feed is handing to wslay */
  size_t in_len, in_off;
  int frame_op;          /* opcode of the frame being received */
  int discard;           /* wslay's output goes nowhere (see refusal_code) */
  size_t ctrl_len;
  char ctrl[125];        /* payload of the control frame being received */
} rh_ws_rx;

/* The frame being read. Binary data frames (the tunnel's, the bulk of what crosses) are read
 * here, unmasked a word at a time straight into the message; wslay unmasks byte by byte into its
 * own buffer before we copy it out again. Every other frame (text, control, anything malformed)
 * goes to wslay whole and alone, so wslay always starts at a frame boundary and judges it as
 * before. */
enum { RD_HEADER, RD_START, RD_OURS, RD_WSLAY };
typedef struct {
  uint64_t left;         /* payload bytes of the frame still to come */
  unsigned char hdr[14]; /* the header so far */
  unsigned char mask[4];
  uint8_t hdr_len;
  uint8_t phase;         /* where in the mask the next byte is */
  uint8_t state;         /* RD_* */
  uint8_t fin;
  uint8_t wslay;         /* the header being read is wslay's: its bytes go there too */
} rh_ws_rd;

struct rh_ws {
  rh_ws_rx *rx;          /* NULL at rest */
  rh_ws_rd rd;
  rh_ws_handlers h;
  rh_buf out;            /* frames serialized by wslay (or by us), not yet taken */
  rh_buf msg;            /* the data message being reassembled */
  size_t max_message;
  size_t max_queued;     /* the backpressure bound */
  const char *error;
  double last_feed;      /* when bytes last came (coarse monotonic seconds) */
  /* close codes are two bytes on the wire; with the flags they fill what was padding, so a held
   * connection's engine is 160 bytes (one 176-byte malloc chunk, was 176 and 192) */
  uint16_t code_sent, code_received;
  unsigned is_server : 1;
  unsigned in_message : 1; /* a fragmented data message is under way (in wslay) */
  unsigned fast_msg : 1;   /* a binary message is under way (read here: see rh_ws_rd) */
  unsigned paused : 1;     /* the caller was told to stop reading */
  unsigned failed : 1;
  unsigned sent_close : 1; /* a close frame is in the output (ours or wslay's) */
};

/* Above this, a buffer is given back after use instead of kept for the next message. */
#define KEEP_BUF (64 * 1024)

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                       void *ud) {
  rh_ws *ws = ud;
  size_t avail = ws->rx->in_len - ws->rx->in_off;
  (void)flags;
  if (!avail) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  if (len > avail) len = avail;
  memcpy(buf, ws->rx->in + ws->rx->in_off, len);
  ws->rx->in_off += len;
  ws->rx->in_total += len;
  return (ssize_t)len;
}

/* The output buffer takes everything, so wslay never has a half-sent frame: what it still
 * queues after a flush is only what was queued since. */
static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *ud) {
  rh_ws *ws = ud;
  (void)ctx, (void)flags;
  if (!ws->rx->discard) rh_buf_append(&ws->out, data, len);
  return (ssize_t)len;
}

static int genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *ud) {
  (void)ctx, (void)ud;
  return RAND_bytes(buf, (int)len) == 1 ? 0 : -1;
}

/* What wslay wants to send of its own (pongs, the echo of the peer's close). */
static void flush(rh_ws *ws) {
  if (!ws->rx) return;
  wslay_event_send(ws->rx->ctx);
  if (!ws->sent_close && wslay_event_get_close_sent(ws->rx->ctx)) {
    ws->sent_close = 1;
    ws->code_sent = wslay_event_get_status_code_sent(ws->rx->ctx);
  }
}

/* dst = src XOR the mask, starting phase bytes into it (RFC 6455 §5.3): the bulk of what a
 * client sends and a server reads, so 32 bytes a step in the compiler's vector type (SSE2 on
 * any x86-64, NEON on arm64), then the tail a byte at a time. */
typedef unsigned char rh_v16 __attribute__((vector_size(16)));

static void mask_copy(unsigned char *dst, const unsigned char *src, size_t n, const unsigned char mask[4],
                      unsigned phase) {
  unsigned char m[16];
  rh_v16 mv, a, b;
  for (int i = 0; i < 16; i++) m[i] = mask[(phase + (unsigned)i) & 3];
  memcpy(&mv, m, 16);
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    memcpy(&a, src + i, 16);
    memcpy(&b, src + i + 16, 16);
    a ^= mv, b ^= mv;
    memcpy(dst + i, &a, 16);
    memcpy(dst + i + 16, &b, 16);
  }
  for (; i < n; i++) dst[i] = src[i] ^ m[i & 15];
}

/* A client's mask keys (RFC 6455 §5.3: unpredictable) come from RAND_bytes MASK_POOL bytes at a
 * time, not one call per frame (each a lock and a getpid). A forked worker empties the pool, so
 * parent and child never send the same keys. */
#define MASK_POOL 256
static unsigned char mask_pool[MASK_POOL];
static size_t mask_left;

static void mask_pool_forked(void) { mask_left = 0; }

static void next_mask(unsigned char mask[4]) {
  static int registered;
  if (!registered && pthread_atfork(NULL, NULL, mask_pool_forked) != 0) abort();
  registered = 1;
  if (!mask_left) {
    if (RAND_bytes(mask_pool, MASK_POOL) != 1) {
      memset(mask, 0, 4); /* as before the pool: a frame still goes out, merely unmasked in effect */
      return;
    }
    mask_left = MASK_POOL;
  }
  mask_left -= 4;
  memcpy(mask, mask_pool + mask_left, 4);
}

/* n bytes of a payload to dst: copied, or masked from phase bytes into the mask (mask not NULL). */
static void put_payload(unsigned char *dst, const char *p, size_t n, unsigned phase, const unsigned char *mask) {
  if (!n) return;
  if (mask) mask_copy(dst, (const unsigned char *)p, n, mask, phase);
  else memcpy(dst, p, n);
}

/* One whole frame (FIN set) into the output, its payload head then p (either may be empty: a
 * caller that frames its own messages passes its header apart, so the payload is copied once,
 * here); masked when this end is a client. */
static void write_frame(rh_ws *ws, int opcode, const char *head, size_t hl, const char *p, size_t n) {
  unsigned char h[14], mask[4];
  size_t k = 0, len = hl + n;
  unsigned char masked = ws->is_server ? 0 : 0x80;
  h[k++] = (unsigned char)(0x80 | opcode);
  if (len < 126) {
    h[k++] = (unsigned char)(masked | len);
  } else if (len <= 0xFFFF) {
    h[k++] = masked | 126;
    h[k++] = (unsigned char)(len >> 8);
    h[k++] = (unsigned char)len;
  } else {
    h[k++] = masked | 127;
    for (int i = 7; i >= 0; i--) h[k++] = (unsigned char)((uint64_t)len >> (8 * i));
  }
  if (masked) {
    next_mask(mask);
    memcpy(h + k, mask, 4);
    k += 4;
  }
  rh_buf_reserve(&ws->out, k + len);
  unsigned char *dst = (unsigned char *)ws->out.data + ws->out.len;
  memcpy(dst, h, k);
  put_payload(dst + k, head, hl, 0, masked ? mask : NULL);
  put_payload(dst + k + hl, p, n, (unsigned)hl & 3, masked ? mask : NULL);
  ws->out.len += k + len;
}

/* Our close frame (code 0: none). Once it is out wslay must send nothing more: no pong, no
 * echo of the peer's close. */
static void write_close(rh_ws *ws, int code, const char *reason, size_t rlen) {
  char pl[125];
  size_t n = 0;
  if (ws->rx) wslay_event_shutdown_write(ws->rx->ctx);
  if (code) {
    if (rlen > sizeof pl - 2) rlen = sizeof pl - 2;
    pl[0] = (char)(code >> 8);
    pl[1] = (char)code;
    memcpy(pl + 2, reason, rlen);
    n = 2 + rlen;
  }
  write_frame(ws, RH_WS_CLOSE, NULL, 0, pl, n);
  ws->sent_close = 1;
  ws->code_sent = code ? code : 1005;
}

/* Fails the connection: nothing more is read, and the only thing sent is a close frame with
 * the code and `why` as its reason (unless a close already went out). */
static void fail(rh_ws *ws, int code, const char *why) {
  if (ws->failed) return;
  ws->failed = 1;
  ws->error = why;
  if (ws->rx) wslay_event_shutdown_read(ws->rx->ctx);
  if (!ws->sent_close) write_close(ws, code, why, strlen(why));
  else if (ws->rx) wslay_event_shutdown_write(ws->rx->ctx);
  rh_buf_free(&ws->msg);
}

/* Codes a close frame may carry on the wire (RFC 6455 §7.4 and the IANA registry). */
static int close_code_ok(int code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

/* What is wrong with the payload of the peer's close frame (NULL: nothing), and the code to
 * fail with. */
static const char *close_problem(const char *p, size_t n, int *fail_code) {
  *fail_code = 1002;
  if (n == 1) return "close frame with a 1-byte payload";
  if (n < 2) return NULL;
  if (!close_code_ok(((unsigned char)p[0] << 8) | (unsigned char)p[1])) return "invalid close code";
  *fail_code = 1007;
  return rh_ws_utf8_valid(p + 2, n - 2) ? NULL : "invalid UTF-8 in close reason";
}

/* The peer's close frame. `echoed`: wslay accepted it and queued the echo itself. */
static void peer_close(rh_ws *ws, const char *p, size_t n, int echoed) {
  int code = 1005, fail_code;
  const char *reason = "", *why = close_problem(p, n, &fail_code);
  size_t rlen = 0;
  if (why) {
    fail(ws, fail_code, why);
    return;
  }
  if (n >= 2) {
    code = ((unsigned char)p[0] << 8) | (unsigned char)p[1];
    reason = p + 2;
    rlen = n - 2;
  }
  ws->code_received = code;
  if (ws->rx) wslay_event_shutdown_read(ws->rx->ctx);
  if (!echoed && !ws->sent_close) write_close(ws, code == 1005 ? 0 : code, reason, rlen);
  rh_buf_free(&ws->msg);
  if (ws->h.on_close) ws->h.on_close(ws->h.ud, code, reason, rlen);
}

static void deliver(rh_ws *ws, int opcode) {
  if (opcode == RH_WS_TEXT && !rh_ws_utf8_valid(ws->msg.data, ws->msg.len)) {
    fail(ws, 1007, "invalid UTF-8 in text message"); /* wslay checks first; this is a backstop */
    return;
  }
  rh_buf_reserve(&ws->msg, 1);
  ws->msg.data[ws->msg.len] = 0;
  if (ws->h.on_message) ws->h.on_message(ws->h.ud, opcode, ws->msg.data, ws->msg.len);
  ws->msg.len = 0;
  if (ws->msg.cap > KEEP_BUF) rh_buf_free(&ws->msg);
}

/* With buffering off, wslay hands data frames over piece by piece and we reassemble them,
 * bounded by max_message as soon as a frame header announces its length. */
static void frame_start_cb(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_start_arg *arg, void *ud) {
  rh_ws *ws = ud;
  (void)ctx;
  ws->rx->frame_op = arg->opcode;
  ws->rx->frame_len = arg->payload_length;
  ws->rx->frame_hdr = 2 + (arg->payload_length < 126 ? 0 : arg->payload_length <= 0xFFFF ? 2 : 8) +
                  (ws->is_server ? 4 : 0); /* wslay refuses other length encodings and masks */
  if (!(arg->opcode & 8)) ws->in_message = !arg->fin;
  ws->rx->ctrl_len = 0;
  if (ws->failed || (arg->opcode & 8)) return;
  if (arg->payload_length > ws->max_message - ws->msg.len) fail(ws, 1009, "message too big");
}

static void frame_chunk_cb(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_chunk_arg *arg, void *ud) {
  rh_ws *ws = ud;
  (void)ctx;
  if (ws->failed) return;
  if (ws->rx->frame_op & 8) {
    size_t n = arg->data_length;
    if (n > sizeof ws->rx->ctrl - ws->rx->ctrl_len) n = sizeof ws->rx->ctrl - ws->rx->ctrl_len;
    memcpy(ws->rx->ctrl + ws->rx->ctrl_len, arg->data, n);
    ws->rx->ctrl_len += n;
    return;
  }
  rh_buf_append(&ws->msg, arg->data, arg->data_length);
}

static void frame_end_cb(wslay_event_context_ptr ctx, void *ud) {
  rh_ws *ws = ud;
  (void)ctx;
  ws->rx->in_framed += ws->rx->frame_hdr + ws->rx->frame_len;
}

static void msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *ud) {
  rh_ws *ws = ud;
  (void)ctx;
  if (ws->failed) return;
  if (arg->opcode == RH_WS_TEXT || arg->opcode == RH_WS_BINARY) deliver(ws, arg->opcode);
  else if (arg->opcode == RH_WS_CLOSE) peer_close(ws, (const char *)arg->msg, arg->msg_length, 1);
  /* pings are answered by wslay; pongs need nothing */
}

/* wslay refused the peer's input and queued a close frame without a reason. Let it "send"
 * that frame into nothing to learn its code, and fail with the same code and a reason. */
static void fail_as_wslay_did(rh_ws *ws) {
  int code = 0;
  ws->rx->discard = 1;
  wslay_event_send(ws->rx->ctx);
  ws->rx->discard = 0;
  if (wslay_event_get_close_sent(ws->rx->ctx)) code = wslay_event_get_status_code_sent(ws->rx->ctx);
  if (code == 1007)
    fail(ws, code, ws->rx->frame_op == RH_WS_CLOSE ? "invalid UTF-8 in close reason"
                                               : "invalid UTF-8 in text message");
  else if (code == 1009)
    fail(ws, code, "message too big");
  else
    fail(ws, 1002, "protocol error");
}

/* What wslay_event_recv left to us: its own refusals, which we turn into our close. */
static void after_recv(rh_ws *ws, int r) {
  if (ws->failed || ws->code_received) return;
  if (r == WSLAY_ERR_CALLBACK_FAILURE) {
    fail(ws, 1002, "malformed frame"); /* wslay's framing refused a header */
  } else if (r < 0) {
    fail(ws, 1011, "out of memory");
  } else if (!wslay_event_get_read_enabled(ws->rx->ctx)) {
    /* wslay judges close frames by an older code list and checks a close reason's UTF-8
     * wrongly when the frame arrives in pieces: with the whole payload, we judge it. */
    if (ws->rx->frame_op == RH_WS_CLOSE && ws->rx->ctrl_len == ws->rx->frame_len)
      peer_close(ws, ws->rx->ctrl, ws->rx->ctrl_len, 0);
    else if (ws->sent_close)
      fail(ws, 1002, "protocol error"); /* no close goes out, so its code does not matter */
    else
      fail_as_wslay_did(ws);
  }
}

static const struct wslay_event_callbacks callbacks = {
  .recv_callback = recv_cb,
  .send_callback = send_cb,
  .genmask_callback = genmask_cb,
  .on_frame_recv_start_callback = frame_start_cb,
  .on_frame_recv_chunk_callback = frame_chunk_cb,
  .on_frame_recv_end_callback = frame_end_cb,
  .on_msg_recv_callback = msg_cb,
};

static double rest_after = 1.0;
void rh_ws_rest_after(double seconds) { rest_after = seconds; }

static double coarse_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &t);
  return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static void make_ctx(rh_ws *ws) {
  ws->rx = calloc(1, sizeof *ws->rx);
  if (!ws->rx) abort();
  int r = ws->is_server ? wslay_event_context_server_init(&ws->rx->ctx, &callbacks, ws)
                        : wslay_event_context_client_init(&ws->rx->ctx, &callbacks, ws);
  if (r != 0) abort(); /* only fails for lack of memory */
  wslay_event_config_set_no_buffering(ws->rx->ctx, 1);
  /* Our own check in frame_start_cb bounds whole messages and says why; wslay's per-frame
   * check would fire first without a reason. */
  wslay_event_config_set_max_recv_msg_length(ws->rx->ctx, UINT64_MAX);
  if (ws->sent_close) wslay_event_shutdown_write(ws->rx->ctx);
  ws->rx->born = ws->last_feed;
}

static void free_rx(rh_ws *ws) {
  if (!ws->rx) return;
  wslay_event_context_free(ws->rx->ctx);
  free(ws->rx);
  ws->rx = NULL;
}

/* At rest (between frames, no message under way, nothing of wslay's to send, not closing), a
 * fresh context would carry on exactly as this one: free it, unless it is younger than rest_after
 * and the peer is busy (its previous bytes came within rest_after). A held socket that only
 * answers a ping now and then must not keep 8.8 KB from one pong to the next. */
static void rest(rh_ws *ws, double now, int sparse) {
  if (!ws->rx || (!sparse && now - ws->rx->born < rest_after) || ws->failed || ws->sent_close || ws->code_received || ws->in_message ||
      ws->rx->in_framed != ws->rx->in_total || wslay_event_get_queued_msg_count(ws->rx->ctx) ||
      !wslay_event_get_read_enabled(ws->rx->ctx) || !wslay_event_get_write_enabled(ws->rx->ctx))
    return;
  free_rx(ws);
}

rh_ws *rh_ws_new(int is_server, size_t max_message, const rh_ws_handlers *h) {
  rh_ws *ws = calloc(1, sizeof *ws);
  if (!ws) abort();
  ws->is_server = is_server;
  ws->max_message = max_message ? max_message : RH_WS_MAX_MESSAGE_DEFAULT;
  ws->max_queued = RH_WS_MAX_QUEUED_DEFAULT;
  if (h) ws->h = *h;
  return ws;
}

void rh_ws_free(rh_ws *ws) {
  if (!ws) return;
  free_rx(ws);
  rh_buf_free(&ws->out);
  rh_buf_free(&ws->msg);
  free(ws);
}

void rh_ws_set_max_queued(rh_ws *ws, size_t max_queued) {
  ws->max_queued = max_queued > RH_WS_MAX_QUEUED_MIN ? max_queued : RH_WS_MAX_QUEUED_MIN;
}

size_t rh_ws_backlog(const rh_ws *ws) {
  return ws->out.len + (ws->h.queued ? ws->h.queued(ws->h.ud) : 0);
}

/* Over the bound: paused; at a quarter of it: reading again (not at once, or every pong the
 * peer takes would switch reading back on for one more read). */
int rh_ws_read_paused(rh_ws *ws) {
  size_t b = rh_ws_backlog(ws);
  if (b > ws->max_queued) ws->paused = 1;
  else if (b <= ws->max_queued / 4) ws->paused = 0;
  return ws->paused;
}

/* Bytes from a peer this end said not to read: a caller that cannot stop its transport at
 * once may hand over what was already on the way, but not without end. */
static int overfed(rh_ws *ws, size_t n) {
  return n && ws->paused && rh_ws_backlog(ws) >= 2 * ws->max_queued;
}

/* ---- reading frames ---- */

static int fast_read = 1;
void rh_ws_fast_read(int on) { fast_read = on; }

/* Above this a fast frame's message buffer grows as its bytes come, not all at once from the
 * header's word. */
#define RESERVE_MAX (256 * 1024)

static size_t header_need(const unsigned char *h) {
  unsigned l = h[1] & 127;
  return 2 + (l == 126 ? 2 : l == 127 ? 8 : 0) + (h[1] & 0x80 ? 4 : 0);
}

static uint64_t header_payload(const unsigned char *h) {
  uint64_t l = h[1] & 127;
  if (l == 126) return (uint64_t)h[2] << 8 | h[3];
  if (l == 127) {
    l = 0;
    for (int i = 2; i < 10; i++) l = l << 8 | h[i];
  }
  return l;
}

/* Header bytes from in into rd->hdr, up to the header's end: how many it took. */
static size_t gather_header(rh_ws_rd *rd, const char *in, size_t n) {
  size_t took = 0;
  for (;;) {
    size_t need = rd->hdr_len < 2 ? 2 : header_need(rd->hdr);
    if (rd->hdr_len == need || took == n) return took;
    size_t k = need - rd->hdr_len < n - took ? need - rd->hdr_len : n - took;
    memcpy(rd->hdr + rd->hdr_len, in + took, k);
    rd->hdr_len = (uint8_t)(rd->hdr_len + k);
    took += k;
  }
}

static int header_whole(const rh_ws_rd *rd) { return rd->hdr_len >= 2 && rd->hdr_len == header_need(rd->hdr); }

/* Whether the header so far rules out reading the frame here. This end reads binary data
 * frames (a message's first, or the next of one it is reading, or a frame that breaks into that
 * one, to fail it) in the only shape a good peer sends: no RSV bits, masked exactly when from a
 * client, the length in its shortest form. Asked as the bytes come, so that wslay sees a bad
 * header as soon as it would have. */
static int header_refused(const rh_ws *ws, const rh_ws_rd *rd) {
  const unsigned char *h = rd->hdr;
  unsigned op = h[0] & 15, l = h[1] & 127;
  if (!fast_read || (h[0] & 0x70) || !(h[1] & 0x80) != !ws->is_server) return 1;
  if (ws->fast_msg ? op > RH_WS_BINARY : op != RH_WS_BINARY || ws->in_message) return 1;
  if (l < 126 || rd->hdr_len < (l == 126 ? 4 : 10)) return 0;
  uint64_t len = header_payload(h);
  return l == 126 ? len < 126 : len <= 0xFFFF || len >> 63;
}

/* Bytes of one frame to wslay (a context is made if it was at rest). */
static void to_wslay(rh_ws *ws, const char *in, size_t n) {
  if (!ws->rx) make_ctx(ws);
  ws->rx->in = in;
  ws->rx->in_len = n;
  ws->rx->in_off = 0;
  int r;
  size_t before;
  /* One call normally takes everything; loop in case wslay stops early with input left. */
  do {
    before = ws->rx->in_off;
    r = wslay_event_recv(ws->rx->ctx);
  } while (r == 0 && !ws->failed && wslay_event_get_read_enabled(ws->rx->ctx) &&
           ws->rx->in_off < ws->rx->in_len && ws->rx->in_off != before);
  ws->rx->in = NULL;
  ws->rx->in_len = ws->rx->in_off = 0;
  after_recv(ws, r);
}

static int reading(const rh_ws *ws) {
  return !ws->failed && !ws->code_received && !(ws->rx && !wslay_event_get_read_enabled(ws->rx->ctx));
}

static void end_frame(rh_ws *ws) {
  int ours = ws->rd.state == RD_OURS;
  ws->rd.state = RD_HEADER;
  if (!ours || !ws->rd.fin) return;
  ws->fast_msg = 0;
  deliver(ws, RH_WS_BINARY);
}

/* A frame read here starts once its first payload byte is in (or it has none), which is
 * when wslay would judge it too. */
static void begin_payload(rh_ws *ws) {
  rh_ws_rd *rd = &ws->rd;
  unsigned op = rd->hdr[0] & 15;
  if (ws->fast_msg && op != 0) {
    fail(ws, 1002, "protocol error"); /* a new message inside a fragmented one, as wslay says it */
    return;
  }
  if (rd->left > ws->max_message - ws->msg.len) {
    fail(ws, 1009, "message too big");
    return;
  }
  rd->state = RD_OURS;
  ws->fast_msg = 1;
  rh_buf_reserve(&ws->msg, rd->left < RESERVE_MAX ? (size_t)rd->left : RESERVE_MAX);
  if (!rd->left) end_frame(ws);
}

/* The header is whole: its frame is wslay's (handed over already), or read here. */
static void start_frame(rh_ws *ws) {
  rh_ws_rd *rd = &ws->rd;
  rd->left = header_payload(rd->hdr);
  rd->state = rd->wslay ? RD_WSLAY : RD_START;
  rd->fin = rd->hdr[0] >> 7;
  rd->phase = 0;
  if (ws->is_server) memcpy(rd->mask, rd->hdr + rd->hdr_len - 4, 4);
  rd->hdr_len = 0;
  rd->wslay = 0;
  if (rd->left) return;
  if (rd->state == RD_START) begin_payload(ws);
  else end_frame(ws);
}

/* Header bytes from in: gathered here, and handed to wslay too once they rule this end out. */
static size_t read_header(rh_ws *ws, const char *in, size_t n) {
  rh_ws_rd *rd = &ws->rd;
  size_t k = gather_header(rd, in, n);
  if (rd->hdr_len < 2) return k;
  if (rd->wslay) {
    to_wslay(ws, in, k);
  } else if (header_refused(ws, rd)) {
    rd->wslay = 1;
    to_wslay(ws, (const char *)rd->hdr, rd->hdr_len);
  }
  if (header_whole(rd) && reading(ws)) start_frame(ws);
  return k;
}

/* n payload bytes of a frame read here, into the message (unmasked when from a client). */
static void take_payload(rh_ws *ws, const char *in, size_t n) {
  rh_ws_rd *rd = &ws->rd;
  rh_buf_reserve(&ws->msg, n);
  unsigned char *dst = (unsigned char *)ws->msg.data + ws->msg.len;
  if (ws->is_server) mask_copy(dst, (const unsigned char *)in, n, rd->mask, rd->phase);
  else memcpy(dst, in, n);
  ws->msg.len += n;
  rd->phase = (uint8_t)((rd->phase + n) & 3);
}

/* A control frame whole in `in`, in the only shape a good peer sends (FIN, no RSV bits, masked
 * exactly when from a client, at most 125 bytes), read here so that a held connection's pong or
 * ping does not make and free a wslay context (8.8 KB) each. A pong anywhere; a ping or a close
 * only as the last bytes of the read, with nothing of wslay's waiting to go, so its answer (the
 * pong unless our close went out, the echo) goes out as wslay's would at the end of the feed:
 * after what wslay queued, and never before a bad frame that follows (after a failure only the
 * close goes out). A close wslay would refuse goes to wslay, which picks the reason (a bad
 * reason's UTF-8 before a bad code); so does anything else. The bytes it took (0: none). */
static size_t read_control(rh_ws *ws, const char *in, size_t n) {
  const unsigned char *h = (const unsigned char *)in;
  if (!fast_read || n < 2) return 0;
  unsigned op = h[0] & 15, len = h[1] & 127, masked = h[1] >> 7;
  size_t hl = masked ? 6 : 2;
  if ((h[0] & 0xF0) != 0x80 || op < RH_WS_CLOSE || op > RH_WS_PONG || len > 125 || masked != ws->is_server ||
      n < hl + len)
    return 0;
  if (op != RH_WS_PONG && (n != hl + len || (ws->rx && wslay_event_get_queued_msg_count(ws->rx->ctx)))) return 0;
  unsigned char p[125];
  if (masked) mask_copy(p, h + hl, len, h + 2, 0);
  else memcpy(p, h + hl, len);
  int fail_code;
  if (op == RH_WS_CLOSE && close_problem((const char *)p, len, &fail_code)) return 0; /* wslay says why, as before */
  if (op == RH_WS_PING && !ws->sent_close) write_frame(ws, RH_WS_PONG, NULL, 0, (const char *)p, len);
  else if (op == RH_WS_CLOSE) peer_close(ws, (const char *)p, len, 0);
  return hl + len;
}

static void read_frames(rh_ws *ws, const char *in, size_t n) {
  rh_ws_rd *rd = &ws->rd;
  while (n && reading(ws)) {
    if (rd->state == RD_HEADER) {
      size_t k = rd->hdr_len ? 0 : read_control(ws, in, n);
      if (!k) k = read_header(ws, in, n);
      in += k, n -= k;
      continue;
    }
    if (rd->state == RD_START) {
      begin_payload(ws);
      continue;
    }
    size_t k = n < rd->left ? n : (size_t)rd->left;
    if (rd->state == RD_OURS) take_payload(ws, in, k);
    else to_wslay(ws, in, k);
    in += k, n -= k;
    rd->left -= k;
    if (!rd->left) end_frame(ws);
  }
}

int rh_ws_feed(rh_ws *ws, const char *in, size_t n) {
  if (ws->failed) return -1;
  if (ws->code_received || (ws->rx && !wslay_event_get_read_enabled(ws->rx->ctx))) return 0;
  if (overfed(ws, n)) {
    fail(ws, 1008, "peer does not read: outgoing queue full");
    return -1;
  }
  double now = coarse_now();
  int sparse = now - ws->last_feed >= rest_after;
  ws->last_feed = now;
  read_frames(ws, in, n);
  if (!ws->failed) flush(ws);
  rest(ws, now, sparse);
  rh_ws_read_paused(ws);
  return ws->failed ? -1 : 0;
}

int rh_ws_send(rh_ws *ws, int opcode, const char *p, size_t n) {
  return rh_ws_send_parts(ws, opcode, NULL, 0, p, n);
}

int rh_ws_send_parts(rh_ws *ws, int opcode, const char *head, size_t hl, const char *p, size_t n) {
  if (ws->failed || (hl && opcode != RH_WS_BINARY)) return -1;
  if (opcode == RH_WS_TEXT) {
    if (!rh_ws_utf8_valid(p, n)) return -1;
  } else if (opcode == RH_WS_PING || opcode == RH_WS_PONG) {
    if (n > 125) return -1;
  } else if (opcode != RH_WS_BINARY) {
    return -1;
  }
  if (ws->sent_close || ws->code_received) return -1; /* after the peer's close: only the echo */
  write_frame(ws, opcode, head, hl, p, n);
  return 0;
}

int rh_ws_close(rh_ws *ws, int code, const char *reason) {
  size_t rlen = reason ? strlen(reason) : 0;
  if (ws->failed || ws->sent_close || ws->code_received) return -1;
  if (code ? !close_code_ok(code) : rlen != 0) return -1;
  if (rlen > 123 || !rh_ws_utf8_valid(reason, rlen)) return -1;
  write_close(ws, code, reason, rlen);
  return 0;
}

void rh_ws_output(rh_ws *ws, rh_buf *out) {
  if (!ws->out.len) return;
  if (!out->len) { /* hand the buffer over instead of copying it */
    rh_buf t = *out;
    *out = ws->out;
    ws->out = t;
  } else {
    rh_buf_append(out, ws->out.data, ws->out.len);
  }
  ws->out.len = 0;
  if (ws->out.cap > KEEP_BUF) rh_buf_free(&ws->out);
}

const char *rh_ws_output_peek(const rh_ws *ws, size_t *n) {
  *n = ws->out.len;
  return ws->out.data;
}

void rh_ws_output_done(rh_ws *ws, size_t keep) {
  ws->out.len = 0;
  if (ws->out.cap > keep) rh_buf_free(&ws->out);
}

int rh_ws_want_close(const rh_ws *ws) {
  return ws->failed || (ws->code_received && ws->sent_close);
}

const char *rh_ws_error(const rh_ws *ws) { return ws->failed ? ws->error : NULL; }

int rh_ws_close_sent(const rh_ws *ws) { return ws->sent_close ? ws->code_sent : 0; }

int rh_ws_close_received(const rh_ws *ws) { return ws->code_received; }
