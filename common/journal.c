/* nbd-replica: group-commit appender for the log ring.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * Durability argument (the one place appends become durable):
 * the leader (see journal.h) writes a whole batch with pwritev into the
 * preallocated, zero-filled ring, then calls fdatasync on the log fd.
 * fdatasync returns only after the written data, and any metadata needed
 * to read it back, are on stable storage (the device cache is flushed by
 * the filesystem's barrier).  Since the file never changes size after
 * formatting, fdatasync is as strong as fsync here.  Only after it
 * returns does any submitter of the batch learn its unit is done, so no
 * reply is ever sent for a record that is not durable.
 *
 * Each batch ends on a 4 KiB boundary (the last record's rec_size takes
 * the padding), so a batch never shares a block with an earlier durable
 * batch: a torn write can only damage records that were never
 * acknowledged, and the scan stops at them by checksum.
 */
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <inttypes.h>
#include <limits.h>
#include <time.h>

#include "journal.h"

#define BATCH_MAX_BYTES   (16u * 1024 * 1024)
#define BATCH_MAX_IOV     1000           /* below IOV_MAX (1024) */
#define SEQ_RESERVE_STEP  (1u << 16)

static ssize_t
sys_pwritev (int fd, const struct iovec *iov, int n, off_t off)
{
  return pwritev (fd, iov, n, off);
}

const struct journal_io journal_sys_io = {
  .pwritev = sys_pwritev,
  .fdatasync = fdatasync,
};

static uint64_t
ring_size (const struct journal *j)
{
  return j->ring_size;
}

/* Geometry is copied at start: log->sb is rewritten (same geometry) by
 * checkpoints under sb_lock, which the data path does not take.
 */
static uint64_t
lsn_to_off (const struct journal *j, uint64_t lsn)
{
  return j->ring_offset + lsn % j->ring_size;
}

uint64_t
journal_max_unit_bytes (const struct journal *j)
{
  return ring_size (j) / 4;
}

/* An elided write's data is not logged (the caller applies it from
 * e->payload all the same).
 */
static uint32_t
entry_payload_len (const struct jentry *e)
{
  return e->op == RLOG_OP_WRITE && !(e->flags & RLOG_FLAG_ELIDED)
    ? e->length : 0;
}

static uint64_t
unit_bytes (const struct junit *u)
{
  uint64_t n = 0;

  for (size_t i = 0; i < u->n; ++i)
    n += rlog_rec_size (entry_payload_len (&u->entries[i]));
  return n;
}

/* In-flight list, in seq order (appended by the leader only). */
static void
inflight_add (struct journal *j, struct jentry *e)
{
  e->inext = NULL;
  e->iprev = j->itail;
  if (j->itail)
    j->itail->inext = e;
  else
    j->ihead = e;
  j->itail = e;
  e->inflight = true;
}

static void
inflight_del (struct journal *j, struct jentry *e)
{
  if (!e->inflight)
    return;
  if (e->iprev)
    e->iprev->inext = e->inext;
  else
    j->ihead = e->inext;
  if (e->inext)
    e->inext->iprev = e->iprev;
  else
    j->itail = e->iprev;
  e->inflight = false;
}

/* A planned batch: units [first .. last], laid out from start_lsn. */
struct batch {
  struct junit *units;          /* detached queue segment */
  uint64_t start_lsn, end_lsn;
  uint64_t wrap_lsn;            /* UINT64_MAX if no WRAP record */
  uint32_t wrap_size;
  uint8_t wrap_hdr[RLOG_REC_HDR_SIZE];
  size_t nrecs;
};

/* Advance a layout position over one unit: records never straddle the
 * ring's end (a WRAP filler takes the remainder, noted in *wrap_lsn).
 */
static uint64_t
plan_unit (uint64_t rs, const struct junit *u, uint64_t lsn,
           uint64_t *wrap_lsn, uint32_t *wrap_size)
{
  for (size_t i = 0; i < u->n; ++i) {
    uint32_t sz = rlog_rec_size (entry_payload_len (&u->entries[i]));
    uint64_t room = rs - lsn % rs;
    if (sz > room) {
      *wrap_lsn = lsn;
      *wrap_size = room;
      lsn += room;
    }
    lsn += sz;
  }
  return lsn;
}

