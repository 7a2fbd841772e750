/* fuzz_framing: differential test of request framing. The same bytes go to relayhost's HTTP/1.1
 * server (over loopback, as fuzz_http_server drives it) and to a strict reference decoder
 * written here from RFC 9112 (§2-3 request line, §5 fields, §6 body length, §7.1 chunked),
 * which refuses anything ambiguous. Where the reference accepts a message, relayhost must hand
 * the same message (method, target, version, body) to its handler, in the same order; where
 * the reference refuses, relayhost must answer with an error of its own; refusing more is a
 * failure too. Where the input ends inside a message, relayhost may wait or refuse.
 *
 * The rules both follow (the reference below, the server through llhttp in strict mode and the
 * checks in core/http/server.c), with MAX_HEAD and MAX_BODY the server's limits:
 *  - A message starts after any number of CRLF. Lines end in CRLF: a bare LF or a bare CR
 *    anywhere in a head or a trailer section is refused.
 *  - Head size, from the message's first byte through the empty line, at most MAX_HEAD.
 *  - Request line: method SP target SP "HTTP/1." ("0" / "1"), exactly two SP. Methods: llhttp's
 *    HTTP methods (HTTP_METHOD_MAP); CONNECT is refused (501).
 *  - Target: origin-form "/" followed by visible ASCII other than '#'; "*"; or absolute-form
 *    "http://" / "https://" (any case), an authority of RFC 3986 bytes (unreserved,
 *    sub-delims, ':', '@', '[', ']', '%') with at most one '@' (userinfo "@" host: neither
 *    may hold another, and llhttp refuses a second, "Double @ in url"), then nothing or an
 *    origin-form path.
 *  - Field line: name (1*tchar) ":" OWS value OWS; value bytes HTAB, SP, VCHAR, obs-text;
 *    no obs-fold (a line starting with SP or HTAB).
 *  - At most one Content-Length: OWS 1*DIGIT *SP, at most 2^63-1 (llhttp 8.1 refuses a
 *    HTAB after the digits). At most one
 *    Transfer-Encoding, whose value is "chunked" (any case) followed by SP only: llhttp 8.1
 *    reads "chunked\t" as some other coding and refuses it ("Request has invalid
 *    `Transfer-Encoding`"); refusing it is strict, not ambiguous. Never with Content-Length,
 *    never on HTTP/1.0. HTTP/1.1 has exactly one Host.
 *  - Chunks: 1*HEXDIG, then extensions ";" token [ "=" ( token / quoted-string ) ] with no
 *    whitespace and no quoted-pair, and none after a token value (llhttp 8.1 refuses
 *    "3;a=b;c=d" but takes "3;a=\"b\";c=d"; refusing it is strict, not ambiguous) but for one
 *    ';' ending the line (llhttp takes "3;a=b;"; it moves no boundary), CRLF, data, CRLF. A chunk size over 2^63-1, or one that
 *    would take the body past MAX_BODY, is refused at its size line. The last chunk's trailer
 *    section is field lines as above (at most MAX_HEAD bytes, no Content-Length or
 *    Transfer-Encoding: framing is the head's), then CRLF; trailers are dropped.
 *  - A Content-Length body over MAX_BODY is refused once more than MAX_BODY bytes of it came.
 *  - The connection ends after a message with "Connection: close" (HTTP/1.1), without
 *    "Connection: keep-alive" (HTTP/1.0), or with Upgrade and "Connection: upgrade"; the bytes
 *    after it are not read.
 *
 * Input layout: byte 0 picks where the bytes are cut into two writes (0: one write); the rest
 * is sent. */
#include <ctype.h>
#include <llhttp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/server.h"
#include "buf/buf.h"
#include "log/log.h"

#define FUZZ_TARGET "fuzz_framing"
#include "check.h"
#include "loopback.h"

#define MAX_HEAD 256
#define MAX_BODY 64
#define MAX_MSGS 64

typedef struct {
  char method[16];
  char target[MAX_HEAD + 1];
  int minor;
  char body[MAX_BODY];
  size_t body_len;
} msg;

