/* Unit tests for core/json/scan.c (what is and is not one JSON object, members, numbers) and
 * core/hub/hub.c (E2EE frames to their session's owner only, what is left to the script: unknown
 * or gone owners, invalid frames, key exchanges, a full consumer, an empty bucket, a downgrade). */
#include <stdio.h>
#include <string.h>

#include "hub/hub.h"
#include "json/scan.h"
#include "check.h"

static int count_members(void *ud, const char *k, size_t kl, int esc, const rh_json_value *v) {
  (void)k, (void)kl, (void)esc, (void)v;
  ++*(int *)ud;
  return 0;
}

static int scan(const char *s, int *members) {
  *members = 0;
  return rh_json_scan_object(s, strlen(s), 4, count_members, members);
}

static void test_scan(void) {
  test_name = "scan";
  int n;
  static const char *good[] = { "{}", " { \"a\" : 1 } ", "{\"a\":\"\\ud83d\\ude00\"}", "{\"a\":[1,2.5e-3,{\"b\":null}],\"c\":\"x\\u00e9\\n\"}",
                                "{\"t\":true,\"f\":false,\"n\":-0}", "{\"a\":{\"b\":{\"c\":[]}}}" };
  for (size_t i = 0; i < sizeof good / sizeof *good; i++) CHECK(scan(good[i], &n) == 0);
  CHECK(scan("{\"a\":1,\"b\":{\"c\":2}}", &n) == 0 && n == 2);
  static const char *bad[] = { "", "[]", "1", "{", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "{\"a\":01}", "{\"a\":1.}",
                               "{\"a\":.5}", "{\"a\":tru}", "{\"a\":\"\\x\"}", "{\"a\":\"\\u12\"}", "{\"a\":\"\x01\"}",
                               "{} {}", "{\"a\":1}x", "{\"a\":\"\\ude00\"}", "{\"a\":\"\\ud83d\"}",
                               "{\"a\":\"\\ud83dx\"}", "{\"a\":\"\\ud800\\ndc00\"}", "{\"a\":\"\\ud800\\u0041\"}", "{a:1}", "{\"a\":[1,]}", "{\"a\":[[[[[1]]]]]}", "{'a':1}" };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    if (scan(bad[i], &n) != -1) fprintf(stderr, "  accepted: %s\n", bad[i]);
    CHECK(scan(bad[i], &n) == -1);
  }
  rh_json_value v = { RH_JSON_NUMBER, "2.0e0", 5, 0 };
  CHECK(rh_json_number(&v) == 2);
}

/* ---- a hub over fake connections ---- */

typedef struct {
  char last[256];
  int got;
  size_t queued;
  int fail;
} fake;

static int fake_send(void *conn, const char *p, size_t n) {
  fake *f = conn;
  if (f->fail) return -1;
  snprintf(f->last, sizeof f->last, "%.*s", (int)n, p);
  f->got++;
  return 0;
}
static size_t fake_queued(void *conn) { return ((fake *)conn)->queued; }

static const rh_hub_ops ops = { fake_send, fake_queued };

static int frame(rh_hub *h, const char *claimed, const char *text, double now) {
  return rh_hub_daemon_frame(h, "ws1:rt1", claimed, text, strlen(text), now);
}

#define E2EE(session) \
  "{\"type\":\"e2ee\",\"version\":2,\"profile\":\"noise-ik\",\"sessionId\":\"" session \
  "\",\"epoch\":1,\"seq\":3,\"iv\":\"aXY\",\"tag\":\"dGFn\",\"ciphertext\":\"Y3Q\"}"

