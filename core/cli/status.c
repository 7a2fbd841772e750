/* status: /status.json from the metrics registry, a ring of samples for the chart, and the
 * script's own panels. Runs on the loop thread only, like the registry. */
#include "cli/status.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log/log.h"
#include "lua/gen.h"
#include "metrics/metrics.h"
#include "net/pool.h"

#define MAX_BUCKETS 24

/* Cumulative counters at one moment: the chart's points are the differences of neighbours. */
typedef struct {
  double t;                            /* unix seconds */
  double cls[5];                       /* requests answered, by status class 1xx..5xx */
  double rejected;
  double conns;
  unsigned long long cum[MAX_BUCKETS + 1]; /* request duration buckets, +Inf last */
} sample;

typedef struct {
  char name[32];
  char addr[300];                      /* as configured, with the port actually bound */
  rh_http_server *srv;
} listener;

static struct {
  int running;
  uv_timer_t timer;
  double started;
  listener ls[RH_MAX_LISTENERS + 2];
  int nls;
  sample ring[RH_STATUS_SAMPLES];
  size_t next, n;                      /* next slot to write; samples held */
  double reloads, failures;            /* as last seen, to tell when a reload happened */
  double reload_at;                    /* 0: none since start */
  int reload_ok;
} S;

static double wall_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double value_of(const char *name) {
  rh_metric *m = rh_metric_find(name);
  return m && rh_metric_nlabels(m) == 0 ? rh_metric_value(m, NULL) : 0;
}

/* ---- reading the registry ---- */

static void add_class(const char *const *values, double v, void *ud) {
  double *cls = ud;
  int c = values[0][0] - '0';
  if (c >= 1 && c <= 5) cls[c - 1] += v;
}

static void add_all(const char *const *values, double v, void *ud) {
  (void)values;
  *(double *)ud += v;
}

static double family_total(const char *name) {
  double sum = 0;
  rh_metric_each(rh_metric_find(name), add_all, &sum);
  return sum;
}

/* Bounds of the duration histogram (NULL when nothing was observed yet). */
static const double *duration_buckets(unsigned long long *cum, size_t *nb) {
  const double *bounds = NULL;
  memset(cum, 0, (MAX_BUCKETS + 1) * sizeof *cum);
  *nb = rh_metric_buckets(rh_metric_find("relayhost_http_request_duration_seconds"), NULL, &bounds, cum,
                          MAX_BUCKETS + 1);
  if (*nb > MAX_BUCKETS) *nb = 0; /* more bounds than we keep: no percentiles rather than wrong ones */
  return *nb ? bounds : NULL;
}

static void take(sample *s) {
  size_t nb;
  memset(s, 0, sizeof *s);
  s->t = wall_now();
  rh_metric_each(rh_metric_find("relayhost_http_requests_total"), add_class, s->cls);
  s->rejected = family_total("relayhost_http_rejected_total");
  s->conns = value_of("relayhost_http_connections");
  duration_buckets(s->cum, &nb);
}

/* A reload is seen as one of its two counters moving; its time is when we noticed. */
static void watch_reloads(void) {
  double ok = value_of("relayhost_reloads_total"), failed = value_of("relayhost_reload_failures_total");
  if (ok == S.reloads && failed == S.failures) return;
  S.reload_ok = failed == S.failures;
  S.reload_at = wall_now();
  S.reloads = ok;
  S.failures = failed;
}

static void on_tick(uv_timer_t *t) {
  (void)t;
  watch_reloads();
  take(&S.ring[S.next]);
  S.next = (S.next + 1) % RH_STATUS_SAMPLES;
  if (S.n < RH_STATUS_SAMPLES) S.n++;
}

/* ---- lifecycle ---- */

static void add_listener(const char *name, const char *configured, rh_http_server *srv) {
  listener *l = &S.ls[S.nls++];
  snprintf(l->name, sizeof l->name, "%s", name);
  snprintf(l->addr, sizeof l->addr, "%s", configured);
  char *colon = strrchr(l->addr, ':');
  if (colon) snprintf(colon + 1, sizeof l->addr - (size_t)(colon + 1 - l->addr), "%d", rh_http_server_port(srv));
  l->srv = srv;
}

void rh_status_start(uv_loop_t *loop, const rh_host_settings *s, rh_http_server *main,
                     rh_http_server *const *extra, rh_http_server *admin) {
  S.nls = 0;
  add_listener("main", s->listen, main);
  for (int i = 0; i < s->nlisteners; i++) add_listener(s->listeners[i].name, s->listeners[i].listen, extra[i]);
  add_listener("admin", s->admin_listen, admin);
  S.started = wall_now();
  S.reloads = value_of("relayhost_reloads_total");
  S.failures = value_of("relayhost_reload_failures_total");
  uv_timer_init(loop, &S.timer);
  uv_timer_start(&S.timer, on_tick, 0, RH_STATUS_INTERVAL * 1000);
  uv_unref((uv_handle_t *)&S.timer); /* sampling never keeps the process alive */
  S.running = 1;
}

