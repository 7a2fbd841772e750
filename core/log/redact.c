/* The one redaction rule of every log line: a value whose name names a secret is hidden, and so
 * is a secret carried inside a value: the query parameters with such names in a path or URL
 * (?token=…, ?client_key=…) and a URL's password (https://user:…@host). */
#include "log/log.h"
#include "buf/buf.h"

#include <stdlib.h>
#include <string.h>

/* Substrings that mark a key as secret wherever they appear in it (x-api-key, authToken, …). */
static const char *secret_words[] = { "authorization", "cookie", "token", "secret", "password",
                                      "passwd", "signature", "apikey", "api_key", "api-key",
                                      "credential", "jwt", "private", "session" };

static int secret_in(const char *low, size_t len) {
  for (size_t i = 0; i < sizeof secret_words / sizeof *secret_words; i++)
    if (strstr(low, secret_words[i])) return 1;
  /* "key" alone or as a suffix (client_key, x-key) but not e.g. "keyspace" or "monkey_count" */
  if (strcmp(low, "key") == 0) return 1;
  return len > 3 && strcmp(low + len - 3, "key") == 0 && strchr("_-.", low[len - 4]);
}

int rh_log_is_secret_key(const char *key, size_t len) {
  char small[128];
  char *low = len < sizeof small ? small : malloc(len + 1);
  if (!low) abort();
  for (size_t i = 0; i < len; i++) low[i] = (char)((key[i] >= 'A' && key[i] <= 'Z') ? key[i] + 32 : key[i]);
  low[len] = 0;
  int secret = secret_in(low, len);
  if (low != small) free(low);
  return secret;
}

static const char REDACTED[] = "[redacted]";

/* name=value pairs from s[i] to the end or '#': values of secret names replaced. */
static void redact_query(rh_buf *out, const char *s, size_t i, size_t len) {
  while (i < len && s[i] != '#') {
    size_t end = i;
    while (end < len && s[end] != '&' && s[end] != ';' && s[end] != '#') end++;
    const char *eq = memchr(s + i, '=', end - i);
    if (eq && rh_log_is_secret_key(s + i, (size_t)(eq - s - i))) {
      rh_buf_append(out, s + i, (size_t)(eq - s - i) + 1);
      rh_buf_puts(out, REDACTED);
    } else {
      rh_buf_append(out, s + i, end - i);
    }
    i = end;
    if (i < len && s[i] != '#') rh_buf_append(out, s + i++, 1);
  }
  rh_buf_append(out, s + i, len - i);
}

/* Where a URL's password starts and ends (user:PASSWORD@host), or 0. */
static int password_at(const char *s, size_t len, size_t *from, size_t *to) {
  const char *sep = len > 3 ? memmem(s, len, "://", 3) : NULL;
  if (!sep) return 0;
  size_t a = (size_t)(sep - s) + 3, e = a;
  while (e < len && !strchr("/?#", s[e])) e++;
  const char *at = memchr(s + a, '@', e - a);
  const char *colon = at ? memchr(s + a, ':', (size_t)(at - s) - a) : NULL;
  if (!colon) return 0;
  *from = (size_t)(colon - s) + 1;
  *to = (size_t)(at - s);
  return 1;
}

int rh_log_redact_value(const char *s, size_t len, rh_buf *out) {
  size_t from = 0, to = 0;
  int pw = password_at(s, len, &from, &to);
  const char *q = memchr(s, '?', len);
  int url_like = pw || (len && s[0] == '/') || memmem(s, len, "://", 3);
  if (!pw && !(q && url_like)) return 0;
  size_t upto = q ? (size_t)(q - s) + 1 : len;
  if (pw) {
    rh_buf_append(out, s, from);
    rh_buf_puts(out, REDACTED);
    rh_buf_append(out, s + to, upto - to);
  } else {
    rh_buf_append(out, s, upto);
  }
  if (q) redact_query(out, s, upto, len);
  return 1;
}
