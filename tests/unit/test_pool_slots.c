/* Unit tests for the slots of core/net/pool.c (the connection cap): a slot is granted at once
 * under the cap; past it waiters queue first-come first-served and are granted by releases;
 * one that leaves is never granted; the queue refuses past max_queue; waiters under a larger
 * cap are not held behind one under a smaller; rh_pool_close_all drops waiters safely. */
#include "net/pool.h"
#include "check.h"

static rh_pool_waiter *order[16];
static int ngranted;

static void granted(rh_pool_waiter *w) { order[ngranted++] = w; }

static rh_pool_waiter waiter(void) { return (rh_pool_waiter){ .granted = granted }; }

int main(void) {
  test_name = "under the cap";
  rh_pool_waiter a = waiter(), b = waiter(), c = waiter(), d = waiter(), e = waiter();
  CHECK(rh_pool_acquire("h:1", 2, 2, &a) == RH_POOL_GRANTED);
  CHECK(rh_pool_acquire("h:1", 2, 2, &b) == RH_POOL_GRANTED);
  CHECK(rh_pool_acquire("h:2", 2, 2, &e) == RH_POOL_GRANTED); /* another upstream: its own count */
  test_name = "queued in order, bounded";
  CHECK(rh_pool_acquire("h:1", 2, 2, &c) == RH_POOL_QUEUED);
  CHECK(rh_pool_acquire("h:1", 2, 2, &d) == RH_POOL_QUEUED);
  rh_pool_waiter f = waiter();
  CHECK(rh_pool_acquire("h:1", 2, 2, &f) == RH_POOL_FULL);
  CHECK(f.queue == NULL);
  rh_pool_release("h:1");
  REQUIRE(ngranted == 1);
  CHECK(order[0] == &c);
  CHECK(c.queue == NULL);
  test_name = "a waiter that leaves is not granted";
  rh_pool_waiter g = waiter();
  CHECK(rh_pool_acquire("h:1", 2, 2, &g) == RH_POOL_QUEUED);
  rh_pool_leave(&d);
  rh_pool_leave(&d); /* twice is harmless */
  rh_pool_release("h:1");
  REQUIRE(ngranted == 2);
  CHECK(order[1] == &g);
  test_name = "uncapped: always at once, still counted";
  rh_pool_waiter u = waiter(), s = waiter();
  CHECK(rh_pool_acquire("h:1", 0, 2, &u) == RH_POOL_GRANTED); /* 3 in use now */
  CHECK(rh_pool_acquire("h:1", 2, 2, &s) == RH_POOL_QUEUED);
  rh_pool_release("h:1"); /* 2 in use: still no room under 2 */
  CHECK(ngranted == 2);
  test_name = "a larger cap is not held behind a smaller";
  rh_pool_waiter big = waiter();
  CHECK(rh_pool_acquire("h:1", 5, 2, &big) == RH_POOL_GRANTED);
  rh_pool_release("h:1");
  rh_pool_release("h:1"); /* 1 in use: s fits */
  REQUIRE(ngranted == 3);
  CHECK(order[2] == &s);
  test_name = "close_all drops waiters; later calls do nothing";
  rh_pool_waiter x = waiter(), y = waiter();
  CHECK(rh_pool_acquire("h:3", 1, 2, &x) == RH_POOL_GRANTED);
  CHECK(rh_pool_acquire("h:3", 1, 2, &y) == RH_POOL_QUEUED);
  rh_pool_close_all();
  CHECK(y.queue == NULL);
  rh_pool_leave(&y);
  rh_pool_release("h:3");
  CHECK(ngranted == 3);
  return failures ? 1 : 0;
}
