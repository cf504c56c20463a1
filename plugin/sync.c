/* nbd-replica: a primary's sync engine (initial sync, resync, verify).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * One thread walks the volume in chunks.  For each chunk it asks the
 * peer for its block sums (through the replicator: CHAN_SUMS_REQ), reads
 * and hashes the same blocks here, and re-logs every block that differs
 * (resend_run, in sync-resend.c with the throttle; the peer's sums are
 * asked for in sync-sums.c, the chunks read in sync-read.c, the status
 * made in sync-status.c; the state they share is in sync-int.h): under the block's range lock it reads the block and
 * queues it to our own log as an ordinary record flagged
 * RLOG_FLAG_SYNC, so it takes its place in the seq order among the
 * clients' writes and reaches the peer by the normal shipping, applied
 * in order there.  Zero blocks go as zero records, never as data.  When
 * the walk is done, a FLUSH record flagged RLOG_FLAG_SYNC_END marks the
 * end of the pass; once the peer acknowledges it, the peer is a
 * consistent copy again.  docs/design.md "Sync, resync and verify"
 * argues why the result is exact although clients keep writing.
 *
 * Verify runs the same walk without re-logging: blocks whose sums
 * differ are compared again under their range lock once the peer has
 * acknowledged everything written before it (so writes in flight never
 * show as differences), and reported; --repair re-logs them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <inttypes.h>
#include <time.h>
#include <unistd.h>

#include <nbdkit-filter.h>

#include "replica.h"
#include "repl.h"
#include "conns.h"
#include "wire.h"
#include "blocksum.h"
#include "sync-int.h"

NBDKIT_DLL_PUBLIC int replica_debug_sync = 0;  /* -D replica.sync=1 */

#define CHUNK_BYTES      (16u << 20)  /* volume bytes compared per step */
#define ACK_TIMEOUT_S    60           /* verify: the peer catching up */
#define CONFIRM_LOCKED_WAIT_S 1       /* ... of it with a block locked, */
#define CONFIRM_SHORT_TRIES 3         /* ... that many times, then longer */

const char *
phase_name (enum phase p)
{
  switch (p) {
  case PH_INITIAL: return "initial-sync";
  case PH_RESYNC: return "resync";
  case PH_VERIFY: return "verify";
  default: return "none";
  }
}

struct sync_state Y = { .lock = PTHREAD_MUTEX_INITIALIZER,
                       .cond = PTHREAD_COND_INITIALIZER, .vstate = "idle" };


uint64_t
now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

unsigned
block_shift (void)
{
  return repl_cfg.sync_shift;
}

/* Wait on Y.cond (Y.lock held) for at most ms. */
void
ywait_ms (unsigned ms)
{
  struct timespec ts;

  clock_gettime (CLOCK_REALTIME, &ts);
  ts.tv_nsec += (long) ms * 1000000L;
  while (ts.tv_nsec >= 1000000000) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000;
  }
  pthread_cond_timedwait (&Y.cond, &Y.lock, &ts);
}

/* Has this pass been overtaken (link lost, nbdkit stopping)?  Y.lock
 * held.
 */
bool
aborted (uint64_t gen)
{
  return Y.gen != gen || Y.stopping;
}

/* ---- our side ---- */

int
read_volume (void *buf, uint64_t len, uint64_t off)
{
  int err = 0;

  if (volume_read (buf, len, off, &err) == -1) {
    errno = err;
    return -1;
  }
  return 0;
}

/* Bytes of block i of a chunk at off (the volume's last may be short). */
uint32_t
block_len (uint64_t off, uint32_t i)
{
  uint64_t start = off + ((uint64_t) i << block_shift ());
  uint64_t size = rep.log->sb.backing_size;
  uint64_t bs = 1ULL << block_shift ();

  return start + bs <= size ? bs : size - start;
}

