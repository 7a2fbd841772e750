/* metrics: families in registration order, each with its series in a small chained hash table
 * keyed by label values (plus an array in creation order, so output is stable).
 *
 * Histogram series keep per-bucket counts; the cumulative counts Prometheus wants are summed
 * at render time, which keeps observe() to one increment. Everything runs on the loop thread,
 * so there is no locking. */
#include "metrics/metrics.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf/buf.h"

typedef struct rh_metric_series series;
struct rh_metric_series {
  series *chain;
  const rh_metric *family;
  uint64_t hash;
  char **values;                 /* nlabels copies */
  double value;                  /* counter, gauge */
  double sum;                    /* histogram */
  unsigned long long count;
  unsigned long long *counts;    /* histogram: per bucket, not cumulative; +Inf is count */
};

struct rh_metric {
  rh_metric *next;               /* registration order */
  rh_metric_kind kind;
  char *name, *help;
  char **labels;
  size_t nlabels;
  double *bounds;                /* histogram upper bounds, ascending, without +Inf */
  size_t nbounds;
  series **list;                 /* creation order */
  size_t nseries, cap;
  series **table;
  size_t ntable;                 /* power of two */
};

static rh_metric *families_head, *families_tail;

static const double default_buckets[] = { .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10 };

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) abort(); /* like rh_buf: out of memory is not recoverable here */
  return p;
}

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size);
  if (!p) abort();
  return p;
}

static char *xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  return memcpy(xmalloc(n), s, n);
}

/* ---- names ---- */

static int is_alpha_(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int is_digit(int c) { return c >= '0' && c <= '9'; }

static int valid_metric_name(const char *s) {
  if (!s || !(is_alpha_(*s) || *s == ':')) return 0;
  for (s++; *s; s++)
    if (!(is_alpha_(*s) || is_digit(*s) || *s == ':')) return 0;
  return 1;
}

static int valid_label_name(const char *s) {
  if (!s || !is_alpha_(*s)) return 0;
  for (s++; *s; s++)
    if (!(is_alpha_(*s) || is_digit(*s))) return 0;
  return 1;
}

/* Why a label list is unusable, or NULL. "__" names belong to Prometheus itself, and `le` is
 * the bucket label a histogram adds. */
static const char *check_labels(rh_metric_kind kind, const char *const *labels, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (!valid_label_name(labels[i])) return "invalid label name";
    if (strncmp(labels[i], "__", 2) == 0) return "reserved label name";
    if (kind == RH_HISTOGRAM && strcmp(labels[i], "le") == 0) return "reserved label name";
    for (size_t j = 0; j < i; j++)
      if (strcmp(labels[i], labels[j]) == 0) return "duplicate label name";
  }
  return NULL;
}

/* Copies buckets into out (room for n), dropping a trailing +Inf since one is always rendered.
 * Returns the count kept, or (size_t)-1 when the bounds are not finite and strictly rising. */
static size_t normalize_buckets(const double *b, size_t n, double *out) {
  if (n && isinf(b[n - 1]) && b[n - 1] > 0) n--;
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(b[i]) || (i && !(b[i] > b[i - 1]))) return (size_t)-1;
    out[i] = b[i];
  }
  return n;
}

/* ---- series table ---- */

static uint64_t hash_values(const char *const *values, size_t n) {
  uint64_t h = 14695981039346656037ULL; /* FNV-1a, each value with its NUL as a separator */
  for (size_t i = 0; i < n; i++) {
    const unsigned char *p = (const unsigned char *)values[i];
    do {
      h ^= *p;
      h *= 1099511628211ULL;
    } while (*p++);
  }
  return h;
}

static int values_ok(const rh_metric *m, const char *const *values) {
  if (m->nlabels && !values) return 0;
  for (size_t i = 0; i < m->nlabels; i++)
    if (!values[i]) return 0;
  return 1;
}

static series *find_series(const rh_metric *m, const char *const *values, uint64_t h) {
  for (series *s = m->table[h & (m->ntable - 1)]; s; s = s->chain) {
    if (s->hash != h) continue;
    size_t i = 0;
    while (i < m->nlabels && strcmp(s->values[i], values[i]) == 0) i++;
    if (i == m->nlabels) return s;
  }
  return NULL;
}

static void table_insert(series **table, size_t ntable, series *s) {
  series **slot = &table[s->hash & (ntable - 1)];
  s->chain = *slot;
  *slot = s;
}