static uint64_t
block_align (uint64_t lsn)
{
  return (lsn + RLOG_BLOCK - 1) & ~(uint64_t) (RLOG_BLOCK - 1);
}

/* Take as many queued units as fit the limits and the free space (the
 * batch, padded to a block, must not reach the checkpoint one ring
 * ahead: never an overwrite of unapplied records).  Returns false
 * (nothing taken) if not even the first unit fits.  A batch is at most
 * half the ring, so it wraps at most once.  Called with j->lock held.
 */
static bool
take_batch (struct journal *j, struct batch *b)
{
  struct junit *u, *end = NULL;
  uint64_t bytes = 0, recs = 0, rs = ring_size (j);
  uint64_t lsn = j->head_lsn, end_lsn = lsn, wl = UINT64_MAX;
  uint32_t ws = 0;
  uint64_t limit = rs / 2 < BATCH_MAX_BYTES ? rs / 2 : BATCH_MAX_BYTES;

  for (u = j->qhead; u; u = u->next) {
    uint64_t wl2 = wl, next;
    uint32_t ws2 = ws;

    if (end && (bytes + u->bytes > limit ||
                2 * (recs + u->n) + 1 > BATCH_MAX_IOV))
      break;
    next = plan_unit (rs, u, lsn, &wl2, &ws2);
    if (block_align (next) - j->ckpt_lsn > rs)
      break;
    lsn = next;
    end_lsn = block_align (next);
    wl = wl2;
    ws = ws2;
    bytes += u->bytes;
    recs += u->n;
    end = u;
  }
  if (!end)
    return false;

  b->units = j->qhead;
  j->qhead = end->next;
  if (!j->qhead)
    j->qtail = NULL;
  end->next = NULL;
  b->start_lsn = j->head_lsn;
  b->end_lsn = end_lsn;
  b->wrap_lsn = wl;
  b->wrap_size = ws;
  b->nrecs = recs;
  return true;
}

/* Assign seq, lsn, epoch to every entry; register them in flight.
 * Called with j->lock held.
 */
static void
assign_batch (struct journal *j, struct batch *b)
{
  uint64_t lsn = b->start_lsn, now = rlog_now_ns ();
  struct jentry *last = NULL;

  for (struct junit *u = b->units; u; u = u->next) {
    for (size_t i = 0; i < u->n; ++i) {
      struct jentry *e = &u->entries[i];
      uint32_t plen = entry_payload_len (e);

      e->space_lsn = lsn;
      if (lsn == b->wrap_lsn) {
        struct rlog_rec w = {
          .op = RLOG_OP_WRAP, .seq = j->head_seq,
          .epoch = j->follow ? j->head_epoch : j->epoch,
          .rec_size = b->wrap_size, .timestamp_ns = now,
        };
        rlog_rec_seal (&w, b->wrap_hdr, 0);
        lsn += b->wrap_size;
      }
      e->prev_seq = j->last_seq;
      e->prev_epoch = j->last_epoch;
      memset (&e->rec, 0, sizeof e->rec);
      e->rec.op = e->op;
      e->rec.flags = e->flags;
      e->rec.payload_len = plen;
      e->rec.length = e->length;
      e->rec.offset = e->offset;
      e->rec.rec_size = rlog_rec_size (plen);
      if (j->follow) {
        e->rec.seq = j->head_seq = e->seq;
        e->rec.epoch = j->head_epoch = e->epoch;
      }
      else {
        e->rec.seq = ++j->head_seq;
        e->rec.epoch = j->epoch;
      }
      e->rec.timestamp_ns = now;
      e->lsn = lsn;
      lsn += e->rec.rec_size;
      j->last_seq = e->rec.seq;
      j->last_epoch = e->rec.epoch;
      inflight_add (j, e);
      last = e;
    }
  }
  /* The last record absorbs the padding to the block boundary. */
  last->rec.rec_size += b->end_lsn - lsn;
  if (!j->follow)
    j->head_epoch = j->epoch;
  j->head_lsn = b->end_lsn;
}

/* Build the iovecs and write; the batch may wrap once at the ring end
 * (the WRAP record fills up to it).  Returns 0 or -1 with errno.
 */
