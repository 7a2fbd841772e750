/* text: the --log-format text rendering of a log line (log.c decides which format is on). */
#ifndef RH_LOG_TEXT_H
#define RH_LOG_TEXT_H

#include "log/log.h"

#include <sys/time.h>

struct rh_buf;
/* 1 when stderr is a terminal and NO_COLOR is not set. */
int rh_log_text_colour(void);
void rh_log_text_line(struct rh_buf *b, const struct timeval *tv, rh_log_level level, const char *event,
                      const rh_field *fields, size_t n, int colour);

#endif