static void test_routing(void) {
  test_name = "routing";
  fake a = { 0 }, b = { 0 };
  rh_hub *h = rh_hub_new(&ops, 600, 1000);
  rh_hub_peer *pa = rh_hub_peer_new(h, &a), *pb = rh_hub_peer_new(h, &b);
  rh_hub_own(h, "ws1:rt1", "sa", pa);
  rh_hub_own(h, "ws1:rt1", "sb", pb);
  rh_hub_own(h, "ws1:rt2", "sx", pa);
  CHECK(frame(h, NULL, E2EE("sa"), 0) == 1 && a.got == 1 && b.got == 0);
  CHECK(strcmp(a.last, E2EE("sa")) == 0); /* verbatim */
  CHECK(frame(h, NULL, E2EE("sb"), 0) == 1 && b.got == 1 && a.got == 1);
  CHECK(frame(h, NULL, "{\"type\":\"relay_key_update_required\",\"sessionId\":\"sa\",\"nextEpoch\":2}", 0) == 1 && a.got == 2);
  /* left to the script */
  CHECK(frame(h, NULL, E2EE("nobody"), 0) == 0);
  CHECK(frame(h, NULL, E2EE("sx"), 0) == 0);                              /* another scope's session */
  CHECK(frame(h, NULL, "{\"type\":\"relay_key_exchange_response\",\"sessionId\":\"sa\"}", 0) == 0);
  CHECK(frame(h, NULL, "{\"type\":\"e2ee\",\"version\":2,\"profile\":\"noise-ik\",\"sessionId\":\"sa\",\"epoch\":0,"
                       "\"seq\":1,\"iv\":\"a\",\"tag\":\"b\",\"ciphertext\":\"c\"}", 0) == 0); /* epoch 0 */
  CHECK(frame(h, NULL, "{\"type\":\"e2ee\",\"version\":2,\"profile\":\"noise-ik\",\"sessionId\":\"sa\",\"epoch\":1,"
                       "\"seq\":1.5,\"iv\":\"a\",\"tag\":\"b\",\"ciphertext\":\"c\"}", 0) == 0); /* seq not an integer */
  CHECK(frame(h, NULL, "{\"type\":\"e2ee\",\"version\":2,\"profile\":\"noise-ik\",\"sessionId\":\"s\\u0061\",\"epoch\":1,"
                       "\"seq\":1,\"iv\":\"a\",\"tag\":\"b\",\"ciphertext\":\"c\"}", 0) == 0); /* escaped: script */
  CHECK(frame(h, NULL, E2EE("sa") " trailing", 0) == 0);
  CHECK(frame(h, "noise-ikpsk2", E2EE("sa"), 0) == 0);                     /* weaker than the claim */
  CHECK(a.got == 2 && b.got == 1);
  /* the last of a repeated key wins, as in JSON.parse */
  CHECK(frame(h, NULL, "{\"sessionId\":\"sb\",\"type\":\"e2ee\",\"version\":2,\"profile\":\"noise-ik\",\"sessionId\":\"sa\","
                       "\"epoch\":1,\"seq\":1,\"iv\":\"a\",\"tag\":\"b\",\"ciphertext\":\"c\"}", 0) == 1 && a.got == 3);
  /* a consumer over max_pending, or one whose send fails, is the script's */
  a.queued = 1001;
  CHECK(frame(h, NULL, E2EE("sa"), 0) == 0);
  a.queued = 0;
  b.fail = 1;
  CHECK(frame(h, NULL, E2EE("sb"), 0) == 0);
  /* owners change and go */
  rh_hub_own(h, "ws1:rt1", "sa", pb);
  b.fail = 0;
  CHECK(frame(h, NULL, E2EE("sa"), 0) == 1 && b.got == 2);
  rh_hub_own(h, "ws1:rt1", "sa", NULL);
  CHECK(frame(h, NULL, E2EE("sa"), 0) == 0);
  rh_hub_peer_gone(h, pb);
  CHECK(frame(h, NULL, E2EE("sb"), 0) == 0 && b.got == 2);
  rh_hub_own(h, "ws1:rt1", "sa", pa);
  rh_hub_clear_scope(h, "ws1:rt1");
  CHECK(frame(h, NULL, E2EE("sa"), 0) == 0);
  uint64_t frames, bytes;
  rh_hub_stats(h, &frames, &bytes);
  CHECK(frames == 5);
  rh_hub_peer_gone(h, pa);
  rh_hub_free(h); /* ASan: nothing leaks, with owners still in rt2 */
}

static void test_bucket(void) {
  test_name = "bucket";
  fake a = { 0 };
  rh_hub *h = rh_hub_new(&ops, 60, 1000); /* 60 a minute: one a second, 60 at once */
  rh_hub_peer *pa = rh_hub_peer_new(h, &a);
  rh_hub_own(h, "ws1:rt1", "sa", pa);
  int sent = 0;
  for (int i = 0; i < 100; i++) sent += frame(h, NULL, E2EE("sa"), 10.0);
  CHECK(sent == 60);
  CHECK(rh_hub_daemon_allow(h, "ws1:rt1", 10.0) == 0);
  CHECK(rh_hub_daemon_allow(h, "ws1:rt1", 12.0) == 1); /* two seconds: two tokens */
  CHECK(rh_hub_daemon_allow(h, "ws1:rt1", 12.0) == 1);
  CHECK(rh_hub_daemon_allow(h, "ws1:rt1", 12.0) == 0);
  CHECK(rh_hub_daemon_allow(h, "other", 12.0) == 1);    /* per scope */
  rh_hub_peer_gone(h, pa);
  rh_hub_free(h);
}

int main(void) {
  test_scan();
  test_routing();
  test_bucket();
  if (failures) {
    fprintf(stderr, "test_hub: %d check(s) failed\n", failures);
    return 1;
  }
  printf("test_hub: ok\n");
  return 0;
}