typedef struct {
  msg m[MAX_MSGS];
  int n;
} msg_list;

/* ---- the reference decoder ---- */

enum { REF_OK, REF_MORE, REF_BAD };
enum { END_CLEAN, END_MORE, END_BAD, END_STOP };

typedef struct {
  const uint8_t *p;
  size_t n, i;
} cursor;

/* One line from c->i: [*s, *e) without its CRLF. A bare LF or CR is REF_BAD. */
static int ref_line(cursor *c, size_t *s, size_t *e) {
  *s = c->i;
  for (size_t i = c->i; i < c->n; i++) {
    if (c->p[i] == '\n') return REF_BAD;
    if (c->p[i] != '\r') continue;
    if (i + 1 == c->n) return REF_MORE;
    if (c->p[i + 1] != '\n') return REF_BAD;
    *e = i;
    c->i = i + 2;
    return REF_OK;
  }
  return REF_MORE;
}

static int is_tchar(uint8_t ch) {
  return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static int is_vchar(uint8_t ch) { return ch > 0x20 && ch < 0x7f; }

typedef struct {
  size_t name, name_len, value, value_len;
  size_t trailing; /* the OWS after the value */
} field;

/* name ":" OWS value OWS, from a line. */
static int ref_field(const uint8_t *p, size_t s, size_t e, field *f) {
  size_t k = s;
  while (k < e && is_tchar(p[k])) k++;
  if (k == s || k == e || p[k] != ':') return REF_BAD;
  f->name = s;
  f->name_len = k - s;
  size_t v = k + 1, ve = e;
  for (size_t i = v; i < e; i++)
    if (!(p[i] == '\t' || p[i] == ' ' || is_vchar(p[i]) || p[i] >= 0x80)) return REF_BAD;
  while (v < ve && (p[v] == ' ' || p[v] == '\t')) v++;
  while (ve > v && (p[ve - 1] == ' ' || p[ve - 1] == '\t')) ve--;
  f->value = v;
  f->value_len = ve - v;
  f->trailing = e - ve;
  return REF_OK;
}

#define MAX_FIELDS 128

typedef struct {
  field f[MAX_FIELDS];
  int n;
} field_list;

/* Field lines up to the empty line; bytes from `start` at most MAX_HEAD. */
static int ref_fields(cursor *c, size_t start, field_list *fl) {
  fl->n = 0;
  for (;;) {
    size_t s, e;
    int rc = ref_line(c, &s, &e);
    if (rc != REF_OK) return rc == REF_MORE && c->n - start > MAX_HEAD ? REF_BAD : rc;
    if (c->i - start > MAX_HEAD) return REF_BAD;
    if (s == e) return REF_OK;
    if (c->p[s] == ' ' || c->p[s] == '\t') return REF_BAD; /* obs-fold */
    if (fl->n == MAX_FIELDS) return REF_BAD;                 /* cannot happen within MAX_HEAD */
    if (ref_field(c->p, s, e, &fl->f[fl->n++]) != REF_OK) return REF_BAD;
  }
}

static int method_ok(const uint8_t *p, size_t n) {
  static const char *const methods[] = {
#define XX(num, name, string) #string,
    HTTP_METHOD_MAP(XX)
#undef XX
  };
  for (size_t i = 0; i < sizeof methods / sizeof *methods; i++)
    if (strlen(methods[i]) == n && memcmp(methods[i], p, n) == 0) return strcmp(methods[i], "CONNECT") != 0;
  return 0;
}

static int origin_form(const uint8_t *p, size_t n) {
  if (n == 0 || p[0] != '/') return 0;
  for (size_t i = 0; i < n; i++)
    if (!is_vchar(p[i]) || p[i] == '#') return 0;
  return 1;
}

static int absolute_form(const uint8_t *p, size_t n) {
  size_t k = n >= 7 && strncasecmp((const char *)p, "http://", 7) == 0   ? 7
             : n >= 8 && strncasecmp((const char *)p, "https://", 8) == 0 ? 8 : 0;
  if (!k) return 0;
  size_t a = k, ats = 0;
  while (a < n && p[a] != '/') {
    uint8_t ch = p[a++];
    if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
          (ch && strchr("-._~!$&'()*+,;=:@[]%", ch))))
      return 0;
    if (ch == '@' && ++ats > 1) return 0;
  }
  return a > k && (a == n || origin_form(p + a, n - a));
}

