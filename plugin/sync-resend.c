/* nbd-replica: the sync engine's re-logging of differing blocks.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * A run of differing blocks is read under its range lock and queued to
 * our own log as records flagged RLOG_FLAG_SYNC before the lock is
 * released (docs/design.md 21.2 argues why that is exact); the
 * throttle keeps the pass's own bytes in flight small while clients
 * write.  The walk that finds the blocks is sync.c's.
 *
 * The finisher: a chunk's runs are queued as the walk finds them, then
 * handed to a thread of the walk's own that waits for the journal to
 * write them (and fdatasync the log) and completes them, while the
 * walk goes on with the next chunk.  Waiting in the walk cost a log
 * sync's latency per chunk: 1.8 s of a 3 s pass over a 1%-different
 * 4 GiB volume.  It holds one chunk's runs at a time (the walk waits
 * for them before it hands the next); runs are completed in the order
 * they were queued, the finisher's before any the walk completes
 * itself (finish_inline waits for it first).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <inttypes.h>

#include <nbdkit-filter.h>

#include "replica.h"
#include "repl.h"
#include "blocksum.h"
#include "sync-int.h"

#define RUN_MAX          RLOG_MAX_PAYLOAD /* bytes re-logged per record */
#define WINDOW_IDLE      (64u << 20)  /* unacknowledged sync bytes, */
#define WINDOW_BUSY      (64u << 10)  /* ... clients quiet or writing
                                       * (then also the largest run) */
#define PENDING_MAX      (rep.log->sb.ring_size / 8) /* our runs in flight */

/* ---- re-logging blocks ---- */

/* Records for [off, off + len) of buf: zero runs as one zero record
 * (MAY_TRIM), data runs in records of at most RLOG_MAX_PAYLOAD.
 */
static size_t
build_entries (const uint8_t *buf, uint64_t off, uint32_t len,
               struct jentry *ents)
{
  uint32_t bs = 1u << block_shift (), pos = 0;
  size_t n = 0;

  while (pos < len) {
    uint32_t blen = len - pos < bs ? len - pos : bs;
    bool zero = bsum_is_zero (buf + pos, blen);
    struct jentry *e = &ents[n];

    if (n > 0 && (ents[n - 1].op == RLOG_OP_ZERO) == zero &&
        ents[n - 1].offset + ents[n - 1].length == off + pos &&
        (zero || ents[n - 1].length + blen <= RLOG_MAX_PAYLOAD))
      ents[n - 1].length += blen;
    else {
      memset (e, 0, sizeof *e);
      e->op = zero ? RLOG_OP_ZERO : RLOG_OP_WRITE;
      e->flags = RLOG_FLAG_SYNC | (zero ? RLOG_FLAG_MAY_TRIM : 0);
      e->offset = off + pos;
      e->length = blen;
      e->payload = zero ? NULL : buf + pos;
      n++;
    }
    pos += blen;
  }
  for (size_t i = 0; i < n; ++i)
    if (ents[i].op == RLOG_OP_WRITE)
      ents[i].payload_crc = rlog_payload_crc (ents[i].payload,
                                              ents[i].length);
  return n;
}

/* A run being re-logged: queued, waited for at the end of the chunk. */
struct run {
  uint8_t *buf;
  struct jentry *ents;
  struct junit u;
  bool queued;
};

/* Re-log [off, off + len) (len <= RUN_MAX): read under the range lock
 * and queue it before releasing it, so every client write to the range
 * is either in what we read and before our record in the log, or after
 * both (the journal writes units in the order they were queued).  Our
 * disk holds the data already: nothing is applied here.  The walk's
 * read of the range (pre, the chunk reader's buffer, stable until the
 * chunk's runs are finished) stands for that read if no change to the
 * volume was in progress when it began nor has started since
 * (sync_snap_unchanged, asked under the lock): the bytes are then the
 * volume's now.
 */
