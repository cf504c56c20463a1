/* nbd-replica: helpers shared by the Check unit tests.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <dirent.h>

#include <check.h>

#include "testutil.h"

char *
tu_mkdtemp (void)
{
  const char *tmp = getenv ("TMPDIR");
  char *dir;

  if (!tmp || !*tmp)
    tmp = "/tmp";
  if (asprintf (&dir, "%s/replica-unit.XXXXXX", tmp) == -1)
    abort ();
  if (!mkdtemp (dir)) {
    perror (dir);
    abort ();
  }
  return dir;
}

void
tu_rmtree (const char *dir)
{
  DIR *d = opendir (dir);
  struct dirent *de;

  if (!d)
    return;
  while ((de = readdir (d)) != NULL) {
    char *p;

    if (strcmp (de->d_name, ".") == 0 || strcmp (de->d_name, "..") == 0)
      continue;
    p = tu_path (dir, de->d_name);
    unlink (p);
    free (p);
  }
  closedir (d);
  rmdir (dir);
}

char *
tu_path (const char *dir, const char *name)
{
  char *p;

  if (asprintf (&p, "%s/%s", dir, name) == -1)
    abort ();
  return p;
}

/* xorshift64*, seeded per record. */
static uint64_t
tu_next (uint64_t *s)
{
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 0x2545f4914f6cdd1dULL;
}

void
tu_fill (void *buf, size_t len, uint64_t seed)
{
  uint8_t *p = buf;
  uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 1;

  for (size_t i = 0; i < len; i += 8) {
    uint64_t v = tu_next (&s);
    memcpy (p + i, &v, len - i < 8 ? len - i : 8);
  }
}

int
tu_check (const void *buf, size_t len, uint64_t seed)
{
  uint8_t *want = malloc (len ? len : 1);
  int r;

  if (!want)
    abort ();
  tu_fill (want, len, seed);
  r = memcmp (want, buf, len) == 0;
  free (want);
  return r;
}

struct rlog *
tu_new_log (const char *dir, const char *name, uint64_t size)
{
  char err[RLOG_ERRLEN] = "";
  char *path = tu_path (dir, name);
  struct rlog *log;
  struct rlog_sb sb;
  int r;

  ck_assert_msg (rlog_create (path, size, RLOG_ROLE_PRIMARY, err) == 0,
                 "rlog_create: %s", err);
  log = rlog_open (path, 1, 0, err);
  ck_assert_msg (log != NULL, "rlog_open: %s", err);
  free (path);

  pthread_mutex_lock (&log->sb_lock);
  sb = log->sb;
  sb.epoch++;
  r = rlog_sb_write_locked (log, &sb);
  pthread_mutex_unlock (&log->sb_lock);
  ck_assert_int_eq (r, 0);
  return log;
}

void
tu_pwrite (int fd, const void *buf, size_t len, uint64_t off)
{
  ck_assert_int_eq (pwrite (fd, buf, len, off), (ssize_t) len);
}

void
tu_pread (int fd, void *buf, size_t len, uint64_t off)
{
  ck_assert_int_eq (pread (fd, buf, len, off), (ssize_t) len);
}