static void grow_table(rh_metric *m) {
  size_t n = m->ntable * 2;
  series **t = xcalloc(n, sizeof *t);
  for (size_t i = 0; i < m->nseries; i++) table_insert(t, n, m->list[i]);
  free(m->table);
  m->table = t;
  m->ntable = n;
}

static series *new_series(rh_metric *m, const char *const *values, uint64_t h) {
  series *s = xcalloc(1, sizeof *s);
  s->family = m;
  s->hash = h;
  s->values = xcalloc(m->nlabels, sizeof *s->values);
  for (size_t i = 0; i < m->nlabels; i++) s->values[i] = xstrdup(values[i]);
  if (m->kind == RH_HISTOGRAM) s->counts = xcalloc(m->nbounds, sizeof *s->counts);
  if (m->nseries == m->cap) {
    m->cap = m->cap ? m->cap * 2 : 8;
    m->list = realloc(m->list, m->cap * sizeof *m->list);
    if (!m->list) abort();
  }
  m->list[m->nseries++] = s;
  if (m->nseries > m->ntable) grow_table(m);
  else table_insert(m->table, m->ntable, s);
  return s;
}

static series *series_for(rh_metric *m, const char *const *values) {
  uint64_t h = hash_values(values, m->nlabels);
  series *s = find_series(m, values, h);
  return s ? s : new_series(m, values, h);
}

static void free_series(const rh_metric *m, series *s) {
  for (size_t i = 0; i < m->nlabels; i++) free(s->values[i]);
  free(s->values);
  free(s->counts);
  free(s);
}

/* ---- registry ---- */

rh_metric *rh_metric_find(const char *name) {
  for (rh_metric *m = families_head; m; m = m->next)
    if (strcmp(m->name, name) == 0) return m;
  return NULL;
}

rh_metric_kind rh_metric_kind_of(const rh_metric *m) { return m->kind; }
size_t rh_metric_nlabels(const rh_metric *m) { return m->nlabels; }

/* Why an existing family cannot be returned for this registration, or NULL if it matches. */
static const char *conflict(const rh_metric *m, rh_metric_kind kind, const char *const *labels,
                            size_t nlabels, const double *bounds, size_t nbounds) {
  if (m->kind != kind) return "metric already registered with another kind";
  if (m->nlabels != nlabels) return "metric already registered with other labels";
  for (size_t i = 0; i < nlabels; i++)
    if (strcmp(m->labels[i], labels[i]) != 0) return "metric already registered with other labels";
  if (kind != RH_HISTOGRAM) return NULL;
  if (m->nbounds != nbounds) return "metric already registered with other buckets";
  for (size_t i = 0; i < nbounds; i++)
    if (m->bounds[i] != bounds[i]) return "metric already registered with other buckets";
  return NULL;
}

static rh_metric *new_family(rh_metric_kind kind, const char *name, const char *help,
                             const char *const *labels, size_t nlabels, double *bounds,
                             size_t nbounds) {
  rh_metric *m = xcalloc(1, sizeof *m);
  m->kind = kind;
  m->name = xstrdup(name);
  m->help = xstrdup(help ? help : "");
  m->nlabels = nlabels;
  m->labels = xcalloc(nlabels, sizeof *m->labels);
  for (size_t i = 0; i < nlabels; i++) m->labels[i] = xstrdup(labels[i]);
  m->bounds = bounds; /* takes ownership */
  m->nbounds = nbounds;
  m->ntable = 8;
  m->table = xcalloc(m->ntable, sizeof *m->table);
  /* An unlabelled family has exactly one series: expose it at 0 from the start, so a scrape
   * sees the metric before the first event rather than a gap. */
  if (nlabels == 0) series_for(m, NULL);
  if (families_tail) families_tail->next = m; else families_head = m;
  families_tail = m;
  return m;
}