/* The walk waited for what since since_ns (now_ns): counted for status. */
void
sync_waited (enum wait_for what, uint64_t since_ns)
{
  uint64_t ns = now_ns () - since_ns;

  pthread_mutex_lock (&Y.lock);
  Y.wait_ns[what] += ns;
  pthread_mutex_unlock (&Y.lock);
}

/* ---- verify: differences confirmed at a consistent point ---- */

static void
add_mismatch (uint64_t off, uint64_t len, uint64_t gen)
{
  pthread_mutex_lock (&Y.lock);
  if (Y.gen != gen) {
    /* A stale verify's: the counters may be a newer verify's now. */
    pthread_mutex_unlock (&Y.lock);
    return;
  }
  Y.vblocks++;
  if (Y.nvr > 0 && Y.vr[Y.nvr - 1].off + Y.vr[Y.nvr - 1].len == off)
    Y.vr[Y.nvr - 1].len += len;
  else if (Y.nvr < MAX_RANGES)
    Y.vr[Y.nvr++] = (struct vrange) { off, len };
  pthread_mutex_unlock (&Y.lock);
}

/* Under block's range lock: read it, and wait (at most wait_s) until
 * the peer acknowledged everything written.  0: both done, the lock
 * held; 1: the peer lags, the lock released (try again); -1: error,
 * released.
 */
static int
confirm_lock_caught_up (struct range *range, uint8_t *buf, uint32_t len,
                        uint64_t start, unsigned wait_s)
{
  rangelock_acquire (&rep.ranges, range, start, len);
  if (read_volume (buf, len, start) == -1) {
    rangelock_release (&rep.ranges, range);
    nbdkit_error ("replica: verify: reading the block at %" PRIu64 ": %m",
                  start);
    return -1;
  }
  if (repl_wait_peer_caught_up (wait_s) == 0)
    return 0;
  rangelock_release (&rep.ranges, range);
  return 1;
}

/* Block i of the chunk at off differed.  Under its range lock no write
 * to it is in flight (every record touching it is applied here and
 * written to the log, so at or below the written point); once the peer
 * has acknowledged that point, it has applied all of them, and nothing
 * newer touches the block until we release it.  Then both sides' sums
 * are compared again.  The long wait for the peer (its lag) happens
 * before the lock is taken: a client write to the block does not wait
 * for the peer, even in async mode; under the lock only a short one,
 * else the lock is given back and the whole tried again.  A peer whose
 * lag never drops under that (a slow link under steady writes) would
 * fail the verify so: after CONFIRM_SHORT_TRIES, a try waits under the
 * lock for the rest of the time (writes to this block alone wait, for
 * about the lag).  Returns 1 if it really differs, 0 if not, -1 on
 * error (logged).
 */
static int
confirm_block (uint64_t off, uint32_t i, uint64_t gen)
{
  uint64_t start = off + ((uint64_t) i << block_shift ());
  uint64_t deadline = now_ns () / 1000000 + ACK_TIMEOUT_S * 1000ULL;
  uint32_t len = block_len (off, i);
  uint8_t *buf = malloc (len), sum[BSUM_SIZE];
  struct sums_req *q = &Y.req[CONFIRM_REQ];
  struct range range;
  int ret;

  if (!buf)
    return -1;
  if (replica_debug_sync)
    nbdkit_debug ("replica: verify: confirming the block at %" PRIu64,
                  start);
  for (int tries = 0; ; ++tries) {
    uint64_t now = now_ns () / 1000000;
    unsigned left = now < deadline ? (deadline - now + 999) / 1000 : 0;

    if (left == 0 || repl_wait_peer_caught_up (left) == -1) {
      nbdkit_error ("replica: verify: the peer did not acknowledge our "
                    "writes within %d s, or the link was lost",
                    ACK_TIMEOUT_S);
      free (buf);
      return -1;
    }
    ret = confirm_lock_caught_up (&range, buf, len, start,
                                  tries < CONFIRM_SHORT_TRIES
                                  ? CONFIRM_LOCKED_WAIT_S : left);
    if (ret != 1)
      break;
  }
  if (ret == 0) {
    bsum_block (buf, len, sum);
    pthread_mutex_lock (&Y.lock);
    ret = sums_ask (q, start, 1);
    pthread_mutex_unlock (&Y.lock);
    if (ret == 0 && sums_send (q) == 0 && sums_wait (q, gen) == 0)
      ret = memcmp (sum, q->sums, BSUM_SIZE) != 0;
    else {
      nbdkit_error ("replica: verify: reading the peer's sum of the block "
                    "at %" PRIu64 " failed", start);
      ret = -1;
    }
    rangelock_release (&rep.ranges, &range);
  }
  free (buf);
  return ret;
}

