/* Unit tests for rh_redis_command_wait_ms (core/redis/slot.c): how long a command may wait
 * inside Redis by its own timeout, which the reply timeout (core/redis/redis.c) adds to. */
#include <string.h>

#include "redis/slot.h"
#include "check.h"

static long long wait_of(int argc, const char **argv) {
  size_t lens[16];
  for (int i = 0; i < argc; i++) lens[i] = strlen(argv[i]);
  return rh_redis_command_wait_ms(argc, argv, lens);
}
#define WAIT(...) wait_of(sizeof((const char *[]){ __VA_ARGS__ }) / sizeof(char *), (const char *[]){ __VA_ARGS__ })

static void waits(void) {
  test_name = "wait_ms";
  CHECK(WAIT("GET", "k") == -1);
  CHECK(WAIT("blpop", "a", "b", "5") == 5000);
  CHECK(WAIT("BRPOP", "a", "0.25") == 250);
  CHECK(WAIT("BLPOP", "a", "0") == 0); /* for ever */
  CHECK(WAIT("BLMOVE", "a", "b", "LEFT", "RIGHT", "2") == 2000);
  CHECK(WAIT("BLMPOP", "1.5", "1", "a", "LEFT") == 1500);
  CHECK(WAIT("XREAD", "COUNT", "10", "BLOCK", "5000", "STREAMS", "s", "$") == 5000);
  CHECK(WAIT("XREAD", "STREAMS", "BLOCK", "$") == -1); /* "BLOCK" is a stream's name */
  CHECK(WAIT("XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "s", ">") == 0);
  CHECK(WAIT("WAIT", "1", "100") == 100);
  CHECK(WAIT("BLPOP", "a", "soon") == -1); /* refused by Redis at once */
  CHECK(WAIT("BLPOP", "a", "-1") == -1);
  CHECK(WAIT("BLPOP") == -1);
  CHECK(rh_redis_command_wait_ms(2, (const char *[]){ "BRPOP", "0.001" }, NULL) == 1); /* lens NULL: NUL-terminated */
}

/* WAIT waits for this connection's own writes: it must not move to a connection of its own. */
static void own(void) {
  test_name = "blocks";
  const char *wait[] = { "WAIT", "1", "100" }, *bzmpop[] = { "BZMPOP", "1", "1", "z", "MIN" };
  CHECK(!rh_redis_command_blocks(3, wait, (size_t[]){ 4, 1, 3 }));
  CHECK(rh_redis_command_blocks(5, bzmpop, (size_t[]){ 6, 1, 1, 1, 3 }));
}

int main(void) {
  waits();
  own();
  return failures ? 1 : 0;
}