/* method SP target SP HTTP/1.x */
static int ref_request_line(const uint8_t *p, size_t s, size_t e, msg *m) {
  const uint8_t *sp1 = memchr(p + s, ' ', e - s);
  if (!sp1) return REF_BAD;
  const uint8_t *sp2 = memchr(sp1 + 1, ' ', (size_t)(p + e - sp1 - 1));
  if (!sp2 || memchr(sp2 + 1, ' ', (size_t)(p + e - sp2 - 1))) return REF_BAD;
  size_t ml = (size_t)(sp1 - (p + s)), tl = (size_t)(sp2 - sp1 - 1), vl = (size_t)(p + e - sp2 - 1);
  if (!method_ok(p + s, ml)) return REF_BAD;
  if (!(origin_form(sp1 + 1, tl) || (tl == 1 && sp1[1] == '*') || absolute_form(sp1 + 1, tl))) return REF_BAD;
  if (vl != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 || (sp2[8] != '0' && sp2[8] != '1')) return REF_BAD;
  memcpy(m->method, p + s, ml);
  m->method[ml] = 0;
  memcpy(m->target, sp1 + 1, tl);
  m->target[tl] = 0;
  m->minor = sp2[8] - '0';
  return REF_OK;
}

static int name_is(const cursor *c, const field *f, const char *name) {
  return f->name_len == strlen(name) && strncasecmp((const char *)c->p + f->name, name, f->name_len) == 0;
}

/* The one field called name (NULL if none), and how many there are. */
static const field *find(const cursor *c, const field_list *fl, const char *name, int *count) {
  const field *found = NULL;
  *count = 0;
  for (int i = 0; i < fl->n; i++)
    if (name_is(c, &fl->f[i], name)) { found = &fl->f[i]; ++*count; }
  return found;
}

/* A comma-separated list in any of the fields called name holds tok (any case). */
static int has_token(const cursor *c, const field_list *fl, const char *name, const char *tok) {
  size_t tl = strlen(tok);
  for (int i = 0; i < fl->n; i++) {
    if (!name_is(c, &fl->f[i], name)) continue;
    const char *v = (const char *)c->p + fl->f[i].value, *e = v + fl->f[i].value_len;
    while (v < e) {
      while (v < e && (*v == ' ' || *v == '\t' || *v == ',')) v++;
      const char *s = v;
      while (v < e && *v != ',') v++;
      const char *t = v;
      while (t > s && (t[-1] == ' ' || t[-1] == '\t')) t--;
      if ((size_t)(t - s) == tl && strncasecmp(s, tok, tl) == 0) return 1;
    }
  }
  return 0;
}

/* 1*DIGIT, at most 2^63-1: the value, or -1. */
static int64_t decimal(const uint8_t *p, size_t n) {
  if (n == 0) return -1;
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (p[i] < '0' || p[i] > '9') return -1;
    if (v > ((uint64_t)INT64_MAX - (uint64_t)(p[i] - '0')) / 10) return -1;
    v = v * 10 + (uint64_t)(p[i] - '0');
  }
  return (int64_t)v;
}

typedef struct {
  int chunked, last;
  int64_t length; /* -1: none */
} framing;