/* ---- the walk ---- */

/* Compare one chunk's sums, ours (lsums: the reader's, BSUM_SIZE
 * apart; NULL in full mode) with the peer's; diff[i] says which blocks
 * differ.
 */
static int
compare_chunk (struct sums_req *q, const uint8_t *lsums, bool *diff,
               uint64_t *ndiff)
{
  *ndiff = 0;
  for (uint32_t i = 0; i < q->nblocks; ++i) {
    diff[i] = !lsums ||
      memcmp (lsums + (size_t) i * BSUM_SIZE,
              q->sums + (size_t) i * WIRE_SUM_SIZE, BSUM_SIZE) != 0;
    *ndiff += diff[i];
  }
  return 0;
}

static uint32_t
chunk_blocks (uint64_t off)
{
  uint64_t size = rep.log->sb.backing_size;
  uint64_t len = size - off < CHUNK_BYTES ? size - off : CHUNK_BYTES;

  return (len + (1ULL << block_shift ()) - 1) >> block_shift ();
}

/* Bytes of the chunk a request covers. */
static uint64_t
req_bytes (const struct sums_req *q)
{
  uint64_t len = 0;

  for (uint32_t i = 0; i < q->nblocks; ++i)
    len += block_len (q->off, i);
  return len;
}

/* One chunk: the peer's sums (asked for earlier), ours (from the
 * reader's slot k; none in full mode), then re-log or confirm what
 * differs.
 */
static int
do_chunk (struct sums_req *q, struct chunk_reader *rd, int k,
          struct finisher *fin, bool *diff, enum phase ph, bool full,
          bool repair, uint64_t gen, uint64_t t0)
{
  uint64_t len = req_bytes (q), ndiff;
  const uint8_t *local = NULL, *lsums = NULL;
  struct vol_snap snap = { 0 };
  uint64_t t = now_ns ();

  if (!full && !(local = chunk_reader_wait (rd, k, &snap, &lsums))) {
    nbdkit_error ("replica: sync: reading the volume at %" PRIu64 ": %m",
                  q->off);
    return -1;
  }
  sync_waited (WAIT_READ, t);
  t = now_ns ();
  if (!full && sums_wait (q, gen) == -1)
    return -1;
  sync_waited (WAIT_SUMS, t);
  compare_chunk (q, lsums, diff, &ndiff);
  if (ph == PH_VERIFY) {
    for (uint32_t i = 0; i < q->nblocks; ++i) {
      int r;
      if (!diff[i])
        continue;
      if ((r = confirm_block (q->off, i, gen)) == -1)
        return -1;
      diff[i] = r == 1;
      if (r == 1)
        add_mismatch (q->off + ((uint64_t) i << block_shift ()),
                      block_len (q->off, i), gen);
    }
    if (!repair)
      memset (diff, 0, q->nblocks * sizeof *diff);
  }
  pthread_mutex_lock (&Y.lock);
  Y.differing += ph == PH_VERIFY ? 0 : ndiff;
  pthread_mutex_unlock (&Y.lock);
  if (resend_chunk (fin, q->off, q->nblocks, diff, gen, t0, local,
                    &snap) == -1)
    return -1;
  /* An overtaken pass counts nothing into its successor's progress.
   * A bitmap pass's total is the dirty chunks when it was asked for;
   * the walk also visits chunks dirtied since: they count too.
   */
  pthread_mutex_lock (&Y.lock);
  if (Y.gen == gen) {
    Y.done += len;
    if (Y.total < Y.done)
      Y.total = Y.done;
  }
  pthread_mutex_unlock (&Y.lock);
  return 0;
}

