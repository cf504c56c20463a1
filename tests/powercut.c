/* nbd-replica: LD_PRELOAD power-cut recorder (tests only).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * A SIGKILL leaves every write in the page cache, so it cannot tell
 * whether a process made the right writes durable before it said so.
 * This shim records, for every file under $REPLICA_POWERCUT_DIR, what
 * each write overwrote, and which writes a completed fdatasync or
 * fsync made durable, in the undo file $REPLICA_POWERCUT_UNDO.  After
 * the process is killed, tests/powercut.py takes back the writes that
 * no completed sync covered (all of them, or for each 4 KiB page a
 * random suffix of its writes): the files are then as a power cut at
 * the moment of the kill could have left them.
 *
 * Intercepted: pwrite, pwritev, fallocate (and their 64 variants),
 * fdatasync, fsync.  Every write to a watched file is made under one
 * lock: read the bytes it overwrites, append them to the undo file,
 * write.  A sync notes the record count before it starts; once it
 * returns 0, a sync record says the file's writes before that count
 * are durable (writes made meanwhile stay undoable, which a power cut
 * allows).  The undo file is appended with single write calls; it
 * needs no sync, the test's "power cut" is a SIGKILL.
 *
 * Undo file records, little-endian on this machine (the reader is
 * tests/powercut.py):
 *   'W' u64 pid, u64 seq, u64 dev, u64 ino, u64 off, u64 len,
 *       u64 old_size, u64 n_old, then n_old bytes: the file's bytes at
 *       [off, off + n_old) before the write (n_old < len past the end)
 *   'S' u64 pid, u64 seq, u64 dev, u64 ino: writes of (dev, ino) below
 *       seq are durable
 * The seq counts one process's writes: the reader refuses records of
 * two processes (the replicator inherits the preload, but writes no
 * watched file).  A write the shim cannot record aborts the process: a
 * test must never pass on an unrecorded write.
 */
#undef _FILE_OFFSET_BITS
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/uio.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t next_seq;
static int undo_fd = -1;

/* Is fd a file under the watched directory? */
static bool
watched (int fd)
{
  const char *dir = getenv ("REPLICA_POWERCUT_DIR");
  char link[64], path[PATH_MAX];
  size_t dlen;
  ssize_t n;

  if (!dir || !getenv ("REPLICA_POWERCUT_UNDO"))
    return false;
  snprintf (link, sizeof link, "/proc/self/fd/%d", fd);
  n = readlink (link, path, sizeof path - 1);
  if (n == -1)
    return false;
  path[n] = '\0';
  dlen = strlen (dir);
  return strncmp (path, dir, dlen) == 0 && path[dlen] == '/';
}

static void
die (const char *what)
{
  fprintf (stderr, "powercut shim: %s: %s\n", what, strerror (errno));
  abort ();
}

/* Append one record (header iovecs plus data) with one writev call;
 * lock held.
 */
