/* Unit tests for core/metrics/metrics.c: registration rules, updates, text exposition. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/metrics.h"
#include "check.h"



/* The rendered text contains line (a full line, newline included). */
#define CHECK_LINE(text, line)                                                       \
  do {                                                                               \
    if (!has_line(text, line)) {                                                     \
      fprintf(stderr, "%s:%d: missing line: %s\n", __FILE__, __LINE__, line);        \
      failures++;                                                                    \
    }                                                                                \
  } while (0)

static int has_line(const char *text, const char *line) {
  size_t n = strlen(line);
  for (const char *p = strstr(text, line); p; p = strstr(p + 1, line))
    if ((p == text || p[-1] == '\n') && p[n] == '\n') return 1;
  return 0;
}

static char *render(void) {
  size_t len = 0;
  char *s = rh_metrics_render(&len);
  if (s && strlen(s) != len) {
    fprintf(stderr, "render: length mismatch\n");
    failures++;
  }
  return s;
}

static void test_register(void) {
  const char *err = NULL;
  const char *labels[] = { "method", "code" };
  rh_metric *a = rh_metric_register(RH_COUNTER, "http_requests_total", "Requests.", labels, 2,
                                    NULL, 0, &err);
  CHECK(a != NULL);
  CHECK(rh_metric_kind_of(a) == RH_COUNTER && rh_metric_nlabels(a) == 2);
  CHECK(rh_metric_find("http_requests_total") == a);
  CHECK(rh_metric_find("nope") == NULL);

  /* Same kind and labels: the same family. */
  CHECK(rh_metric_register(RH_COUNTER, "http_requests_total", "Other help", labels, 2, NULL, 0,
                           &err) == a);

  err = NULL;
  CHECK(rh_metric_register(RH_GAUGE, "http_requests_total", "", labels, 2, NULL, 0, &err) == NULL);
  CHECK(err && strstr(err, "kind"));
  const char *other[] = { "code", "method" };
  err = NULL;
  CHECK(rh_metric_register(RH_COUNTER, "http_requests_total", "", other, 2, NULL, 0, &err) == NULL);
  CHECK(err && strstr(err, "labels"));
  err = NULL;
  CHECK(rh_metric_register(RH_COUNTER, "http_requests_total", "", labels, 1, NULL, 0, &err) == NULL);
  CHECK(err && strstr(err, "labels"));

  const char *bad_names[] = { "", "1abc", "a-b", "a b", "é", "a.b" };
  for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
    err = NULL;
    CHECK(rh_metric_register(RH_GAUGE, bad_names[i], "", NULL, 0, NULL, 0, &err) == NULL);
    CHECK(err && strstr(err, "metric name"));
  }
  CHECK(rh_metric_register(RH_GAUGE, "ns:sub_name_1", "", NULL, 0, NULL, 0, &err) != NULL);
  CHECK(rh_metric_register(RH_GAUGE, "_x", "", NULL, 0, NULL, 0, &err) != NULL);

  const char *bad_label[] = { "ok", "bad-label" };
  err = NULL;
  CHECK(rh_metric_register(RH_GAUGE, "g1", "", bad_label, 2, NULL, 0, &err) == NULL);
  CHECK(err && strstr(err, "label name"));
  const char *colon_label[] = { "a:b" };
  CHECK(rh_metric_register(RH_GAUGE, "g1", "", colon_label, 1, NULL, 0, &err) == NULL);
  const char *reserved[] = { "__name" };
  err = NULL;
  CHECK(rh_metric_register(RH_GAUGE, "g1", "", reserved, 1, NULL, 0, &err) == NULL);
  CHECK(err && strstr(err, "reserved"));
  const char *le[] = { "le" };
  CHECK(rh_metric_register(RH_HISTOGRAM, "h1", "", le, 1, NULL, 0, &err) == NULL);
  CHECK(rh_metric_register(RH_GAUGE, "g_le", "", le, 1, NULL, 0, &err) != NULL);
  const char *dup[] = { "a", "a" };
  err = NULL;
  CHECK(rh_metric_register(RH_GAUGE, "g1", "", dup, 2, NULL, 0, &err) == NULL);
  CHECK(err && strstr(err, "duplicate"));
  CHECK(rh_metric_find("g1") == NULL); /* failed registrations leave nothing behind */

  const double down[] = { 1, 0.5 };
  err = NULL;
  CHECK(rh_metric_register(RH_HISTOGRAM, "h2", "", NULL, 0, down, 2, &err) == NULL);
  CHECK(err && strstr(err, "buckets"));
  const double b1[] = { 1, 2 }, b2[] = { 1, 3 };
  CHECK(rh_metric_register(RH_HISTOGRAM, "h2", "", NULL, 0, b1, 2, &err) != NULL);
  err = NULL;
  CHECK(rh_metric_register(RH_HISTOGRAM, "h2", "", NULL, 0, b2, 2, &err) == NULL);
  CHECK(err && strstr(err, "buckets"));
}

