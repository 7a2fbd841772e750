/* log: one JSON object per line on stderr (or one readable line: --log-format text).
 *
 * Every line carries ts, level and event; callers add fields as key/value pairs. Values of keys
 * that name secrets (authorization, cookie, token, key, secret, password, signature, …) are
 * replaced by "[redacted]" here, in the one place every log line passes through. */
#ifndef RH_LOG_H
#define RH_LOG_H

#include <stddef.h>

typedef enum { RH_LOG_DEBUG, RH_LOG_INFO, RH_LOG_WARN, RH_LOG_ERROR } rh_log_level;

typedef enum { RH_F_STR, RH_F_INT, RH_F_NUM, RH_F_BOOL, RH_F_RAW } rh_field_type;

/* One field of a log line. RH_F_RAW is already-encoded JSON (used by the Lua bridge). */
typedef struct {
  const char *key;
  rh_field_type type;
  const char *str;
  size_t len;       /* for RH_F_STR/RH_F_RAW; 0 means strlen(str) */
  double num;
} rh_field;

#define RH_STR(k, v) ((rh_field){ .key = (k), .type = RH_F_STR, .str = (v) })
#define RH_STRN(k, v, n) ((rh_field){ .key = (k), .type = RH_F_STR, .str = (v), .len = (n) })
#define RH_INT(k, v) ((rh_field){ .key = (k), .type = RH_F_INT, .num = (double)(v) })
#define RH_NUM(k, v) ((rh_field){ .key = (k), .type = RH_F_NUM, .num = (v) })
#define RH_BOOL(k, v) ((rh_field){ .key = (k), .type = RH_F_BOOL, .num = (v) ? 1 : 0 })

void rh_log_set_level(rh_log_level level);
int rh_log_parse_level(const char *name, rh_log_level *out); /* 0 ok, -1 unknown name */
int rh_log_enabled(rh_log_level level);
/* "json" (the default: one object per line) or "text" (log/text.h); -1 for another name. */
int rh_log_set_format(const char *name);

/* Writes one line; nfields entries of fields. */
void rh_log(rh_log_level level, const char *event, const rh_field *fields, size_t nfields);

#define RH_LOG(level, event, ...)                                                              \
  do {                                                                                          \
    if (rh_log_enabled(level)) {                                                                \
      const rh_field rh__f[] = { RH_STR("_", NULL), __VA_ARGS__ };                              \
      rh_log((level), (event), rh__f + 1, sizeof rh__f / sizeof rh__f[0] - 1);                  \
    }                                                                                           \
  } while (0)
#define RH_LOG0(level, event) rh_log((level), (event), NULL, 0)

/* 1 when a field called `key` must never reach a log in clear (case-insensitive). */
int rh_log_is_secret_key(const char *key, size_t len);

/* When s (a path or URL) carries a secret (a query parameter whose name is secret, a URL's
 * password), writes a copy with it replaced by [redacted] to out and returns 1; else 0. */
struct rh_buf;
int rh_log_redact_value(const char *s, size_t len, struct rh_buf *out);

/* A failure's text may end in a Lua traceback ("\nstack traceback:…"): the length of the
 * message before it. Operators read the message; rh_log_traceback logs the rest at debug. */
size_t rh_log_message_len(const char *text);
void rh_log_traceback(const char *event, const char *text);

/* x rounded to `decimals` places: a duration reads 1.25, not 1.2499999999999. */
double rh_log_round(double x, int decimals);

/* Appends s as a JSON string literal (with quotes) to a growing buffer. */
void rh_json_escape(struct rh_buf *b, const char *s, size_t len);

#endif
