/* nbd-replica: the control channel's framing.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <poll.h>
#include <time.h>

#include "ctlproto.h"

static int64_t
now_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
wait_readable (int fd, int timeout_ms)
{
  struct pollfd p = { .fd = fd, .events = POLLIN };
  int r;

  do
    r = poll (&p, 1, timeout_ms);
  while (r == -1 && errno == EINTR);
  if (r == 0)
    errno = ETIMEDOUT;
  return r > 0 ? 0 : -1;
}

/* timeout_ms bounds the whole line, not each byte: a client trickling
 * one byte at a time cannot hold the (single) control thread.
 */
int
ctl_read_line (int fd, char *buf, size_t len, int timeout_ms)
{
  const int64_t deadline = now_ms () + timeout_ms;
  size_t n = 0;

  while (n + 1 < len) {
    int64_t left = deadline - now_ms ();
    ssize_t r;
    if (left <= 0) {
      errno = ETIMEDOUT;
      return -1;
    }
    if (wait_readable (fd, (int) left) == -1)
      return -1;
    r = read (fd, buf + n, 1);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    if (r == 0)
      break;
    if (buf[n] == '\n')
      break;
    n++;
  }
  buf[n] = '\0';
  return n;
}

int
ctl_write_all (int fd, const void *buf, size_t len)
{
  const char *p = buf;

  while (len > 0) {
    ssize_t r = write (fd, p, len);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += r;
    len -= r;
  }
  return 0;
}

char *
ctl_read_all (int fd, int timeout_ms)
{
  size_t cap = 4096, n = 0;
  char *buf = malloc (cap);

  if (!buf)
    return NULL;
  for (;;) {
    ssize_t r;
    if (n + 1 >= cap) {
      char *nb = realloc (buf, cap * 2);
      if (!nb)
        goto fail;
      buf = nb;
      cap *= 2;
    }
    if (wait_readable (fd, timeout_ms) == -1)
      goto fail;
    r = read (fd, buf + n, cap - n - 1);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      goto fail;
    }
    if (r == 0)
      break;
    n += r;
  }
  buf[n] = '\0';
  return buf;

 fail:
  free (buf);
  return NULL;
}

void
rlog_uuid_str (const uint8_t u[16], char out[37])
{
  snprintf (out, 37,
            "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
            "%02x%02x%02x%02x%02x%02x",
            u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7],
            u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
}