/* What the head's fields say about the body and the connection. */
static int ref_framing(const cursor *c, const field_list *fl, const msg *m, framing *fr) {
  int ncl, nte, nhost;
  const field *cl = find(c, fl, "content-length", &ncl), *te = find(c, fl, "transfer-encoding", &nte);
  find(c, fl, "host", &nhost);
  if (ncl > 1 || nte > 1 || (ncl && nte)) return REF_BAD;
  if (m->minor == 1 && nhost != 1) return REF_BAD;
  fr->chunked = nte == 1;
  if (te && (m->minor == 0 || te->value_len != 7 || strncasecmp((const char *)c->p + te->value, "chunked", 7) ||
             memchr(c->p + te->value + te->value_len, '\t', te->trailing)))
    return REF_BAD;
  fr->length = cl ? decimal(c->p + cl->value, cl->value_len) : -1;
  if (cl && (fr->length < 0 || memchr(c->p + cl->value + cl->value_len, '\t', cl->trailing))) return REF_BAD;
  int dummy;
  int upgrade = find(c, fl, "upgrade", &dummy) && has_token(c, fl, "connection", "upgrade");
  fr->last = upgrade || (m->minor == 1 ? has_token(c, fl, "connection", "close")
                                       : !has_token(c, fl, "connection", "keep-alive"));
  return REF_OK;
}

static int append_body(msg *m, const uint8_t *p, size_t n) {
  if (m->body_len + n > MAX_BODY) return REF_BAD;
  memcpy(m->body + m->body_len, p, n);
  m->body_len += n;
  return REF_OK;
}

/* ";" token [ "=" ( token / quoted-string ) ], repeated, to e. */
static int ref_extensions(const uint8_t *p, size_t k, size_t e) {
  while (k < e) {
    if (p[k++] != ';') return REF_BAD;
    size_t s = k;
    while (k < e && is_tchar(p[k])) k++;
    if (k == s) return REF_BAD;
    if (k == e || p[k] == ';') continue;
    if (p[k++] != '=') return REF_BAD;
    if (k < e && p[k] == '"') {
      for (k++; k < e && p[k] != '"'; k++)
        if (!(p[k] == '\t' || p[k] == ' ' || p[k] == 0x21 || (p[k] >= 0x23 && p[k] <= 0x5b) ||
              (p[k] >= 0x5d && p[k] <= 0x7e) || p[k] >= 0x80))
          return REF_BAD;
      if (k++ == e) return REF_BAD;
    } else {
      s = k;
      while (k < e && is_tchar(p[k])) k++;
      /* a token value is the last extension */
      if (k == s || !(k == e || (k + 1 == e && p[k] == ';'))) return REF_BAD;
      return REF_OK;
    }
  }
  return REF_OK;
}

/* A chunk-size line: the size, or -1 (bad). */
static int64_t ref_chunk_size(const uint8_t *p, size_t s, size_t e, size_t had) {
  uint64_t v = 0;
  size_t k = s;
  for (; k < e && isxdigit(p[k]); k++) {
    if (v > (uint64_t)INT64_MAX >> 4) return -1;
    v = v * 16 + (uint64_t)(p[k] <= '9' ? p[k] - '0' : (p[k] | 0x20) - 'a' + 10);
  }
  if (k == s || ref_extensions(p, k, e) != REF_OK) return -1;
  if (v > (uint64_t)INT64_MAX || v > MAX_BODY - had) return -1;
  return (int64_t)v;
}

static int ref_chunked(cursor *c, msg *m) {
  for (;;) {
    size_t s, e;
    int rc = ref_line(c, &s, &e);
    if (rc != REF_OK) return rc;
    int64_t size = ref_chunk_size(c->p, s, e, m->body_len);
    if (size < 0) return REF_BAD;
    if (size == 0) {
      field_list trailers;
      int rc = ref_fields(c, c->i, &trailers), n;
      if (rc == REF_OK && (find(c, &trailers, "content-length", &n) || find(c, &trailers, "transfer-encoding", &n)))
        return REF_BAD;
      return rc;
    }
    if (c->n - c->i < (size_t)size) return REF_MORE;
    append_body(m, c->p + c->i, (size_t)size);
    c->i += (size_t)size;
    for (const char *crlf = "\r\n"; *crlf; crlf++, c->i++) {
      if (c->i == c->n) return REF_MORE;
      if (c->p[c->i] != (uint8_t)*crlf) return REF_BAD;
    }
  }
}