/* Ask for the peer's sums of the chunk at off (not in full mode: every
 * block differs).
 */
static int
ask_sums (struct sums_req *q, uint64_t off, bool full)
{
  int r;

  pthread_mutex_lock (&Y.lock);
  r = sums_ask (q, off, chunk_blocks (off));
  pthread_mutex_unlock (&Y.lock);
  if (r == 0 && !full)
    r = sums_send (q);
  return r;
}

/* The next chunk of the pass at or after off: a bitmap pass visits only
 * chunks with a dirty grain (writes made meanwhile are shipped anyway).
 */
static uint64_t
next_chunk (uint64_t off, bool bitmap)
{
  uint64_t size = rep.log->sb.backing_size;

  while (bitmap && off < size && !bitmap_any (off, CHUNK_BYTES))
    off += CHUNK_BYTES;
  return off < size ? off : size;
}

/* Bytes a bitmap pass visits (whole chunks). */
static uint64_t
dirty_chunk_bytes (void)
{
  uint64_t size = rep.log->sb.backing_size, n = 0;

  for (uint64_t off = next_chunk (0, true); off < size;
       off = next_chunk (off + CHUNK_BYTES, true))
    n += size - off < CHUNK_BYTES ? size - off : CHUNK_BYTES;
  return n;
}

/* Let the disk read the chunk after this one meanwhile.  (Only the
 * sync thread writes a request's off; the link thread fills its sums.)
 */
static void
prefetch_chunk (const struct sums_req *q)
{
  uint64_t size = rep.log->sb.backing_size;

  volume_prefetch (size - q->off < CHUNK_BYTES ? size - q->off : CHUNK_BYTES,
                   q->off);
}

_Static_assert (READ_AHEAD <= SUMS_AHEAD,
                "the reader is asked for chunks whose sums are asked for");

/* Ask for what the walk needs ahead of chunk cur (chunks are counted
 * from 0): the peer's sums of the next SUMS_AHEAD chunks, in the order
 * next_chunk gives (*next: the volume offset of the next one not asked
 * for yet, *asked: how many are), and the reader for the next
 * READ_AHEAD of them (*read), at the offsets their sums requests hold:
 * both follow one list of chunks, however the bitmap changes meanwhile.
 * Chunk i's sums are in Y.req[i % SUMS_AHEAD], its bytes in the
 * reader's slot i % READER_SLOTS.
 */
static int
ask_ahead (struct chunk_reader *rd, uint64_t cur, uint64_t *asked,
           uint64_t *read, uint64_t *next, bool full, bool bitmap)
{
  uint64_t size = rep.log->sb.backing_size;

  while (*next < size && *asked < cur + SUMS_AHEAD) {
    if (ask_sums (&Y.req[*asked % SUMS_AHEAD], *next, full) == -1)
      return -1;
    *next = next_chunk (*next + CHUNK_BYTES, bitmap);
    ++*asked;
  }
  while (!full && *read < *asked && *read < cur + READ_AHEAD) {
    const struct sums_req *q = &Y.req[*read % SUMS_AHEAD];

    chunk_reader_ask (rd, *read % READER_SLOTS, q->off, req_bytes (q));
    ++*read;
  }
  return 0;
}

/* Walk the volume (or the bitmap's chunks), the peer's sums asked for
 * SUMS_AHEAD chunks ahead (their answers come back behind the batches
 * in flight on the link) and the chunks read by the reader thread
 * READ_AHEAD ahead (in full mode, the disk asked to read the next one).
 * The chunk before the one being compared keeps its reader slot (its
 * buffer) until the finisher is done with its runs, which resend_chunk
 * waits for before it returns: only then is the slot asked for again.
 */
