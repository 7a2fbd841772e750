/* check: the unit tests' assertions. CHECK counts a failure and goes on (so one run shows them
 * all); REQUIRE stops the test where going on makes no sense. test_name says which part ran. */
#ifndef RH_TEST_CHECK_H
#define RH_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static int failures __attribute__((unused));
static const char *test_name __attribute__((unused)) = "setup";

#define CHECK(cond)                                                                         \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      fprintf(stderr, "FAIL [%s] %s:%d: %s\n", test_name, __FILE__, __LINE__, #cond);       \
      failures++;                                                                           \
    }                                                                                       \
  } while (0)

#define REQUIRE(cond)                                                                       \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      fprintf(stderr, "FAIL [%s] %s:%d: %s\n", test_name, __FILE__, __LINE__, #cond);       \
      exit(1);                                                                              \
    }                                                                                       \
  } while (0)

#endif