static int
write_batch (struct journal *j, struct batch *b)
{
  struct iovec iov[BATCH_MAX_IOV + 8];
  static const char pad_src[RLOG_BLOCK];
  int n = 0;
  uint64_t seg_lsn = b->start_lsn, lsn = b->start_lsn, rs = ring_size (j);

#define FLUSH_SEGMENT()                                                 \
  do {                                                                  \
    if (n > 0) {                                                        \
      ssize_t want = lsn - seg_lsn, r;                                  \
      r = j->io->pwritev (j->log->fd, iov, n, lsn_to_off (j, seg_lsn)); \
      if (r == -1) return -1;                                           \
      if (r != want) { errno = EIO; return -1; }                        \
    }                                                                   \
    n = 0; seg_lsn = lsn;                                               \
  } while (0)

  for (struct junit *u = b->units; u; u = u->next) {
    for (size_t i = 0; i < u->n; ++i) {
      struct jentry *e = &u->entries[i];
      uint32_t used;

      /* A record that ended exactly at the ring's end needs no WRAP,
       * but the write must still restart at the ring's start: one
       * pwritev would run on past the end (of the file).
       */
      if (lsn != seg_lsn && lsn % rs == 0)
        FLUSH_SEGMENT ();
      if (lsn == b->wrap_lsn) {
        iov[n++] = (struct iovec) { b->wrap_hdr, RLOG_REC_HDR_SIZE };
        lsn += RLOG_REC_HDR_SIZE;
        FLUSH_SEGMENT ();        /* the rest of the ring is filler */
        lsn = seg_lsn = b->wrap_lsn + b->wrap_size;
      }
      rlog_rec_seal (&e->rec, e->hdr,
                     e->rec.payload_len ? e->payload_crc : 0);
      iov[n++] = (struct iovec) { e->hdr, RLOG_REC_HDR_SIZE };
      if (e->rec.payload_len)
        iov[n++] = (struct iovec) { (void *) e->payload, e->rec.payload_len };
      used = RLOG_REC_HDR_SIZE + e->rec.payload_len;
      lsn += used;
      /* The gap to the next record (under 64 bytes) is written as
       * zeroes, so a batch is one contiguous write.  The padding of the
       * batch's last record to the block boundary is not written at
       * all: nothing reads it (the CRC covers header and payload only),
       * and a lone 4 KiB write then costs 4160 bytes of I/O, not 8 KiB.
       */
      if (e->rec.rec_size > used) {
        uint32_t gap = e->rec.rec_size - used;
        if (!u->next && i + 1 == u->n)
          gap = 0;
        if (gap > 0) {
          iov[n++] = (struct iovec) { (void *) pad_src, gap };
          lsn += gap;
        }
      }
      if (n >= BATCH_MAX_IOV)
        FLUSH_SEGMENT ();
    }
  }
  FLUSH_SEGMENT ();
#undef FLUSH_SEGMENT
  return 0;
}

/* After a failed append: make the failed batch unreachable (zero its
 * first block, so a scan stops there), then start a new epoch so no
 * record of the failed batch can ever chain onto newer ones.  If even
 * that fails the log is fenced.  Called without j->lock.
 */
static void
recover_from_failure (struct journal *j, const struct batch *b)
{
  static const char zero[RLOG_BLOCK];
  struct rlog_sb sb;
  int ok;

  ok = pwrite (j->log->fd, zero, RLOG_BLOCK,
               lsn_to_off (j, b->start_lsn)) == RLOG_BLOCK &&
    j->io->fdatasync (j->log->fd) == 0;
  pthread_mutex_lock (&j->log->sb_lock);
  if (ok) {
    sb = j->log->sb;
    sb.epoch++;
    ok = rlog_sb_write_locked (j->log, &sb) == 0;
  }
  pthread_mutex_unlock (&j->log->sb_lock);

  if (!ok && j->fatal)
    /* The failed batch may still be (partly) on the device and could
     * be replayed: its submitters must not be told it failed.  The
     * owner ends the process (a crash, as far as the clients know);
     * replay then decides.
     */
    j->fatal (j->fatal_opaque, "the log device failed and the failed "
              "batch could not be invalidated");
  pthread_mutex_lock (&j->lock);
  if (ok)
    j->epoch = sb.epoch;
  else
    j->fenced = true;
  pthread_mutex_unlock (&j->lock);
}