static int
walk (enum phase ph, bool full, bool bitmap, bool repair, uint64_t gen)
{
  uint64_t t0 = now_ns ();
  struct chunk_reader *rd = full ? NULL : chunk_reader_start (CHUNK_BYTES);
  struct finisher *fin = finisher_start ();
  bool *diff = calloc (CHUNK_BYTES >> WIRE_SUMS_MIN_SHIFT, sizeof *diff);
  uint64_t next = next_chunk (0, bitmap), cur = 0, asked = 0, read = 0;
  int ret = 0;

  pthread_mutex_lock (&Y.lock);
  memset (Y.wait_ns, 0, sizeof Y.wait_ns);
  pthread_mutex_unlock (&Y.lock);
  if ((!full && !rd) || !fin || !diff) {
    nbdkit_error ("replica: sync: starting the walk: %m");
    finisher_stop (fin);
    chunk_reader_stop (rd);
    free (diff);
    return -1;
  }
  ret = ask_ahead (rd, cur, &asked, &read, &next, full, bitmap);
  while (cur < asked && ret == 0) {
    /* (Not read here in full mode: re-sent runs are, under their locks.
     * Otherwise the reader is reading it already.)
     */
    if (full && cur + 1 < asked)
      prefetch_chunk (&Y.req[(cur + 1) % SUMS_AHEAD]);
    ret = do_chunk (&Y.req[cur % SUMS_AHEAD], rd, cur % READER_SLOTS, fin,
                    diff, ph, full, repair, gen, t0);
    cur++;
    if (ret == 0)
      ret = ask_ahead (rd, cur, &asked, &read, &next, full, bitmap);
  }
  /* Before the reader's buffers go: the runs may point into them. */
  if (finisher_stop (fin) == -1 && ret == 0) {
    nbdkit_error ("replica: sync: re-logging: %m");
    ret = -1;
  }
  chunk_reader_stop (rd);
  free (diff);
  return ret;
}

/* The end of a pass: a SYNC_END record after every block re-logged. */
static int
append_end (uint64_t base, uint64_t *seq)
{
  struct jentry e = { .op = RLOG_OP_FLUSH, .flags = RLOG_FLAG_SYNC_END,
                      .offset = base };
  struct junit u = { .entries = &e, .n = 1 };

  if (journal_append (&rep.journal, &u) == -1)
    return -1;
  journal_complete (&rep.journal, &e);
  *seq = e.rec.seq;
  return 0;
}

/* Wait until every record up to the base is applied to our disk (and,
 * before that, marked in the dirty bitmap: append_and_apply), or the
 * pass is stale, or the volume failed (a pinned record never
 * completes).  The walk's reads, and the bitmap's chunks, stand for
 * every record up to the base (21.2), but the base may be our durable
 * point (a bitmap pass after the bitmap took over the log's tail,
 * repl.c), whose last records' writers may not have marked and applied
 * them yet: a block read before, equal to the peer's older copy, would
 * never be re-sent, nor its record shipped.  Brief: those records are
 * durable, their writers only have to run.
 */
static int
wait_applied (uint64_t base, uint64_t gen)
{
  for (;;) {
    uint64_t seq, epoch, lsn;
    bool stale;

    journal_checkpoint_point (&rep.journal, &seq, &epoch, &lsn);
    /* (or nothing in flight at all: every record is complete) */
    if (seq >= base || lsn == journal_head_lsn (&rep.journal))
      return 0;
    pthread_mutex_lock (&Y.lock);
    stale = aborted (gen);
    pthread_mutex_unlock (&Y.lock);
    if (stale || __atomic_load_n (&rep.state, __ATOMIC_ACQUIRE) == VOL_FAILED)
      return -1;
    usleep (1000);
  }
}

