/* nbd-replica: the secondary during a resync (docs/design.md 21.4).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * CONTROL RESYNC starts one (resync_begin): staged, the disk keeps its
 * image and the records are journaled but applied only at the pass's
 * SYNC_END record; in place, they apply as they come and the disk is
 * inconsistent until then.  commit_unit applies or stages each durable
 * unit the replication export (secondary.c) hands it; promote rolls a
 * staged set back.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <inttypes.h>
#include <time.h>

#include <nbdkit-filter.h>

#include "replica.h"
#include "repl.h"
#include "conns.h"
#include "wire.h"
#include "logfile.h"
#include "secondary-int.h"

/* ---- resync (docs/design.md "The secondary during a resync") ---- */

/* Wait (S.lock held) until every queued record is committed, at most
 * TURN_TIMEOUT_SEC: a resync starts from a quiet log.
 */
static bool
wait_committed (void)
{
  struct timespec ts;
  time_t deadline = time (NULL) + TURN_TIMEOUT_SEC;

  while ((S.done_seq != S.enq_seq || S.ending) &&
         rep.state != VOL_FAILED && time (NULL) < deadline) {
    clock_gettime (CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    pthread_cond_timedwait (&S.cond, &S.lock, &ts);
  }
  return S.done_seq == S.enq_seq && !S.ending && rep.state != VOL_FAILED;
}

/* The superblock at the start of a resync (ckpt_lock, S.lock and
 * sb_lock held).  Everything journaled is applied and flushed, so the
 * checkpoint moves to the head: the log is empty.  Staged: the disk
 * stays the image of the last applied record, which the checkpoint
 * keeps naming (a restart discards the staged records and reports it);
 * the staged records follow the primary's base.  In place: the disk
 * is marked inconsistent, and the checkpoint names the base, which the
 * records that follow continue.
 */
static void
resync_sb (struct rlog_sb *sb, const struct wire_control *ctl, bool stage,
           uint64_t head)
{
  sb->flags |= RLOG_SB_RESYNC;
  if (stage) {
    if (!(sb->flags & RLOG_SB_STAGING)) {
      sb->checkpoint_seq = S.applied_seq;
      sb->checkpoint_epoch = S.applied_epoch;
    }
    sb->flags |= RLOG_SB_STAGING;
    sb->stage_seq = ctl->seq;
    sb->stage_epoch = ctl->epoch;
  }
  else {
    sb->flags = (sb->flags | RLOG_SB_INCONSISTENT) & ~RLOG_SB_STAGING;
    sb->checkpoint_seq = ctl->seq;
    sb->checkpoint_epoch = ctl->epoch;
  }
  sb->checkpoint_lsn = head;
  if (sb->seq_reserved < ctl->seq)
    sb->seq_reserved = ctl->seq;
  if (sb->epoch < ctl->epoch)
    sb->epoch = ctl->epoch;
}

/* CONTROL RESYNC: the records that follow continue after the primary's
 * base, whatever we hold; the primary's sync pass re-sends every block
 * where our disk differs, then a SYNC_END record.  A staged resync
 * (asked for, and our disk is consistent) keeps the disk's image until
 * then; a resync in place (an initial sync, or a disk already
 * inconsistent) applies as it goes.
 */
int
resync_begin (const struct wire_control *ctl, int *err)
{
  struct rlog_sb sb;
  uint64_t head;
  bool stage = false;
  int ferr, r;

  /* Wait for the queued records first, without ckpt_lock: a unit still
   * queued may need a checkpoint to free log space.  Then again under
   * it (a batch of an older connection may have queued meanwhile).
   */
  pthread_mutex_lock (&S.lock);
  wait_committed ();
  pthread_mutex_unlock (&S.lock);
  pthread_mutex_lock (&rep.ckpt_lock);
  pthread_mutex_lock (&S.lock);
  if (S.quiesced || S.done_seq != S.enq_seq || S.ending ||
      rep.state == VOL_FAILED) {
    bool promoted = S.quiesced;
    pthread_mutex_unlock (&S.lock);
    pthread_mutex_unlock (&rep.ckpt_lock);
    return refuse (err, promoted ? EPERM : EIO, "resync refused: %s",
                   promoted ? "this node was promoted"
                   : "records of an older connection are still being "
                   "applied (the primary retries)");
  }
  head = journal_head_lsn (&rep.journal);
  r = conns_flush (rep.ctx, rep.all_conns, &ferr);
  if (r == 0) {
    pthread_mutex_lock (&rep.log->sb_lock);
    sb = rep.log->sb;
    stage = (ctl->flags & WIRE_RESYNC_STAGE) &&
      !(sb.flags & RLOG_SB_INCONSISTENT);
    resync_sb (&sb, ctl, stage, head);
    r = rlog_sb_write_locked (rep.log, &sb);
    ferr = errno;
    pthread_mutex_unlock (&rep.log->sb_lock);
  }
  if (r == -1) {
    pthread_mutex_unlock (&S.lock);
    pthread_mutex_unlock (&rep.ckpt_lock);
    replica_fail (&rep, ferr, "starting a resync: %s", strerror (ferr));
    *err = EIO;
    return -1;
  }
  journal_set_checkpoint (&rep.journal, head);
  journal_rebase (&rep.journal, ctl->seq, ctl->epoch);
  S.enq_seq = S.done_seq = ctl->seq;
  S.enq_epoch = S.done_epoch = ctl->epoch;
  if (!stage) {
    S.applied_seq = ctl->seq;
    S.applied_epoch = ctl->epoch;
  }
  S.staging = stage;
  S.elide = !stage;             /* INCONSISTENT is durable now */
  S.end_queued = false;
  S.staged_records = 0;
  S.resyncing = true;
  S.resync_base = ctl->seq;
  pthread_mutex_unlock (&S.lock);
  pthread_mutex_unlock (&rep.ckpt_lock);
  nbdkit_debug ("replica: resync from the primary's seq %" PRIu64 " starts "
                "(%s)", ctl->seq, stage ? "staged: the disk keeps its image "
                "until the resync ends" : "in place: the disk is "
                "inconsistent until the resync ends");
  return 0;
}

/* Apply the staged records up to seq upto, reading them back from our
 * log.  First the superblock says the disk is inconsistent (a crash
 * while applying must not let a restart discard half-applied records
 * as a staged set), and its checkpoint names the stage's base, which
 * the staged records continue, so a replay finds them.
 */
static int
apply_staged (uint64_t upto)
{
  struct rlog_scan scan;
  struct rlog_rec rec = { 0 };
  const uint8_t *payload;
  struct rlog_sb sb;
  int r, e = 0;

  pthread_mutex_lock (&rep.ckpt_lock);
  pthread_mutex_lock (&rep.log->sb_lock);
  sb = rep.log->sb;
  sb.flags = (sb.flags | RLOG_SB_INCONSISTENT) & ~RLOG_SB_STAGING;
  sb.checkpoint_seq = sb.stage_seq;
  sb.checkpoint_epoch = sb.stage_epoch;
  r = rlog_sb_write_locked (rep.log, &sb);
  pthread_mutex_unlock (&rep.log->sb_lock);
  /* S.staging stays set until the records are applied: it holds the
   * checkpoint at the stage's start (secondary_clamp_checkpoint), and
   * their space in the ring, meanwhile.
   */
  pthread_mutex_unlock (&rep.ckpt_lock);
  if (r == -1 || rlog_scan_init_at (&scan, rep.log, sb.checkpoint_lsn,
                                    sb.stage_seq, sb.stage_epoch) == -1) {
    replica_fail (&rep, EIO, "applying the staged resync: %m");
    return 1;
  }
  while (e == 0 && (r = rlog_scan_next (&scan, &rec, &payload)) == 1) {
    plugin_call_begin ();
    r = replica_apply (rep.ctx, rec.op, rec.flags, payload, rec.length,
                       rec.offset, &e);
    plugin_call_end ();
    if (r == -1 || rec.seq >= upto)
      break;
  }
  if (e || rec.seq != upto) {
    replica_fail (&rep, EIO, "applying the staged resync stopped before "
                  "seq %" PRIu64 ": %s", upto, e ? strerror (e) : scan.why);
    rlog_scan_free (&scan);
    return 1;
  }
  rlog_scan_free (&scan);
  pthread_mutex_lock (&S.lock);
  S.applied_seq = upto;
  S.applied_epoch = rec.epoch;
  S.staging = false;            /* the checkpoint may pass them now */
  pthread_mutex_unlock (&S.lock);
  nbdkit_debug ("replica: applied the staged resync up to seq %" PRIu64,
                upto);
  return 0;
}

/* The SYNC_END record is applied: the disk is a state of the primary
 * again.  First a checkpoint: the disk is flushed and the checkpoint
 * passes every record up to the end record's unit (all applied), so
 * the elided records (mark_elided: all before the end record) are
 * durable on the disk and out of replay's reach before the superblock
 * says the disk is consistent.  A crash in between leaves INCONSISTENT
 * set: the primary runs a new pass.
 */
static int
resync_end (uint64_t seq)
{
  struct rlog_sb sb;
  uint64_t cseq, cepoch, clsn;
  int r;

  pthread_mutex_lock (&rep.ckpt_lock);
  journal_checkpoint_point (&rep.journal, &cseq, &cepoch, &clsn);
  repl_clamp_checkpoint (&cseq, &cepoch, &clsn);
  r = cseq < seq ? -1 : checkpoint_now (&rep, cseq, cepoch, clsn);
  pthread_mutex_unlock (&rep.ckpt_lock);
  if (r == -1) {
    /* checkpoint_now failed the volume; a point before the end record
     * is a bug (every record up to it is applied).
     */
    if (cseq < seq)
      replica_fail (&rep, EIO, "ending the resync: the checkpoint is at "
                    "seq %" PRIu64 ", before the end record %" PRIu64,
                    cseq, seq);
    return 1;
  }
  pthread_mutex_lock (&rep.log->sb_lock);
  sb = rep.log->sb;
  sb.flags &= ~(RLOG_SB_INCONSISTENT | RLOG_SB_RESYNC | RLOG_SB_STAGING |
                RLOG_SB_FOREIGN);
  r = rlog_sb_write_locked (rep.log, &sb);
  pthread_mutex_unlock (&rep.log->sb_lock);
  if (r == -1) {
    replica_fail (&rep, EIO, "ending the resync: writing the superblock: "
                  "%m");
    return 1;
  }
  pthread_mutex_lock (&S.lock);
  S.resyncing = false;
  S.elide = false;
  pthread_mutex_unlock (&S.lock);
  nbdkit_debug ("replica: resync complete at the primary's seq %" PRIu64
                ": this secondary is consistent", seq);
  return 0;
}

/* The seq of the current pass's SYNC_END record in the unit, or 0.
 * An older pass's end record (shipped again after a reconnect, from a
 * base before it) names another base: it ends nothing.
 */
static uint64_t
unit_end (const struct junit *u)
{
  uint64_t end = 0;

  pthread_mutex_lock (&S.lock);
  for (size_t i = 0; i < u->n && S.resyncing; ++i)
    if (u->entries[i].op == RLOG_OP_FLUSH &&
        (u->entries[i].flags & RLOG_FLAG_SYNC_END) &&
        u->entries[i].offset == S.resync_base)
      end = u->entries[i].seq;
  pthread_mutex_unlock (&S.lock);
  return end;
}

/* Staged: the unit is durable; it is applied at the resync's end. */
static void
stage_unit (struct junit *u)
{
  for (size_t i = 0; i < u->n; ++i)
    journal_complete (&rep.journal, &u->entries[i]);
  pthread_mutex_lock (&S.lock);
  S.staged_records += u->n;
  pthread_mutex_unlock (&S.lock);
}

/* The unit is committed: the next batch may commit (wait_done). */
static void
publish_done (const struct junit *u)
{
  pthread_mutex_lock (&S.lock);
  S.done_seq = u->entries[u->n - 1].seq;
  S.done_epoch = u->entries[u->n - 1].epoch;
  pthread_cond_broadcast (&S.cond);
  pthread_mutex_unlock (&S.lock);
}

/* Commit a durable unit: apply it, or stage it.  A staged set is
 * applied at the end record, or once it fills half our log (then the
 * resync goes on in place: the limit of staging).  The next batch
 * commits only once this unit's commit is complete, staged set
 * included: its records must reach the disk after the staged ones.
 * Returns 0, or 1 (failed; see apply_unit).
 */
int
commit_unit (struct junit *u, int *err)
{
  uint64_t end = unit_end (u), last = u->entries[u->n - 1].seq;
  bool staging;
  int r = 0;

  /* The unit's commit publishes done_seq before resync_end runs: a
   * RESYNC of a new connection must not rebase in between (resync_end
   * would then check the new pass's checkpoint, or clear its flags).
   */
  pthread_mutex_lock (&S.lock);
  staging = S.staging;
  if (end)
    S.ending = true;
  pthread_mutex_unlock (&S.lock);
  if (!staging)
    r = apply_unit (u, err);
  else {
    stage_unit (u);
    if (end)
      r = apply_staged (last);
    else if (journal_used_bytes (&rep.journal) > rep.journal.ring_size / 2) {
      nbdkit_error ("replica: the staged resync fills half of the log: "
                    "applying it now; this secondary is inconsistent until "
                    "the resync ends (a larger log keeps it consistent "
                    "through larger resyncs)");
      r = apply_staged (last);
      if (r == 0) {
        /* In place from now on (INCONSISTENT is durable): elide, unless
         * the end record was queued meanwhile.
         */
        pthread_mutex_lock (&S.lock);
        S.elide = S.resyncing && !S.end_queued;
        pthread_mutex_unlock (&S.lock);
      }
    }
    if (r)
      *err = EIO;
    else
      publish_done (u);
  }
  if (r == 0 && end)
    r = resync_end (end);
  if (end) {
    pthread_mutex_lock (&S.lock);
    S.ending = false;
    pthread_cond_broadcast (&S.cond);
    pthread_mutex_unlock (&S.lock);
  }
  return r;
}

void
secondary_clamp_checkpoint (uint64_t *seq, uint64_t *epoch, uint64_t *lsn)
{
  pthread_mutex_lock (&S.lock);
  if (S.staging) {
    pthread_mutex_lock (&rep.log->sb_lock);
    *seq = rep.log->sb.checkpoint_seq;
    *epoch = rep.log->sb.checkpoint_epoch;
    *lsn = rep.log->sb.checkpoint_lsn;
    pthread_mutex_unlock (&rep.log->sb_lock);
  }
  pthread_mutex_unlock (&S.lock);
}

/* Promote (replica_promote, ckpt_lock held, quiesced: every queued
 * record is applied), before the superblock write: a resync in place
 * may have left elided records after the checkpoint, whose data only
 * the disk holds and which replay would skip.  Flush the disk and move
 * the checkpoint past them first (a consistent log never holds one).
 * Returns 0, or -1 (the volume failed).
 */
int
secondary_promote_prepare (void)
{
  uint64_t seq, epoch, lsn;
  uint32_t flags;

  pthread_mutex_lock (&S.lock);
  S.elide = false;
  pthread_mutex_unlock (&S.lock);
  pthread_mutex_lock (&rep.log->sb_lock);
  flags = rep.log->sb.flags;
  pthread_mutex_unlock (&rep.log->sb_lock);
  if (!(flags & RLOG_SB_INCONSISTENT) || (flags & RLOG_SB_STAGING))
    return 0;
  journal_checkpoint_point (&rep.journal, &seq, &epoch, &lsn);
  return checkpoint_now (&rep, seq, epoch, lsn);
}

/* Promote (replica_promote, sb_lock held, quiesced): a staged resync is
 * rolled back (its records skipped: the disk is the image of the last
 * applied record); a resync in place leaves an inconsistent disk, which
 * only --force accepts.  Returns true if the journal must follow
 * (secondary_promoted).
 */
bool
secondary_promote_fixup (struct rlog_sb *sb)
{
  bool rolled_back = false;

  if (sb->flags & RLOG_SB_STAGING) {
    sb->checkpoint_lsn = journal_head_lsn (&rep.journal);
    rolled_back = true;
    nbdkit_error ("replica: promote: the staged resync is rolled back; the "
                  "volume is the image of seq %" PRIu64 " (crash-"
                  "consistent)", sb->checkpoint_seq);
  }
  else if (sb->flags & RLOG_SB_INCONSISTENT)
    nbdkit_error ("replica: promote --force: the resync in place did not "
                  "finish: the volume is NOT consistent");
  sb->flags &= ~(RLOG_SB_STAGING | RLOG_SB_INCONSISTENT | RLOG_SB_RESYNC |
                 RLOG_SB_FOREIGN);
  return rolled_back;
}

/* After the promote's superblock write. */
void
secondary_promoted (const struct rlog_sb *sb, bool rolled_back)
{
  if (!rolled_back)
    return;
  journal_set_checkpoint (&rep.journal, sb->checkpoint_lsn);
  journal_set_last (&rep.journal, sb->checkpoint_seq, sb->checkpoint_epoch);
  pthread_mutex_lock (&S.lock);
  S.staging = false;
  pthread_mutex_unlock (&S.lock);
}
