/* Unit tests for core/log: rh_log_is_secret_key (which keys get redacted), rh_log_redact_value
 * (secrets inside paths and URLs), rh_log_message_len and rh_log_round, and rh_json_escape (JSON
 * string literals), using the rh_buf of core/buf/buf.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf/buf.h"
#include "log/log.h"
#include "check.h"



static int secret(const char *key) { return rh_log_is_secret_key(key, strlen(key)); }

static void test_secret_keys(void) {
  const char *yes[] = {
    "authorization", "Authorization", "AUTHORIZATION", "proxy-authorization",
    "Cookie", "cookie", "set-cookie", "Set-Cookie",
    "x-api-key", "X-API-KEY", "api_key", "apikey", "ApiKey", "api-key",
    "client_key", "CLIENT_KEY", "x-key", "tls.key", "key", "KEY", "Key",
    "STYRA_TOKEN", "token", "access_token", "authToken", "refresh-token",
    "password", "PASSWORD", "db_password", "passwd",
    "secret", "client_secret", "signature", "x-signature", "credentials", "jwt",
    "private_key", "session", "session_id",
  };
  for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
    if (!secret(yes[i])) fprintf(stderr, "  (\"%s\" should be secret)\n", yes[i]);
    CHECK(secret(yes[i]));
  }

  const char *no[] = {
    "path", "monkey", "keyspace", "status", "method", "host", "duration_ms", "bytes",
    "event", "level", "monkey_count", "keys", "keyboard", "turkey", "hockey", "donkey_id",
    "user", "remote_addr", "content-type", "upstream", "", "ke", "k",
  };
  for (size_t i = 0; i < sizeof no / sizeof *no; i++) {
    if (secret(no[i])) fprintf(stderr, "  (\"%s\" should not be secret)\n", no[i]);
    CHECK(!secret(no[i]));
  }

  /* only the first len bytes count */
  CHECK(rh_log_is_secret_key("keyspace", 3) == 1);   /* "key" */
  CHECK(rh_log_is_secret_key("pathtoken", 4) == 0);  /* "path" */
  CHECK(rh_log_is_secret_key("tokenXYZ", 5) == 1);   /* "token" */
  CHECK(rh_log_is_secret_key("client_key_id", 10) == 1); /* "client_key" */
}

/* Keys longer than the function's 128-byte scratch buffer: a secret word past byte 127 must still
 * be found (the log line carries the whole key, so the value must be redacted). */
static void test_secret_long_keys(void) {
  char key[400];
  memset(key, 'x', 200);
  strcpy(key + 200, "_password");
  if (!secret(key)) fprintf(stderr, "  (a 209-byte key ending in \"_password\" is not secret)\n");
  CHECK(secret(key));

  memset(key, 'x', 200);
  strcpy(key + 200, "_key");
  if (!secret(key)) fprintf(stderr, "  (a 204-byte key ending in \"_key\" is not secret)\n");
  CHECK(secret(key));

  /* a secret word inside the first 127 bytes of a long key is found */
  strcpy(key, "authorization_");
  memset(key + 14, 'x', 300);
  key[314] = 0;
  CHECK(secret(key));

  /* a long key without secret words is not secret */
  memset(key, 'x', 300);
  key[300] = 0;
  CHECK(!secret(key));
}

/* Escapes s (of len bytes) into a fresh buffer and compares with want (a C string). */
static int escapes_to(const char *s, size_t len, const char *want) {
  rh_buf b = RH_BUF_INIT;
  rh_json_escape(&b, s, len);
  int ok = b.len == strlen(want) && memcmp(b.data, want, b.len) == 0;
  if (!ok) fprintf(stderr, "  (escaped to \"%.*s\", want \"%s\")\n", (int)b.len, b.data, want);
  rh_buf_free(&b);
  return ok;
}

#define ESC(s, want) escapes_to((s), sizeof(s) - 1, (want))