void rh_status_stop(void) {
  if (!S.running) return;
  S.running = 0;
  uv_close((uv_handle_t *)&S.timer, NULL);
}

/* ---- JSON ----
 * Every member is written followed by a comma; closing an object or array drops the last one. */

static void put_key(rh_buf *b, const char *k) {
  rh_json_escape(b, k, strlen(k));
  rh_buf_puts(b, ":");
}

static void put_field(rh_buf *b, const char *k, double v) {
  put_key(b, k);
  if (!isfinite(v)) rh_buf_puts(b, "null,");
  else rh_buf_printf(b, "%.15g,", v);
}

static void put_str(rh_buf *b, const char *k, const char *v) {
  put_key(b, k);
  rh_json_escape(b, v, strlen(v));
  rh_buf_puts(b, ",");
}

/* `"k":{` or `"k":[` (no key when k is NULL: an array's element). */
static void begin(rh_buf *b, const char *k, char c) {
  if (k) put_key(b, k);
  rh_buf_append(b, &c, 1);
}

static void end(rh_buf *b, char c) {
  if (b->len && b->data[b->len - 1] == ',') b->len--;
  rh_buf_append(b, &c, 1);
  rh_buf_puts(b, ",");
}

static void put_series(const char *const *values, double v, void *ud) { put_field(ud, values[0], v); }

/* {"label value": n, …} of a one-label family ({} when it was never registered). */
static void put_by_label(rh_buf *b, const char *k, const char *family) {
  rh_metric *m = rh_metric_find(family);
  begin(b, k, '{');
  if (m && rh_metric_nlabels(m) == 1) rh_metric_each(m, put_series, b);
  end(b, '}');
}

/* Prometheus' histogram_quantile: linear within the bucket the rank falls in; the highest
 * finite bound when it falls in +Inf. Seconds, or NaN without observations. */
static double quantile(double q, const double *bounds, size_t nb, const unsigned long long *cum) {
  if (!nb || !cum[nb]) return NAN;
  double rank = q * (double)cum[nb];
  for (size_t i = 0; i < nb; i++) {
    if ((double)cum[i] < rank) continue;
    double lo = i ? bounds[i - 1] : 0, prev = i ? (double)cum[i - 1] : 0;
    return lo + (bounds[i] - lo) * (rank - prev) / ((double)cum[i] - prev);
  }
  return bounds[nb - 1];
}

static void put_percentiles(rh_buf *b, const double *bounds, size_t nb, const unsigned long long *cum) {
  put_field(b, "count", nb ? (double)cum[nb] : 0);
  put_field(b, "p50", quantile(0.5, bounds, nb, cum) * 1000);
  put_field(b, "p90", quantile(0.9, bounds, nb, cum) * 1000);
  put_field(b, "p99", quantile(0.99, bounds, nb, cum) * 1000);
}

/* The held samples, oldest first. */
static const sample *held(size_t i) { return &S.ring[(S.next + RH_STATUS_SAMPLES - S.n + i) % RH_STATUS_SAMPLES]; }

/* The sample about a minute old (the oldest held when younger), or NULL. */
static const sample *minute_ago(double now) {
  const sample *best = NULL;
  for (size_t i = 0; i < S.n; i++)
    if (!best || held(i)->t <= now - 60) best = held(i);
  return best;
}

static void put_latency(rh_buf *b) {
  unsigned long long cum[MAX_BUCKETS + 1], recent[MAX_BUCKETS + 1];
  size_t nb;
  const double *bounds = duration_buckets(cum, &nb);
  const sample *old = minute_ago(wall_now());
  for (size_t i = 0; i <= nb; i++) recent[i] = cum[i] - (old ? old->cum[i] : 0);
  begin(b, "latency_ms", '{');
  put_percentiles(b, bounds, nb, cum);
  begin(b, "last_minute", '{');
  put_field(b, "seconds", old ? wall_now() - old->t : 0);
  put_percentiles(b, bounds, nb, recent);
  end(b, '}');
  end(b, '}');
}

static void put_requests(rh_buf *b) {
  static const char *names[] = { "1xx", "2xx", "3xx", "4xx", "5xx" };
  sample now;
  take(&now);
  begin(b, "requests", '{');
  put_field(b, "total", now.cls[0] + now.cls[1] + now.cls[2] + now.cls[3] + now.cls[4]);
  begin(b, "classes", '{');
  for (int i = 0; i < 5; i++) put_field(b, names[i], now.cls[i]);
  end(b, '}');
  put_by_label(b, "codes", "relayhost_http_requests_total");
  put_field(b, "rejected", now.rejected);
  put_by_label(b, "rejected_by", "relayhost_http_rejected_total");
  end(b, '}');
}