static int ref_body(cursor *c, const framing *fr, msg *m) {
  m->body_len = 0;
  if (fr->chunked) return ref_chunked(c, m);
  if (fr->length <= 0) return REF_OK;
  size_t avail = c->n - c->i;
  if ((uint64_t)fr->length > MAX_BODY) return avail > MAX_BODY ? REF_BAD : REF_MORE;
  if (avail < (size_t)fr->length) return REF_MORE;
  append_body(m, c->p + c->i, (size_t)fr->length);
  c->i += (size_t)fr->length;
  return REF_OK;
}

/* One message from c->i. *last: the connection ends after it. */
static int ref_message(cursor *c, msg *m, int *last) {
  size_t start = c->i;
  while (c->n - c->i >= 2 && c->p[c->i] == '\r' && c->p[c->i + 1] == '\n') c->i += 2;
  size_t s, e;
  int rc = ref_line(c, &s, &e);
  if (rc == REF_MORE && c->n - start > MAX_HEAD) return REF_BAD;
  if (rc != REF_OK) return rc;
  field_list fl;
  rc = ref_fields(c, start, &fl);
  if (rc != REF_OK) return rc;
  framing fr;
  if (ref_request_line(c->p, s, e, m) != REF_OK || ref_framing(c, &fl, m, &fr) != REF_OK) return REF_BAD;
  *last = fr.last;
  return ref_body(c, &fr, m);
}

static int reference(const uint8_t *p, size_t n, msg_list *out) {
  cursor c = { p, n, 0 };
  out->n = 0;
  while (c.i < n && out->n < MAX_MSGS) {
    int last = 0;
    int rc = ref_message(&c, &out->m[out->n], &last);
    if (rc == REF_MORE) return END_MORE;
    if (rc == REF_BAD) return END_BAD;
    out->n++;
    if (last) return END_STOP;
  }
  return c.i < n ? END_STOP : END_CLEAN;
}

/* ---- relayhost's server ---- */

static rh_http_server *server;
static int port;
static msg_list got_msgs;

typedef struct req_state {
  rh_http_req *req;
  int released;
  struct req_state *next;
} req_state;
static req_state *states;

static void release(req_state *st) {
  if (st->released) return;
  st->released = 1;
  rh_http_req_release(st->req);
}

/* A message whose body is complete: recorded, answered. */
static void complete(req_state *st) {
  rh_http_req *r = st->req;
  if (got_msgs.n < MAX_MSGS) {
    msg *m = &got_msgs.m[got_msgs.n++];
    snprintf(m->method, sizeof m->method, "%s", r->method);
    snprintf(m->target, sizeof m->target, "%.*s", (int)r->target_len, r->target);
    m->minor = r->http_minor;
    if (r->body.len > MAX_BODY) FAIL("a body of %zu bytes, over the limit of %d", r->body.len, MAX_BODY);
    m->body_len = r->body.len;
    if (r->body.len) memcpy(m->body, r->body.data, r->body.len);
  }
  rh_http_respond(r, 200, NULL, "ok", 2);
  release(st);
}

static void on_request(rh_http_req *r, void *ud) {
  (void)ud;
  req_state *st = calloc(1, sizeof *st);
  if (!st) abort();
  st->req = r;
  st->next = states;
  states = st;
  r->ud = st;
  int w = rh_http_want_body(r);
  if (w == 1) complete(st);
  else if (w < 0) release(st);
}

static void on_body(rh_http_req *r, void *ud) {
  (void)ud;
  req_state *st = r->ud;
  if (st->released) return;
  if (r->body_error) release(st);
  else complete(st);
}

static void on_abort(rh_http_req *r, void *ud) {
  (void)ud;
  release(r->ud);
}

