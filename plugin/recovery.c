/* nbd-replica: crash recovery, before the first client is served.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * Records after the checkpoint are applied to the backing in seq order
 * (the scan stops at the first record that is empty, torn, corrupt or
 * out of sequence: that is the end of the log, and nothing after it is
 * applied).  Then the backing is flushed and only then the superblock
 * records the new checkpoint, together with a new epoch and a fresh seq
 * reservation, so seqs handed out before the crash are never reused.
 */
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <inttypes.h>
#include <unistd.h>

#include <nbdkit-filter.h>

#include "replica.h"
#include "repl.h"

NBDKIT_DLL_PUBLIC int replica_debug_replay = 0;  /* -D replica.replay=1 */

static int
apply_record (struct replica *r, const struct rlog_rec *rec,
              const uint8_t *payload)
{
  int err = 0, ret;

  if (rec->op != RLOG_OP_FLUSH &&
      rec->offset + rec->length > r->log->sb.backing_size) {
    nbdkit_error ("replica-log: record seq %" PRIu64 " lies beyond the end "
                  "of the backing", rec->seq);
    return -1;
  }
  ret = replica_apply (r->ctx, rec->op, rec->flags, payload, rec->length,
                       rec->offset, &err);
  if (ret == -1) {
    errno = err;
    nbdkit_error ("replica-log: replaying seq %" PRIu64 " (%s) onto the "
                  "backing: %m", rec->seq, rlog_op_name (rec->op));
  }
  return ret;
}

/* A primary with a peer, or tracking for one (standalone: the replayed
 * records are freed only by a checkpoint that flushed the dirty bitmap
 * first), keeps its checkpoint (the peer may need the records after
 * it), and new records go on the next 4 KiB boundary
 * after the last valid one.  Between them lie the bytes where the scan
 * stopped (a torn or stale record): a scan from the checkpoint must be
 * able to pass them, or every record written from now on would be
 * unreachable.  So the last replayed record absorbs them, as the last
 * record of a batch absorbs its padding: its header is sealed again
 * with the larger rec_size and made durable before anything follows.
 */
static int
bridge_gap (struct replica *r, struct rlog_rec *rec, uint64_t lsn,
            uint32_t payload_crc, uint64_t gap)
{
  uint8_t hdr[RLOG_REC_HDR_SIZE];

  rec->rec_size += gap;
  rlog_rec_seal (rec, hdr, payload_crc);
  if (rlog_full_pwrite (r->log->fd, hdr, sizeof hdr,
                        rlog_lsn_to_off (&r->log->sb, lsn)) == -1 ||
      fdatasync (r->log->fd) == -1) {
    nbdkit_error ("replica-log: %s: extending record seq %" PRIu64
                  " over the log's torn end: %m", r->log_path, rec->seq);
    return -1;
  }
  nbdkit_debug ("replica: record seq %" PRIu64 " now covers the %" PRIu64
                " bytes after it (the log's torn end)", rec->seq, gap);
  return 0;
}

/* Where new records go, the first block boundary at or after the scan's
 * end, must hold no record that a scan from the new checkpoint would
 * take, so its header is zeroed, durably, before the superblock write:
 *  - a discarded staged set stays in the ring after the checkpoint, and
 *    once STAGING is cleared, a later restart would replay it over the
 *    disk's image (its records pass the continuity check: they follow
 *    the stage's base, in the primary's epochs); a crash before the
 *    superblock write leaves STAGING set, and this runs again;
 *  - a scan that stopped inside a block (a torn record) may have
 *    stopped at a torn WRAP whose batch goes on at the ring's start,
 *    at that very boundary: a WRAP takes no seq, so the record there
 *    continues the checkpoint, and a later start would replay it (never
 *    acknowledged, and absent from what this start served) unless this
 *    start wrote a record over it first.
 */
static int
clear_new_head (struct replica *r, uint64_t lsn)
{
  if (rlog_clear_header (r->log, lsn) == -1) {
    nbdkit_error ("replica-log: %s: clearing the log's end at lsn %" PRIu64
                  ": %m", r->log_path, lsn);
    return -1;
  }
  return 0;
}

