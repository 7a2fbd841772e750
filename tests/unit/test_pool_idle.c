/* Unit tests for the idle connections of core/net/pool.c, on real loopback connections: the
 * most recently parked is taken first, except that one parked during the current loop turn
 * waits while one parked in an earlier turn is there (the kernel would report its answer ahead
 * of older requests: see pool.c). A turn ends at the loop's check phase. */
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "check.h"
#include "net/pool.h"

static uv_loop_t *loop;
static rh_upconn *dialed_conn[8];
static int ndialed;

static void dialed(void *ud, rh_upconn *u, const char *err) {
  (void)ud;
  REQUIRE(u && !err);
  dialed_conn[ndialed++] = u;
}

static int listener(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  socklen_t len = sizeof a;
  REQUIRE(fd >= 0 && bind(fd, (struct sockaddr *)&a, len) == 0 && listen(fd, 16) == 0);
  REQUIRE(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
  *port = ntohs(a.sin_port);
  return fd;
}

/* Ends the current turn: one pass of the loop runs its check phase. */
static void next_turn(void) { uv_run(loop, UV_RUN_NOWAIT); }

int main(void) {
  loop = uv_default_loop();
  int port, lfd = listener(&port);
  rh_upconn_target t = { .key = "order", .host = "127.0.0.1", .port = port, .connect_timeout = 2 };
  for (int i = 0; i < 4; i++) REQUIRE(rh_upconn_dial(loop, &t, dialed, NULL));
  while (ndialed < 4) uv_run(loop, UV_RUN_ONCE);
  rh_upconn *a = dialed_conn[0], *b = dialed_conn[1], *c = dialed_conn[2], *d = dialed_conn[3];

  test_name = "parked in an earlier turn comes before parked in this one";
  rh_pool_put(a, 60, 16);
  next_turn();
  rh_pool_put(b, 60, 16);
  rh_pool_put(c, 60, 16);
  CHECK(rh_pool_take("order") == a);
  test_name = "within a turn, most recent first";
  CHECK(rh_pool_take("order") == c);
  CHECK(rh_pool_take("order") == b);
  CHECK(rh_pool_take("order") == NULL);

  test_name = "across turns, most recent first (the surplus ages out)";
  rh_pool_put(a, 60, 16);
  next_turn();
  rh_pool_put(b, 60, 16);
  next_turn();
  rh_pool_put(c, 60, 16);
  rh_pool_put(d, 60, 16);
  next_turn();
  CHECK(rh_pool_take("order") == d);
  CHECK(rh_pool_take("order") == c);
  CHECK(rh_pool_take("order") == b);
  CHECK(rh_pool_idle() == 1);

  test_name = "the last of this turn's closing while idle (its timeout) leaves the list whole";
  rh_pool_put(b, 0, 16);
  rh_pool_put(c, 60, 16); /* fresh: c, b; rested: a. b's timer fires before the turn ends */
  next_turn();
  CHECK(rh_pool_idle() == 2);
  CHECK(rh_pool_take("order") == c);
  CHECK(rh_pool_take("order") == a);
  CHECK(rh_pool_take("order") == NULL);

  test_name = "closing all empties both lists";
  rh_pool_put(a, 60, 16);
  next_turn();
  rh_pool_put(c, 60, 16);
  rh_pool_close_all();
  CHECK(rh_pool_idle() == 0);
  CHECK(rh_pool_take("order") == NULL);
  rh_upconn_close(d);
  next_turn();
  close(lfd);
  return failures ? 1 : 0;
}
