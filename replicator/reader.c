/* nbd-replicator: reading records from the log.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * The filter owns the log and says how far it is written (CHAN_WRITTEN
 * lsn): everything below that limit is written (in sync mode perhaps
 * not yet durable: the local log sync and the peer's round trip
 * overlap) and stays in place until acknowledged.  Beyond it the ring holds garbage, an older lap,
 * or a batch being written (whose records may look valid but are not
 * durable yet): nothing at or beyond the limit is ever returned.
 *
 * The scanner (common/logfile.c) needs two kinds of care here:
 *  - It stops with RLOG_STOP_FULL after one ring's worth from where it
 *    started, so it is re-started at the current position every half
 *    ring.
 *  - It checks records against the superblock's epoch and seq_reserved,
 *    which our read-only copy has from when we last read it: the
 *    writer moves them on.  A stop below the limit is therefore
 *    retried once after re-reading the superblock before it counts as
 *    an unreadable log.
 * WRAP records are skipped by the scanner itself (they carry no new
 * seq) and never shipped.
 */
#include <stdio.h>
#include <inttypes.h>

#include "replicator.h"

void
reader_start (struct reader *r, struct rlog *log, uint64_t lsn,
              uint64_t prev_seq, uint64_t prev_epoch)
{
  reader_stop (r);
  r->log = log;
  r->lsn = lsn;
  r->prev_seq = prev_seq;
  r->prev_epoch = prev_epoch;
}

void
reader_stop (struct reader *r)
{
  if (r->scanning)
    rlog_scan_free (&r->s);
  r->scanning = false;
}

/* (Re)start the scanner at the reader's position. */
static int
rescan (struct reader *r, char *why, size_t whylen)
{
  reader_stop (r);
  if (rlog_scan_init_at (&r->s, r->log, r->lsn, r->prev_seq,
                         r->prev_epoch) == -1) {
    snprintf (why, whylen, "malloc: %m");
    return -1;
  }
  r->scanning = true;
  return 0;
}

int
reader_next (struct reader *r, uint64_t limit, struct rlog_rec *rec,
             const uint8_t **hdr, uint8_t *into, char *why, size_t whylen)
{
  const uint8_t *payload;
  char err[RLOG_ERRLEN];

  for (int attempt = 0; ; ++attempt) {
    if (r->lsn >= limit)
      return 0;
    if (!r->scanning ||
        r->s.lsn - r->s.start_lsn >= r->log->sb.ring_size / 2) {
      if (rescan (r, why, whylen) == -1)
        return -1;
    }
    r->s.into = into;
    if (rlog_scan_next (&r->s, rec, &payload) == 1) {
      if (r->s.lsn > limit) {
        /* Beyond the limit (after a WRAP that ends at it): not written
         * yet.  Read it again from here next time.
         */
        reader_stop (r);
        return 0;
      }
      if (rec->flags & RLOG_FLAG_ELIDED) {
        /* Only a secondary's in-place resync logs them, and promote
         * checkpoints past them: never shipped.
         */
        snprintf (why, whylen, "local log: record seq %" PRIu64 " holds "
                  "no data (an in-place resync's): it cannot be shipped",
                  rec->seq);
        return -1;
      }
      r->lsn = r->s.lsn;
      r->prev_seq = rec->seq;
      r->prev_epoch = rec->epoch;
      *hdr = payload - RLOG_REC_HDR_SIZE;
      return 1;
    }
    if (r->s.lsn >= limit) {
      /* Stopped beyond a WRAP, at or after the limit: nothing yet. */
      reader_stop (r);
      return 0;
    }
    if (attempt > 0) {
      snprintf (why, whylen, "local log unreadable at lsn %" PRIu64 ": %s",
                r->s.lsn, r->s.why);
      return -1;
    }
    dbg ("scan stopped at lsn %" PRIu64 " (%s: %s): re-reading the "
         "superblock", r->s.lsn, rlog_stop_name (r->s.stop), r->s.why);
    if (rlog_sb_reload (r->log, err) == -1) {
      snprintf (why, whylen, "local log unreadable: %s", err);
      return -1;
    }
    reader_stop (r);
  }
}

int
reader_locate (struct rlog *log, uint64_t seq, uint64_t epoch, uint64_t lsn,
               uint64_t limit, uint64_t S, uint64_t E, uint64_t *resume,
               char *why, size_t whylen)
{
  struct reader r = { 0 };
  struct rlog_rec rec;
  const uint8_t *hdr;
  int ret;

  reader_start (&r, log, lsn, seq, epoch);
  for (;;) {
    ret = reader_next (&r, limit, &rec, &hdr, NULL, why, whylen);
    if (ret <= 0)
      break;                    /* reached the limit (0), or error */
    if (rec.seq == S) {
      ret = rec.epoch == E;
      if (ret)
        *resume = r.lsn;
      dbg ("peer's seq %" PRIu64 " is at lsn %" PRIu64 " in epoch %" PRIu64
           " (peer says %" PRIu64 ")", S, r.lsn - rec.rec_size, rec.epoch, E);
      break;
    }
    if (rec.seq > S) {
      dbg ("peer's seq %" PRIu64 " is not in the log (passed it at seq %"
           PRIu64 ")", S, rec.seq);
      ret = 0;
      break;
    }
  }
  reader_stop (&r);
  return ret;
}
