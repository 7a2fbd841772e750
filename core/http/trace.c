#include "http/trace.h"

#include <stdint.h>
#include <string.h>
#include <pthread.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* Ids are random (the spec asks for it): xorshift64* seeded from the kernel, and again in a
 * forked child (--workers), so that no two processes hand out the same ids. The fork hook
 * forgets the seed, rather than a getpid() per id: that was up to three syscalls a request. */
static uint64_t s;

static void forget_seed(void) { s = 0; }

static void seed(void) {
  static int hooked;
  if (!hooked) hooked = pthread_atfork(NULL, NULL, forget_seed) == 0;
  if (getrandom(&s, sizeof s, 0) != sizeof s) s = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
  s |= 1;
}

static uint64_t next_random(void) {
  if (!s) seed();
  s ^= s >> 12;
  s ^= s << 25;
  s ^= s >> 27;
  return s * 0x2545F4914F6CDD1DULL;
}

/* Eight lower-case hex digits of x, all at once (SWAR): one nibble per byte, then '0'+n, plus
 * 'a'-'0'-10 where n > 9. The digits come out in little-endian nibble order, which does not
 * matter for random ids; a non-zero x never gives "00000000". */
static void hex8(uint32_t x, char *out) {
  uint64_t v = x;
  v = (v | v << 16) & 0x0000FFFF0000FFFFULL;
  v = (v | v << 8) & 0x00FF00FF00FF00FFULL;
  v = (v | v << 4) & 0x0F0F0F0F0F0F0F0FULL;
  uint64_t over9 = ((v + 0x0606060606060606ULL) >> 4) & 0x0101010101010101ULL;
  v += 0x3030303030303030ULL + over9 * ('a' - '0' - 10);
  memcpy(out, &v, 8);
}

/* digits is a multiple of 16: one 64-bit draw (never 0, xorshift64* is a bijection of a
 * non-zero state) per 16 digits, so no id is all zeros. */
static void random_hex(char *out, size_t digits) {
  for (size_t i = 0; i < digits; i += 16) {
    uint64_t v = next_random();
    hex8((uint32_t)v, out + i);
    hex8((uint32_t)(v >> 32), out + i + 8);
  }
  out[digits] = 0;
}

static int lower_hex(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
  return 1;
}

static int all_zero(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] != '0') return 0;
  return 1;
}

/* version-traceid-parentid-flags; a later version may append "-…" after the 55 that 00 has. */
static int valid(const char *v, size_t n) {
  if (n < RH_TRACEPARENT_LEN || v[2] != '-' || v[35] != '-' || v[52] != '-') return 0;
  if (!lower_hex(v, 2) || !memcmp(v, "ff", 2)) return 0;
  if (!memcmp(v, "00", 2) ? n != RH_TRACEPARENT_LEN : (n > RH_TRACEPARENT_LEN && v[55] != '-')) return 0;
  return lower_hex(v + 3, 32) && !all_zero(v + 3, 32) && lower_hex(v + 36, 16) && !all_zero(v + 36, 16) &&
         lower_hex(v + 53, 2);
}

void rh_trace_begin(rh_trace *t, const rh_headers *h) {
  const rh_header *f = rh_headers_find(h, "traceparent", NULL);
  /* two traceparent fields are no traceparent */
  t->from_client = f && rh_headers_count(h, "traceparent") == 1 && valid(f->value, f->value_len);
  if (t->from_client) {
    memcpy(t->trace_id, f->value + 3, 32);
    t->trace_id[32] = 0;
    memcpy(t->flags, f->value + 53, 2);
  } else {
    random_hex(t->trace_id, 32);
    memcpy(t->flags, "01", 2);
  }
  t->flags[2] = 0;
  random_hex(t->span_id, 16);
}

void rh_trace_header(const rh_trace *t, char out[RH_TRACEPARENT_LEN + 1]) {
  /* by hand, not snprintf: this runs for every request */
  memcpy(out, "00-", 3);
  memcpy(out + 3, t->trace_id, 32);
  out[35] = '-';
  memcpy(out + 36, t->span_id, 16);
  out[52] = '-';
  memcpy(out + 53, t->flags, 2);
  out[55] = 0;
}

void rh_trace_apply(const rh_trace *t, rh_headers *out) {
  char tp[RH_TRACEPARENT_LEN + 1];
  rh_headers_remove(out, "traceparent");
  if (!t->from_client) rh_headers_remove(out, "tracestate");
  rh_trace_header(t, tp);
  rh_headers_add(out, "traceparent", 11, tp, RH_TRACEPARENT_LEN);
}
