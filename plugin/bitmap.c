/* nbd-replica: a primary's dirty bitmap (a peer away longer than the
 * log can hold).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * Normally the checkpoint never passes what the peer acknowledged, so
 * a peer that is away keeps every record it lacks in our log, and a
 * full log makes writers wait.  With replica-log-full=bitmap (the
 * default), when the peer is away and the log is three quarters full,
 * repl.c switches to the bitmap instead (docs/design.md "Dirty
 * bitmap"): from then on every write marks its grains
 * (common/dirtymap.c), the records after the acked point are scanned
 * and marked too, the bitmap is made durable and the superblock says
 * RLOG_SB_BITMAP; only then may the checkpoint pass the acked point.
 * Each later checkpoint flushes the bitmap first, so a record is never
 * freed before its grains are durable.  At the next connection the
 * peer gets a resync of the marked grains; when it ends, the bitmap is
 * cleared.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <unistd.h>

#include <nbdkit-filter.h>

#include "replica.h"
#include "repl.h"
#include "dirtymap.h"
#include "logfile.h"

static struct dirtymap map;
static bool map_ready;
/* The bitmap's own open file of the log (like the superblock's sb_fd):
 * Linux reports a writeback error once per open file, so an fdatasync
 * of the bitmap on the journal's file could swallow the error of a
 * journal batch being written back meanwhile, and the journal's own
 * fdatasync would then say its batch is durable.
 */
static int map_fd = -1;
static bool tracking;           /* atomic: writes mark the bitmap */

static int
map_setup (void)
{
  if (map_ready)
    return 0;
  if (map_fd == -1 &&
      (map_fd = open (rep.log->path, O_RDWR | O_CLOEXEC)) == -1) {
    nbdkit_error ("replica: dirty bitmap: opening %s: %m", rep.log->path);
    return -1;
  }
  if (dmap_init (&map, map_fd, rep.log->sb.bitmap_offset,
                 rep.log->sb.bitmap_size, rep.log->sb.backing_size,
                 repl_cfg.sync_shift) == -1) {
    nbdkit_error ("replica: dirty bitmap: %m");
    return -1;
  }
  map_ready = true;
  return 0;
}

/* At start (before recovery): a log in bitmap mode keeps tracking.  A
 * bitmap that cannot be read makes every grain dirty.
 */
int
bitmap_start (void)
{
  char why[256];
  unsigned bad = 0;

  if (!(rep.log->sb.flags & RLOG_SB_BITMAP))
    return 0;
  if (map_setup () == -1)
    return -1;
  if (dmap_load (&map, &bad, why, sizeof why) == -1) {
    nbdkit_error ("replica: the dirty bitmap is unreadable (%s): the whole "
                  "volume will be compared at the next resync", why);
    dmap_mark (&map, 0, rep.log->sb.backing_size);
  }
  else if (bad)
    nbdkit_error ("replica: %u pages of the dirty bitmap are damaged (%s): "
                  "their grains will all be compared", bad, why);
  __atomic_store_n (&tracking, true, __ATOMIC_RELEASE);
  nbdkit_debug ("replica: dirty bitmap: %" PRIu64 " bytes of the volume "
                "to resync", dmap_dirty_bytes (&map));
  return 0;
}

bool
bitmap_tracking (void)
{
  return __atomic_load_n (&tracking, __ATOMIC_ACQUIRE);
}

/* After the record is durable, before it is applied (so before any
 * checkpoint can pass it).
 */
void
bitmap_mark (uint64_t off, uint64_t len)
{
  if (bitmap_tracking ())
    dmap_mark (&map, off, len);
}

bool
bitmap_any (uint64_t off, uint64_t len)
{
  return bitmap_tracking () && dmap_any (&map, off, len);
}

uint64_t
bitmap_dirty_bytes (void)
{
  return bitmap_tracking () ? dmap_dirty_bytes (&map) : 0;
}

/* Before a checkpoint's superblock write: the grains of every record
 * it frees are durable.
 */
int
bitmap_flush (void)
{
  if (!bitmap_tracking ())
    return 0;
  return dmap_flush (&map);
}

/* Start tracking (repl.c's lock held): from now on writes mark. */
int
bitmap_begin_tracking (void)
{
  if (map_setup () == -1)
    return -1;
  if (!bitmap_tracking ())
    dmap_clear (&map);          /* stale bits of an earlier use */
  __atomic_store_n (&tracking, true, __ATOMIC_RELEASE);
  return 0;
}