static void test_counter_gauge(void) {
  const char *err = NULL;
  const char *labels[] = { "method", "code" };
  rh_metric *c = rh_metric_register(RH_COUNTER, "http_requests_total", "Requests.", labels, 2,
                                    NULL, 0, &err);
  const char *get200[] = { "GET", "200" }, *post500[] = { "POST", "500" };
  CHECK(rh_metric_add(c, get200, 1) == 0);
  CHECK(rh_metric_add(c, get200, 2) == 0);
  CHECK(rh_metric_add(c, post500, 1) == 0);
  CHECK(rh_metric_add(c, get200, -1) == -1);
  CHECK(rh_metric_set(c, get200, 5) == -1);
  CHECK(rh_metric_observe(c, get200, 5) == -1);
  CHECK(rh_metric_add(c, NULL, 1) == -1);
  const char *half[] = { "GET", NULL };
  CHECK(rh_metric_add(c, half, 1) == -1);
  CHECK(rh_metric_value(c, get200) == 3);
  CHECK(rh_metric_value(c, post500) == 1);
  const char *unseen[] = { "PUT", "201" };
  CHECK(rh_metric_value(c, unseen) == 0);

  rh_metric *g = rh_metric_register(RH_GAUGE, "temperature", "Temp.", NULL, 0, NULL, 0, &err);
  CHECK(rh_metric_value(g, NULL) == 0);
  CHECK(rh_metric_set(g, NULL, 21.5) == 0);
  CHECK(rh_metric_add(g, NULL, -1.5) == 0);
  CHECK(rh_metric_value(g, NULL) == 20);

  /* Many series: the per-family table grows and every series stays reachable. */
  rh_metric *many = rh_metric_register(RH_COUNTER, "many_total", "", labels + 1, 1, NULL, 0, &err);
  int ok = 1;
  for (int i = 0; i < 300; i++) {
    char v[16];
    snprintf(v, sizeof v, "%d", i);
    const char *vals[] = { v };
    ok &= rh_metric_add(many, vals, i) == 0;
  }
  for (int i = 0; i < 300; i++) {
    char v[16];
    snprintf(v, sizeof v, "%d", i);
    const char *vals[] = { v };
    ok &= rh_metric_value(many, vals) == i;
  }
  CHECK(ok);
}

static void test_render(void) {
  const char *err = NULL;
  const char *path[] = { "path" };
  rh_metric *e = rh_metric_register(RH_COUNTER, "escape_total", "Help with \\ and\nnewline \"q\".",
                                    path, 1, NULL, 0, &err);
  const char *weird[] = { "a\\b\"c\nd" };
  rh_metric_add(e, weird, 1);
  rh_metric *big = rh_metric_register(RH_GAUGE, "big", "", NULL, 0, NULL, 0, &err);
  rh_metric_set(big, NULL, 1e6);
  rh_metric *frac = rh_metric_register(RH_GAUGE, "frac", "", NULL, 0, NULL, 0, &err);
  rh_metric_set(frac, NULL, 0.1);
  rh_metric_register(RH_COUNTER, "untouched_total", "Never incremented.", NULL, 0, NULL, 0, &err);

  char *text = render();
  CHECK_LINE(text, "# HELP http_requests_total Requests.");
  CHECK_LINE(text, "# TYPE http_requests_total counter");
  CHECK_LINE(text, "http_requests_total{method=\"GET\",code=\"200\"} 3");
  CHECK_LINE(text, "http_requests_total{method=\"POST\",code=\"500\"} 1");
  CHECK_LINE(text, "# TYPE temperature gauge");
  CHECK_LINE(text, "temperature 20");
  CHECK_LINE(text, "# HELP escape_total Help with \\\\ and\\nnewline \"q\".");
  CHECK_LINE(text, "escape_total{path=\"a\\\\b\\\"c\\nd\"} 1");
  CHECK_LINE(text, "big 1000000");
  CHECK_LINE(text, "frac 0.1");
  CHECK_LINE(text, "untouched_total 0");
  CHECK_LINE(text, "# TYPE ns:sub_name_1 gauge");
  CHECK(strstr(text, "# HELP big") == NULL); /* no help text, no HELP line */

  /* Registration order. */
  const char *p1 = strstr(text, "# TYPE http_requests_total");
  const char *p2 = strstr(text, "# TYPE temperature");
  const char *p3 = strstr(text, "# TYPE escape_total");
  CHECK(p1 && p2 && p3 && p1 < p2 && p2 < p3);
  free(text);
}