static void
append (const struct iovec *iov, int n)
{
  size_t want = 0;

  if (undo_fd == -1) {
    undo_fd = open (getenv ("REPLICA_POWERCUT_UNDO"),
                    O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (undo_fd == -1)
      die ("open the undo file");
  }
  for (int i = 0; i < n; ++i)
    want += iov[i].iov_len;
  if (writev (undo_fd, iov, n) != (ssize_t) want)
    die ("append to the undo file");
}

/* Record what [off, off + len) of fd holds now; lock held. */
static void
record_write (int fd, uint64_t off, uint64_t len)
{
  struct stat st;
  uint64_t hdr[8], n_old = 0;
  char type = 'W';
  uint8_t *old;

  if (fstat (fd, &st) == -1)
    die ("fstat");
  if (off < (uint64_t) st.st_size)
    n_old = (uint64_t) st.st_size - off < len ? st.st_size - off : len;
  old = malloc (n_old ? n_old : 1);
  if (!old)
    die ("malloc");
  for (uint64_t done = 0; done < n_old; ) {
    ssize_t r = pread (fd, old + done, n_old - done, off + done);
    if (r <= 0)
      die ("read the bytes a write overwrites");
    done += r;
  }
  hdr[0] = getpid ();
  hdr[1] = next_seq++;
  hdr[2] = st.st_dev;
  hdr[3] = st.st_ino;
  hdr[4] = off;
  hdr[5] = len;
  hdr[6] = st.st_size;
  hdr[7] = n_old;
  append ((struct iovec[]) { { &type, 1 }, { hdr, sizeof hdr },
                             { old, n_old } }, 3);
  free (old);
}

typedef ssize_t (*pwrite_fn) (int, const void *, size_t, off_t);
typedef ssize_t (*pwritev_fn) (int, const struct iovec *, int, off_t);
typedef int (*fallocate_fn) (int, int, off_t, off_t);
typedef int (*sync_fn) (int);

static ssize_t
do_pwrite (const char *sym, int fd, const void *buf, size_t n, off_t off)
{
  pwrite_fn real = (pwrite_fn) dlsym (RTLD_NEXT, sym);
  ssize_t r;

  if (!watched (fd))
    return real (fd, buf, n, off);
  pthread_mutex_lock (&lock);
  record_write (fd, off, n);
  r = real (fd, buf, n, off);
  pthread_mutex_unlock (&lock);
  return r;
}

ssize_t pwrite (int fd, const void *buf, size_t n, off_t off)
{ return do_pwrite ("pwrite", fd, buf, n, off); }
ssize_t pwrite64 (int fd, const void *buf, size_t n, off64_t off)
{ return do_pwrite ("pwrite64", fd, buf, n, off); }

static ssize_t
do_pwritev (const char *sym, int fd, const struct iovec *iov, int cnt,
            off_t off)
{
  pwritev_fn real = (pwritev_fn) dlsym (RTLD_NEXT, sym);
  uint64_t len = 0;
  ssize_t r;

  if (!watched (fd))
    return real (fd, iov, cnt, off);
  for (int i = 0; i < cnt; ++i)
    len += iov[i].iov_len;
  pthread_mutex_lock (&lock);
  record_write (fd, off, len);
  r = real (fd, iov, cnt, off);
  pthread_mutex_unlock (&lock);
  return r;
}

ssize_t pwritev (int fd, const struct iovec *iov, int cnt, off_t off)
{ return do_pwritev ("pwritev", fd, iov, cnt, off); }
ssize_t pwritev64 (int fd, const struct iovec *iov, int cnt, off64_t off)
{ return do_pwritev ("pwritev64", fd, iov, cnt, off); }

/* Punching, zeroing or allocating may change the bytes of the range or
 * the size: recorded as a write of the range.  Collapsing or inserting
 * a range moves the bytes after it, which no such record undoes: never
 * used by nbdkit's file plugin nor by the filter, and refused here.
 */
static int
do_fallocate (const char *sym, int fd, int mode, off_t off, off_t len)
{
  fallocate_fn real = (fallocate_fn) dlsym (RTLD_NEXT, sym);
  int r;

  if (!watched (fd))
    return real (fd, mode, off, len);
  if (mode & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE)) {
    errno = EINVAL;
    die ("fallocate that moves bytes (not modelled)");
  }
  pthread_mutex_lock (&lock);
  record_write (fd, off, len);
  r = real (fd, mode, off, len);
  pthread_mutex_unlock (&lock);
  return r;
}

int fallocate (int fd, int mode, off_t off, off_t len)
{ return do_fallocate ("fallocate", fd, mode, off, len); }
int fallocate64 (int fd, int mode, off64_t off, off64_t len)
{ return do_fallocate ("fallocate64", fd, mode, off, len); }

static int
do_sync (const char *sym, int fd)
{
  sync_fn real = (sync_fn) dlsym (RTLD_NEXT, sym);
  struct stat st;
  uint64_t rec[4];
  char type = 'S';
  int r;

  if (!watched (fd))
    return real (fd);
  if (fstat (fd, &st) == -1)
    die ("fstat");
  pthread_mutex_lock (&lock);
  rec[0] = getpid ();
  rec[1] = next_seq;            /* the writes made so far */
  pthread_mutex_unlock (&lock);
  r = real (fd);
  if (r == 0) {
    rec[2] = st.st_dev;
    rec[3] = st.st_ino;
    pthread_mutex_lock (&lock);
    append ((struct iovec[]) { { &type, 1 }, { rec, sizeof rec } }, 2);
    pthread_mutex_unlock (&lock);
  }
  return r;
}

int fdatasync (int fd) { return do_sync ("fdatasync", fd); }
int fsync (int fd) { return do_sync ("fsync", fd); }