rh_metric *rh_metric_register(rh_metric_kind kind, const char *name, const char *help,
                              const char *const *labels, size_t nlabels,
                              const double *buckets, size_t nbuckets, const char **err) {
  const char *e = NULL;
  double *bounds = NULL;
  size_t nbounds = 0;
  if (kind != RH_COUNTER && kind != RH_GAUGE && kind != RH_HISTOGRAM) e = "invalid metric kind";
  else if (!valid_metric_name(name)) e = "invalid metric name";
  else if (nlabels && !labels) e = "invalid label name";
  else e = check_labels(kind, labels, nlabels);
  if (!e && kind == RH_HISTOGRAM) {
    if (!buckets || !nbuckets) {
      buckets = default_buckets;
      nbuckets = sizeof default_buckets / sizeof default_buckets[0];
    }
    bounds = xcalloc(nbuckets, sizeof *bounds);
    nbounds = normalize_buckets(buckets, nbuckets, bounds);
    if (nbounds == (size_t)-1) e = "histogram buckets must be finite and increasing";
  }
  rh_metric *m = e ? NULL : rh_metric_find(name);
  if (m) e = conflict(m, kind, labels, nlabels, bounds, nbounds);
  if (e || m) {
    free(bounds);
    if (e && err) *err = e;
    return e ? NULL : m;
  }
  return new_family(kind, name, help, labels, nlabels, bounds, nbounds);
}

/* ---- updates ---- */

/* Whether v may be added to a series of m: counters only go up (this rejects NaN too). */
static int addable(const rh_metric *m, double v) {
  return m->kind != RH_HISTOGRAM && (m->kind != RH_COUNTER || v >= 0);
}

int rh_metric_add(rh_metric *m, const char *const *values, double v) {
  if (!m || !values_ok(m, values) || !addable(m, v)) return -1;
  series_for(m, values)->value += v;
  return 0;
}

rh_metric_series *rh_metric_series_of(rh_metric *m, const char *const *values) {
  return m && values_ok(m, values) ? series_for(m, values) : NULL;
}

int rh_metric_series_add(rh_metric_series *s, double v) {
  if (!s || !addable(s->family, v)) return -1;
  s->value += v;
  return 0;
}

int rh_metric_set(rh_metric *m, const char *const *values, double v) {
  if (!m || m->kind != RH_GAUGE || !values_ok(m, values)) return -1;
  series_for(m, values)->value = v;
  return 0;
}

static void observe(series *s, double v) {
  const rh_metric *m = s->family;
  size_t i = 0;
  while (i < m->nbounds && v > m->bounds[i]) i++;
  if (i < m->nbounds) s->counts[i]++;
  s->count++;
  s->sum += v;
}

int rh_metric_observe(rh_metric *m, const char *const *values, double v) {
  if (!m || m->kind != RH_HISTOGRAM || !values_ok(m, values) || isnan(v)) return -1;
  observe(series_for(m, values), v);
  return 0;
}

int rh_metric_series_observe(rh_metric_series *s, double v) {
  if (!s || s->family->kind != RH_HISTOGRAM || isnan(v)) return -1;
  observe(s, v);
  return 0;
}

/* Histograms answer with their observation count. */
double rh_metric_value(rh_metric *m, const char *const *values) {
  if (!m || !values_ok(m, values)) return 0;
  series *s = find_series(m, values, hash_values(values, m->nlabels));
  if (!s) return 0;
  return m->kind == RH_HISTOGRAM ? (double)s->count : s->value;
}

/* ---- reading ---- */

void rh_metric_each(const rh_metric *m, rh_metric_visit_fn fn, void *ud) {
  for (size_t i = 0; m && i < m->nseries; i++) {
    const series *s = m->list[i];
    fn((const char *const *)s->values, m->kind == RH_HISTOGRAM ? (double)s->count : s->value, ud);
  }
}

size_t rh_metric_buckets(const rh_metric *m, const char *const *values, const double **bounds,
                         unsigned long long *cum, size_t max) {
  if (!m || m->kind != RH_HISTOGRAM || !values_ok(m, values)) return 0;
  const series *s = find_series(m, values, hash_values(values, m->nlabels));
  if (!s) return 0;
  unsigned long long c = 0;
  for (size_t i = 0; i < m->nbounds && i < max; i++) cum[i] = c += s->counts[i];
  if (m->nbounds < max) cum[m->nbounds] = s->count;
  *bounds = m->bounds;
  return m->nbounds;
}

/* ---- rendering ---- */

/* Shortest of %.15g/%.17g that reads back exactly: integers print as integers and 0.1 as 0.1,
 * without losing precision on values that need all 17 digits. */