static int
resend_run (struct run *run, uint64_t off, uint32_t len, bool *busy,
            const uint8_t *pre, const struct vol_snap *snap)
{
  const uint8_t *data;
  struct range range;
  uint32_t bs = 1u << block_shift ();
  size_t maxe = (len + bs - 1) / bs;
  int r = 0;

  memset (run, 0, sizeof *run);
  /* Never wait for a range lock while our own queued runs are in
   * flight: they hold the checkpoint, which the lock's holder (a
   * client write waiting for log space) may need.  The caller
   * completes them and asks again.
   */
  if (busy) {
    if (!rangelock_try_acquire (&rep.ranges, &range, off, len)) {
      *busy = true;
      return 0;
    }
  }
  else
    rangelock_acquire (&rep.ranges, &range, off, len);
  run->ents = calloc (maxe, sizeof *run->ents);
  if (pre && sync_snap_unchanged (snap)) {
    data = pre;
    __atomic_add_fetch (&Y.reused_bytes, len, __ATOMIC_RELAXED);
  }
  else
    data = run->buf = malloc (len);
  if (!data || !run->ents ||
      (data == run->buf && read_volume (run->buf, len, off) == -1))
    r = -1;
  else {
    run->u.entries = run->ents;
    run->u.n = build_entries (data, off, len, run->ents);
    r = journal_enqueue (&rep.journal, &run->u);
    run->queued = r == 0;
  }
  rangelock_release (&rep.ranges, &range);
  return r;
}

/* Our re-logged bytes not yet acknowledged (the window). */
static void
ours_push (uint64_t seq, uint64_t bytes)
{
  pthread_mutex_lock (&Y.lock);
  if (Y.nours == sizeof Y.ours / sizeof Y.ours[0]) {
    /* Full: fold the oldest two (the later seq covers both). */
    Y.ours[1].bytes += Y.ours[0].bytes;
    memmove (&Y.ours[0], &Y.ours[1], (Y.nours - 1) * sizeof Y.ours[0]);
    Y.nours--;
  }
  Y.ours[Y.nours].seq = seq;
  Y.ours[Y.nours++].bytes = bytes;
  pthread_mutex_unlock (&Y.lock);
}

static uint64_t
ours_inflight (uint64_t acked)
{
  uint64_t n = 0;
  size_t i = 0;

  pthread_mutex_lock (&Y.lock);
  while (i < Y.nours && Y.ours[i].seq <= acked)
    i++;
  memmove (&Y.ours[0], &Y.ours[i], (Y.nours - i) * sizeof Y.ours[0]);
  Y.nours -= i;
  for (i = 0; i < Y.nours; ++i)
    n += Y.ours[i].bytes;
  pthread_mutex_unlock (&Y.lock);
  return n;
}

/* Wait for the queued runs, then free them.  Returns 0 or -1. */
static int
finish_runs (struct run *runs, size_t n)
{
  int ret = 0;

  for (size_t i = 0; i < n; ++i) {
    if (runs[i].queued) {
      if (journal_wait (&rep.journal, &runs[i].u) == -1)
        ret = -1;
      else {
        struct junit *u = &runs[i].u;
        uint64_t bytes = 0;

        for (size_t k = 0; k < u->n; ++k) {
          journal_complete (&rep.journal, &u->entries[k]);
          bytes += u->entries[k].op == RLOG_OP_WRITE
            ? u->entries[k].length : 0;
        }
        ours_push (u->entries[u->n - 1].rec.seq, bytes);
      }
    }
    free (runs[i].buf);
    free (runs[i].ents);
  }
  return ret;
}

/* ---- the finisher ---- */

struct finisher {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  pthread_t thread;
  bool stop;
  struct run *runs;             /* handed, not finished yet; NULL: idle */
  size_t nr;
  uint64_t bytes;               /* the bytes of those runs */
  int err;                      /* a finish failed (sticky) */
};

static void *
finisher_thread (void *arg)
{
  struct finisher *f = arg;

  pthread_mutex_lock (&f->lock);
  for (;;) {
    struct run *runs;
    size_t nr;
    int r;

    while (!f->stop && !f->runs)
      pthread_cond_wait (&f->cond, &f->lock);
    if (!f->runs)
      break;
    runs = f->runs;
    nr = f->nr;
    pthread_mutex_unlock (&f->lock);
    r = finish_runs (runs, nr);
    free (runs);
    pthread_mutex_lock (&f->lock);
    if (r == -1)
      f->err = errno ? errno : EIO;
    f->runs = NULL;
    f->nr = 0;
    f->bytes = 0;
    pthread_cond_broadcast (&f->cond);
  }
  pthread_mutex_unlock (&f->lock);
  return NULL;
}