/* Mark the records after (seq, epoch, lsn) up to seq upto (of epoch
 * upto_epoch), which the log still holds, make the bitmap durable with
 * its base (seq, epoch) and span, then the superblock flag.  The span
 * says which peers the bitmap serves (bitmap_knows_peer): the records
 * up to upto were ours, all of one epoch if upto_epoch is the base's.
 * Returns 0, or -1: the records may not be freed.
 */
int
bitmap_cover (uint64_t seq, uint64_t epoch, uint64_t lsn, uint64_t upto,
              uint64_t upto_epoch, const char *why)
{
  struct rlog_scan scan;
  struct rlog_rec rec = { 0 };
  const uint8_t *payload;
  uint64_t n = 0, witness;

  if (upto > seq) {
    if (rlog_scan_init_at (&scan, rep.log, lsn, seq, epoch) == -1)
      return -1;
    while (rlog_scan_next (&scan, &rec, &payload) == 1) {
      if (rec.op != RLOG_OP_FLUSH)
        dmap_mark (&map, rec.offset, rec.length);
      n++;
      if (rec.seq >= upto)
        break;
    }
    if (rec.seq < upto) {
      nbdkit_error ("replica: dirty bitmap: the log ends before seq %"
                    PRIu64 " (%s): the whole volume will be compared",
                    upto, scan.why);
      dmap_mark (&map, 0, rep.log->sb.backing_size);
    }
    rlog_scan_free (&scan);
  }
  dmap_set_base (&map, seq, epoch,
                 upto_epoch == epoch && upto >= seq &&
                 upto - seq <= UINT32_MAX ? (uint32_t) (upto - seq) : 0);
  witness = seq + 1;
  if (dmap_flush (&map) == -1 ||
      rlog_sb_set_flag (rep.log, RLOG_SB_BITMAP, true, &witness) == -1) {
    nbdkit_error ("replica: dirty bitmap: writing it: %m");
    return -1;
  }
  nbdkit_error ("replica: %s: writes are tracked in the dirty bitmap from "
                "seq %" PRIu64 " (%" PRIu64 " records marked); the peer will "
                "get a resync of those blocks", why, seq, n);
  return 0;
}

/* Does the bitmap describe what a peer holding (seq, epoch) lacks?
 * Every record after its base was marked before the log freed it, and
 * the records up to base + span, all of the base's epoch, were ours: a
 * peer holding one of them with that epoch is a prefix of our history
 * (seqs are never reused).  Valid only with RLOG_SB_BITMAP, set once
 * the base, the span and the marks are durable, and its witness: a
 * build from before standalone tracking, started without a peer, would
 * have freed records without marking them, and its superblock writes
 * clear the witness.
 */
bool
bitmap_knows_peer (uint64_t seq, uint64_t epoch)
{
  uint64_t bseq, bepoch, witness;
  uint32_t span;
  bool based;

  pthread_mutex_lock (&rep.log->sb_lock);
  based = rep.log->sb.flags & RLOG_SB_BITMAP;
  witness = rep.log->sb.bitmap_witness;
  pthread_mutex_unlock (&rep.log->sb_lock);
  if (!bitmap_tracking () || !based)
    return false;
  dmap_get_base (&map, &bseq, &bepoch, &span);
  return witness == bseq + 1 && epoch == bepoch && seq >= bseq &&
    seq - bseq <= span;
}

/* A pass ended (the peer acknowledged its end record): everything the
 * bitmap covered is on the peer; records after the end are in the log.
 */
void
bitmap_end (void)
{
  const uint64_t no_witness = 0;

  if (!bitmap_tracking ())
    return;
  __atomic_store_n (&tracking, false, __ATOMIC_RELEASE);
  if (rlog_sb_set_flag (rep.log, RLOG_SB_BITMAP, false, &no_witness) == -1)
    nbdkit_error ("replica: clearing the dirty bitmap flag: %m");
  dmap_clear (&map);
  if (dmap_flush (&map) == -1)
    nbdkit_debug ("replica: clearing the dirty bitmap: %m (harmless: its "
                  "flag is off)");
  nbdkit_debug ("replica: dirty bitmap cleared");
}

/* At nbdkit's exit, after the last checkpoint (which flushed it). */
void
bitmap_stop (void)
{
  __atomic_store_n (&tracking, false, __ATOMIC_RELEASE);
  if (map_ready)
    dmap_free (&map);
  map_ready = false;
  if (map_fd != -1)
    close (map_fd);
  map_fd = -1;
}
