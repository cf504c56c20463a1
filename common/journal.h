/* nbd-replica: group-commit appender for the log ring.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * Submitters (nbdkit's request threads) queue "units" of records.  One
 * of them at a time is the leader: it takes everything queued, assigns
 * seqs and ring positions in queue order, writes the batch with one
 * pwritev and makes it durable with ONE fdatasync, then wakes every
 * submitter of the batch; units that queued meanwhile go in the next
 * batch, led by one of their submitters.  N concurrent writes thus cost
 * about one log sync, and a lone write pays no thread hand-off.
 *
 * Every record stays on the in-flight list from the moment it gets its
 * seq until its submitter calls journal_complete (after applying it to
 * the backing); the oldest in-flight record bounds the checkpoint.
 */
#ifndef REPLICA_JOURNAL_H
#define REPLICA_JOURNAL_H

#include <stdint.h>
#include <stdbool.h>
#include <pthread.h>
#include <sys/uio.h>

#include "logfile.h"

/* The two system calls the leader makes, replaceable by unit tests (a
 * slow or failing disk).  Real code uses journal_sys_io.
 */
struct journal_io {
  ssize_t (*pwritev) (int fd, const struct iovec *iov, int n, off_t off);
  int (*fdatasync) (int fd);
};
extern const struct journal_io journal_sys_io;

struct jentry {
  /* Filled by the submitter: */
  uint8_t op;
  uint32_t flags;
  uint64_t offset;
  uint32_t length;
  const void *payload;          /* WRITE only; length bytes */
  uint32_t payload_crc;         /* rlog_payload_crc (payload, length) */
  uint64_t seq, epoch;          /* follower mode only: the primary's */
  uint64_t prev_seq, prev_epoch; /* set by the leader: the record before
                                 * it (a real one, never a burned seq) */
  /* Filled by the leader: */
  struct rlog_rec rec;
  uint64_t lsn;
  uint64_t space_lsn;           /* where its space begins: lsn, or the
                                 * WRAP filler laid out before it */
  uint8_t hdr[RLOG_REC_HDR_SIZE];
  struct jentry *iprev, *inext; /* in-flight list */
  bool inflight;
};

struct junit {
  struct jentry *entries;
  size_t n;
  uint32_t bytes;               /* ring bytes, set by journal_submit */
  int err;                      /* 0, or errno of the failed append */
  bool done;
  pthread_cond_t cond;          /* its submitter sleeps here */
  struct junit *next;
};

struct journal_stats {
  uint64_t records_appended;
  uint64_t bytes_appended;
  uint64_t log_syncs;
  uint64_t batches;
  uint64_t space_waits;         /* batches that waited for log space */
  uint64_t append_errors;
};

typedef void (*journal_pressure_fn) (void *opaque);

/* Progress of the log, for the replicator (called by the leader, in
 * batch order, without j->lock):
 *  WRITTEN: the batch's records up to seq (epoch) are in the file (not
 *           yet durable) and may be read below lsn;
 *  DURABLE: ... and now durable;
 *  FAILED:  the batch starting at lsn, after the record seq (epoch),
 *           the last real one before it (never a burned seq), failed:
 *           its records are burned; anything read from it is void.
 */
enum journal_event { JOURNAL_WRITTEN, JOURNAL_DURABLE, JOURNAL_FAILED };
typedef void (*journal_notify_fn) (void *opaque, enum journal_event ev,
                                   uint64_t seq, uint64_t epoch,
                                   uint64_t lsn, size_t nrecs);
typedef void (*journal_fatal_fn) (void *opaque, const char *why);

struct journal {
  struct rlog *log;
  const struct journal_io *io;
  pthread_mutex_t lock;
  pthread_cond_t done_cond;     /* journal_stop waits for the last batch */
  pthread_cond_t space_cond;    /* the leader waits for a checkpoint */
  bool writing;                 /* a leader is writing a batch */
  struct junit *qhead, *qtail;
  struct jentry *ihead, *itail; /* in-flight records, seq order */
  uint64_t head_seq;            /* last seq handed out */
  uint64_t head_epoch;          /* epoch of head_seq's record */
  uint64_t last_seq, last_epoch; /* the last record handed a seq (head_seq
                                 * may be a burned seq without a record) */
  uint64_t head_lsn;            /* next free position */
  uint64_t durable_seq;         /* every seq <= this is durable or burned */
  uint64_t ckpt_lsn;            /* space before this is free */
  uint64_t epoch;               /* epoch stamped on new records */
  uint64_t seq_reserve_step;
  uint64_t seq_reserved;        /* copy of the superblock's reservation */
  uint64_t ring_offset;         /* copies of the (fixed) ring geometry */
  uint64_t ring_size;
  int fault_errno;              /* last append failure, 0 if none */
  bool fenced;                  /* log unusable: appends fail at once */
  bool aborted;                 /* journal_abort: likewise (the volume
                                 * failed; the log itself may be fine) */
  bool stopping;
  bool running;
  journal_pressure_fn pressure;
  void *pressure_opaque;
  journal_fatal_fn fatal;       /* optional: a failed append could not be
                                 * contained; must not return if set by a
                                 * server (see recover_from_failure) */
  void *fatal_opaque;
  journal_notify_fn notify;     /* optional, see journal_notify_fn */
  void *notify_opaque;
  bool follow;                  /* follower: records carry given seqs */
  struct journal_stats stats;
};