struct finisher *
finisher_start (void)
{
  struct finisher *f = calloc (1, sizeof *f);
  int e;

  if (!f)
    return NULL;
  pthread_mutex_init (&f->lock, NULL);
  pthread_cond_init (&f->cond, NULL);
  if ((e = pthread_create (&f->thread, NULL, finisher_thread, f)) != 0) {
    pthread_cond_destroy (&f->cond);
    pthread_mutex_destroy (&f->lock);
    free (f);
    errno = e;
    return NULL;
  }
  return f;
}

/* Wait until the finisher holds no runs.  0, or -1 (errno set) if any
 * finish so far failed.
 */
static int
finisher_wait (struct finisher *f)
{
  int err;

  pthread_mutex_lock (&f->lock);
  while (f->runs)
    pthread_cond_wait (&f->cond, &f->lock);
  err = f->err;
  pthread_mutex_unlock (&f->lock);
  if (err) {
    errno = err;
    return -1;
  }
  return 0;
}

/* Bytes of the runs the finisher holds. */
static uint64_t
finisher_bytes (struct finisher *f)
{
  uint64_t n;

  pthread_mutex_lock (&f->lock);
  n = f->bytes;
  pthread_mutex_unlock (&f->lock);
  return n;
}

/* Hand runs (malloc'd, nr > 0, bytes in all) over; the finisher is
 * idle (finisher_wait).
 */
static void
finisher_hand (struct finisher *f, struct run *runs, size_t nr,
               uint64_t bytes)
{
  pthread_mutex_lock (&f->lock);
  f->runs = runs;
  f->nr = nr;
  f->bytes = bytes;
  pthread_cond_broadcast (&f->cond);
  pthread_mutex_unlock (&f->lock);
}

/* Finish what the finisher holds, stop it and free it.  0, or -1
 * (errno set) if any finish failed.
 */
int
finisher_stop (struct finisher *f)
{
  int r;

  if (!f)
    return 0;
  r = finisher_wait (f);
  pthread_mutex_lock (&f->lock);
  f->stop = true;
  pthread_cond_broadcast (&f->cond);
  pthread_mutex_unlock (&f->lock);
  pthread_join (f->thread, NULL);
  pthread_cond_destroy (&f->cond);
  pthread_mutex_destroy (&f->lock);
  free (f);
  return r;
}

/* Complete the runs queued so far here, after the finisher's (so that
 * runs complete in seq order).  0 or -1.
 */
static int
finish_inline (struct finisher *f, struct run *runs, size_t *nr,
               uint64_t *pending)
{
  int r = finisher_wait (f);

  if (finish_runs (runs, *nr) == -1)
    r = -1;
  *nr = 0;
  *pending = 0;
  return r;
}

/* ---- the throttle ---- */

/* Has a client written in the last 200 ms? */
static bool
clients_busy (void)
{
  uint64_t t = now_ns ();
  uint64_t started = __atomic_load_n (&Y.changes_started, __ATOMIC_RELAXED);
  bool busy;

  pthread_mutex_lock (&Y.lock);
  if (started != Y.seen_writes) {
    Y.seen_writes = started;
    Y.busy_until_ns = t + 200000000;
  }
  busy = t < Y.busy_until_ns;
  pthread_mutex_unlock (&Y.lock);
  return busy;
}

/* May a run of len bytes be re-logged now, with pending bytes of runs
 * queued and not yet completed?  (See throttle.)
 */
static bool
may_send (uint64_t gen, uint64_t t0, uint64_t pending, uint32_t len,
          bool *busy, bool *stop)
{
  uint64_t t = now_ns (), half = rep.log->sb.ring_size / 2, sent, inflight;

  *busy = clients_busy ();
  pthread_mutex_lock (&Y.lock);
  *stop = aborted (gen);
  sent = Y.sent;
  pthread_mutex_unlock (&Y.lock);
  if (*stop)
    return true;
  /* (repl_acked_seq takes repl.c's lock: never with ours) */
  inflight = ours_inflight (repl_acked_seq ()) + pending;
  return (inflight == 0 ||
          inflight + len <= (*busy ? WINDOW_BUSY : WINDOW_IDLE)) &&
    journal_used_bytes (&rep.journal) <= half &&
    (repl_cfg.resync_rate == 0 ||
     sent * 1e9 / (t - t0 + 1) <= repl_cfg.resync_rate);
}

