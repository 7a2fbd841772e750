/* slot: where a Redis Cluster keeps a key, and which arguments of a command are its keys.
 * A key's slot is CRC16 (XMODEM) of the key mod 16384, or of its hash tag: the part between the
 * first '{' and the next '}' when that part is not empty, so "{user1000}.following" and
 * "{user1000}.followers" meet in one slot. Also which commands block their connection. */
#ifndef RH_REDIS_SLOT_H
#define RH_REDIS_SLOT_H

#include <stddef.h>
#include <stdint.h>

#define RH_REDIS_SLOTS 16384

uint16_t rh_redis_crc16(const char *p, size_t n);
int rh_redis_key_slot(const char *key, size_t n);

/* The slot a command goes to: >= 0, RH_REDIS_ANY_SLOT for a command without a key (any node
 * answers it), or -1 with err: a command not in the table (the client will not guess which
 * argument is its key) or keys in different slots (a CROSSSLOT error before sending). argv[i]
 * are NUL-terminated (as Lua strings are); lens may still hold NULs inside keys. */
#define RH_REDIS_ANY_SLOT RH_REDIS_SLOTS
int rh_redis_command_slot(int argc, const char **argv, const size_t *lens, char *err, size_t errlen);

/* BLPOP, BRPOP, BZPOPMIN/MAX, BLMOVE, BRPOPLPUSH, BLMPOP, BZMPOP, or XREAD / XREADGROUP with BLOCK:
 * a command that may hold its connection until it is answered, so it wants a connection of its own. */
int rh_redis_command_blocks(int argc, const char **argv, const size_t *lens);
/* How long a command may wait inside Redis before it answers, by its own timeout: those above,
 * and WAIT / WAITAOF. -1: an ordinary command (answered at once), 0: no end (a timeout of 0). */
long long rh_redis_command_wait_ms(int argc, const char **argv, const size_t *lens);

#endif
