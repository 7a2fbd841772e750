/* Unit tests for the registry's read-only walks (rh_metric_each, rh_metric_buckets), which the
 * admin status page reads instead of parsing /metrics. */
#include <string.h>

#include "metrics/metrics.h"
#include "check.h"

typedef struct {
  char seen[4][8];
  double values[4];
  int n;
} visit;

static void collect(const char *const *values, double v, void *ud) {
  visit *w = ud;
  if (w->n == 4) return;
  snprintf(w->seen[w->n], sizeof w->seen[0], "%s", values ? values[0] : "-");
  w->values[w->n++] = v;
}

static void test_each(void) {
  test_name = "each";
  const char *err = NULL;
  const char *labels[] = { "code" };
  rh_metric *m = rh_metric_register(RH_COUNTER, "reqs_total", "", labels, 1, NULL, 0, &err);
  REQUIRE(m);
  rh_metric_add(m, (const char *[]){ "200" }, 3);
  rh_metric_add(m, (const char *[]){ "404" }, 1);
  rh_metric_add(m, (const char *[]){ "200" }, 2);
  visit w = { .n = 0 };
  rh_metric_each(m, collect, &w);
  CHECK(w.n == 2); /* creation order, one call per series */
  CHECK(strcmp(w.seen[0], "200") == 0 && w.values[0] == 5);
  CHECK(strcmp(w.seen[1], "404") == 0 && w.values[1] == 1);
  w.n = 0;
  rh_metric_each(NULL, collect, &w); /* a family never registered: nothing */
  CHECK(w.n == 0);
}

static void test_buckets(void) {
  test_name = "buckets";
  const char *err = NULL;
  static const double b[] = { 1, 2, 4 };
  rh_metric *h = rh_metric_register(RH_HISTOGRAM, "took_seconds", "", NULL, 0, b, 3, &err);
  REQUIRE(h);
  const double obs[] = { 0.5, 1.5, 1.7, 3, 10 };
  for (size_t i = 0; i < 5; i++) rh_metric_observe(h, NULL, obs[i]);
  const double *bounds = NULL;
  unsigned long long cum[8] = { 0 };
  CHECK(rh_metric_buckets(h, NULL, &bounds, cum, 8) == 3);
  REQUIRE(bounds);
  CHECK(bounds[0] == 1 && bounds[2] == 4);
  CHECK(cum[0] == 1 && cum[1] == 3 && cum[2] == 4 && cum[3] == 5); /* cumulative, +Inf last */
  unsigned long long small[2] = { 0, 0 };
  CHECK(rh_metric_buckets(h, NULL, &bounds, small, 2) == 3); /* copies only what fits */
  CHECK(small[0] == 1 && small[1] == 3);
  visit w = { .n = 0 };
  rh_metric_each(h, collect, &w);
  CHECK(w.n == 1 && w.values[0] == 5); /* a histogram's value is its count */
  rh_metric *c = rh_metric_find("reqs_total");
  CHECK(rh_metric_buckets(c, (const char *[]){ "200" }, &bounds, cum, 8) == 0); /* not a histogram */
}

int main(void) {
  test_each();
  test_buckets();
  rh_metrics_free_all();
  if (failures) {
    fprintf(stderr, "test_metrics_read: %d check(s) failed\n", failures);
    return 1;
  }
  printf("test_metrics_read: ok\n");
  return 0;
}