/* Persist a larger seq reservation before handing out seqs above the
 * current one, so no seq is ever reused after a crash.  A follower also
 * raises the superblock's epoch to the primary's (the scanner refuses
 * records of an epoch above the superblock's).
 */
static int
reserve_seqs (struct journal *j, uint64_t upto, uint64_t epoch)
{
  struct rlog_sb sb;
  int r = 0;

  pthread_mutex_lock (&j->log->sb_lock);
  if (j->log->sb.seq_reserved < upto || j->log->sb.epoch < epoch) {
    sb = j->log->sb;
    if (sb.seq_reserved < upto)
      sb.seq_reserved = upto + j->seq_reserve_step;
    if (sb.epoch < epoch)
      sb.epoch = epoch;
    r = rlog_sb_write_locked (j->log, &sb);
  }
  upto = j->log->sb.seq_reserved;
  epoch = j->log->sb.epoch;
  pthread_mutex_unlock (&j->log->sb_lock);
  if (r == 0) {
    pthread_mutex_lock (&j->lock);
    j->seq_reserved = upto;
    if (j->follow)
      j->epoch = epoch;
    pthread_mutex_unlock (&j->lock);
  }
  return r;
}

/* The highest seq and epoch a batch needs covered by the superblock. */
static void
batch_needs (const struct journal *j, const struct batch *b,
             uint64_t *seq, uint64_t *epoch)
{
  const struct junit *u = b->units;

  if (!j->follow) {
    *seq = j->head_seq + b->nrecs;
    *epoch = 0;
    return;
  }
  while (u->next)
    u = u->next;
  *seq = u->entries[u->n - 1].seq;
  *epoch = u->entries[u->n - 1].epoch;
}

static void
notify (struct journal *j, enum journal_event ev, uint64_t seq,
        uint64_t epoch, uint64_t lsn, size_t nrecs)
{
  if (j->notify)
    j->notify (j->notify_opaque, ev, seq, epoch, lsn, nrecs);
}

/* Write one batch: everything queued that fits.  Called with j->lock
 * held by the current leader (j->writing set); drops the lock during
 * I/O.  Returns with j->lock held.
 */