static int
run_pass (enum phase ph, bool full, bool bitmap, bool repair, uint64_t base,
          uint64_t gen)
{
  uint64_t end_seq = 0;
  bool stale;
  int r;

  if (replica_debug_sync)
    nbdkit_debug ("sync: %s pass starts (%s%s)", phase_name (ph),
                  full ? "every block" : "block sums",
                  bitmap ? ", the dirty bitmap's chunks" : "");
  r = ph == PH_VERIFY ? 0 : wait_applied (base, gen);
  if (r == 0)
    r = walk (ph, full, bitmap, repair, gen);
  if (r == 0 && ph != PH_VERIFY && append_end (base, &end_seq) == -1)
    r = -1;
  pthread_mutex_lock (&Y.lock);
  if (ph == PH_VERIFY && Y.gen != gen) {
    /* Overtaken: the link dropped (sync_link_lost said so), or a sync
     * pass took over (its phase stands).  A newer verify, asked for
     * since and not yet started, owns the state: leave it alone.
     */
    if (!(Y.want && Y.want_phase == PH_VERIFY) &&
        strcmp (Y.vstate, "running") == 0) {
      Y.vstate = "failed";
      snprintf (Y.verror, sizeof Y.verror, "a sync pass or a reconnection "
                "interrupted the verify");
    }
  }
  else if (ph == PH_VERIFY) {
    Y.phase = PH_NONE;
    Y.t_end_ns = now_ns ();
    if (r == -1) {
      Y.vstate = "failed";
      snprintf (Y.verror, sizeof Y.verror, "%s", aborted (gen)
                ? "the link to the peer was lost" : "reading or comparing "
                "failed (see nbdkit's log)");
    }
    else
      Y.vstate = Y.vblocks == 0 ? "clean" : repair ? "repaired" : "mismatch";
  }
  else if (r == 0 && Y.gen == gen) {
    /* Done once the peer acknowledges the end record (sync_acked).  (An
     * overtaken pass's end record ends nothing.)
     */
    Y.end_seq = end_seq;
  }
  stale = aborted (gen);
  pthread_mutex_unlock (&Y.lock);
  if (r == 0 && ph != PH_VERIFY)
    repl_kick_acked ();         /* it may be acknowledged already */
  if (r == -1 && ph != PH_VERIFY && stale)
    nbdkit_debug ("replica: %s pass stopped; it restarts when the peer "
                  "is back", phase_name (ph));
  else if (r == -1 && ph != PH_VERIFY)
    nbdkit_error ("replica: %s pass failed (the errors above); it runs "
                  "again in %d s", phase_name (ph), RETRY_S);
  return r;
}

/* Ask the sync thread for a sync or resync pass, progress from zero
 * (Y.lock held).
 */
static void
want_pass (enum phase ph, bool full, bool bitmap, uint64_t base)
{
  Y.want = true;
  Y.want_phase = ph;
  Y.want_full = full;
  Y.want_repair = false;
  Y.want_bitmap = bitmap;
  Y.want_base = base;
  Y.total = bitmap ? dirty_chunk_bytes () : rep.log->sb.backing_size;
  Y.done = Y.sent = Y.differing = 0;
  __atomic_store_n (&Y.reused_bytes, 0, __ATOMIC_RELAXED);
  Y.t_start_ns = now_ns ();
  Y.t_end_ns = 0;
}

/* A sync or resync pass of gen stopped by a local error (reading the
 * volume, appending to our log: nbdkit's log says which), the link
 * still up (Y.lock held).  Nothing else would start it again, as
 * passes start at a handshake: it runs again, with the same base, after
 * RETRY_S, unless a new pass or a lost link (gen) supersedes it
 * meanwhile.  The failed pass's records are harmless: the pass is exact
 * however often it runs after its base, and only the end record of the
 * one that completes ends it (21.2).
 */
static void
retry_later (enum phase ph, bool full, bool bitmap, uint64_t base,
             uint64_t gen)
{
  uint64_t until = now_ns () + (uint64_t) RETRY_S * 1000000000;

  Y.failures++;
  while (!aborted (gen) && !Y.want && now_ns () < until)
    ywait_ms (200);
  if (!aborted (gen) && !Y.want)
    want_pass (ph, full, bitmap, base);
}

