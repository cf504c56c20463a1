/* nbd-replica: LD_PRELOAD fault injection on one file (tests only).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * Intercepts the libc's pwritev, pwrite (and their 64 names),
 * fdatasync and execv.  While
 * the file named by $REPLICA_FAULT_TRIGGER exists, calls on a file
 * descriptor whose /proc/self/fd link equals $REPLICA_FAULT_PATH fail.
 * The trigger file holds one line: an errno name, then options:
 *
 *   EIO | ENOSPC | EDQUOT | EROFS | EFBIG   the errno to fail with
 *   pwritev      fail pwritev (the default if no call is named)
 *   pwrite       fail pwrite (nbdkit's file plugin writes with it)
 *   fdatasync    fail fdatasync
 *   written      pwritev first really writes, then reports the error
 *                (a write that reached the disk but failed, e.g. ENOSPC
 *                on a later block or a device error after the transfer)
 *   once         remove the trigger file after the first injection
 *   slow         no error: the call sleeps 2 s, then is made (a slow
 *                disk; with fdatasync, a backing flush that lags)
 *   sleep=N      slow, sleeping N seconds
 *
 * And execv, for the window between the filter's fork of the replicator
 * and its exec (test-replica-spawn.sh): with $REPLICA_FAULT_EXEC_SLEEP
 * set to N, execv creates the file $REPLICA_FAULT_EXEC_MARK (if set),
 * then sleeps N seconds before it execs.
 *
 * No nbdkit or libnbd symbol is touched: the shim only sits between
 * the process and the libc.  Preload it after any sanitizer runtime.
 */
/* Meson builds with -D_FILE_OFFSET_BITS=64, which renames pwritev to
 * pwritev64 in the headers; this file defines both symbols itself.
 */
#undef _FILE_OFFSET_BITS
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/uio.h>

struct fault {
  int err;
  bool pwritev, pwrite, fdatasync, written, once, slow;
  unsigned sleep_s;
};

static const struct { const char *name; int err; } errnames[] = {
  { "EIO", EIO }, { "ENOSPC", ENOSPC }, { "EDQUOT", EDQUOT },
  { "EROFS", EROFS }, { "EFBIG", EFBIG },
};

/* Is a fault armed for fd?  Reads the trigger afresh at every call (the
 * test flips it while nbdkit runs).  Uses only plain system calls.
 */
static bool
armed (int fd, struct fault *f)
{
  const char *trigger = getenv ("REPLICA_FAULT_TRIGGER");
  const char *target = getenv ("REPLICA_FAULT_PATH");
  char link[64], path[PATH_MAX], buf[256], *tok, *save;
  ssize_t n;
  int tfd;

  if (!trigger || !target)
    return false;
  tfd = open (trigger, O_RDONLY | O_CLOEXEC);
  if (tfd == -1)
    return false;
  n = read (tfd, buf, sizeof buf - 1);
  close (tfd);
  if (n <= 0)
    return false;
  buf[n] = '\0';

  snprintf (link, sizeof link, "/proc/self/fd/%d", fd);
  n = readlink (link, path, sizeof path - 1);
  if (n == -1)
    return false;
  path[n] = '\0';
  if (strcmp (path, target) != 0)
    return false;

  memset (f, 0, sizeof *f);
  f->err = EIO;
  f->sleep_s = 2;
  for (tok = strtok_r (buf, " \t\r\n", &save); tok;
       tok = strtok_r (NULL, " \t\r\n", &save)) {
    if (strcmp (tok, "pwritev") == 0)
      f->pwritev = true;
    else if (strcmp (tok, "pwrite") == 0)
      f->pwrite = true;
    else if (strncmp (tok, "sleep=", 6) == 0) {
      f->slow = true;
      f->sleep_s = atoi (tok + 6);
    }
    else if (strcmp (tok, "fdatasync") == 0)
      f->fdatasync = true;
    else if (strcmp (tok, "written") == 0)
      f->written = true;
    else if (strcmp (tok, "once") == 0)
      f->once = true;
    else if (strcmp (tok, "slow") == 0)
      f->slow = true;
    else
      for (size_t i = 0; i < sizeof errnames / sizeof errnames[0]; ++i)
        if (strcmp (tok, errnames[i].name) == 0)
          f->err = errnames[i].err;
  }
  if (!f->pwritev && !f->pwrite && !f->fdatasync)
    f->pwritev = true;
  return true;
}

