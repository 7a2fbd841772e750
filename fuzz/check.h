/* check: what the fuzz targets do when an invariant breaks. FUZZ_TARGET names the target in
 * the message. FAIL aborts (libFuzzer saves the input). KNOWN is for a defect a target found:
 * fatal, unless FUZZ_STRICT=0 turns it into one warning per run (to fuzz past a defect while it
 * is being fixed); every one found so far is fixed, its reproducer in regressions/. */
#ifndef RH_FUZZ_CHECK_H
#define RH_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define FAIL(...)                                                                                  \
  do {                                                                                             \
    fprintf(stderr, FUZZ_TARGET ": invariant violated: " __VA_ARGS__);                             \
    fputc('\n', stderr);                                                                           \
    abort();                                                                                       \
  } while (0)

static int strict __attribute__((unused));
#define KNOWN(flag, ...)                                                                           \
  do {                                                                                             \
    if (strict) FAIL(__VA_ARGS__);                                                                 \
    if (!(flag)++) {                                                                               \
      fprintf(stderr, FUZZ_TARGET ": known defect (FUZZ_STRICT=0 lets it pass): " __VA_ARGS__);    \
      fputc('\n', stderr);                                                                         \
    }                                                                                              \
  } while (0)

#endif