static void
run_batch (struct journal *j)
{
  struct batch b;
  uint64_t need_seq, need_epoch, last_seq, last_epoch;
  uint64_t prev_last_seq, prev_last_epoch;
  int err = 0;

  memset (&b, 0, sizeof b);
  if (j->fenced || j->aborted) {
    err = EIO;
    b.units = j->qhead;
    j->qhead = j->qtail = NULL;
    goto finish;
  }
  if (!take_batch (j, &b)) {
    /* Log full: never overwrite unapplied records; ask for a
     * checkpoint and wait for it to free space.
     */
    j->stats.space_waits++;
    if (j->pressure) {
      pthread_mutex_unlock (&j->lock);
      j->pressure (j->pressure_opaque);
      pthread_mutex_lock (&j->lock);
    }
    if (!take_batch (j, &b)) {
      struct timespec ts;
      clock_gettime (CLOCK_MONOTONIC, &ts);     /* space_cond's clock */
      ts.tv_sec += 1;
      pthread_cond_timedwait (&j->space_cond, &j->lock, &ts);
      /* journal_abort/journal_stop while waiting: the next round fails
       * the queued units (they have no seq yet, nothing was written).
       */
      if (j->stopping)
        j->aborted = true;
      return;
    }
  }
  batch_needs (j, &b, &need_seq, &need_epoch);
  if (need_seq > j->seq_reserved || need_epoch > j->epoch) {
    pthread_mutex_unlock (&j->lock);
    if (reserve_seqs (j, need_seq, need_epoch) == -1) {
      err = errno ? errno : EIO;
      pthread_mutex_lock (&j->lock);
      j->fenced = true;
      goto finish;
    }
    pthread_mutex_lock (&j->lock);
  }
  prev_last_seq = j->last_seq;
  prev_last_epoch = j->last_epoch;
  assign_batch (j, &b);
  last_seq = j->head_seq;
  last_epoch = j->head_epoch;
  pthread_mutex_unlock (&j->lock);

  /* The replicator may ship a batch as soon as it is written: in sync
   * mode the peer's round trip overlaps our fdatasync.
   */
  if (write_batch (j, &b) == -1)
    err = errno ? errno : EIO;
  else {
    notify (j, JOURNAL_WRITTEN, last_seq, last_epoch, b.end_lsn, b.nrecs);
    if (j->io->fdatasync (j->log->fd) == -1)
      err = errno ? errno : EIO;
  }
  /* A failed batch follows the last record before it, not the head seq
   * (which, after an earlier failure or a start, is a burned seq).
   */
  if (err)
    notify (j, JOURNAL_FAILED, prev_last_seq, prev_last_epoch, b.start_lsn,
            b.nrecs);
  else
    notify (j, JOURNAL_DURABLE, last_seq, last_epoch, b.end_lsn, b.nrecs);
  if (err) {
    /* Forget the batch atomically with respect to checkpoints: its
     * records leave the in-flight list and the head goes back to where
     * the batch started (its seqs stay burned).
     */
    pthread_mutex_lock (&j->lock);
    for (struct junit *u = b.units; u; u = u->next)
      for (size_t i = 0; i < u->n; ++i)
        inflight_del (j, &u->entries[i]);
    j->head_lsn = b.start_lsn;
    j->last_seq = prev_last_seq;
    j->last_epoch = prev_last_epoch;
    pthread_mutex_unlock (&j->lock);
    recover_from_failure (j, &b);
  }

  pthread_mutex_lock (&j->lock);
  if (!err) {
    j->durable_seq = j->head_seq;
    j->stats.log_syncs++;
    j->stats.batches++;
    for (struct junit *u = b.units; u; u = u->next) {
      j->stats.records_appended += u->n;
      j->stats.bytes_appended += u->bytes;
    }
  }
 finish:
  if (err) {
    j->fault_errno = err;
    j->stats.append_errors++;
  }
  while (b.units) {
    struct junit *u = b.units;
    b.units = u->next;
    u->err = err;
    u->done = true;
    pthread_cond_signal (&u->cond);
  }
}