/* Clients first: the sync keeps at most a window of bytes in flight
 * (unacknowledged in the log, or queued to it), small while clients
 * write (and its runs small then too), so that a client's record never
 * queues behind much of ours; at most half the ring; at most
 * replica-resync-rate bytes per second.  Before waiting, the runs
 * queued so far are completed (*nr, *pending): while in flight they
 * hold the checkpoint, hence the log space waited for (the finisher's
 * first: they count as in flight).
 */
static int
throttle (struct finisher *f, uint64_t gen, uint64_t t0, struct run *runs,
          size_t *nr, uint64_t *pending, uint32_t len)
{
  bool busy, stop;
  uint64_t t;
  int ret = 0;

  if (may_send (gen, t0, *pending + finisher_bytes (f), len, &busy, &stop))
    return 0;
  t = now_ns ();
  if (finish_inline (f, runs, nr, pending) == -1)
    ret = -1;
  while (ret == 0 && !may_send (gen, t0, 0, len, &busy, &stop)) {
    pthread_mutex_lock (&Y.lock);
    ywait_ms (busy ? 1 : 2);
    pthread_mutex_unlock (&Y.lock);
  }
  sync_waited (WAIT_THROTTLE, t);
  return ret;
}

/* Re-log the differing blocks of a chunk (diff[i] for block i),
 * contiguous blocks together; local: the walk's read of the chunk, and
 * snap its changes snapshot (NULL in full mode: then every run is read).
 * The runs still in flight at the end go to the finisher, once it has
 * finished the previous chunk's: local must stay as it is until the
 * next call returns (or finisher_stop).
 */
int
resend_chunk (struct finisher *f, uint64_t off, uint32_t nblocks,
              const bool *diff, uint64_t gen, uint64_t t0,
              const uint8_t *local, const struct vol_snap *snap)
{
  struct run *runs = calloc (nblocks, sizeof *runs);
  size_t nr = 0;
  uint64_t pending = 0, t;
  uint32_t run_max;
  int ret = 0;

  if (!runs)
    return -1;
  for (uint32_t i = 0; i < nblocks && ret == 0; ) {
    uint64_t start;
    uint32_t len = 0;

    if (!diff[i]) {
      i++;
      continue;
    }
    start = off + ((uint64_t) i << block_shift ());
    /* Small runs while clients write; at least one block (blocks are
     * at most RUN_MAX: replica-sync-block-size <= 1M).
     */
    run_max = clients_busy () ? WINDOW_BUSY : RUN_MAX;
    do
      len += block_len (off, i++);
    while (i < nblocks && diff[i] && len + block_len (off, i) <= run_max);
    if (throttle (f, gen, t0, runs, &nr, &pending, len) == -1)
      ret = -1;
    pthread_mutex_lock (&Y.lock);
    if (aborted (gen))
      ret = -1;
    pthread_mutex_unlock (&Y.lock);
    /* At most PENDING_MAX bytes of runs in flight: queued units beyond
     * what the log can take would wait for space that only their own
     * completion frees.
     */
    if (ret == 0 && pending + finisher_bytes (f) + len > PENDING_MAX &&
        finish_inline (f, runs, &nr, &pending) == -1)
      ret = -1;
    if (ret == 0) {
      bool busy = false;
      const uint8_t *pre = local ? local + (start - off) : NULL;

      if (resend_run (&runs[nr], start, len, nr > 0 ? &busy : NULL,
                      pre, snap) == -1)
        ret = -1;
      else if (busy) {
        if (finish_inline (f, runs, &nr, &pending) == -1)
          ret = -1;
        if (ret == 0 &&
            resend_run (&runs[nr], start, len, NULL, pre, snap) == -1)
          ret = -1;
      }
      nr++;
      pending += len;
    }
    if (ret == 0) {
      pthread_mutex_lock (&Y.lock);
      Y.sent += len;
      pthread_mutex_unlock (&Y.lock);
    }
  }
  t = now_ns ();
  if (finisher_wait (f) == -1)
    ret = -1;
  sync_waited (WAIT_FINISHER, t);
  if (nr > 0)
    finisher_hand (f, runs, nr, pending);
  else
    free (runs);
  return ret;
}