int
replica_recover (struct replica *r)
{
  struct rlog_scan scan;
  struct rlog_rec rec;
  const uint8_t *payload;
  struct rlog_sb sb;
  bool keep;
  uint64_t kept_lsn;                  /* the checkpoint we leave */
  uint64_t last_seq, last_epoch;
  struct rlog_rec last_rec = { 0 };   /* the last record replayed, */
  uint64_t last_lsn = 0;              /* where it starts, */
  uint32_t last_pcrc = 0;             /* and its payload's CRC */
  /* A secondary stopped during a staged resync: the staged records were
   * never applied (the disk is the image of the checkpoint), and the
   * primary resyncs from the start when it is back: skip them.
   */
  bool discard = r->role == RLOG_ROLE_SECONDARY &&
    (r->log->sb.flags & RLOG_SB_STAGING);
  int n, err;

  if (rlog_scan_init (&scan, r->log) == -1) {
    nbdkit_error ("replica-log: malloc: %m");
    return -1;
  }
  last_seq = scan.prev_seq;
  last_epoch = scan.prev_epoch;
  if (discard) {
    snprintf (scan.why, sizeof scan.why, "a staged resync was discarded");
    nbdkit_debug ("replica: discarding the staged resync in the log: the "
                  "disk keeps the image of seq %" PRIu64, last_seq);
  }
  while (!discard && (n = rlog_scan_next (&scan, &rec, &payload)) == 1) {
    if (!r->can_write) {
      nbdkit_error ("replica-log: %s holds records not yet applied, but "
                    "the backing is read-only: start without -r to "
                    "replay them", r->log_path);
      goto fail;
    }
    if (replica_debug_replay)
      nbdkit_debug ("replay: seq %" PRIu64 " %s offset %" PRIu64
                    " length %" PRIu32, rec.seq, rlog_op_name (rec.op),
                    rec.offset, rec.length);
    if (rec.flags & RLOG_FLAG_ELIDED) {
      /* A re-sent block of an in-place resync: its data went to the
       * disk only, and the disk is marked inconsistent, so the primary
       * runs a new pass over every block (docs/design.md 21.4).  In
       * any other log it means damage: its data is lost.
       */
      if (r->role != RLOG_ROLE_SECONDARY ||
          !(r->log->sb.flags & RLOG_SB_INCONSISTENT)) {
        nbdkit_error ("replica-log: %s: record seq %" PRIu64 " (a re-sent "
                      "block of an in-place resync) holds no data, but the "
                      "volume is not marked inconsistent: the log is "
                      "damaged; refusing to replay it", r->log_path,
                      rec.seq);
        goto fail;
      }
      r->elided_skipped++;
    }
    else if (apply_record (r, &rec, payload) == -1)
      goto fail;
    last_seq = rec.seq;
    last_epoch = rec.epoch;
    last_rec = rec;
    last_lsn = scan.lsn - rec.rec_size;
    last_pcrc = rlog_payload_crc (payload, rec.payload_len);
    if (r->role == RLOG_ROLE_PRIMARY)
      repl_recovered (rec.seq, rec.epoch, scan.lsn, rec.offset, rec.length);
  }
  if (scan.stop == RLOG_STOP_IOERR) {
    nbdkit_error ("replica-log: reading %s: %s", r->log_path, scan.why);
    goto fail;
  }
  r->replayed_records = scan.records;
  snprintf (r->replay_stop, sizeof r->replay_stop, "%s", scan.why);
  if (scan.records > 0)
    nbdkit_debug ("replica: replayed %" PRIu64 " records after checkpoint "
                  "seq %" PRIu64 ", up to seq %" PRIu64 " (%" PRIu64 " of "
                  "them without data, skipped: an in-place resync); log "
                  "ends: %s (%s)",
                  scan.records, r->log->sb.checkpoint_seq, last_seq,
                  r->elided_skipped, rlog_stop_name (scan.stop), scan.why);
  else
    nbdkit_debug ("replica: nothing to replay after checkpoint seq %" PRIu64
                  "; log ends: %s (%s)", r->log->sb.checkpoint_seq,
                  rlog_stop_name (scan.stop), scan.why);
  if (scan.stop == RLOG_STOP_CORRUPT)
    nbdkit_debug ("replica: the log tail after seq %" PRIu64 " was cut at a "
                  "corrupt or torn record: %s", last_seq, scan.why);

  /* The replayed writes must be on stable storage before the
   * checkpoint moves past them.
   */
  if (scan.records > 0 && r->can_flush > 0 &&
      r->ctx->flush (r->ctx, 0, &err) == -1) {
    errno = err;
    nbdkit_error ("replica: flushing the backing after replay: %m");
    goto fail;
  }

  /* New checkpoint = end of the replayed log (the log is now empty);
   * new epoch; seqs continue after the old reservation.  The first new
   * record starts on a fresh block after everything scanned.  A primary
   * with a peer keeps its checkpoint: the peer may still need those
   * records (the checkpoint follows its acknowledgements).
   */
  r->recovered_seq = last_seq;
  r->recovered_epoch = last_epoch;
  r->recovered_lsn = (scan.lsn + RLOG_BLOCK - 1) & ~(uint64_t) (RLOG_BLOCK - 1);
  keep = r->role == RLOG_ROLE_PRIMARY && repl_keeps_tail ();
  /* (Not where the kept checkpoint's first record lies, one ring on: a
   * full log, whose next append waits for a checkpoint anyway.)
   */
  kept_lsn = keep && scan.records > 0 ? r->log->sb.checkpoint_lsn
    : r->recovered_lsn;
  if ((discard || r->recovered_lsn != scan.lsn) &&
      r->recovered_lsn - kept_lsn < r->log->sb.ring_size &&
      clear_new_head (r, r->recovered_lsn) == -1)
    goto fail;
  if (keep && r->recovered_lsn != scan.lsn && scan.records > 0 &&
      bridge_gap (r, &last_rec, last_lsn, last_pcrc,
                  r->recovered_lsn - scan.lsn) == -1)
    goto fail;
  pthread_mutex_lock (&r->log->sb_lock);
  sb = r->log->sb;
  if (!keep) {
    sb.checkpoint_seq = last_seq;
    sb.checkpoint_epoch = last_epoch;
    sb.checkpoint_lsn = r->recovered_lsn;
  }
  else if (scan.records == 0) {
    /* Nothing after the checkpoint: it may move over the unreadable
     * bytes to where new records go, naming the same record.
     */
    sb.checkpoint_lsn = r->recovered_lsn;
  }
  sb.flags &= ~RLOG_SB_STAGING;
  sb.epoch++;
  if (sb.seq_reserved < last_seq)
    sb.seq_reserved = last_seq;
  n = rlog_sb_write_locked (r->log, &sb);
  pthread_mutex_unlock (&r->log->sb_lock);
  if (n == -1) {
    nbdkit_error ("replica-log: writing the superblock of %s: %m",
                  r->log_path);
    goto fail;
  }
  /* repl.c's points at the last record follow (not under sb_lock,
   * which nests inside repl.c's lock).
   */
  if (keep)
    repl_log_end_moved (r->recovered_lsn);
  rlog_scan_free (&scan);
  return 0;

 fail:
  rlog_scan_free (&scan);
  return -1;
}
