/* Unit tests for core/redis/slot.c: CRC16 against the Cluster specification's vector, key slots
 * with and without hash tags (against slots redis-server's CLUSTER KEYSLOT gives), and which
 * arguments of a command are its keys, with the errors for unknown commands and CROSSSLOT. */
#include <string.h>

#include "redis/slot.h"
#include "check.h"

static int slot_of(const char *k) { return rh_redis_key_slot(k, strlen(k)); }

static int cmd(char *err, int argc, const char **argv) {
  size_t lens[16];
  for (int i = 0; i < argc; i++) lens[i] = strlen(argv[i]);
  err[0] = 0;
  return rh_redis_command_slot(argc, argv, lens, err, 200);
}
#define CMD(err, ...) cmd(err, sizeof((const char *[]){ __VA_ARGS__ }) / sizeof(char *), (const char *[]){ __VA_ARGS__ })

static void crc(void) {
  test_name = "crc16";
  CHECK(rh_redis_crc16("123456789", 9) == 0x31C3);
  CHECK(rh_redis_crc16("", 0) == 0);
}

static void slots(void) {
  test_name = "key slots";
  CHECK(slot_of("foo") == 12182);
  CHECK(slot_of("bar") == 5061);
  CHECK(slot_of("{user1000}.following") == slot_of("{user1000}.followers"));
  CHECK(slot_of("{user1000}.following") == slot_of("user1000"));
  CHECK(slot_of("foo{}{bar}") == rh_redis_crc16("foo{}{bar}", 10) % 16384); /* empty tag: whole key */
  CHECK(slot_of("foo{{bar}}zap") == slot_of("{bar")); /* the first '{' to the next '}' */
  CHECK(slot_of("foo{bar}{zap}") == slot_of("bar"));
  CHECK(slot_of("{unclosed") == rh_redis_crc16("{unclosed", 9) % 16384);
  CHECK(rh_redis_key_slot("a\0b", 3) != rh_redis_key_slot("a", 1)); /* binary keys */
}

static void commands(void) {
  char err[200];
  test_name = "command keys";
  CHECK(CMD(err, "GET", "foo") == 12182);
  CHECK(CMD(err, "set", "foo", "1", "PX", "100") == 12182);
  CHECK(CMD(err, "PING") == RH_REDIS_ANY_SLOT);
  CHECK(CMD(err, "PUBLISH", "ch", "m") == RH_REDIS_ANY_SLOT);
  CHECK(CMD(err, "ZADD", "{t}a", "1", "m") == slot_of("t"));
  CHECK(CMD(err, "BLPOP", "{q}1", "{q}2", "0") == slot_of("q"));
  CHECK(CMD(err, "XREAD", "COUNT", "5", "BLOCK", "100", "STREAMS", "foo", "$") == 12182);
  CHECK(CMD(err, "XREAD", "STREAMS", "{s}a", "{s}b", "0", "0") == slot_of("s"));
  CHECK(CMD(err, "EVAL", "return 1", "2", "{k}x", "{k}y", "argv1") == slot_of("k"));
  CHECK(CMD(err, "EVAL", "return 1", "0", "notakey") == RH_REDIS_ANY_SLOT);
  CHECK(CMD(err, "MSET", "{m}a", "1", "{m}b", "2") == slot_of("m"));

  test_name = "command errors";
  CHECK(CMD(err, "NOSUCHCOMMAND", "foo") == -1);
  CHECK(strstr(err, "unknown command 'NOSUCHCOMMAND'") != NULL);
  CHECK(CMD(err, "DEL", "foo", "bar") == -1);
  CHECK(strstr(err, "CROSSSLOT") && strstr(err, "'foo'") && strstr(err, "'bar'"));
  CHECK(CMD(err, "MSET", "foo", "1", "bar", "2") == -1);
  CHECK(CMD(err, "XREAD", "STREAMS", "a") == -1);
  CHECK(strstr(err, "wrong arguments for 'XREAD'") != NULL);
  CHECK(CMD(err, "EVAL", "return 1", "5", "k") == -1);
  CHECK(CMD(err, "GET") == -1);
  CHECK(CMD(err, "BLPOP", "0") == -1);
}

/* Which commands hold their connection (each then gets one of its own). */
static void blocks(void) {
  test_name = "blocking commands";
  const char *blpop[] = { "blpop", "q", "0" }, *get[] = { "GET", "q" }, *xread[] = { "XREAD", "BLOCK", "0", "STREAMS", "s", "$" },
             *xread_now[] = { "XREAD", "STREAMS", "BLOCK", "$" }, *blpo[] = { "BLPO" };
  CHECK(rh_redis_command_blocks(3, blpop, (size_t[]){ 5, 1, 1 }));
  CHECK(!rh_redis_command_blocks(2, get, (size_t[]){ 3, 1 }));
  CHECK(rh_redis_command_blocks(6, xread, (size_t[]){ 5, 5, 1, 7, 1, 1 }));
  CHECK(!rh_redis_command_blocks(4, xread_now, (size_t[]){ 5, 7, 5, 1 })); /* "BLOCK" is a stream's name here */
  CHECK(!rh_redis_command_blocks(1, blpo, (size_t[]){ 4 }));
}

int main(void) {
  crc();
  slots();
  commands();
  blocks();
  return failures ? 1 : 0;
}