static void test_histogram(void) {
  const char *err = NULL;
  const char *labels[] = { "route" };
  const double buckets[] = { 0.1, 1, 10 };
  rh_metric *h = rh_metric_register(RH_HISTOGRAM, "latency_seconds", "Latency.", labels, 1,
                                    buckets, 3, &err);
  CHECK(h != NULL);
  const char *api[] = { "/api" };
  const double obs[] = { 0.05, 0.1, 0.5, 2, 20, 30 };
  for (size_t i = 0; i < sizeof obs / sizeof obs[0]; i++) CHECK(rh_metric_observe(h, api, obs[i]) == 0);
  CHECK(rh_metric_add(h, api, 1) == -1);
  CHECK(rh_metric_set(h, api, 1) == -1);
  CHECK(rh_metric_value(h, api) == 6);

  /* A trailing +Inf bucket is accepted and not doubled. */
  const double with_inf[] = { 1, INFINITY };
  rh_metric *hi = rh_metric_register(RH_HISTOGRAM, "inf_seconds", "", NULL, 0, with_inf, 2, &err);
  CHECK(hi != NULL);
  rh_metric_observe(hi, NULL, 0.5);
  rh_metric *hd = rh_metric_register(RH_HISTOGRAM, "default_seconds", "", NULL, 0, NULL, 0, &err);
  CHECK(rh_metric_register(RH_HISTOGRAM, "default_seconds", "", NULL, 0, NULL, 0, &err) == hd);

  char *text = render();
  CHECK_LINE(text, "# TYPE latency_seconds histogram");
  CHECK_LINE(text, "latency_seconds_bucket{route=\"/api\",le=\"0.1\"} 2");
  CHECK_LINE(text, "latency_seconds_bucket{route=\"/api\",le=\"1\"} 3");
  CHECK_LINE(text, "latency_seconds_bucket{route=\"/api\",le=\"10\"} 4");
  CHECK_LINE(text, "latency_seconds_bucket{route=\"/api\",le=\"+Inf\"} 6");
  CHECK_LINE(text, "latency_seconds_sum{route=\"/api\"} 52.65");
  CHECK_LINE(text, "latency_seconds_count{route=\"/api\"} 6");
  CHECK_LINE(text, "inf_seconds_bucket{le=\"1\"} 1");
  CHECK_LINE(text, "inf_seconds_bucket{le=\"+Inf\"} 1");
  CHECK(strstr(text, "inf_seconds_bucket{le=\"+Inf\"} 1\ninf_seconds_bucket") == NULL);
  CHECK_LINE(text, "default_seconds_bucket{le=\"0.005\"} 0");
  CHECK_LINE(text, "default_seconds_bucket{le=\"2.5\"} 0");
  CHECK_LINE(text, "default_seconds_bucket{le=\"+Inf\"} 0");
  CHECK_LINE(text, "default_seconds_sum 0");
  CHECK_LINE(text, "default_seconds_count 0");
  free(text);
}

/* A series resolved once updates what the family renders and reads, with the same checks. */
static void test_series_handle(void) {
  const char *err = NULL;
  const char *code[] = { "code" }, *ok[] = { "200" };
  rh_metric *c = rh_metric_register(RH_COUNTER, "handled_total", "", code, 1, NULL, 0, &err);
  rh_metric_series *s = rh_metric_series_of(c, ok);
  CHECK(s != NULL && rh_metric_series_of(c, ok) == s);
  CHECK(rh_metric_series_of(c, NULL) == NULL);
  CHECK(rh_metric_series_add(s, 2) == 0);
  CHECK(rh_metric_add(c, ok, 1) == 0);
  CHECK(rh_metric_series_add(s, -1) == -1); /* a counter only goes up */
  CHECK(rh_metric_series_observe(s, 1) == -1);
  CHECK(rh_metric_value(c, ok) == 3);
  const double buckets[] = { 1 };
  rh_metric *h = rh_metric_register(RH_HISTOGRAM, "handled_seconds", "", NULL, 0, buckets, 1, &err);
  rh_metric_series *hs = rh_metric_series_of(h, NULL);
  CHECK(rh_metric_series_observe(hs, 0.5) == 0);
  CHECK(rh_metric_series_observe(hs, NAN) == -1);
  CHECK(rh_metric_series_add(hs, 1) == -1);
  CHECK(rh_metric_series_add(NULL, 1) == -1);
  char *text = render();
  CHECK_LINE(text, "handled_total{code=\"200\"} 3");
  CHECK_LINE(text, "handled_seconds_bucket{le=\"1\"} 1");
  CHECK_LINE(text, "handled_seconds_count 1");
  free(text);
}

int main(void) {
  size_t len = 99;
  char *empty = rh_metrics_render(&len);
  CHECK(empty && len == 0 && *empty == 0);
  free(empty);

  test_register();
  test_counter_gauge();
  test_render();
  test_histogram();
  test_series_handle();
  rh_metrics_free_all();

  /* The registry is usable again after free_all. */
  const char *err = NULL;
  CHECK(rh_metric_find("http_requests_total") == NULL);
  CHECK(rh_metric_register(RH_GAUGE, "http_requests_total", "", NULL, 0, NULL, 0, &err) != NULL);
  rh_metrics_free_all();

  if (failures) {
    fprintf(stderr, "test_metrics: %d check(s) failed\n", failures);
    return 1;
  }
  printf("test_metrics: ok\n");
  return 0;
}
