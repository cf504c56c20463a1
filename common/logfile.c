/* nbd-replica: the log file: create, open, superblock I/O, scanning.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <libgen.h>
#include <time.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "logfile.h"

uint64_t
rlog_now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_REALTIME, &ts);
  return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int
rlog_full_pwrite (int fd, const void *buf, size_t n, off_t off)
{
  const char *p = buf;

  while (n > 0) {
    ssize_t r = pwrite (fd, p, n, off);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += r;
    n -= r;
    off += r;
  }
  return 0;
}

int
rlog_full_pread (int fd, void *buf, size_t n, off_t off)
{
  char *p = buf;

  while (n > 0) {
    ssize_t r = pread (fd, p, n, off);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    if (r == 0) {
      errno = EIO;             /* short file */
      return -1;
    }
    p += r;
    n -= r;
    off += r;
  }
  return 0;
}

/* fsync the directory holding path, so that a newly created file's
 * directory entry is durable too.
 */
static int
fsync_dir_of (const char *path)
{
  char *copy = strdup (path);
  int fd, r;

  if (!copy)
    return -1;
  fd = open (dirname (copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free (copy);
  if (fd == -1)
    return -1;
  r = fsync (fd);
  close (fd);
  return r;
}

/* rlog_create formats the log under this name beside it, and links it
 * into place once it is complete and durable: a creation interrupted
 * (nbdkit killed while it writes out a large log) leaves no file at the
 * log's path that a restart would take for a damaged log ("bad magic"),
 * only this one, which the next creation reuses.
 */
#define RLOG_NEW_SUFFIX ".replica-new"

int
rlog_create (const char *path, uint64_t size, unsigned role, char *err)
{
  static char zeroes[1024 * 1024];
  struct rlog_sb sb;
  uint8_t *slot = NULL;
  uint64_t off;
  char *tmp = NULL;
  struct stat st, lst;
  int fd = -1, e;

  size &= ~(uint64_t) (RLOG_BLOCK - 1);
  if (size < RLOG_MIN_SIZE) {
    snprintf (err, RLOG_ERRLEN, "log size %" PRIu64 " is below the minimum "
              "of %d bytes (8M)", size, RLOG_MIN_SIZE);
    errno = EINVAL;
    return -1;
  }
  if (access (path, F_OK) == 0) {
    errno = EEXIST;
    snprintf (err, RLOG_ERRLEN, "cannot create %s: %m", path);
    return -1;
  }
  if (asprintf (&tmp, "%s" RLOG_NEW_SUFFIX, path) == -1) {
    tmp = NULL;
    snprintf (err, RLOG_ERRLEN, "asprintf: %m");
    return -1;
  }
  /* Locked while it is written: two processes creating the same log
   * do not format one file at once.
   */
  fd = open (tmp, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd == -1) {
    snprintf (err, RLOG_ERRLEN, "cannot create %s: %m", tmp);
    free (tmp);
    return -1;
  }
  /* Still the file at tmp, a regular one with no other name: a creation
   * that finished meanwhile linked it to path (and is about to remove
   * tmp), and truncating it would destroy that new log.
   */
  if (flock (fd, LOCK_EX | LOCK_NB) == -1 || fstat (fd, &st) == -1 ||
      lstat (tmp, &lst) == -1 || !S_ISREG (st.st_mode) ||
      st.st_dev != lst.st_dev || st.st_ino != lst.st_ino ||
      st.st_nlink != 1) {
    snprintf (err, RLOG_ERRLEN, "%s is being created by another process",
              path);
    close (fd);
    free (tmp);
    return -1;
  }
  if (ftruncate (fd, 0) == -1) {
    snprintf (err, RLOG_ERRLEN, "cannot create %s: %m", tmp);
    goto fail;
  }
  /* Reserve the space first (fails fast with ENOSPC), then write zeroes
   * so that appends later overwrite allocated, written blocks: no
   * unwritten-extent conversion (a metadata update) on the hot path.
   */
  if ((e = posix_fallocate (fd, 0, size)) != 0) {
    errno = e;
    snprintf (err, RLOG_ERRLEN, "cannot preallocate %s: %m", path);
    goto fail;
  }
  for (off = 0; off < size; off += sizeof zeroes) {
    size_t n = size - off < sizeof zeroes ? size - off : sizeof zeroes;
    if (rlog_full_pwrite (fd, zeroes, n, off) == -1) {
      snprintf (err, RLOG_ERRLEN, "cannot format %s: %m", path);
      goto fail;
    }
  }

  memset (&sb, 0, sizeof sb);
  if (getrandom (sb.volume_uuid, 16, 0) != 16) {
    snprintf (err, RLOG_ERRLEN, "getrandom: %m");
    goto fail;
  }
  sb.volume_uuid[6] = (sb.volume_uuid[6] & 0x0f) | 0x40; /* RFC 4122 v4 */
  sb.volume_uuid[8] = (sb.volume_uuid[8] & 0x3f) | 0x80;
  /* A primary's pair secret is born with its volume; a secondary has
   * none until it adopts one (RLOG_SB_PAIRED).
   */
  if (role == RLOG_ROLE_PRIMARY &&
      getrandom (sb.pair_secret, RLOG_SECRET_SIZE, 0) != RLOG_SECRET_SIZE) {
    snprintf (err, RLOG_ERRLEN, "getrandom: %m");
    goto fail;
  }
  sb.role = role;
  sb.created_ns = rlog_now_ns ();
  sb.log_size = size;
  sb.bitmap_offset = RLOG_BITMAP_OFFSET;
  sb.bitmap_size = RLOG_BITMAP_SIZE;
  sb.ring_offset = RLOG_RING_OFFSET;
  sb.ring_size = size - RLOG_RING_OFFSET;
  sb.max_payload = RLOG_MAX_PAYLOAD;

  slot = aligned_alloc (RLOG_BLOCK, RLOG_SB_SLOT_SIZE);
  if (!slot) {
    snprintf (err, RLOG_ERRLEN, "malloc: %m");
    goto fail;
  }
  /* Both slots valid at creation, generations 1 and 2. */
  for (int i = 0; i < 2; ++i) {
    sb.generation = i + 1;
    rlog_sb_encode (&sb, slot);
    if (rlog_full_pwrite (fd, slot, RLOG_SB_SLOT_SIZE,
                     (off_t) i * RLOG_SB_SLOT_SIZE) == -1) {
      snprintf (err, RLOG_ERRLEN, "cannot write superblock of %s: %m", path);
      goto fail;
    }
  }
  /* Durability: the file's data and its size (fsync, not fdatasync, as
   * the size changed), then its name (link: never over an existing
   * log, which a concurrent creation may have put there), then the
   * directory.
   */
  if (fsync (fd) == -1) {
    snprintf (err, RLOG_ERRLEN, "cannot sync %s: %m", tmp);
    goto fail;
  }
  if (link (tmp, path) == -1) {
    snprintf (err, RLOG_ERRLEN, "cannot create %s: %m", path);
    goto fail;
  }
  if (unlink (tmp) == -1 || fsync_dir_of (path) == -1) {
    snprintf (err, RLOG_ERRLEN, "cannot sync %s: %m", path);
    e = errno;
    free (slot);
    close (fd);
    free (tmp);
    errno = e;
    return -1;
  }
  free (slot);
  close (fd);
  free (tmp);
  return 0;

 fail:
  e = errno;
  free (slot);
  unlink (tmp);
  close (fd);
  free (tmp);
  errno = e;
  return -1;
}

struct rlog *
rlog_open (const char *path, int lock, int readonly, char *err)
{
  struct rlog *log;
  uint8_t *slots;
  enum rlog_err e0, e1;
  struct stat st;

  log = calloc (1, sizeof *log);
  slots = malloc (2 * RLOG_SB_SLOT_SIZE);
  if (!log || !slots) {
    snprintf (err, RLOG_ERRLEN, "malloc: %m");
    goto fail0;
  }
  log->fd = open (path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (log->fd == -1) {
    snprintf (err, RLOG_ERRLEN, "cannot open %s: %m", path);
    goto fail0;
  }
  if (lock && flock (log->fd, LOCK_EX | LOCK_NB) == -1) {
    if (errno == EWOULDBLOCK)
      snprintf (err, RLOG_ERRLEN, "%s is in use by another process", path);
    else
      snprintf (err, RLOG_ERRLEN, "cannot lock %s: %m", path);
    goto fail1;
  }
  if (fstat (log->fd, &st) == -1) {
    snprintf (err, RLOG_ERRLEN, "stat %s: %m", path);
    goto fail1;
  }
  if (st.st_size < 2 * RLOG_SB_SLOT_SIZE) {
    snprintf (err, RLOG_ERRLEN, "%s is not a replica log: bad magic "
              "(file too small)", path);
    errno = EINVAL;
    goto fail1;
  }
  if (rlog_full_pread (log->fd, slots, 2 * RLOG_SB_SLOT_SIZE, 0) == -1) {
    snprintf (err, RLOG_ERRLEN, "cannot read %s: %m", path);
    goto fail1;
  }
  if ((log->sb_slot = rlog_sb_choose (slots, slots + RLOG_SB_SLOT_SIZE,
                                      &log->sb, &e0, &e1)) == -1) {
    if (e0 == RLOG_EMAGIC && e1 == RLOG_EMAGIC)
      snprintf (err, RLOG_ERRLEN, "%s is not a replica log: bad magic", path);
    else if (e0 == RLOG_EVERSION || e1 == RLOG_EVERSION)
      snprintf (err, RLOG_ERRLEN, "%s: unsupported log format version "
                "(this build reads version %d)", path, RLOG_SB_VERSION);
    else
      snprintf (err, RLOG_ERRLEN, "%s: both superblock slots are corrupt "
                "(slot 0: %s, slot 1: %s)", path,
                rlog_strerror (e0), rlog_strerror (e1));
    errno = EINVAL;
    goto fail1;
  }
  if ((uint64_t) st.st_size < log->sb.log_size) {
    snprintf (err, RLOG_ERRLEN, "%s is truncated: %" PRIu64 " bytes, "
              "superblock says %" PRIu64, path, (uint64_t) st.st_size,
              log->sb.log_size);
    errno = EINVAL;
    goto fail1;
  }
  log->sb_fd = open (path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (log->sb_fd == -1) {
    snprintf (err, RLOG_ERRLEN, "cannot open %s: %m", path);
    goto fail1;
  }
  log->path = strdup (path);
  pthread_mutex_init (&log->sb_lock, NULL);
  free (slots);
  return log;

 fail1:
  {
    int e = errno;
    close (log->fd);
    errno = e;
  }
 fail0:
  free (slots);
  free (log);
  return NULL;
}

int
rlog_sb_reload (struct rlog *log, char *err)
{
  uint8_t *slots = malloc (2 * RLOG_SB_SLOT_SIZE);
  struct rlog_sb sb;
  enum rlog_err e0, e1;
  int slot, ret = -1;

  if (!slots) {
    snprintf (err, RLOG_ERRLEN, "malloc: %m");
    return -1;
  }
  if (rlog_full_pread (log->sb_fd, slots, 2 * RLOG_SB_SLOT_SIZE, 0) == -1)
    snprintf (err, RLOG_ERRLEN, "cannot read %s: %m", log->path);
  else if ((slot = rlog_sb_choose (slots, slots + RLOG_SB_SLOT_SIZE, &sb,
                                   &e0, &e1)) == -1)
    snprintf (err, RLOG_ERRLEN, "%s: no valid superblock (slot 0: %s, "
              "slot 1: %s)", log->path, rlog_strerror (e0),
              rlog_strerror (e1));
  else {
    pthread_mutex_lock (&log->sb_lock);
    log->sb = sb;
    log->sb_slot = slot;
    pthread_mutex_unlock (&log->sb_lock);
    ret = 0;
  }
  free (slots);
  return ret;
}

void
rlog_close (struct rlog *log)
{
  if (!log)
    return;
  close (log->fd);
  close (log->sb_fd);
  pthread_mutex_destroy (&log->sb_lock);
  free (log->path);
  free (log);
}

/* Durability: the slot is written with pwrite and made durable with
 * fdatasync before we return; the other slot still holds the previous
 * generation, so a crash or torn write during this update leaves one
 * valid slot (the old or the new one), never none.
 */
int
rlog_sb_write_locked (struct rlog *log, struct rlog_sb *sb)
{
  uint8_t slot[RLOG_SB_SLOT_SIZE];

  int target = !log->sb_slot;

  sb->generation = log->sb.generation + 1;
  rlog_sb_encode (sb, slot);
  if (rlog_full_pwrite (log->sb_fd, slot, RLOG_SB_SLOT_SIZE,
                   (off_t) target * RLOG_SB_SLOT_SIZE) == -1)
    return -1;
  if (fdatasync (log->sb_fd) == -1)
    return -1;
  log->sb = *sb;
  log->sb_slot = target;
  return 0;
}

int
rlog_sb_set_flag (struct rlog *log, uint32_t bit, bool on,
                  const uint64_t *witness)
{
  struct rlog_sb sb;
  int r = 0;

  pthread_mutex_lock (&log->sb_lock);
  sb = log->sb;
  if (!!(sb.flags & bit) != on ||
      (witness && sb.bitmap_witness != *witness)) {
    sb.flags = on ? sb.flags | bit : sb.flags & ~bit;
    if (witness)
      sb.bitmap_witness = *witness;
    r = rlog_sb_write_locked (log, &sb);
  }
  pthread_mutex_unlock (&log->sb_lock);
  return r;
}

const char *
rlog_stop_name (enum rlog_stop s)
{
  switch (s) {
  case RLOG_STOP_NONE: return "none";
  case RLOG_STOP_EMPTY: return "end";
  case RLOG_STOP_STALE: return "stale";
  case RLOG_STOP_CORRUPT: return "corrupt";
  case RLOG_STOP_FULL: return "full";
  case RLOG_STOP_IOERR: return "io-error";
  }
  return "unknown";
}

int
rlog_scan_init_at (struct rlog_scan *s, struct rlog *log, uint64_t lsn,
                   uint64_t prev_seq, uint64_t prev_epoch)
{
  memset (s, 0, sizeof *s);
  s->log = log;
  s->start_lsn = s->lsn = lsn;
  s->prev_seq = prev_seq;
  s->prev_epoch = prev_epoch;
  s->buf = malloc (RLOG_MAX_REC_SIZE);
  return s->buf ? 0 : -1;
}

int
rlog_scan_init (struct rlog_scan *s, struct rlog *log)
{
  return rlog_scan_init_at (s, log, log->sb.checkpoint_lsn,
                            log->sb.checkpoint_seq,
                            log->sb.checkpoint_epoch);
}

void
rlog_scan_free (struct rlog_scan *s)
{
  free (s->buf);
  s->buf = NULL;
}

static int
scan_stop (struct rlog_scan *s, enum rlog_stop stop, const char *fmt, ...)
  __attribute__ ((format (printf, 3, 4)));

static int
scan_stop (struct rlog_scan *s, enum rlog_stop stop, const char *fmt, ...)
{
  va_list ap;

  s->stop = stop;
  va_start (ap, fmt);
  vsnprintf (s->why, sizeof s->why, fmt, ap);
  va_end (ap);
  return 0;
}

static int
all_zero (const uint8_t *p, size_t n)
{
  for (size_t i = 0; i < n; ++i)
    if (p[i])
      return 0;
  return 1;
}

/* Sequence rule (docs/design.md "Continuity"): within an epoch seqs are
 * consecutive; a new epoch (a restart, or recovery from a failed append)
 * may skip burned seqs forward; epochs never go backwards nor beyond the
 * superblock's.  A WRAP filler carries the seq of the last record handed
 * out before it (which may be a burned one, in a new epoch).
 */
static int
continuity_ok (const struct rlog_scan *s, const struct rlog_rec *r)
{
  const struct rlog_sb *sb = &s->log->sb;
  uint64_t want = r->op == RLOG_OP_WRAP ? s->prev_seq : s->prev_seq + 1;

  if (r->epoch < s->prev_epoch || r->epoch > sb->epoch ||
      r->seq > sb->seq_reserved)
    return 0;
  if (r->seq == want)
    return 1;
  return r->epoch > s->prev_epoch && r->seq > want;
}

int
rlog_scan_next (struct rlog_scan *s, struct rlog_rec *rec,
                const uint8_t **payload)
{
  const struct rlog_sb *sb = &s->log->sb;
  uint8_t *buf = s->into ? s->into : s->buf;

  for (;;) {
    uint64_t off = rlog_lsn_to_off (sb, s->lsn);
    uint64_t room = sb->ring_size - s->lsn % sb->ring_size;
    enum rlog_err e;

    if (s->stop != RLOG_STOP_NONE)
      return 0;
    if (s->lsn - s->start_lsn >= sb->ring_size)
      return scan_stop (s, RLOG_STOP_FULL, "scanned the whole ring");
    if (rlog_full_pread (s->log->fd, buf, RLOG_REC_HDR_SIZE, off) == -1)
      return scan_stop (s, RLOG_STOP_IOERR, "read at lsn %" PRIu64 ": %m",
                        s->lsn);
    e = rlog_rec_decode_hdr (buf, RLOG_REC_HDR_SIZE, RLOG_MAX_REC_SIZE, rec);
    if (e == RLOG_EMAGIC && all_zero (buf, RLOG_REC_HDR_SIZE))
      return scan_stop (s, RLOG_STOP_EMPTY, "never-written space at lsn %"
                        PRIu64, s->lsn);
    if (e != RLOG_OK)
      return scan_stop (s, RLOG_STOP_CORRUPT, "record header at lsn %" PRIu64
                        ": %s", s->lsn, rlog_strerror (e));
    if (rec->rec_size > room)
      return scan_stop (s, RLOG_STOP_CORRUPT, "record at lsn %" PRIu64
                        " crosses the end of the ring", s->lsn);
    if (rec->payload_len > 0 &&
        rlog_full_pread (s->log->fd, buf + RLOG_REC_HDR_SIZE,
                         rec->payload_len, off + RLOG_REC_HDR_SIZE) == -1)
      return scan_stop (s, RLOG_STOP_IOERR, "read at lsn %" PRIu64 ": %m",
                        s->lsn);
    if (!rlog_rec_verify (buf, buf + RLOG_REC_HDR_SIZE,
                          rec->payload_len))
      return scan_stop (s, RLOG_STOP_CORRUPT, "record seq %" PRIu64
                        " at lsn %" PRIu64 ": checksum mismatch (torn or "
                        "corrupt)", rec->seq, s->lsn);
    if (!continuity_ok (s, rec))
      return scan_stop (s, RLOG_STOP_STALE, "record seq %" PRIu64 " epoch %"
                        PRIu64 " at lsn %" PRIu64 " does not follow seq %"
                        PRIu64 " epoch %" PRIu64, rec->seq, rec->epoch,
                        s->lsn, s->prev_seq, s->prev_epoch);
    if (rec->op == RLOG_OP_WRAP && rec->rec_size != room)
      return scan_stop (s, RLOG_STOP_CORRUPT, "wrap record at lsn %" PRIu64
                        " does not reach the end of the ring", s->lsn);
    s->lsn += rec->rec_size;
    s->prev_epoch = rec->epoch;
    s->prev_seq = rec->seq;
    if (rec->op == RLOG_OP_WRAP)
      continue;
    s->records++;
    *payload = buf + RLOG_REC_HDR_SIZE;
    return 1;
  }
}

int
rlog_clear_header (struct rlog *log, uint64_t lsn)
{
  static const uint8_t zero[RLOG_REC_HDR_SIZE];

  if (rlog_full_pwrite (log->fd, zero, sizeof zero,
                        rlog_lsn_to_off (&log->sb, lsn)) == -1)
    return -1;
  return fdatasync (log->fd);
}