static void *
sync_thread (void *arg)
{
  pthread_mutex_lock (&Y.lock);
  while (!Y.stopping) {
    enum phase ph;
    bool full, repair, bitmap;
    uint64_t gen, base;
    int r;

    if (!Y.want) {
      ywait_ms (1000);
      continue;
    }
    Y.want = false;
    ph = Y.want_phase;
    full = Y.want_full;
    repair = Y.want_repair;
    bitmap = Y.want_bitmap;
    base = Y.want_base;
    gen = Y.gen;
    pthread_mutex_unlock (&Y.lock);
    r = run_pass (ph, full, bitmap, repair, base, gen);
    pthread_mutex_lock (&Y.lock);
    if (r == -1 && ph != PH_VERIFY && !aborted (gen))
      retry_later (ph, full, bitmap, base, gen);
  }
  pthread_mutex_unlock (&Y.lock);
  return NULL;
}

/* ---- the link's side (repl.c, its lock held) ---- */

void
sync_start_pass (bool initial, bool full, bool bitmap, uint64_t base,
                 const char *why)
{
  pthread_mutex_lock (&Y.lock);
  /* A verify asked for and not started yet (the link dropped and came
   * back meanwhile) is replaced: say so, or it stays "running".
   */
  if (strcmp (Y.vstate, "running") == 0) {
    Y.vstate = "failed";
    snprintf (Y.verror, sizeof Y.verror, "the link was lost and a sync pass "
              "started: the verify was dropped");
  }
  Y.gen++;
  want_pass (initial ? PH_INITIAL : PH_RESYNC, full, bitmap, base);
  Y.phase = Y.want_phase;
  Y.end_seq = 0;
  Y.nours = 0;
  Y.failures = 0;
  snprintf (Y.why, sizeof Y.why, "%s", why);
  pthread_cond_broadcast (&Y.cond);
  pthread_mutex_unlock (&Y.lock);
  /* A resync is news for the admin (nbdkit has no warning level). */
  if (initial)
    nbdkit_debug ("replica: initial sync of the peer starts");
  else
    nbdkit_error ("replica: resync of the peer starts: %s", why);
}

void
sync_link_lost (void)
{
  pthread_mutex_lock (&Y.lock);
  Y.gen++;
  Y.want = false;
  if (Y.phase == PH_VERIFY) {
    Y.phase = PH_NONE;
    Y.vstate = "failed";
    snprintf (Y.verror, sizeof Y.verror, "the link to the peer was lost");
  }
  /* A sync or resync stays pending: the peer says so at the next
   * handshake (it is marked for a resync), and a new pass starts.
   */
  Y.end_seq = 0;
  pthread_cond_broadcast (&Y.cond);
  pthread_mutex_unlock (&Y.lock);
}

/* The pass is over (Y.lock held). */
static void
pass_ended (const char *how)
{
  nbdkit_debug ("replica: %s complete: %" PRIu64 " of %" PRIu64 " bytes "
                "differed; the peer is consistent again (%s)",
                phase_name (Y.phase), Y.sent, Y.total, how);
  Y.phase = PH_NONE;
  Y.end_seq = 0;
  Y.passes++;
  Y.t_end_ns = now_ns ();
}

bool
sync_acked (uint64_t seq)
{
  bool ended = false;

  pthread_mutex_lock (&Y.lock);
  if (Y.end_seq && seq >= Y.end_seq &&
      (Y.phase == PH_INITIAL || Y.phase == PH_RESYNC)) {
    ended = true;
    pass_ended ("its end record acknowledged");
  }
  pthread_mutex_unlock (&Y.lock);
  return ended;
}