static void put_listeners(rh_buf *b) {
  begin(b, "listeners", '[');
  for (int i = 0; i < S.nls; i++) {
    begin(b, NULL, '{');
    put_str(b, "name", S.ls[i].name);
    put_str(b, "address", S.ls[i].addr);
    put_field(b, "connections", (double)rh_http_server_connections(S.ls[i].srv));
    end(b, '}');
  }
  end(b, ']');
}

static void put_lua(rh_buf *b) {
  rh_gen *g = rh_gen_current();
  begin(b, "lua", '{');
  put_field(b, "generation", g ? rh_gen_id(g) : NAN);
  put_field(b, "generations", value_of("relayhost_generations"));
  put_field(b, "tasks", value_of("relayhost_lua_tasks"));
  put_field(b, "handler_errors", value_of("relayhost_handler_errors_total"));
  put_field(b, "reloads", value_of("relayhost_reloads_total"));
  put_field(b, "reload_failures", value_of("relayhost_reload_failures_total"));
  put_field(b, "last_reload_seconds", value_of("relayhost_last_reload_seconds"));
  if (S.reload_at) {
    begin(b, "last_reload", '{');
    put_str(b, "outcome", S.reload_ok ? "ok" : "failed");
    put_field(b, "at", S.reload_at);
    end(b, '}');
  } else {
    rh_buf_puts(b, "\"last_reload\":null,");
  }
  end(b, '}');
}

static void put_pool(const char *key, size_t idle, void *ud) { put_field(ud, key, (double)idle); }

static void put_upstreams(rh_buf *b) {
  begin(b, "upstreams", '{');
  put_field(b, "idle_pooled", (double)rh_pool_idle());
  begin(b, "idle_by_upstream", '{'); /* the pool's key: host:port, and how TLS is verified */
  rh_pool_each(put_pool, b);
  end(b, '}');
  put_field(b, "retries", value_of("relayhost_proxy_retries_total"));
  put_by_label(b, "errors", "relayhost_proxy_upstream_errors_total");
  put_by_label(b, "taken_out", "relayhost_proxy_upstream_ejections_total"); /* passive health */
  put_by_label(b, "tunnels_closed", "relayhost_tunnel_closed_total");
  end(b, '}');
}

/* [[t, 1xx, 2xx, 3xx, 4xx, 5xx, rejected, connections], …] oldest first, cumulative. */
static void put_history(rh_buf *b) {
  begin(b, "history", '{');
  put_field(b, "interval", RH_STATUS_INTERVAL);
  begin(b, "samples", '[');
  for (size_t i = 0; i < S.n; i++) {
    const sample *s = held(i);
    rh_buf_printf(b, "[%.3f,%.15g,%.15g,%.15g,%.15g,%.15g,%.15g,%.15g],", s->t, s->cls[0], s->cls[1],
                  s->cls[2], s->cls[3], s->cls[4], s->rejected, s->conns);
  }
  end(b, ']');
  end(b, '}');
}

/* The script's panels: relay.status_json() of the current generation (init.lua), a JSON array
 * text. Called outside any task: a hook cannot wait, and its error becomes the panel's. */
static void put_panels(rh_buf *b) {
  rh_gen *g = rh_gen_current();
  size_t n = 0;
  const char *json = NULL;
  lua_State *L = g ? g->L : NULL;
  int top = L ? lua_gettop(L) : 0;
  if (L) {
    lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
    lua_getfield(L, -1, "relay");
    if (lua_istable(L, -1)) lua_getfield(L, -1, "status_json");
    if (lua_isfunction(L, -1) && lua_pcall(L, 0, 1, 0) == 0) json = lua_tolstring(L, -1, &n);
  }
  put_key(b, "panels");
  if (json) rh_buf_append(b, json, n);
  else rh_buf_puts(b, "[]");
  rh_buf_puts(b, ",");
  if (L) lua_settop(L, top);
}

void rh_status_json(rh_buf *b) {
  double now = wall_now();
  watch_reloads();
  rh_buf_puts(b, "{");
  put_str(b, "version", RELAYHOST_VERSION);
  put_field(b, "pid", (double)getpid());
  put_field(b, "now", now);
  put_field(b, "uptime", now - S.started);
  put_listeners(b);
  put_requests(b);
  put_latency(b);
  put_field(b, "connections", value_of("relayhost_http_connections"));
  put_by_label(b, "websockets", "relayhost_websockets_open");
  put_lua(b);
  put_upstreams(b);
  put_history(b);
  put_panels(b);
  end(b, '}');
  b->len--; /* the comma end() puts after a member: the document is none */
}