/* Start (no thread: appenders write) after recovery: the log's superblock must already hold the new
 * epoch and a seq reservation; the head continues from (head_seq,
 * head_lsn), which recovery found (checkpoint == head after replay).
 */
extern int journal_start (struct journal *j, struct rlog *log,
                          const struct journal_io *io,
                          uint64_t head_seq, uint64_t head_lsn,
                          journal_pressure_fn pressure, void *opaque);
extern void journal_stop (struct journal *j);
/* Right after journal_start: the log's records before head_lsn are not
 * all checkpointed yet; space is free only before ckpt_lsn.
 */
extern void journal_keep_tail (struct journal *j, uint64_t ckpt_lsn);
/* Right after journal_start: the last record the log holds (replayed,
 * or the checkpoint's), which checkpoints name while no newer record is
 * in flight: a checkpoint always names a record that exists (or 0).
 */
extern void journal_set_last (struct journal *j, uint64_t seq,
                              uint64_t epoch);
/* Right after journal_start: follower mode (a secondary).  Entries carry
 * the primary's seq and epoch (jentry.seq, .epoch), which must continue
 * from the head (head_seq as given to journal_start, head_epoch here)
 * by the log's continuity rule; the caller enqueues them in seq order.
 * The superblock's epoch and seq reservation are raised to cover them
 * before they are written.
 */
extern void journal_follow (struct journal *j, uint64_t head_epoch);
/* Follower, nothing queued: the next record follows (seq, epoch), e.g.
 * after an unpaired secondary adopted a primary's volume.
 */
extern void journal_rebase (struct journal *j, uint64_t seq, uint64_t epoch);
/* Where the next record goes (everything before it is queued). */
extern uint64_t journal_head_lsn (struct journal *j);
/* Promote a follower: new records get our own seqs, after the
 * reservation, in a new epoch (already in the superblock).
 */
extern void journal_lead (struct journal *j, uint64_t epoch);
/* Fail every queued and future append with EIO (the volume failed);
 * wakes a leader waiting for log space.
 */
extern void journal_abort (struct journal *j);

/* Append a unit durably; returns 0, or -1 with errno (EIO, ENOSPC, ...)
 * when nothing of the unit may be considered written.  The total ring
 * size of a unit must not exceed journal_max_unit_bytes.
 */
extern int journal_append (struct journal *j, struct junit *u);
/* journal_append in two steps: queue the unit (returns at once; -1 with
 * errno if refused), then wait until it is durable or failed.  Units are
 * written in the order they were queued.
 */
extern int journal_enqueue (struct journal *j, struct junit *u);
extern int journal_wait (struct journal *j, struct junit *u);
extern uint64_t journal_max_unit_bytes (const struct journal *j);

/* The submitter has applied (or has no use for) this entry. */
extern void journal_complete (struct journal *j, struct jentry *e);

/* Checkpoint candidate: everything before (seq, lsn) is applied. */
extern void journal_checkpoint_point (struct journal *j, uint64_t *seq,
                                      uint64_t *epoch, uint64_t *lsn);
/* The superblock now records a checkpoint at lsn: free space before it. */
extern void journal_set_checkpoint (struct journal *j, uint64_t lsn);

extern uint64_t journal_used_bytes (struct journal *j);
/* The last seq handed out and its epoch (follower: the last queued). */
extern void journal_head (struct journal *j, uint64_t *seq, uint64_t *epoch);
extern bool journal_fenced (struct journal *j);
extern void journal_get_stats (struct journal *j, struct journal_stats *st,
                               uint64_t *head_seq, uint64_t *used,
                               int *fault_errno, bool *fenced);

#endif /* REPLICA_JOURNAL_H */