/* A handshake found the peer consistent (no RESYNC in its HELLO) and a
 * known prefix of our log: a sync or resync still pending is over.
 * That happens when the peer applied the pass's end record and the
 * link went down before its acknowledgement reached us (sync_link_lost
 * forgot the end record); no new pass would ever end the phase.  A peer
 * that never started the pass says RESYNC (ADOPT_SYNC, resync_begin),
 * or is still behind or diverged: not this verdict.
 */
bool
sync_peer_consistent (void)
{
  bool ended = false;

  pthread_mutex_lock (&Y.lock);
  if (Y.phase == PH_INITIAL || Y.phase == PH_RESYNC) {
    ended = true;
    pass_ended ("found consistent at the handshake");
  }
  pthread_mutex_unlock (&Y.lock);
  return ended;
}

/* The volume's changes (docs/design.md 21.2): a change counts as
 * active from before it starts to modify the volume until it is
 * complete, and as started before it modifies anything.  Sequentially
 * consistent, so that sync_snap_take and sync_snap_unchanged see them
 * in that order.
 */
void
sync_change_begin (void)
{
  __atomic_add_fetch (&Y.changes_active, 1, __ATOMIC_SEQ_CST);
  __atomic_add_fetch (&Y.changes_started, 1, __ATOMIC_SEQ_CST);
}

void
sync_change_end (void)
{
  __atomic_sub_fetch (&Y.changes_active, 1, __ATOMIC_SEQ_CST);
}

/* Before a read: a change started after this is seen by
 * sync_snap_unchanged; one started before is either active now (not
 * quiet), or complete, and then in what the read returns.
 */
void
sync_snap_take (struct vol_snap *s)
{
  s->started = __atomic_load_n (&Y.changes_started, __ATOMIC_SEQ_CST);
  s->quiet = __atomic_load_n (&Y.changes_active, __ATOMIC_SEQ_CST) == 0;
}

bool
sync_snap_unchanged (const struct vol_snap *s)
{
  return s->quiet &&
    __atomic_load_n (&Y.changes_started, __ATOMIC_SEQ_CST) == s->started;
}

/* replicactl verify [--repair] (the control thread). */
int
sync_verify (bool repair, const char **why)
{
  if (!repl_shipping ()) {
    *why = "verify needs a replicating peer";
    return -1;
  }
  pthread_mutex_lock (&Y.lock);
  if (Y.phase != PH_NONE || Y.want) {
    *why = Y.phase == PH_VERIFY ? "a verify is running already"
      : "a sync or resync is running: the peer is not consistent yet";
    pthread_mutex_unlock (&Y.lock);
    return -1;
  }
  Y.want = true;
  Y.want_phase = Y.phase = PH_VERIFY;
  Y.want_full = false;
  Y.want_repair = repair;
  Y.want_bitmap = false;
  Y.total = rep.log->sb.backing_size;
  Y.done = Y.sent = Y.differing = Y.vblocks = 0;
  __atomic_store_n (&Y.reused_bytes, 0, __ATOMIC_RELAXED);
  Y.nvr = 0;
  Y.vstate = "running";
  Y.verror[0] = '\0';
  Y.t_start_ns = now_ns ();
  Y.t_end_ns = 0;
  pthread_cond_broadcast (&Y.cond);
  pthread_mutex_unlock (&Y.lock);
  return 0;
}

int
sync_start (void)
{
  int e = pthread_create (&Y.thread, NULL, sync_thread, NULL);

  if (e) {
    errno = e;
    nbdkit_error ("replica: sync thread: %m");
    return -1;
  }
  Y.running = true;
  return 0;
}

void
sync_stop (void)
{
  if (!Y.running)
    return;
  pthread_mutex_lock (&Y.lock);
  Y.stopping = true;
  pthread_cond_broadcast (&Y.cond);
  pthread_mutex_unlock (&Y.lock);
  pthread_join (Y.thread, NULL);
  Y.running = false;
  for (size_t i = 0; i < SUMS_REQS; ++i)
    free (Y.req[i].sums);
}
