/* --log-format text: one readable line per event for people at a terminal,
 *   14:02:03.123 INFO  access method=GET path=/x status=200 ms=1.2
 * with the same fields, the same redaction and the same one write per line as the JSON. Values
 * are bare unless they hold a space, a quote, '=' or a control byte: then JSON-quoted, so that a
 * line stays one line. Colour only on a terminal (and never with NO_COLOR set). */
#include "log/text.h"
#include "buf/buf.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *names[] = { "DEBUG", "INFO ", "WARN ", "ERROR" };
static const char *colours[] = { "\033[2m", "\033[32m", "\033[33m", "\033[1;31m" };
#define DIM "\033[2m"
#define RESET "\033[0m"

int rh_log_text_colour(void) {
  const char *no = getenv("NO_COLOR");
  return isatty(STDERR_FILENO) && !(no && *no);
}

static int needs_quotes(const char *s, size_t len) {
  if (!len) return 1;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c <= ' ' || c == '"' || c == '=' || c == 0x7f) return 1;
  }
  return 0;
}

static void put_text(rh_buf *b, const char *s, size_t len) {
  rh_buf clean = RH_BUF_INIT;
  if (rh_log_redact_value(s, len, &clean)) { s = clean.data; len = clean.len; }
  if (needs_quotes(s, len)) rh_json_escape(b, s, len);
  else rh_buf_append(b, s, len);
  rh_buf_free(&clean);
}

static void put_value(rh_buf *b, const rh_field *f) {
  if (rh_log_is_secret_key(f->key, strlen(f->key))) { rh_buf_puts(b, "[redacted]"); return; }
  switch (f->type) {
  case RH_F_STR:
    if (!f->str) rh_buf_puts(b, "-");
    else put_text(b, f->str, f->len ? f->len : strlen(f->str));
    break;
  case RH_F_INT: rh_buf_printf(b, "%lld", (long long)f->num); break;
  case RH_F_NUM:
    if (isfinite(f->num)) rh_buf_printf(b, "%.15g", f->num);
    else rh_buf_puts(b, "-");
    break;
  case RH_F_BOOL: rh_buf_puts(b, f->num ? "true" : "false"); break;
  case RH_F_RAW: rh_buf_append(b, f->str, f->len ? f->len : strlen(f->str)); break;
  }
}

void rh_log_text_line(rh_buf *b, const struct timeval *tv, rh_log_level level, const char *event,
                      const rh_field *fields, size_t n, int colour) {
  struct tm tm;
  localtime_r(&tv->tv_sec, &tm);
  char ts[16];
  strftime(ts, sizeof ts, "%H:%M:%S", &tm);
  rh_buf_printf(b, "%s.%03d %s%s%s %s", ts, (int)(tv->tv_usec / 1000), colour ? colours[level] : "",
                names[level], colour ? RESET : "", event);
  for (size_t i = 0; i < n; i++) {
    rh_buf_printf(b, colour ? " " DIM "%s=" RESET : " %s=", fields[i].key);
    put_value(b, &fields[i]);
  }
  rh_buf_append(b, "\n", 1);
}