static void test_json_escape(void) {
  CHECK(ESC("", "\"\""));
  CHECK(ESC("plain text", "\"plain text\""));
  CHECK(ESC("say \"hi\"", "\"say \\\"hi\\\"\""));
  CHECK(ESC("a\\b", "\"a\\\\b\""));
  CHECK(ESC("\\\"", "\"\\\\\\\"\""));
  CHECK(ESC("\n", "\"\\u000a\""));
  CHECK(ESC("a\tb\r\n", "\"a\\u0009b\\u000d\\u000a\""));
  CHECK(ESC("\x01\x1f", "\"\\u0001\\u001f\""));
  CHECK(ESC("\x7f", "\"\\u007f\""));
  CHECK(ESC("\b\f", "\"\\u0008\\u000c\""));
  CHECK(ESC(" ~", "\" ~\"")); /* 0x20 and 0x7e are printable */
  CHECK(ESC("/path?q=1&x=<y>", "\"/path?q=1&x=<y>\""));
  /* an embedded NUL is escaped, not a terminator */
  CHECK(ESC("a\0b", "\"a\\u0000b\""));
  /* UTF-8 passes through untouched */
  CHECK(ESC("caf\xc3\xa9 \xe2\x82\xac", "\"caf\xc3\xa9 \xe2\x82\xac\""));
  /* only len bytes are read */
  CHECK(escapes_to("abcdef", 3, "\"abc\""));

  /* every control character becomes \u00XX with lower-case hex */
  for (int c = 0; c < 0x20; c++) {
    char in[1] = { (char)c }, want[16];
    snprintf(want, sizeof want, "\"\\u%04x\"", c);
    CHECK(escapes_to(in, 1, want));
  }

  /* escaping appends to what the buffer already holds */
  rh_buf b = RH_BUF_INIT;
  rh_buf_puts(&b, "{\"k\":");
  rh_json_escape(&b, "v\"", 2);
  rh_buf_append(&b, ",", 1);
  rh_json_escape(&b, "", 0);
  rh_buf_puts(&b, "}");
  const char *want = "{\"k\":\"v\\\"\",\"\"}";
  CHECK(b.len == strlen(want) && memcmp(b.data, want, b.len) == 0);
  rh_buf_free(&b);

  /* a long string through buffer growth */
  char big[5000];
  for (size_t i = 0; i < sizeof big; i++) big[i] = (i % 10 == 9) ? '"' : 'a';
  rh_buf b2 = RH_BUF_INIT;
  rh_json_escape(&b2, big, sizeof big);
  CHECK(b2.len == sizeof big + 500 + 2);
  CHECK(b2.data[0] == '"' && b2.data[b2.len - 1] == '"');
  CHECK(memcmp(b2.data + 1, "aaaaaaaaa\\\"aaaa", 15) == 0);
  rh_buf_free(&b2);
}

/* The secrets a value carries: a URL's password and secret-named query parameters. */
static const char *redacted(const char *in, rh_buf *b) {
  b->len = 0;
  if (!rh_log_redact_value(in, strlen(in), b)) return NULL;
  rh_buf_append(b, "", 1);
  return b->data;
}

static void test_redact_values(void) {
  rh_buf b = RH_BUF_INIT;
  static const char *cases[][2] = {
    { "/x?token=abc&page=2", "/x?token=[redacted]&page=2" },
    { "/x?a=1;api_key=k;b", "/x?a=1;api_key=[redacted];b" },
    { "/x?client_key=git#frag?token=t", "/x?client_key=[redacted]#frag?token=t" },
    { "https://u:pw@h:1/p?q=1", "https://u:[redacted]@h:1/p?q=1" },
    { "redis://:pw@h:6379/0", "redis://:[redacted]@h:6379/0" },
    { "http://h/?password=p&password=q", "http://h/?password=[redacted]&password=[redacted]" },
    { "/x?token", "/x?token" },
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    const char *got = redacted(cases[i][0], &b);
    if (!got || strcmp(got, cases[i][1])) fprintf(stderr, "  (%s -> %s)\n", cases[i][0], got ? got : "(unchanged)");
    CHECK(got && strcmp(got, cases[i][1]) == 0);
  }
  /* no URL, no query: left alone (a sentence with a '?' is no path) */
  const char *alone[] = { "/plain/path", "what? token=x", "http://u@h/p", "user:pw@host", "" };
  for (size_t i = 0; i < sizeof alone / sizeof *alone; i++) CHECK(redacted(alone[i], &b) == NULL);
  rh_buf_free(&b);
}

static void test_message_and_round(void) {
  const char *e = "app.lua:3: boom\nstack traceback:\n\t[C]: in function 'error'";
  CHECK(rh_log_message_len(e) == strlen("app.lua:3: boom"));
  CHECK(rh_log_message_len("two\nlines") == 9);
  CHECK(rh_log_round(3001.9999999999527, 2) == 3002.0);
  CHECK(rh_log_round(1.23456, 1) == 1.2);
}

int main(void) {
  test_redact_values();
  test_message_and_round();
  test_secret_keys();
  test_secret_long_keys();
  test_json_escape();
  if (failures) {
    fprintf(stderr, "test_log: %d check(s) failed\n", failures);
    return 1;
  }
  printf("test_log: ok\n");
  return 0;
}
