#include "log/log.h"
#include "log/text.h"
#include "buf/buf.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static rh_log_level min_level = RH_LOG_INFO;
static const char *level_names[] = { "debug", "info", "warn", "error" };

static int text_format, text_colour;

void rh_log_set_level(rh_log_level level) { min_level = level; }

int rh_log_set_format(const char *name) {
  if (strcasecmp(name, "json") && strcasecmp(name, "text")) return -1;
  text_format = strcasecmp(name, "text") == 0;
  text_colour = text_format && rh_log_text_colour();
  return 0;
}
int rh_log_enabled(rh_log_level level) { return level >= min_level; }

int rh_log_parse_level(const char *name, rh_log_level *out) {
  for (int i = 0; i < 4; i++)
    if (strcasecmp(name, level_names[i]) == 0) { *out = (rh_log_level)i; return 0; }
  if (strcasecmp(name, "warning") == 0) { *out = RH_LOG_WARN; return 0; }
  return -1;
}

void rh_json_escape(rh_buf *b, const char *s, size_t len) {
  static const char hex[] = "0123456789abcdef";
  rh_buf_reserve(b, len + 2);
  rh_buf_append(b, "\"", 1);
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      char e[2] = { '\\', (char)c };
      rh_buf_append(b, e, 2);
    } else if (c < 0x20 || c == 0x7f) {
      char e[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
      rh_buf_append(b, e, 6);
    } else {
      rh_buf_append(b, (const char *)&c, 1);
    }
  }
  rh_buf_append(b, "\"", 1);
}

/* A string value, with the secrets it carries (a URL's password, ?token=…) hidden. */
static void put_string(rh_buf *b, const char *s, size_t len) {
  if (!s) { rh_buf_puts(b, "null"); return; }
  if (!len) len = strlen(s);
  rh_buf clean = RH_BUF_INIT;
  if (rh_log_redact_value(s, len, &clean)) rh_json_escape(b, clean.data, clean.len);
  else rh_json_escape(b, s, len);
  rh_buf_free(&clean);
}

static void put_field(rh_buf *b, const rh_field *f) {
  size_t klen = strlen(f->key);
  rh_buf_append(b, ",", 1);
  rh_json_escape(b, f->key, klen);
  rh_buf_append(b, ":", 1);
  if (rh_log_is_secret_key(f->key, klen)) { rh_buf_puts(b, "\"[redacted]\""); return; }
  switch (f->type) {
  case RH_F_STR: put_string(b, f->str, f->len); break;
  case RH_F_INT: rh_buf_printf(b, "%lld", (long long)f->num); break;
  case RH_F_NUM:
    if (isfinite(f->num)) rh_buf_printf(b, "%.15g", f->num); /* 0.1+0.2 reads 0.3 */
    else rh_buf_puts(b, "null");
    break;
  case RH_F_BOOL: rh_buf_puts(b, f->num ? "true" : "false"); break;
  case RH_F_RAW: rh_buf_append(b, f->str, f->len ? f->len : strlen(f->str)); break;
  }
}

static void json_line(rh_buf *b, const struct timeval *tv, rh_log_level level, const char *event,
                      const rh_field *fields, size_t nfields) {
  struct tm tm;
  gmtime_r(&tv->tv_sec, &tm);
  char ts[40];
  size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(ts + n, sizeof ts - n, ".%03dZ", (int)(tv->tv_usec / 1000));
  rh_buf_printf(b, "{\"ts\":\"%s\",\"level\":\"%s\",\"event\":", ts, level_names[level]);
  rh_json_escape(b, event, strlen(event));
  for (size_t i = 0; i < nfields; i++) put_field(b, &fields[i]);
  rh_buf_append(b, "}\n", 2);
}

void rh_log(rh_log_level level, const char *event, const rh_field *fields, size_t nfields) {
  if (!rh_log_enabled(level)) return;
  struct timeval tv;
  gettimeofday(&tv, NULL);
  rh_buf b = RH_BUF_INIT;
  if (text_format) rh_log_text_line(&b, &tv, level, event, fields, nfields, text_colour);
  else json_line(&b, &tv, level, event, fields, nfields);
  /* one write per line so lines from several workers never interleave */
  ssize_t w = write(STDERR_FILENO, b.data, b.len);
  (void)w;
  rh_buf_free(&b);
}

#define TRACEBACK_MARK "\nstack traceback:"

size_t rh_log_message_len(const char *text) {
  const char *t = strstr(text, TRACEBACK_MARK);
  return t ? (size_t)(t - text) : strlen(text);
}

void rh_log_traceback(const char *event, const char *text) {
  const char *t = strstr(text, TRACEBACK_MARK);
  if (t) RH_LOG(RH_LOG_DEBUG, event, RH_STR("traceback", t + 1));
}

double rh_log_round(double x, int decimals) {
  /* a table, not pow(): every access-log line rounds (issue 17); pow for what it lacks */
  static const double scales[] = { 1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6 };
  int known = decimals >= 0 && decimals < (int)(sizeof scales / sizeof *scales);
  double scale = known ? scales[decimals] : pow(10, decimals);
  return round(x * scale) / scale;
}
