/* nbd-replica: the checkpointer thread: frees log space.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * The checkpoint may only move past records that are applied to the
 * backing AND flushed there (AND, on a primary with a peer,
 * acknowledged by the peer: repl_clamp_checkpoint): we sample the oldest record still in
 * flight, flush the backing (covering every write that completed before
 * the flush was issued), and only then write the superblock.  A crash at
 * any point leaves the old checkpoint, and replay redoes at most the
 * records after it (applying a record twice is harmless: records are
 * idempotent in seq order).
 */
#include <errno.h>
#include <time.h>
#include <inttypes.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "replica.h"
#include "conns.h"
#include "repl.h"

NBDKIT_DLL_PUBLIC int replica_debug_checkpoint = 0; /* -D replica.checkpoint=1 */

#define CKPT_INTERVAL_SEC 1
#define CKPT_BUSY_NSEC    (20 * 1000 * 1000)

int
checkpoint_now (struct replica *r, uint64_t seq, uint64_t epoch, uint64_t lsn)
{
  struct rlog_sb sb;
  int err, ret;

  /* A failed flush may have dropped written pages (Linux marks them
   * clean): a retry could "succeed" over lost data.  So the volume
   * fails, and the records stay in the log for replay at restart.
   */
  if (conns_flush (r->ctx, r->all_conns, &err) == -1) {
    replica_fail (r, err, "flushing the backing for a checkpoint failed: "
                  "%s; the log keeps every record since the last "
                  "checkpoint and replays them at the next start",
                  strerror (err));
    return -1;
  }
  /* A closing connection's own flush may have failed meanwhile (its
   * failure reported before our flushes returned: conns_final_flush):
   * its writes are not stable, whatever our flush of it said.
   */
  if (__atomic_load_n (&r->state, __ATOMIC_ACQUIRE) == VOL_FAILED)
    return -1;
  /* The dirty bitmap first: it covers the records freed now. */
  if (bitmap_flush () == -1) {
    err = errno;
    replica_fail (r, err, "writing the dirty bitmap for a checkpoint "
                  "failed: %s", strerror (err));
    return -1;
  }
  pthread_mutex_lock (&r->log->sb_lock);
  sb = r->log->sb;
  sb.checkpoint_seq = seq;
  sb.checkpoint_epoch = epoch;
  sb.checkpoint_lsn = lsn;
  ret = rlog_sb_write_locked (r->log, &sb);
  err = errno;
  pthread_mutex_unlock (&r->log->sb_lock);
  if (ret == -1) {
    /* The log device failed (perhaps writing back appended records):
     * stop trusting it.
     */
    replica_fail (r, err, "writing the log superblock for a checkpoint "
                  "failed: %s", strerror (err));
    return -1;
  }
  journal_set_checkpoint (&r->journal, lsn);
  pthread_mutex_lock (&r->state_lock);
  r->checkpoints++;
  pthread_mutex_unlock (&r->state_lock);
  if (replica_debug_checkpoint)
    nbdkit_debug ("checkpoint: seq %" PRIu64 " lsn %" PRIu64, seq, lsn);
  return 0;
}

/* Journal callback: the log is full, a writer waits. */
void
checkpoint_kick (void *opaque)
{
  struct replica *r = opaque;

  pthread_mutex_lock (&r->state_lock);
  r->ckpt_wanted = true;
  pthread_cond_signal (&r->ckpt_cond);
  pthread_mutex_unlock (&r->state_lock);
}

/* Checkpoint once a second, or at once when a writer waits for space,
 * or every 20 ms while the log is over a quarter full.  Never spins:
 * every round waits on the condition first.
 */
static void *
checkpoint_thread (void *arg)
{
  struct replica *r = arg;

  for (;;) {
    uint64_t seq, epoch, lsn;
    struct timespec ts;
    bool stop, busy;

    busy = journal_used_bytes (&r->journal) >= r->journal.ring_size / 4;
    clock_gettime (CLOCK_MONOTONIC, &ts);       /* ckpt_cond's clock */
    if (busy)
      ts.tv_nsec += CKPT_BUSY_NSEC;
    else
      ts.tv_sec += CKPT_INTERVAL_SEC;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock (&r->state_lock);
    if (!r->ckpt_wanted && !r->stopping)
      pthread_cond_timedwait (&r->ckpt_cond, &r->state_lock, &ts);
    r->ckpt_wanted = false;
    stop = r->stopping || r->state == VOL_FAILED;
    pthread_mutex_unlock (&r->state_lock);
    if (stop)
      break;

    pthread_mutex_lock (&r->ckpt_lock);
    journal_checkpoint_point (&r->journal, &seq, &epoch, &lsn);
    /* With a peer: never past what it acknowledged (repl.c); on a
     * secondary, never into a staged resync (secondary.c).
     */
    repl_clamp_checkpoint (&seq, &epoch, &lsn);
    pthread_mutex_lock (&r->log->sb_lock);
    stop = lsn == r->log->sb.checkpoint_lsn;   /* nothing new */
    pthread_mutex_unlock (&r->log->sb_lock);
    if (!stop)
      checkpoint_now (r, seq, epoch, lsn);
    pthread_mutex_unlock (&r->ckpt_lock);
  }
  return NULL;
}

int
checkpoint_start (struct replica *r)
{
  int e = pthread_create (&r->ckpt_thread, NULL, checkpoint_thread, r);

  if (e) {
    errno = e;
    nbdkit_error ("replica: pthread_create: %m");
    return -1;
  }
  r->ckpt_running = true;
  return 0;
}

void
checkpoint_stop (struct replica *r)
{
  if (!r->ckpt_running)
    return;
  pthread_mutex_lock (&r->state_lock);
  r->stopping = true;
  pthread_cond_signal (&r->ckpt_cond);
  pthread_mutex_unlock (&r->state_lock);
  pthread_join (r->ckpt_thread, NULL);
  r->ckpt_running = false;
}
