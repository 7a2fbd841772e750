#include "redis/slot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* CRC16-CCITT as XMODEM has it (poly 0x1021, init 0), bit by bit: keys are short, and the
 * cluster specification's test vector ("123456789" -> 0x31C3) checks it. */
uint16_t rh_redis_crc16(const char *p, size_t n) {
  uint16_t crc = 0;
  for (size_t i = 0; i < n; i++) {
    crc ^= (uint16_t)((unsigned char)p[i] << 8);
    for (int b = 0; b < 8; b++) crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
  }
  return crc;
}

int rh_redis_key_slot(const char *key, size_t n) {
  const char *open = memchr(key, '{', n);
  if (open) {
    size_t rest = n - (size_t)(open - key) - 1;
    const char *close = memchr(open + 1, '}', rest);
    if (close && close > open + 1) return rh_redis_crc16(open + 1, (size_t)(close - open - 1)) % RH_REDIS_SLOTS;
  }
  return rh_redis_crc16(key, n) % RH_REDIS_SLOTS;
}

/* Where a command's keys are: argv[first], then every step-th up to last (0: first only;
 * -1: to the end; -2: all but the final argument, a timeout). first 0: no key. Special forms
 * (EVAL's numkeys, XREAD's STREAMS) are read by their own functions. */
typedef struct {
  const char *name;
  int first, last, step;
} key_spec;

enum { NUMKEYS = -1, STREAMS = -2 };

static const key_spec commands[] = {
  /* no key: any node answers */
  { "PING", 0, 0, 0 }, { "ECHO", 0, 0, 0 }, { "TIME", 0, 0, 0 }, { "INFO", 0, 0, 0 },
  { "PUBLISH", 0, 0, 0 }, { "SCRIPT", 0, 0, 0 }, { "CLUSTER", 0, 0, 0 }, { "COMMAND", 0, 0, 0 },
  /* strings and keys */
  { "GET", 1, 0, 1 }, { "SET", 1, 0, 1 }, { "SETEX", 1, 0, 1 }, { "PSETEX", 1, 0, 1 }, { "SETNX", 1, 0, 1 },
  { "GETSET", 1, 0, 1 }, { "GETDEL", 1, 0, 1 }, { "GETEX", 1, 0, 1 }, { "GETRANGE", 1, 0, 1 },
  { "APPEND", 1, 0, 1 }, { "STRLEN", 1, 0, 1 }, { "INCR", 1, 0, 1 }, { "INCRBY", 1, 0, 1 },
  { "DECR", 1, 0, 1 }, { "DECRBY", 1, 0, 1 }, { "EXPIRE", 1, 0, 1 }, { "PEXPIRE", 1, 0, 1 },
  { "EXPIREAT", 1, 0, 1 }, { "PEXPIREAT", 1, 0, 1 }, { "TTL", 1, 0, 1 }, { "PTTL", 1, 0, 1 },
  { "PERSIST", 1, 0, 1 }, { "TYPE", 1, 0, 1 }, { "DEL", 1, -1, 1 }, { "UNLINK", 1, -1, 1 },
  { "EXISTS", 1, -1, 1 }, { "MGET", 1, -1, 1 }, { "MSET", 1, -1, 2 },
  /* hashes */
  { "HGET", 1, 0, 1 }, { "HSET", 1, 0, 1 }, { "HSETNX", 1, 0, 1 }, { "HMGET", 1, 0, 1 }, { "HMSET", 1, 0, 1 },
  { "HDEL", 1, 0, 1 }, { "HGETALL", 1, 0, 1 }, { "HINCRBY", 1, 0, 1 }, { "HEXISTS", 1, 0, 1 },
  { "HKEYS", 1, 0, 1 }, { "HLEN", 1, 0, 1 },
  /* lists */
  { "LPUSH", 1, 0, 1 }, { "RPUSH", 1, 0, 1 }, { "LPOP", 1, 0, 1 }, { "RPOP", 1, 0, 1 }, { "LLEN", 1, 0, 1 },
  { "LRANGE", 1, 0, 1 }, { "LTRIM", 1, 0, 1 }, { "LINDEX", 1, 0, 1 }, { "LREM", 1, 0, 1 },
  { "BLPOP", 1, -2, 1 }, { "BRPOP", 1, -2, 1 },
  /* sets and sorted sets */
  { "SADD", 1, 0, 1 }, { "SREM", 1, 0, 1 }, { "SMEMBERS", 1, 0, 1 }, { "SISMEMBER", 1, 0, 1 },
  { "SCARD", 1, 0, 1 }, { "ZADD", 1, 0, 1 }, { "ZREM", 1, 0, 1 }, { "ZSCORE", 1, 0, 1 }, { "ZCARD", 1, 0, 1 },
  { "ZRANGE", 1, 0, 1 }, { "ZRANGEBYSCORE", 1, 0, 1 }, { "ZREVRANGEBYSCORE", 1, 0, 1 },
  { "ZREMRANGEBYSCORE", 1, 0, 1 }, { "ZINCRBY", 1, 0, 1 },
  /* streams */
  { "XADD", 1, 0, 1 }, { "XRANGE", 1, 0, 1 }, { "XREVRANGE", 1, 0, 1 }, { "XLEN", 1, 0, 1 },
  { "XTRIM", 1, 0, 1 }, { "XDEL", 1, 0, 1 }, { "XREAD", STREAMS, 0, 1 }, { "XREADGROUP", STREAMS, 0, 1 },
  /* scripts */
  { "EVAL", NUMKEYS, 0, 1 }, { "EVALSHA", NUMKEYS, 0, 1 }, { "EVAL_RO", NUMKEYS, 0, 1 },
  { "EVALSHA_RO", NUMKEYS, 0, 1 },
};

