/* metrics: a process-wide Prometheus registry (counters, gauges, histograms with labels).
 *
 * Families are created once and outlive Lua generations, so counters keep counting across a
 * reload; registering an existing name with the same kind and labels returns the same family.
 * Everything is freed by rh_metrics_free_all at exit. */
#ifndef RH_METRICS_H
#define RH_METRICS_H

#include <stddef.h>

typedef enum { RH_COUNTER, RH_GAUGE, RH_HISTOGRAM } rh_metric_kind;

typedef struct rh_metric rh_metric;

/* NULL plus *err (static string) on a bad name, or a name taken with another kind/labels.
 * buckets: upper bounds ascending, for histograms (NULL: the Prometheus defaults). */
rh_metric *rh_metric_register(rh_metric_kind kind, const char *name, const char *help,
                              const char *const *labels, size_t nlabels,
                              const double *buckets, size_t nbuckets, const char **err);
rh_metric *rh_metric_find(const char *name);
rh_metric_kind rh_metric_kind_of(const rh_metric *m);
size_t rh_metric_nlabels(const rh_metric *m);

/* values: nlabels label values in order. 0 ok, -1 bad arguments (negative counter increment). */
int rh_metric_add(rh_metric *m, const char *const *values, double v);  /* counter, gauge */
int rh_metric_set(rh_metric *m, const char *const *values, double v);  /* gauge */
int rh_metric_observe(rh_metric *m, const char *const *values, double v); /* histogram */
/* A series resolved once, for a caller that updates the same label values for every request
 * (the server's request counter and duration, issue 17): no hash and lookup per update. It
 * lives as long as its family (until rh_metrics_free_all); NULL on bad label values. The
 * updates check and answer as rh_metric_add and rh_metric_observe do. */
typedef struct rh_metric_series rh_metric_series;
rh_metric_series *rh_metric_series_of(rh_metric *m, const char *const *values);
int rh_metric_series_add(rh_metric_series *s, double v);     /* counter, gauge */
int rh_metric_series_observe(rh_metric_series *s, double v); /* histogram */
/* Current value of a counter/gauge series (0 if never touched); for tests and /ready checks. */
double rh_metric_value(rh_metric *m, const char *const *values);

/* Read-only walks, for reports beside /metrics (the admin status page) that must agree with it.
 * each: fn once per series in creation order with its label values and value (a histogram's:
 * its count). buckets: a histogram series' upper bounds (without +Inf) in *bounds and up to max
 * cumulative counts in cum, the last being +Inf's (the count); returns how many bounds there
 * are, 0 when m is not a histogram or the series was never observed (cum untouched). */
typedef void (*rh_metric_visit_fn)(const char *const *values, double value, void *ud);
void rh_metric_each(const rh_metric *m, rh_metric_visit_fn fn, void *ud);
size_t rh_metric_buckets(const rh_metric *m, const char *const *values, const double **bounds,
                         unsigned long long *cum, size_t max);

/* Text exposition format 0.0.4 of every family; malloc'd, caller frees. */
char *rh_metrics_render(size_t *len);
void rh_metrics_free_all(void);

#endif
