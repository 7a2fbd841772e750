/* clock: monotonic seconds, for the CLI's deadlines (the --workers parent has no loop clock). */
#ifndef RH_CLI_CLOCK_H
#define RH_CLI_CLOCK_H

#include <time.h>

static inline double rh_cli_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#endif
