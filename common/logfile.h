/* nbd-replica: the log file: create, open, superblock I/O, scanning.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * Positions in the ring are "LSNs": a 64-bit byte count that only grows;
 * the file offset of LSN x is ring_offset + x % ring_size.  Records never
 * straddle the end of the ring (a WRAP record fills the remainder).
 */
#ifndef REPLICA_LOGFILE_H
#define REPLICA_LOGFILE_H

#include <stdint.h>
#include <stddef.h>
#include <pthread.h>

#include "logfmt.h"

struct rlog {
  int fd;                    /* records (the journal's appends) */
  int sb_fd;                 /* superblock writes: a second open file, so
                              * that a writeback error is reported to
                              * both (Linux reports it once per open
                              * file): one fdatasync cannot swallow the
                              * error of the other's data */
  char *path;
  pthread_mutex_t sb_lock;   /* guards sb and superblock writes */
  struct rlog_sb sb;         /* what is on disk in the newest slot */
  int sb_slot;               /* which slot (0 or 1) holds it */
};

/* Errors are returned as -1 with a one-line message in err (no prefix
 * naming the key: callers add it) and errno set.
 */
#define RLOG_ERRLEN 512

/* Create and format a new log file (fails with EEXIST if present).  The
 * file is preallocated and zero-filled, then the superblock is written
 * to both slots and everything is fsync'd, under PATH.replica-new; only
 * then is it linked to PATH, and the directory fsync'd.
 */
extern int rlog_create (const char *path, uint64_t size, unsigned role,
                        char *err);

/* Open an existing log, take an exclusive flock on it (when lock is
 * true), and read the superblock.
 */
extern struct rlog *rlog_open (const char *path, int lock, int readonly,
                               char *err);
extern void rlog_close (struct rlog *log);
/* Re-read the superblock (a reader in another process than the writer,
 * e.g. nbd-replicator, whose copy goes stale as seqs are reserved).
 */
extern int rlog_sb_reload (struct rlog *log, char *err);

/* Write *sb as the next generation into the slot not holding the
 * current superblock, and fdatasync.
 * On success log->sb = *sb (with the new generation).  Caller holds
 * sb_lock.
 */
extern int rlog_sb_write_locked (struct rlog *log, struct rlog_sb *sb);

/* Set (on) or clear the superblock flag bit, and with witness also
 * bitmap_witness to *witness, in one durable superblock write under
 * sb_lock; no write if all is so already.  0, or -1 with errno.
 */
extern int rlog_sb_set_flag (struct rlog *log, uint32_t bit, bool on,
                             const uint64_t *witness);

static inline uint64_t
rlog_lsn_to_off (const struct rlog_sb *sb, uint64_t lsn)
{
  return sb->ring_offset + lsn % sb->ring_size;
}

/* Sequential reader of the records after the checkpoint. */
enum rlog_stop {
  RLOG_STOP_NONE = 0,
  RLOG_STOP_EMPTY,     /* never-written space: the normal end */
  RLOG_STOP_STALE,     /* a valid record out of sequence: older lap */
  RLOG_STOP_CORRUPT,   /* bad magic/version/fields or checksum: torn */
  RLOG_STOP_FULL,      /* scanned a whole ring */
  RLOG_STOP_IOERR,
};

struct rlog_scan {
  struct rlog *log;
  uint64_t start_lsn;
  uint64_t lsn;              /* position of the next record */
  uint64_t prev_seq;         /* last seq accepted (checkpoint at start) */
  uint64_t prev_epoch;
  uint64_t records;          /* records returned (WRAP not counted) */
  enum rlog_stop stop;
  char why[RLOG_ERRLEN];     /* human-readable stop reason */
  uint8_t *buf;
  uint8_t *into;             /* if set, the next record is read here
                              * instead of buf (RLOG_MAX_REC_SIZE bytes
                              * of room), e.g. straight into a batch */
};

extern int rlog_scan_init (struct rlog_scan *s, struct rlog *log);
/* Scan from an arbitrary position, e.g. from lsn 0 / seq 0 / epoch 0 to
 * read a log that never wrapped from its very first record.
 */
extern int rlog_scan_init_at (struct rlog_scan *s, struct rlog *log,
                              uint64_t lsn, uint64_t prev_seq,
                              uint64_t prev_epoch);
/* Returns 1 and the next valid record (header and payload in s->buf,
 * or s->into if set, valid until the next call), or 0 at the end
 * (s->stop, s->why).
 */
extern int rlog_scan_next (struct rlog_scan *s, struct rlog_rec *rec,
                           const uint8_t **payload);
extern void rlog_scan_free (struct rlog_scan *s);
extern const char *rlog_stop_name (enum rlog_stop s);

extern uint64_t rlog_now_ns (void);
/* pwrite all of buf (retrying short writes and EINTR); 0 or -1. */
extern int rlog_full_pwrite (int fd, const void *buf, size_t n, off_t off);

/* Zero the record header at lsn and fdatasync: no scan finds a record
 * there.  Recovery uses it where new records will go (see
 * plugin/recovery.c).  Returns 0, or -1 with errno set.
 */
extern int rlog_clear_header (struct rlog *log, uint64_t lsn);
/* pread all of n bytes; 0, or -1 with errno (EIO on a short file). */
extern int rlog_full_pread (int fd, void *buf, size_t n, off_t off);

#endif /* REPLICA_LOGFILE_H */