static const key_spec *find(const char *name, size_t n) {
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strlen(commands[i].name) == n && strncasecmp(commands[i].name, name, n) == 0) return &commands[i];
  return NULL;
}

/* Keys argv[from..to] every step-th: their one slot, or -1 (err says which differ). */
static int same_slot(const char **argv, const size_t *lens, int from, int to, int step, char *err, size_t errlen) {
  int slot = -1;
  for (int i = from; i <= to; i += step) {
    int s = rh_redis_key_slot(argv[i], lens[i]);
    if (slot >= 0 && s != slot) {
      snprintf(err, errlen, "CROSSSLOT keys '%.*s' and '%.*s' are in different slots (use a {hash tag})",
               (int)(lens[from] > 64 ? 64 : lens[from]), argv[from], (int)(lens[i] > 64 ? 64 : lens[i]), argv[i]);
      return -1;
    }
    slot = s;
  }
  return slot;
}

/* EVAL script numkeys key...: the keys are argv[3 .. 2+numkeys]; none: any node. */
static int numkeys_range(int argc, const char **argv, int *to) {
  if (argc < 3) return -1;
  char *end;
  long n = strtol(argv[2], &end, 10);
  if (*end || n < 0 || n > argc - 3) return -1;
  *to = 2 + (int)n;
  return 3;
}

/* XREAD [COUNT n] [BLOCK ms] STREAMS key... id...: the first half after STREAMS. */
static int streams_range(int argc, const char **argv, int *to) {
  for (int i = 1; i < argc; i++)
    if (strcasecmp(argv[i], "STREAMS") == 0) {
      int n = argc - i - 1;
      if (n < 2 || n % 2) return -1;
      *to = i + n / 2;
      return i + 1;
    }
  return -1;
}

/* first..to for the spec, or -1 when the arguments do not have its shape. */
static int key_range(const key_spec *k, int argc, const char **argv, int *to) {
  if (k->first == NUMKEYS) return numkeys_range(argc, argv, to);
  if (k->first == STREAMS) return streams_range(argc, argv, to);
  if (argc <= k->first) return -1;
  *to = k->last == 0 ? k->first : k->last == -1 ? argc - 1 : argc - 2;
  return *to < k->first ? -1 : k->first;
}