int
journal_start (struct journal *j, struct rlog *log,
               const struct journal_io *io, uint64_t head_seq,
               uint64_t head_lsn, journal_pressure_fn pressure, void *opaque)
{
  memset (j, 0, sizeof *j);
  j->log = log;
  j->io = io ? io : &journal_sys_io;
  {
    /* Adaptive: spin briefly before sleeping.  The lock is held for
     * microseconds at a time, and on few cores a futex sleep/wake pair
     * per request costs more than the critical section.
     */
    pthread_mutexattr_t a;
    pthread_mutexattr_init (&a);
    pthread_mutexattr_settype (&a, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init (&j->lock, &a);
    pthread_mutexattr_destroy (&a);
  }
  pthread_cond_init (&j->done_cond, NULL);
  {
    /* Its timed wait measures CLOCK_MONOTONIC (a wall clock step must
     * not stretch it).
     */
    pthread_condattr_t a;
    pthread_condattr_init (&a);
    pthread_condattr_setclock (&a, CLOCK_MONOTONIC);
    pthread_cond_init (&j->space_cond, &a);
    pthread_condattr_destroy (&a);
  }
  j->head_seq = j->durable_seq = head_seq;
  j->head_lsn = j->ckpt_lsn = head_lsn;
  j->epoch = j->head_epoch = log->sb.epoch;
  j->last_seq = head_seq;
  j->last_epoch = log->sb.epoch;
  j->seq_reserve_step = SEQ_RESERVE_STEP;
  j->seq_reserved = log->sb.seq_reserved;
  j->ring_offset = log->sb.ring_offset;
  j->ring_size = log->sb.ring_size;
  j->pressure = pressure;
  j->pressure_opaque = opaque;
  j->running = true;
  return 0;
}

void
journal_keep_tail (struct journal *j, uint64_t ckpt_lsn)
{
  pthread_mutex_lock (&j->lock);
  j->ckpt_lsn = ckpt_lsn;
  pthread_mutex_unlock (&j->lock);
}

void
journal_set_last (struct journal *j, uint64_t seq, uint64_t epoch)
{
  pthread_mutex_lock (&j->lock);
  j->last_seq = seq;
  j->last_epoch = epoch;
  pthread_mutex_unlock (&j->lock);
}

void
journal_follow (struct journal *j, uint64_t head_epoch)
{
  pthread_mutex_lock (&j->lock);
  j->follow = true;
  j->head_epoch = head_epoch;
  j->last_epoch = head_epoch;
  pthread_mutex_unlock (&j->lock);
}

void
journal_rebase (struct journal *j, uint64_t seq, uint64_t epoch)
{
  pthread_mutex_lock (&j->lock);
  j->head_seq = j->durable_seq = seq;
  j->head_epoch = epoch;
  j->last_seq = seq;
  j->last_epoch = epoch;
  pthread_mutex_unlock (&j->lock);
}

uint64_t
journal_head_lsn (struct journal *j)
{
  uint64_t r;

  pthread_mutex_lock (&j->lock);
  r = j->head_lsn;
  pthread_mutex_unlock (&j->lock);
  return r;
}

void
journal_lead (struct journal *j, uint64_t epoch)
{
  pthread_mutex_lock (&j->lock);
  j->follow = false;
  j->epoch = epoch;
  if (j->head_seq < j->seq_reserved)
    j->head_seq = j->seq_reserved;
  pthread_mutex_unlock (&j->lock);
}

void
journal_head (struct journal *j, uint64_t *seq, uint64_t *epoch)
{
  pthread_mutex_lock (&j->lock);
  *seq = j->head_seq;
  *epoch = j->head_epoch;
  pthread_mutex_unlock (&j->lock);
}

void
journal_abort (struct journal *j)
{
  pthread_mutex_lock (&j->lock);
  j->aborted = true;
  pthread_cond_broadcast (&j->space_cond);
  pthread_mutex_unlock (&j->lock);
}

void
journal_stop (struct journal *j)
{
  if (!j->running)
    return;
  pthread_mutex_lock (&j->lock);
  j->stopping = true;           /* new appends fail with EIO */
  pthread_cond_broadcast (&j->space_cond);
  while (j->writing || j->qhead)
    pthread_cond_wait (&j->done_cond, &j->lock);
  pthread_mutex_unlock (&j->lock);
  j->running = false;
}

/* Refuse what the scanner would refuse (rlog_rec_decode_hdr): an
 * acknowledged record that replay rejects would cut the log there.
 */
static bool
entry_valid (const struct jentry *e)
{
  if (e->flags & ~(RLOG_FLAG_FUA | RLOG_FLAG_MAY_TRIM | RLOG_FLAG_SYNC |
                   RLOG_FLAG_SYNC_END | RLOG_FLAG_ELIDED))
    return false;
  /* (the same rules as rlog_rec_decode_hdr) */
  if ((e->flags & RLOG_FLAG_SYNC_END) && e->op != RLOG_OP_FLUSH)
    return false;
  if ((e->flags & RLOG_FLAG_ELIDED) &&
      (e->op != RLOG_OP_WRITE || !(e->flags & RLOG_FLAG_SYNC)))
    return false;
  switch (e->op) {
  case RLOG_OP_WRITE:
    if (e->length == 0 || e->length > RLOG_MAX_PAYLOAD || !e->payload)
      return false;
    break;
  case RLOG_OP_ZERO:
  case RLOG_OP_TRIM:
    if (e->length == 0)
      return false;
    break;
  case RLOG_OP_FLUSH:
    return e->length == 0 && !(e->flags & ~RLOG_FLAG_SYNC_END) &&
      (e->offset == 0 || (e->flags & RLOG_FLAG_SYNC_END));
  default:
    return false;
  }
  return e->offset + e->length >= e->offset;
}

int
journal_enqueue (struct journal *j, struct junit *u)
{
  uint64_t bytes = unit_bytes (u);

  for (size_t i = 0; i < u->n; ++i) {
    if (!entry_valid (&u->entries[i])) {
      errno = EINVAL;
      return -1;
    }
  }
  if (u->n == 0 || bytes > journal_max_unit_bytes (j)) {
    errno = EINVAL;
    return -1;
  }
  u->bytes = bytes;
  u->err = 0;
  u->done = false;
  u->next = NULL;
  pthread_cond_init (&u->cond, NULL);

  pthread_mutex_lock (&j->lock);
  if (j->fenced || j->aborted || j->stopping) {
    pthread_mutex_unlock (&j->lock);
    pthread_cond_destroy (&u->cond);
    errno = EIO;
    return -1;
  }
  if (j->qtail)
    j->qtail->next = u;
  else
    j->qhead = u;
  j->qtail = u;
  pthread_mutex_unlock (&j->lock);
  return 0;
}

int
journal_wait (struct journal *j, struct junit *u)
{
  pthread_mutex_lock (&j->lock);
  /* Leader/follower group commit: if nobody is writing, this thread
   * writes everything queued (its own unit included) itself, with no
   * hand-off to another thread; otherwise it sleeps on its own unit's
   * condition.  A leader wakes exactly the submitters of its batch, and
   * then the first unit still queued, whose submitter leads the next
   * batch with every unit that queued up meanwhile.  (One condition per
   * unit: a shared one would wake all waiters at every batch.)
   */
  while (!u->done) {
    if (!j->writing) {
      j->writing = true;
      run_batch (j);
      j->writing = false;
      if (j->qhead)
        pthread_cond_signal (&j->qhead->cond);
      else if (j->stopping)
        pthread_cond_broadcast (&j->done_cond);
    }
    else
      pthread_cond_wait (&u->cond, &j->lock);
  }
  pthread_mutex_unlock (&j->lock);
  pthread_cond_destroy (&u->cond);
  if (u->err) {
    errno = u->err;
    return -1;
  }
  return 0;
}

int
journal_append (struct journal *j, struct junit *u)
{
  if (journal_enqueue (j, u) == -1)
    return -1;
  return journal_wait (j, u);
}

void
journal_complete (struct journal *j, struct jentry *e)
{
  pthread_mutex_lock (&j->lock);
  inflight_del (j, e);
  pthread_mutex_unlock (&j->lock);
}

void
journal_checkpoint_point (struct journal *j, uint64_t *seq, uint64_t *epoch,
                          uint64_t *lsn)
{
  pthread_mutex_lock (&j->lock);
  if (j->ihead) {
    /* Not the record's lsn if a WRAP comes first: a failed batch sends
     * the head back to where it began, which a checkpoint must never
     * pass (the scan from a WRAP skips it, or stops at the zeroed
     * block of a failed one).
     */
    *seq = j->ihead->prev_seq;
    *epoch = j->ihead->prev_epoch;
    *lsn = j->ihead->space_lsn;
  }
  else {
    *seq = j->last_seq;
    *epoch = j->last_epoch;
    *lsn = j->head_lsn;
  }
  pthread_mutex_unlock (&j->lock);
}

void
journal_set_checkpoint (struct journal *j, uint64_t lsn)
{
  pthread_mutex_lock (&j->lock);
  if (lsn > j->ckpt_lsn)
    j->ckpt_lsn = lsn;
  pthread_cond_broadcast (&j->space_cond);
  pthread_mutex_unlock (&j->lock);
}

bool
journal_fenced (struct journal *j)
{
  bool f;

  pthread_mutex_lock (&j->lock);
  f = j->fenced;
  pthread_mutex_unlock (&j->lock);
  return f;
}

uint64_t
journal_used_bytes (struct journal *j)
{
  uint64_t r;

  pthread_mutex_lock (&j->lock);
  r = j->head_lsn - j->ckpt_lsn;
  pthread_mutex_unlock (&j->lock);
  return r;
}

void
journal_get_stats (struct journal *j, struct journal_stats *st,
                   uint64_t *head_seq, uint64_t *used, int *fault_errno,
                   bool *fenced)
{
  pthread_mutex_lock (&j->lock);
  *st = j->stats;
  *head_seq = j->durable_seq;
  *used = j->head_lsn - j->ckpt_lsn;
  *fault_errno = j->fault_errno;
  *fenced = j->fenced;
  pthread_mutex_unlock (&j->lock);
}
