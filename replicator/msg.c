/* nbd-replicator: messages on stderr, and the clock.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * Normal operation prints state changes and errors only, one line
 * each; --debug adds what is read and shipped.  Every line starts with
 * "nbd-replicator: " (the filter or journald shows where it came from).
 */
#include <stdio.h>
#include <stdarg.h>
#include <time.h>

#include "replicator.h"

bool debug_flag;

static void
vmsg (const char *fmt, va_list ap)
{
  char line[2048];

  /* One write per line: lines from concurrent writers to the same
   * stderr (nbdkit's) do not interleave.
   */
  vsnprintf (line, sizeof line, fmt, ap);
  fprintf (stderr, PROG ": %s\n", line);
}

void
msg (const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vmsg (fmt, ap);
  va_end (ap);
}

void
dbg (const char *fmt, ...)
{
  va_list ap;

  if (!debug_flag)
    return;
  va_start (ap, fmt);
  vmsg (fmt, ap);
  va_end (ap);
}

uint64_t
now_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