static void
fired (const struct fault *f)
{
  if (f->once)
    unlink (getenv ("REPLICA_FAULT_TRIGGER"));
}

typedef ssize_t (*pwritev_fn) (int, const struct iovec *, int, off_t);
typedef ssize_t (*pwrite_fn) (int, const void *, size_t, off_t);
typedef int (*fdatasync_fn) (int);

/* Does this write call on fd fail (the trigger names the call:
 * pwrite, or pwritev)?  false: make the real call (a slow fault has
 * slept first); true: fail with f->err, after the real write if
 * f->written (the caller's part, the call's signature being its own).
 */
static bool
write_fails (int fd, bool pwrite_call, struct fault *f)
{
  if (!armed (fd, f) || !(pwrite_call ? f->pwrite : f->pwritev))
    return false;
  if (f->slow) {
    fired (f);
    sleep (f->sleep_s);
    return false;
  }
  return true;
}

static ssize_t
do_pwritev (const char *sym, int fd, const struct iovec *iov, int n,
            off_t off)
{
  pwritev_fn real = (pwritev_fn) dlsym (RTLD_NEXT, sym);
  struct fault f;

  if (!write_fails (fd, false, &f))
    return real (fd, iov, n, off);
  if (f.written && real (fd, iov, n, off) == -1)
    return -1;
  fired (&f);
  errno = f.err;
  return -1;
}

ssize_t
pwritev (int fd, const struct iovec *iov, int n, off_t off)
{
  return do_pwritev ("pwritev", fd, iov, n, off);
}

ssize_t
pwritev64 (int fd, const struct iovec *iov, int n, off64_t off)
{
  return do_pwritev ("pwritev64", fd, iov, n, off);
}

static ssize_t
do_pwrite (const char *sym, int fd, const void *buf, size_t n, off_t off)
{
  pwrite_fn real = (pwrite_fn) dlsym (RTLD_NEXT, sym);
  struct fault f;

  if (!write_fails (fd, true, &f))
    return real (fd, buf, n, off);
  if (f.written && real (fd, buf, n, off) == -1)
    return -1;
  fired (&f);
  errno = f.err;
  return -1;
}

ssize_t
pwrite (int fd, const void *buf, size_t n, off_t off)
{
  return do_pwrite ("pwrite", fd, buf, n, off);
}

ssize_t
pwrite64 (int fd, const void *buf, size_t n, off64_t off)
{
  return do_pwrite ("pwrite64", fd, buf, n, off);
}

int
fdatasync (int fd)
{
  fdatasync_fn real = (fdatasync_fn) dlsym (RTLD_NEXT, "fdatasync");
  struct fault f;

  if (armed (fd, &f) && f.fdatasync) {
    fired (&f);
    if (f.slow) {
      sleep (f.sleep_s);
      return real (fd);
    }
    errno = f.err;
    return -1;
  }
  return real (fd);
}

/* Called in a forked child, before its exec: async-signal-safe calls
 * only, so the real execv is looked up at load time (dlsym may lock).
 */
typedef int (*execv_fn) (const char *, char *const[]);
static execv_fn real_execv;

static void __attribute__ ((constructor))
find_execv (void)
{
  real_execv = (execv_fn) dlsym (RTLD_NEXT, "execv");
}

int
execv (const char *path, char *const argv[])
{
  const char *sleep_s = getenv ("REPLICA_FAULT_EXEC_SLEEP");
  const char *mark = getenv ("REPLICA_FAULT_EXEC_MARK");

  if (sleep_s) {
    if (mark) {
      int fd = open (mark, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
      if (fd >= 0)
        close (fd);
    }
    sleep (atoi (sleep_s));
  }
  return real_execv (path, argv);
}