static void fmt_num(char out[32], double v) {
  if (isnan(v)) { strcpy(out, "NaN"); return; }
  if (isinf(v)) { strcpy(out, v > 0 ? "+Inf" : "-Inf"); return; }
  if (v == 0) { strcpy(out, "0"); return; } /* not "-0" */
  snprintf(out, 32, "%.15g", v);
  if (strtod(out, NULL) != v) snprintf(out, 32, "%.17g", v);
}

static void put_num(rh_buf *b, double v) {
  char tmp[32];
  fmt_num(tmp, v);
  rh_buf_puts(b, tmp);
}

/* quote: label values also escape '"'; HELP text escapes only backslash and newline. */
static void put_escaped(rh_buf *b, const char *s, int quote) {
  for (; *s; s++) {
    if (*s == '\\') rh_buf_puts(b, "\\\\");
    else if (*s == '\n') rh_buf_puts(b, "\\n");
    else if (quote && *s == '"') rh_buf_puts(b, "\\\"");
    else rh_buf_append(b, s, 1);
  }
}

static void put_label(rh_buf *b, int *first, const char *name, const char *value) {
  rh_buf_puts(b, *first ? "{" : ",");
  *first = 0;
  rh_buf_puts(b, name);
  rh_buf_puts(b, "=\"");
  put_escaped(b, value, 1);
  rh_buf_puts(b, "\"");
}

/* `name{labels[,le="…"]} ` with the braces left out when there are no labels at all. */
static void put_sample_head(rh_buf *b, const rh_metric *m, const char *suffix, const series *s,
                            const char *le) {
  int first = 1;
  rh_buf_puts(b, m->name);
  rh_buf_puts(b, suffix);
  for (size_t i = 0; i < m->nlabels; i++) put_label(b, &first, m->labels[i], s->values[i]);
  if (le) put_label(b, &first, "le", le);
  rh_buf_puts(b, first ? " " : "} ");
}

static void render_histogram(rh_buf *b, const rh_metric *m, const series *s) {
  char le[32];
  unsigned long long cum = 0;
  for (size_t i = 0; i < m->nbounds; i++) {
    cum += s->counts[i];
    fmt_num(le, m->bounds[i]);
    put_sample_head(b, m, "_bucket", s, le);
    rh_buf_printf(b, "%llu\n", cum);
  }
  put_sample_head(b, m, "_bucket", s, "+Inf");
  rh_buf_printf(b, "%llu\n", s->count);
  put_sample_head(b, m, "_sum", s, NULL);
  put_num(b, s->sum);
  rh_buf_puts(b, "\n");
  put_sample_head(b, m, "_count", s, NULL);
  rh_buf_printf(b, "%llu\n", s->count);
}

static const char *kind_name(rh_metric_kind k) {
  return k == RH_COUNTER ? "counter" : k == RH_GAUGE ? "gauge" : "histogram";
}

static void render_family(rh_buf *b, const rh_metric *m) {
  if (*m->help) {
    rh_buf_printf(b, "# HELP %s ", m->name);
    put_escaped(b, m->help, 0);
    rh_buf_puts(b, "\n");
  }
  rh_buf_printf(b, "# TYPE %s %s\n", m->name, kind_name(m->kind));
  for (size_t i = 0; i < m->nseries; i++) {
    const series *s = m->list[i];
    if (m->kind == RH_HISTOGRAM) {
      render_histogram(b, m, s);
      continue;
    }
    put_sample_head(b, m, "", s, NULL);
    put_num(b, s->value);
    rh_buf_puts(b, "\n");
  }
}

char *rh_metrics_render(size_t *len) {
  rh_buf b = RH_BUF_INIT;
  for (const rh_metric *m = families_head; m; m = m->next) render_family(&b, m);
  rh_buf_reserve(&b, 1); /* NUL-terminate, and never hand back NULL for an empty registry */
  b.data[b.len] = 0;
  if (len) *len = b.len;
  return b.data;
}

void rh_metrics_free_all(void) {
  rh_metric *m = families_head;
  while (m) {
    rh_metric *next = m->next;
    for (size_t i = 0; i < m->nseries; i++) free_series(m, m->list[i]);
    for (size_t i = 0; i < m->nlabels; i++) free(m->labels[i]);
    free(m->labels);
    free(m->list);
    free(m->table);
    free(m->bounds);
    free(m->name);
    free(m->help);
    free(m);
    m = next;
  }
  families_head = families_tail = NULL;
}