int rh_redis_command_slot(int argc, const char **argv, const size_t *lens, char *err, size_t errlen) {
  const key_spec *k = argc > 0 ? find(argv[0], lens[0]) : NULL;
  if (!k) {
    snprintf(err, errlen, "redis cluster: unknown command '%.*s' (which argument is its key is not known here)",
             argc > 0 ? (int)(lens[0] > 32 ? 32 : lens[0]) : 0, argc > 0 ? argv[0] : "");
    return -1;
  }
  if (k->first == 0) return RH_REDIS_ANY_SLOT;
  int to, from = key_range(k, argc, argv, &to);
  if (from < 0) {
    snprintf(err, errlen, "redis cluster: wrong arguments for '%s' (its keys cannot be found)", k->name);
    return -1;
  }
  if (to < from) return RH_REDIS_ANY_SLOT; /* EVAL with no keys */
  return same_slot(argv, lens, from, to, k->step, err, errlen);
}

/* Commands that wait inside Redis: where their timeout is (an index; LAST: the final argument;
 * BLOCK: after the word BLOCK, before STREAMS), in ms or s, and whether they tie up their
 * connection for everyone else (WAIT waits for this connection's own writes: it stays). */
#define LAST -1
#define BLOCK -2
typedef struct {
  const char *name;
  int arg, ms, own;
} waiter;

static const waiter waiters[] = {
  { "BLPOP", LAST, 0, 1 },  { "BRPOP", LAST, 0, 1 },  { "BZPOPMIN", LAST, 0, 1 },  { "BZPOPMAX", LAST, 0, 1 },
  { "BLMOVE", LAST, 0, 1 }, { "BRPOPLPUSH", LAST, 0, 1 }, { "BLMPOP", 1, 0, 1 },   { "BZMPOP", 1, 0, 1 },
  { "XREAD", BLOCK, 1, 1 }, { "XREADGROUP", BLOCK, 1, 1 }, { "WAIT", 2, 1, 0 },    { "WAITAOF", 3, 1, 0 },
};

/* lens NULL: the arguments are NUL-terminated (as hiredis allows). */
static const waiter *find_waiter(int argc, const char **argv, const size_t *lens) {
  size_t n = argc > 0 ? (lens ? lens[0] : strlen(argv[0])) : 0;
  for (size_t i = 0; argc > 0 && i < sizeof waiters / sizeof waiters[0]; i++)
    if (strlen(waiters[i].name) == n && strncasecmp(argv[0], waiters[i].name, n) == 0) return &waiters[i];
  return NULL;
}

/* The index of w's timeout in argv, or -1 (XREAD without BLOCK does not wait). */
static int timeout_arg(const waiter *w, int argc, const char **argv) {
  if (w->arg == LAST) return argc > 1 ? argc - 1 : -1;
  if (w->arg >= 0) return w->arg < argc ? w->arg : -1;
  for (int i = 1; i + 1 < argc && strcasecmp(argv[i], "STREAMS") != 0; i++)
    if (strcasecmp(argv[i], "BLOCK") == 0) return i + 1;
  return -1;
}

long long rh_redis_command_wait_ms(int argc, const char **argv, const size_t *lens) {
  const waiter *w = find_waiter(argc, argv, lens);
  int i = w ? timeout_arg(w, argc, argv) : -1;
  size_t n = i < 0 ? 0 : lens ? lens[i] : strlen(argv[i]);
  if (i < 0 || n > 30) return -1;
  char num[32], *end;
  memcpy(num, argv[i], n);
  num[n] = 0;
  double t = strtod(num, &end);
  if (end == num || *end || !(t >= 0 && t < 1e12)) return -1; /* refused by Redis at once */
  long long ms = (long long)(w->ms ? t : t * 1000);
  return ms == 0 && t > 0 ? 1 : ms;
}

int rh_redis_command_blocks(int argc, const char **argv, const size_t *lens) {
  const waiter *w = find_waiter(argc, argv, lens);
  return w && w->own && timeout_arg(w, argc, argv) >= 0;
}