/* Sends the input, half-closes, reads until the server has closed and let go. */
static void relay(const uint8_t *data, size_t size, size_t cut, rh_buf *out) {
  double deadline = now_s() + 8;
  int fd = client_connect(port), eof = 0;
  pump();
  size_t parts[2][2] = { { 0, cut }, { cut, size } };
  for (int i = 0; i < 2 && !eof; i++) {
    if (parts[i][1] > parts[i][0] && client_send(fd, data + parts[i][0], parts[i][1] - parts[i][0], out, deadline) < 0)
      eof = 1;
    for (int k = 0; k < 3; k++) pump();
    if (!eof) eof = client_read(fd, out);
  }
  shutdown(fd, SHUT_WR);
  while (!eof || rh_http_server_connections(server) > 0) {
    pump();
    if (!eof) eof = client_read(fd, out);
    if (now_s() > deadline) FAIL("the server did not close within 8 s of the client's half-close");
    if (!eof || rh_http_server_connections(server) > 0) wait_a_little(fd);
  }
  pump();
  pump();
  client_reset(fd);
  for (req_state *st = states, *next; st; st = next) {
    next = st->next;
    if (!st->released) FAIL("the connection is gone but the handler was never told");
    free(st);
  }
  states = NULL;
}

/* The server answered an error of its own (the handler answers only 200). */
static int refused(const rh_buf *out) {
  for (size_t i = 0; i + 10 <= out->len; i++)
    if (memcmp(out->data + i, "HTTP/1.1 ", 9) == 0 && (out->data[i + 9] == '4' || out->data[i + 9] == '5'))
      return 1;
  return 0;
}

/* ---- comparing ---- */

static void show(const char *who, const msg_list *l) {
  for (int i = 0; i < l->n; i++)
    fprintf(stderr, "  %s %d: %s %s HTTP/1.%d, body %zu bytes '%.*s'\n", who, i, l->m[i].method, l->m[i].target,
            l->m[i].minor, l->m[i].body_len, (int)l->m[i].body_len, l->m[i].body);
}

static int same(const msg *a, const msg *b) {
  return strcmp(a->method, b->method) == 0 && strcmp(a->target, b->target) == 0 && a->minor == b->minor &&
         a->body_len == b->body_len && memcmp(a->body, b->body, a->body_len) == 0;
}

static void compare(const msg_list *ref, int end, const rh_buf *out) {
  static const char *ends[] = { "accepted", "incomplete", "refused", "accepted, connection ends" };
  int ok = ref->n == got_msgs.n;
  for (int i = 0; ok && i < ref->n; i++) ok = same(&ref->m[i], &got_msgs.m[i]);
  int was_refused = refused(out);
  if (end == END_BAD && !was_refused) ok = 0;
  if (end == END_CLEAN && was_refused) ok = 0;
  if (ok) return;
  fprintf(stderr, "reference: %d messages, %s; relayhost: %d messages, %s\n", ref->n, ends[end], got_msgs.n,
          was_refused ? "refused" : "not refused");
  show("reference", ref);
  show("relayhost", &got_msgs);
  fprintf(stderr, "relayhost answered:\n%.*s\n", (int)(out->len > 600 ? 600 : out->len), out->data ? out->data : "");
  FAIL("relayhost and the reference decoder disagree");
}

static void start_server(void) {
  static rh_http_limits lim;
  static const rh_http_handlers h = { on_request, on_body, NULL, on_abort, NULL };
  rh_http_limits_default(&lim);
  lim.max_head = MAX_HEAD;
  lim.max_body = MAX_BODY;
  char err[256];
  server = rh_http_server_start(&loop, "127.0.0.1:0", &lim, &h, err, sizeof err);
  if (!server) FAIL("server start: %s", err);
  port = rh_http_server_port(server);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  signal(SIGPIPE, SIG_IGN);
  rh_log_set_level(getenv("FUZZ_VERBOSE") ? RH_LOG_DEBUG : RH_LOG_ERROR);
  uv_loop_init(&loop);
  start_server();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  const uint8_t *p = data + 1;
  size_t n = size - 1, cut = (size_t)data[0] * n / 255;
  static msg_list ref;
  int end = reference(p, n, &ref);
  got_msgs.n = 0;
  rh_buf out = RH_BUF_INIT;
  relay(p, n, cut, &out);
  compare(&ref, end, &out);
  rh_buf_free(&out);
  return 0;
}
