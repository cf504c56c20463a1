/* nbd-replica: unit tests of the group-commit journal and the log scan
 * (common/journal.c, rlog_scan_* in common/logfile.c), on real files.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <inttypes.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <time.h>
#include <pthread.h>
#include <stdatomic.h>

#include <check.h>

#include "journal.h"
#include "testutil.h"

static char *tmpdir;

static void
setup (void)
{
  tmpdir = tu_mkdtemp ();
}

static void
teardown (void)
{
  tu_rmtree (tmpdir);
  free (tmpdir);
  tmpdir = NULL;
}

/* ---- a replaceable disk: slow, counting, failing on demand ---- */

static struct {
  atomic_int pwritevs, syncs;
  atomic_int fail_pwritev;      /* fail this many calls; -1: always */
  int pwritev_errno;
  atomic_int short_pwritev;     /* report one byte fewer this many times */
  atomic_int fail_sync;         /* fail this many calls; -1: always */
  int sync_errno;
  long sync_delay_ns;
} fio;

static void
fio_reset (void)
{
  atomic_store (&fio.pwritevs, 0);
  atomic_store (&fio.syncs, 0);
  atomic_store (&fio.fail_pwritev, 0);
  atomic_store (&fio.short_pwritev, 0);
  atomic_store (&fio.fail_sync, 0);
  fio.pwritev_errno = fio.sync_errno = 0;
  fio.sync_delay_ns = 0;
}

/* Consume one failure from *n (0: none left; -1: forever). */
static int
take_fault (atomic_int *n)
{
  int v = atomic_load (n);

  while (v != 0) {
    if (v < 0)
      return 1;
    if (atomic_compare_exchange_weak (n, &v, v - 1))
      return 1;
  }
  return 0;
}

static ssize_t
fio_pwritev (int fd, const struct iovec *iov, int n, off_t off)
{
  ssize_t r;

  atomic_fetch_add (&fio.pwritevs, 1);
  if (take_fault (&fio.fail_pwritev)) {
    errno = fio.pwritev_errno;
    return -1;
  }
  r = pwritev (fd, iov, n, off);
  if (r > 0 && take_fault (&fio.short_pwritev))
    r--;
  return r;
}

static int
fio_fdatasync (int fd)
{
  atomic_fetch_add (&fio.syncs, 1);
  if (fio.sync_delay_ns > 0) {
    struct timespec ts = { 0, fio.sync_delay_ns };
    nanosleep (&ts, NULL);
  }
  if (take_fault (&fio.fail_sync)) {
    errno = fio.sync_errno;
    return -1;
  }
  return fdatasync (fd);
}

static const struct journal_io test_io = {
  .pwritev = fio_pwritev,
  .fdatasync = fio_fdatasync,
};

/* ---- helpers ---- */

/* The checkpointer's job (plugin/checkpoint.c checkpoint_now) without
 * the backing flush: record the checkpoint point in the superblock,
 * then free the space before it.
 */
static void
checkpoint (struct journal *j, struct rlog *log)
{
  uint64_t seq, epoch, lsn;
  struct rlog_sb sb;
  int r;

  journal_checkpoint_point (j, &seq, &epoch, &lsn);
  pthread_mutex_lock (&log->sb_lock);
  sb = log->sb;
  sb.checkpoint_seq = seq;
  sb.checkpoint_epoch = epoch;
  sb.checkpoint_lsn = lsn;
  r = rlog_sb_write_locked (log, &sb);
  pthread_mutex_unlock (&log->sb_lock);
  ck_assert_int_eq (r, 0);
  journal_set_checkpoint (j, lsn);
}

struct jctx {
  struct rlog *log;
  struct journal j;
};

static void
pressure_checkpoint (void *opaque)
{
  struct jctx *c = opaque;

  checkpoint (&c->j, c->log);
}

static struct jctx *
start (const char *name, const struct journal_io *io,
       journal_pressure_fn pressure)
{
  struct jctx *c = calloc (1, sizeof *c);

  ck_assert_ptr_nonnull (c);
  fio_reset ();
  c->log = tu_new_log (tmpdir, name, RLOG_MIN_SIZE);
  ck_assert_uint_eq (c->log->sb.epoch, 1);
  ck_assert_int_eq (journal_start (&c->j, c->log, io,
                                   c->log->sb.seq_reserved,
                                   c->log->sb.checkpoint_lsn,
                                   pressure, c), 0);
  return c;
}

static void
stop (struct jctx *c)
{
  journal_stop (&c->j);
  rlog_close (c->log);
  free (c);
}

static void
set_entry (struct jentry *e, uint8_t op, uint32_t flags, uint64_t offset,
           uint32_t length, const void *payload)
{
  memset (e, 0, sizeof *e);
  e->op = op;
  e->flags = flags;
  e->offset = offset;
  e->length = length;
  if (op == RLOG_OP_WRITE) {
    e->payload = payload;
    e->payload_crc = rlog_payload_crc (payload, length);
  }
}

/* Append one WRITE of len bytes of pattern seed; returns journal_append. */
static int
append_write (struct journal *j, struct jentry *e, uint64_t offset,
              uint32_t len, uint64_t seed)
{
  uint8_t *buf = malloc (len);
  struct junit u = { .entries = e, .n = 1 };
  int r, err;

  ck_assert_ptr_nonnull (buf);
  tu_fill (buf, len, seed);
  set_entry (e, RLOG_OP_WRITE, 0, offset, len, buf);
  r = journal_append (j, &u);
  err = errno;
  free (buf);                   /* the payload is only read by append */
  e->payload = NULL;
  errno = err;
  return r;
}

static void
stats (struct journal *j, struct journal_stats *st, uint64_t *head,
       int *fault, bool *fenced)
{
  uint64_t used, h;
  int f;
  bool fe;

  journal_get_stats (j, st, head ? head : &h, &used, fault ? fault : &f,
                     fenced ? fenced : &fe);
}

/* What a scanned record must be. */
struct want {
  uint8_t op;
  uint32_t flags;
  uint64_t offset;
  uint32_t length;
  uint64_t seed;
  uint64_t seq, epoch;
};

static void
want_from (struct want *w, const struct jentry *e, uint64_t seed)
{
  w->op = e->op;
  w->flags = e->flags;
  w->offset = e->offset;
  w->length = e->length;
  w->seed = seed;
  w->seq = e->rec.seq;
  w->epoch = e->rec.epoch;
}

/* Scan from the superblock's checkpoint and expect exactly want[0..n),
 * then a stop of kind stop (or any clean stop if stop is NONE).
 */
static void
scan_expect (struct rlog *log, const struct want *want, size_t n,
             enum rlog_stop stop)
{
  struct rlog_scan s;
  struct rlog_rec rec;
  const uint8_t *payload;
  size_t i = 0;

  ck_assert_int_eq (rlog_scan_init (&s, log), 0);
  while (rlog_scan_next (&s, &rec, &payload) == 1) {
    ck_assert_msg (i < n, "unexpected record seq %" PRIu64 " epoch %" PRIu64
                   " (%s) after the %zu expected", rec.seq, rec.epoch,
                   rlog_op_name (rec.op), n);
    ck_assert_uint_ne (rec.op, RLOG_OP_WRAP);
    ck_assert_uint_eq (rec.seq, want[i].seq);
    ck_assert_uint_eq (rec.epoch, want[i].epoch);
    ck_assert_uint_eq (rec.op, want[i].op);
    ck_assert_uint_eq (rec.flags, want[i].flags);
    ck_assert_uint_eq (rec.offset, want[i].offset);
    ck_assert_uint_eq (rec.length, want[i].length);
    if (rec.op == RLOG_OP_WRITE) {
      ck_assert_uint_eq (rec.payload_len, rec.length);
      ck_assert_msg (tu_check (payload, rec.length, want[i].seed),
                     "payload of seq %" PRIu64 " differs", rec.seq);
    }
    else
      ck_assert_uint_eq (rec.payload_len, 0);
    i++;
  }
  ck_assert_msg (i == n, "scan returned %zu records, want %zu; stop: %s (%s)",
                 i, n, rlog_stop_name (s.stop), s.why);
  ck_assert_uint_eq (s.records, n);
  if (stop != RLOG_STOP_NONE)
    ck_assert_msg (s.stop == stop, "scan stopped with %s (%s), want %s",
                   rlog_stop_name (s.stop), s.why, rlog_stop_name (stop));
  else
    ck_assert_msg (s.stop == RLOG_STOP_EMPTY || s.stop == RLOG_STOP_STALE ||
                   s.stop == RLOG_STOP_CORRUPT,
                   "scan stopped with %s (%s)", rlog_stop_name (s.stop),
                   s.why);
  rlog_scan_free (&s);
}

/* ---- tests ---- */

/* Mixed units of every op; each record comes back from the scan with
 * consecutive seqs and its payload.
 */
START_TEST (test_append_scan)
{
  struct jctx *c = start ("append", NULL, NULL);
  struct jentry ents[64];
  struct want want[64];
  uint8_t *big = malloc (RLOG_MAX_PAYLOAD), small[5000];
  size_t n = 0, units = 0;
  struct journal_stats st;
  uint64_t head;

  ck_assert_ptr_nonnull (big);
  tu_fill (big, RLOG_MAX_PAYLOAD, 77);
  tu_fill (small, sizeof small, 78);

#define ADD(op_, fl_, off_, len_, buf_, seed_)                          \
  do {                                                                  \
    set_entry (&ents[n], op_, fl_, off_, len_, buf_);                   \
    want[n].seed = seed_;                                               \
    n++;                                                                \
  } while (0)
#define APPEND(first)                                                   \
  do {                                                                  \
    struct junit u = { .entries = &ents[first], .n = n - (first) };     \
    ck_assert_int_eq (journal_append (&c->j, &u), 0);                   \
    ck_assert_int_eq (u.err, 0);                                        \
    ck_assert_uint_eq (c->j.head_lsn % RLOG_BLOCK, 0);                  \
    units++;                                                            \
  } while (0)

  ADD (RLOG_OP_WRITE, RLOG_FLAG_FUA, 0, sizeof small, small, 78);
  APPEND (0);
  ADD (RLOG_OP_ZERO, RLOG_FLAG_MAY_TRIM, 8192, 1 << 20, NULL, 0);
  ADD (RLOG_OP_TRIM, 0, 2 << 20, 65536, NULL, 0);
  ADD (RLOG_OP_FLUSH, 0, 0, 0, NULL, 0);
  APPEND (1);
  ADD (RLOG_OP_WRITE, 0, 7, 100, small, 78);
  ADD (RLOG_OP_WRITE, 0, 1ULL << 30, RLOG_MAX_PAYLOAD, big, 77);
  ADD (RLOG_OP_WRITE, RLOG_FLAG_FUA, 5, 64, small, 78);
  APPEND (4);
  ADD (RLOG_OP_FLUSH, 0, 0, 0, NULL, 0);
  APPEND (7);
  for (int k = 0; k < 20; ++k) {
    size_t first = n;
    ADD (RLOG_OP_WRITE, 0, k * 8192, 1 + k * 200, small, 78);
    if (k % 3 == 0)
      ADD (RLOG_OP_ZERO, RLOG_FLAG_FUA, k * 8192 + 4096, 4096, NULL, 0);
    APPEND (first);
  }
#undef ADD
#undef APPEND

  for (size_t i = 0; i < n; ++i) {
    ck_assert_uint_eq (ents[i].rec.seq, i + 1);
    ck_assert_uint_eq (ents[i].rec.epoch, 1);
    ck_assert_uint_eq (ents[i].lsn % RLOG_REC_ALIGN, 0);
    if (i > 0)
      ck_assert_uint_ge (ents[i].lsn, ents[i - 1].lsn
                         + rlog_rec_size (ents[i - 1].rec.payload_len));
    want_from (&want[i], &ents[i], want[i].seed);
    journal_complete (&c->j, &ents[i]);
  }
  stats (&c->j, &st, &head, NULL, NULL);
  ck_assert_uint_eq (st.records_appended, n);
  ck_assert_uint_eq (st.batches, units);
  ck_assert_uint_eq (st.log_syncs, units);
  ck_assert_uint_eq (st.append_errors, 0);
  ck_assert_uint_eq (head, n);
  ck_assert_uint_eq (journal_used_bytes (&c->j), c->j.head_lsn);
  /* The seq reservation is durable before the seqs are used. */
  ck_assert_uint_ge (c->log->sb.seq_reserved, n);

  scan_expect (c->log, want, n, RLOG_STOP_EMPTY);

  /* Scanning from a record in the middle. */
  {
    struct rlog_scan s;
    struct rlog_rec rec;
    const uint8_t *payload;
    size_t k = 9, got = 0;

    ck_assert_int_eq (rlog_scan_init_at (&s, c->log, ents[k].lsn,
                                         ents[k].rec.seq - 1, 1), 0);
    while (rlog_scan_next (&s, &rec, &payload) == 1) {
      ck_assert_uint_eq (rec.seq, ents[k + got].rec.seq);
      got++;
    }
    ck_assert_uint_eq (got, n - k);
    ck_assert_int_eq (s.stop, RLOG_STOP_EMPTY);
    rlog_scan_free (&s);
  }
  free (big);
  stop (c);
}
END_TEST

/* journal_append refuses empty and oversized units. */
START_TEST (test_append_einval)
{
  struct jctx *c = start ("einval", NULL, NULL);
  uint8_t *big = calloc (1, RLOG_MAX_PAYLOAD);
  struct jentry e[2];
  struct junit u = { .entries = e, .n = 0 };
  struct journal_stats st;

  ck_assert_ptr_nonnull (big);
  ck_assert_int_eq (journal_append (&c->j, &u), -1);
  ck_assert_int_eq (errno, EINVAL);
  ck_assert_uint_eq (journal_max_unit_bytes (&c->j),
                     c->log->sb.ring_size / 4);
  set_entry (&e[0], RLOG_OP_WRITE, 0, 0, RLOG_MAX_PAYLOAD, big);
  set_entry (&e[1], RLOG_OP_WRITE, 0, RLOG_MAX_PAYLOAD, RLOG_MAX_PAYLOAD, big);
  u.n = 2;
  ck_assert_uint_gt (2 * rlog_rec_size (RLOG_MAX_PAYLOAD),
                     journal_max_unit_bytes (&c->j));
  ck_assert_int_eq (journal_append (&c->j, &u), -1);
  ck_assert_int_eq (errno, EINVAL);
  stats (&c->j, &st, NULL, NULL, NULL);
  ck_assert_uint_eq (st.records_appended, 0);
  free (big);
  stop (c);
}
END_TEST

/* An entry the scanner would refuse as corrupt (and with it every later
 * record) must not be acknowledged as durable: journal_append has to
 * refuse it up front.
 */
START_TEST (test_append_rejects_unreplayable)
{
  struct jctx *c = start ("unreplayable", NULL, NULL);
  uint8_t *big = calloc (1, RLOG_MAX_PAYLOAD + 4096);
  static const struct {
    const char *what;
    uint8_t op;
    uint32_t flags;
    uint64_t offset;
    uint32_t length;
  } bad[] = {
    { "write of 0 bytes", RLOG_OP_WRITE, 0, 0, 0 },
    { "write above RLOG_MAX_PAYLOAD", RLOG_OP_WRITE, 0, 0,
      RLOG_MAX_PAYLOAD + 4096 },
    { "zero of 0 bytes", RLOG_OP_ZERO, 0, 0, 0 },
    { "trim of 0 bytes", RLOG_OP_TRIM, 0, 4096, 0 },
    { "flush with a length", RLOG_OP_FLUSH, 0, 0, 512 },
    { "flush with an offset", RLOG_OP_FLUSH, 0, 4096, 0 },
    { "unknown op", 9, 0, 0, 512 },
    { "WRAP op from a submitter", RLOG_OP_WRAP, 0, 0, 0 },
    { "unknown flag", RLOG_OP_ZERO, 0x80, 0, 512 },
    { "range past 2^64", RLOG_OP_ZERO, 0, UINT64_MAX - 100, 4096 },
  };

  ck_assert_ptr_nonnull (big);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
    struct jentry e;
    struct junit u = { .entries = &e, .n = 1 };
    int r;

    set_entry (&e, bad[i].op, bad[i].flags, bad[i].offset, bad[i].length,
               big);
    errno = 0;
    r = journal_append (&c->j, &u);
    if (r == 0)
      journal_complete (&c->j, &e);
    ck_assert_msg (r == -1 && errno == EINVAL,
                   "journal_append accepted a %s (returned %d): the record "
                   "is acknowledged, but the log scan stops at it as "
                   "corrupt, losing it and every later record", bad[i].what,
                   r);
  }
  free (big);
  stop (c);
}
END_TEST

/* 256 KiB records through an 8 MiB log (ring ~7 MiB), checkpointing
 * behind a window of in-flight records, so the ring wraps several times;
 * after every append, a scan from the checkpoint returns exactly the
 * records after it, in order, across the end of the ring.
 */
START_TEST (test_wraparound)
{
  enum { N = 120, K = 8, PLEN = 256 * 1024 };
  struct jctx *c = start ("wrap", NULL, NULL);
  struct jentry *ents = calloc (N, sizeof *ents);
  struct want *want = calloc (N, sizeof *want);
  uint64_t rs = c->log->sb.ring_size;
  unsigned crossings = 0, wraps = 0;
  struct journal_stats st;

  ck_assert_ptr_nonnull (ents);
  ck_assert_ptr_nonnull (want);
  for (int i = 0; i < N; ++i) {
    uint64_t lo;

    ck_assert_int_eq (append_write (&c->j, &ents[i], (uint64_t) i * PLEN,
                                    PLEN, 5000 + i), 0);
    want_from (&want[i], &ents[i], 5000 + i);
    ck_assert_uint_eq (ents[i].rec.seq, i + 1);
    if (i > 0 && ents[i].lsn / rs != ents[i - 1].lsn / rs) {
      uint64_t end = ents[i - 1].lsn + ents[i - 1].rec.rec_size;
      /* A record never crosses the ring end: if it would, a WRAP
       * record fills the rest of the ring.
       */
      ck_assert_uint_eq (ents[i].lsn % rs, 0);
      if (end % rs != 0) {
        uint8_t hdr[RLOG_REC_HDR_SIZE];
        struct rlog_rec w;

        tu_pread (c->log->fd, hdr, sizeof hdr,
                  rlog_lsn_to_off (&c->log->sb, end));
        ck_assert_int_eq (rlog_rec_decode_hdr (hdr, sizeof hdr,
                                               RLOG_MAX_REC_SIZE, &w),
                          RLOG_OK);
        ck_assert_uint_eq (w.op, RLOG_OP_WRAP);
        ck_assert_uint_eq (w.rec_size, rs - end % rs);
        ck_assert_uint_eq (w.seq, ents[i - 1].rec.seq);
        ck_assert (rlog_rec_verify (hdr, NULL, 0));
        wraps++;
      }
    }
    if (i >= K)
      journal_complete (&c->j, &ents[i - K]);
    checkpoint (&c->j, c->log);
    lo = i >= K ? i - K + 1 : 0;
    ck_assert_uint_eq (c->log->sb.checkpoint_seq, lo);
    ck_assert_uint_eq (c->log->sb.checkpoint_lsn, ents[lo].lsn);
    scan_expect (c->log, &want[lo], i + 1 - lo, RLOG_STOP_NONE);
    if (ents[lo].lsn / rs != ents[i].lsn / rs)
      crossings++;
  }
  ck_assert_uint_ge (c->j.head_lsn / rs, 3);   /* three laps at least */
  ck_assert_uint_ge (wraps, 3);
  ck_assert_uint_ge (crossings, 3);

  /* Everything applied: the log is empty after the checkpoint, and what
   * lies at the head (older laps) is not returned.
   */
  for (int i = N - K; i < N; ++i)
    journal_complete (&c->j, &ents[i]);
  checkpoint (&c->j, c->log);
  ck_assert_uint_eq (c->log->sb.checkpoint_seq, N);
  ck_assert_uint_eq (c->log->sb.checkpoint_lsn, c->j.head_lsn);
  scan_expect (c->log, NULL, 0, RLOG_STOP_NONE);
  stats (&c->j, &st, NULL, NULL, NULL);
  ck_assert_uint_eq (st.records_appended, N);
  ck_assert_uint_eq (st.space_waits, 0);
  ck_assert_uint_eq (journal_used_bytes (&c->j), 0);
  free (ents);
  free (want);
  stop (c);
}
END_TEST

/* Append n WRITEs of plen bytes; fill want. */
static void
append_n (struct jctx *c, struct jentry *ents, struct want *want, int n,
          uint32_t plen)
{
  for (int i = 0; i < n; ++i) {
    ck_assert_int_eq (append_write (&c->j, &ents[i], (uint64_t) i << 20,
                                    plen, 100 + i), 0);
    want_from (&want[i], &ents[i], 100 + i);
    journal_complete (&c->j, &ents[i]);
  }
}

/* A corrupt byte in a record (payload or header): the scan stops there
 * as corrupt and returns nothing from it on.
 */
START_TEST (test_corrupt_record)
{
  enum { N = 10, PLEN = 8192, BAD = 5 };
  struct jctx *c = start ("corrupt", NULL, NULL);
  struct jentry ents[N];
  struct want want[N];
  uint64_t off;
  static const size_t where[] = {
    RLOG_REC_HDR_SIZE,                   /* first payload byte */
    RLOG_REC_HDR_SIZE + 1000,
    RLOG_REC_HDR_SIZE + PLEN - 1,        /* last payload byte */
    0,                                   /* magic */
    5,                                   /* op */
    16,                                  /* seq */
    40,                                  /* timestamp: only the CRC sees it */
    56,                                  /* the CRC itself */
  };

  append_n (c, ents, want, N, PLEN);
  scan_expect (c->log, want, N, RLOG_STOP_EMPTY);
  off = rlog_lsn_to_off (&c->log->sb, ents[BAD].lsn);
  for (size_t k = 0; k < sizeof where / sizeof where[0]; ++k) {
    uint8_t b;

    tu_pread (c->log->fd, &b, 1, off + where[k]);
    b ^= 0x10;
    tu_pwrite (c->log->fd, &b, 1, off + where[k]);
    scan_expect (c->log, want, BAD, RLOG_STOP_CORRUPT);
    b ^= 0x10;
    tu_pwrite (c->log->fd, &b, 1, off + where[k]);
  }
  scan_expect (c->log, want, N, RLOG_STOP_EMPTY);

  /* A torn record: its last 4 KiB never reached the disk. */
  {
    static const uint8_t zero[4096];
    tu_pwrite (c->log->fd, zero, sizeof zero,
               off + RLOG_REC_HDR_SIZE + PLEN - sizeof zero);
    scan_expect (c->log, want, BAD, RLOG_STOP_CORRUPT);
  }
  stop (c);
}
END_TEST

/* A zeroed header reads as the end of the log. */
START_TEST (test_zeroed_header)
{
  enum { N = 6, BAD = 3 };
  struct jctx *c = start ("zeroed", NULL, NULL);
  struct jentry ents[N];
  struct want want[N];
  static const uint8_t zero[RLOG_REC_HDR_SIZE];

  append_n (c, ents, want, N, 1000);
  tu_pwrite (c->log->fd, zero, sizeof zero,
             rlog_lsn_to_off (&c->log->sb, ents[BAD].lsn));
  scan_expect (c->log, want, BAD, RLOG_STOP_EMPTY);
  stop (c);
}
END_TEST

/* Seal and write a WRITE record of 256 bytes at lsn. */
static uint64_t
put_record (struct rlog *log, uint64_t lsn, uint64_t seq, uint64_t epoch)
{
  uint8_t buf[RLOG_REC_HDR_SIZE + 256];
  struct rlog_rec r = {
    .op = RLOG_OP_WRITE, .payload_len = 256, .length = 256,
    .rec_size = rlog_rec_size (256), .seq = seq, .epoch = epoch,
    .offset = 4096 * seq, .timestamp_ns = rlog_now_ns (),
  };

  tu_fill (buf + RLOG_REC_HDR_SIZE, 256, seq);
  rlog_rec_seal (&r, buf, rlog_payload_crc (buf + RLOG_REC_HDR_SIZE, 256));
  tu_pwrite (log->fd, buf, sizeof buf, rlog_lsn_to_off (&log->sb, lsn));
  return lsn + r.rec_size;
}

/* Valid records that do not continue the sequence are stale: an older
 * lap, an older or a future epoch, a gap within an epoch.  A new epoch
 * may skip seqs forward (burned seqs), never back.
 */
START_TEST (test_stale_records)
{
  enum { N = 5 };
  struct jctx *c = start ("stale", NULL, NULL);
  struct jentry ents[N];
  struct want want[N + 2];
  uint64_t seq, epoch, head;
  uint8_t *old;
  uint32_t old_size;
  static const uint8_t zero[4096];

  append_n (c, ents, want, N, 3000);
  journal_checkpoint_point (&c->j, &seq, &epoch, &head);
  ck_assert_uint_eq (seq, N);
  ck_assert_uint_eq (epoch, 1);
  ck_assert_uint_eq (head, c->j.head_lsn);

  /* The first record, copied to the head: a record of an older lap. */
  old_size = ents[0].rec.rec_size;
  old = malloc (old_size);
  ck_assert_ptr_nonnull (old);
  tu_pread (c->log->fd, old, old_size,
            rlog_lsn_to_off (&c->log->sb, ents[0].lsn));
  tu_pwrite (c->log->fd, old, old_size, rlog_lsn_to_off (&c->log->sb, head));
  scan_expect (c->log, want, N, RLOG_STOP_STALE);
  free (old);

  put_record (c->log, head, N + 1, 0);         /* older epoch */
  scan_expect (c->log, want, N, RLOG_STOP_STALE);
  put_record (c->log, head, N + 2, 1);         /* gap in the same epoch */
  scan_expect (c->log, want, N, RLOG_STOP_STALE);
  put_record (c->log, head, N, 1);             /* repeated seq */
  scan_expect (c->log, want, N, RLOG_STOP_STALE);
  put_record (c->log, head, N + 1, 2);         /* beyond the sb's epoch */
  scan_expect (c->log, want, N, RLOG_STOP_STALE);

  /* Control: the next seq in the same epoch is accepted. */
  tu_pwrite (c->log->fd, zero, sizeof zero,
             rlog_lsn_to_off (&c->log->sb, head));
  put_record (c->log, head, N + 1, 1);
  want[N] = (struct want) { RLOG_OP_WRITE, 0, 4096 * (N + 1), 256, N + 1,
                            N + 1, 1 };
  scan_expect (c->log, want, N + 1, RLOG_STOP_EMPTY);

  /* A new epoch (as after a restart) may skip seqs forward... */
  {
    struct rlog_sb sb;
    pthread_mutex_lock (&c->log->sb_lock);
    sb = c->log->sb;
    sb.epoch = 2;
    ck_assert_int_eq (rlog_sb_write_locked (c->log, &sb), 0);
    pthread_mutex_unlock (&c->log->sb_lock);
  }
  {
    uint64_t next = put_record (c->log, head, N + 10, 2);
    want[N] = (struct want) { RLOG_OP_WRITE, 0, 4096 * (N + 10), 256,
                              N + 10, N + 10, 2 };
    scan_expect (c->log, want, N + 1, RLOG_STOP_EMPTY);
    /* ... but an older epoch cannot follow it, even in sequence, */
    put_record (c->log, next, N + 11, 1);
    scan_expect (c->log, want, N + 1, RLOG_STOP_STALE);
  }
  /* ... nor can a new epoch go back. */
  put_record (c->log, head, N, 2);
  scan_expect (c->log, want, N, RLOG_STOP_STALE);
  put_record (c->log, head, 2, 2);
  scan_expect (c->log, want, N, RLOG_STOP_STALE);
  stop (c);
}
END_TEST

/* Stop, recover as plugin/recovery.c does (new checkpoint at the end of
 * the scanned log, new epoch), start again: seqs continue after the old
 * reservation and the whole history still scans from the beginning.
 */
START_TEST (test_restart)
{
  enum { N = 4 };
  struct jctx *c = start ("restart", NULL, NULL);
  struct jentry ents[2 * N];
  struct want want[2 * N];
  struct rlog_scan s;
  struct rlog_rec rec;
  const uint8_t *payload;
  struct rlog_sb sb;
  uint64_t last_seq, last_epoch;

  append_n (c, ents, want, N, 2000);
  journal_stop (&c->j);

  ck_assert_int_eq (rlog_scan_init (&s, c->log), 0);
  last_seq = s.prev_seq;
  last_epoch = s.prev_epoch;
  while (rlog_scan_next (&s, &rec, &payload) == 1) {
    last_seq = rec.seq;
    last_epoch = rec.epoch;
  }
  ck_assert_int_eq (s.stop, RLOG_STOP_EMPTY);
  ck_assert_uint_eq (last_seq, N);
  pthread_mutex_lock (&c->log->sb_lock);
  sb = c->log->sb;
  sb.checkpoint_seq = last_seq;
  sb.checkpoint_epoch = last_epoch;
  sb.checkpoint_lsn = (s.lsn + RLOG_BLOCK - 1) & ~(uint64_t) (RLOG_BLOCK - 1);
  sb.epoch++;
  ck_assert_int_eq (rlog_sb_write_locked (c->log, &sb), 0);
  pthread_mutex_unlock (&c->log->sb_lock);
  rlog_scan_free (&s);

  ck_assert_int_eq (journal_start (&c->j, c->log, NULL,
                                   c->log->sb.seq_reserved,
                                   c->log->sb.checkpoint_lsn, NULL, NULL), 0);
  for (int i = N; i < 2 * N; ++i) {
    ck_assert_int_eq (append_write (&c->j, &ents[i], (uint64_t) i << 20,
                                    2000, 100 + i), 0);
    want_from (&want[i], &ents[i], 100 + i);
    journal_complete (&c->j, &ents[i]);
    ck_assert_uint_eq (ents[i].rec.epoch, 2);
    ck_assert_uint_eq (ents[i].rec.seq, sb.seq_reserved + 1 + (i - N));
  }
  ck_assert_uint_gt (ents[N].rec.seq, N + 1);     /* burned seqs skipped */
  scan_expect (c->log, &want[N], N, RLOG_STOP_EMPTY);

  /* The whole history, from the very first record. */
  ck_assert_int_eq (rlog_scan_init_at (&s, c->log, 0, 0, 0), 0);
  for (int i = 0; i < 2 * N; ++i) {
    ck_assert_int_eq (rlog_scan_next (&s, &rec, &payload), 1);
    ck_assert_uint_eq (rec.seq, want[i].seq);
    ck_assert_uint_eq (rec.epoch, want[i].epoch);
  }
  ck_assert_int_eq (rlog_scan_next (&s, &rec, &payload), 0);
  ck_assert_int_eq (s.stop, RLOG_STOP_EMPTY);
  rlog_scan_free (&s);
  stop (c);
}
END_TEST

/* The checkpoint never passes the oldest record still in flight. */
START_TEST (test_checkpoint_inflight)
{
  struct jctx *c = start ("inflight", NULL, NULL);
  struct jentry ents[3];
  uint64_t seq, epoch, lsn;

  for (int i = 0; i < 3; ++i)
    ck_assert_int_eq (append_write (&c->j, &ents[i], i * 4096, 4096, i), 0);
  journal_complete (&c->j, &ents[1]);
  journal_complete (&c->j, &ents[2]);
  journal_checkpoint_point (&c->j, &seq, &epoch, &lsn);
  ck_assert_uint_eq (seq, 0);
  ck_assert_uint_eq (epoch, 1);
  ck_assert_uint_eq (lsn, ents[0].lsn);
  ck_assert_uint_eq (journal_used_bytes (&c->j), c->j.head_lsn);

  journal_complete (&c->j, &ents[0]);
  journal_complete (&c->j, &ents[0]);           /* twice is harmless */
  journal_checkpoint_point (&c->j, &seq, &epoch, &lsn);
  ck_assert_uint_eq (seq, 3);
  ck_assert_uint_eq (lsn, c->j.head_lsn);
  checkpoint (&c->j, c->log);
  ck_assert_uint_eq (journal_used_bytes (&c->j), 0);
  /* An older checkpoint never moves the journal's back. */
  journal_set_checkpoint (&c->j, 0);
  ck_assert_uint_eq (journal_used_bytes (&c->j), 0);
  stop (c);
}
END_TEST

/* ---- group commit ---- */

enum { GC_THREADS = 16, GC_PER_THREAD = 50, GC_PLEN = 512 };

struct gc_arg {
  struct jctx *c;
  int t;
  int failures;
};

static void *
gc_thread (void *arg)
{
  struct gc_arg *a = arg;

  for (int i = 0; i < GC_PER_THREAD; ++i) {
    struct jentry e;
    uint64_t off = ((uint64_t) a->t << 20) | ((uint64_t) i << 9);

    if (append_write (&a->c->j, &e, off, GC_PLEN, off) == -1)
      a->failures++;
    else
      journal_complete (&a->c->j, &e);
  }
  return NULL;
}

static atomic_bool gc_done;

/* The checkpointer thread of the plugin, every millisecond. */
static void *
gc_checkpointer (void *arg)
{
  struct jctx *c = arg;
  uint64_t prev = 0;

  while (!atomic_load (&gc_done)) {
    struct timespec d = { 0, 1000 * 1000 };
    uint64_t seq;

    checkpoint (&c->j, c->log);
    pthread_mutex_lock (&c->log->sb_lock);
    seq = c->log->sb.checkpoint_seq;
    pthread_mutex_unlock (&c->log->sb_lock);
    ck_assert_uint_ge (seq, prev);
    prev = seq;
    nanosleep (&d, NULL);
  }
  return NULL;
}

/* 16 threads appending concurrently on a slow disk share log syncs,
 * while checkpoints are taken concurrently.
 */
START_TEST (test_group_commit)
{
  struct jctx *c = start ("group", &test_io, pressure_checkpoint);
  pthread_t th[GC_THREADS], ckpt;
  struct gc_arg args[GC_THREADS];
  struct journal_stats st;
  uint64_t head;
  int fault;
  bool fenced;
  int last[GC_THREADS];
  struct rlog_scan s;
  struct rlog_rec rec;
  const uint8_t *payload;
  uint64_t n = 0;
  const uint64_t total = GC_THREADS * GC_PER_THREAD;

  fio.sync_delay_ns = 2 * 1000 * 1000;
  atomic_store (&gc_done, false);
  ck_assert_int_eq (pthread_create (&ckpt, NULL, gc_checkpointer, c), 0);
  for (int t = 0; t < GC_THREADS; ++t) {
    args[t] = (struct gc_arg) { .c = c, .t = t };
    ck_assert_int_eq (pthread_create (&th[t], NULL, gc_thread, &args[t]), 0);
  }
  for (int t = 0; t < GC_THREADS; ++t) {
    pthread_join (th[t], NULL);
    ck_assert_int_eq (args[t].failures, 0);
  }
  atomic_store (&gc_done, true);
  pthread_join (ckpt, NULL);
  checkpoint (&c->j, c->log);
  ck_assert_uint_eq (c->log->sb.checkpoint_seq, total);
  ck_assert_uint_eq (journal_used_bytes (&c->j), 0);

  stats (&c->j, &st, &head, &fault, &fenced);
  fprintf (stderr, "group commit: %" PRIu64 " records, %" PRIu64
           " log syncs, %" PRIu64 " batches, %d fdatasync calls\n",
           st.records_appended, st.log_syncs, st.batches,
           atomic_load (&fio.syncs));
  ck_assert_uint_eq (st.records_appended, total);
  ck_assert_uint_eq (head, total);
  ck_assert_uint_eq (st.append_errors, 0);
  ck_assert_int_eq (fault, 0);
  ck_assert (!fenced);
  ck_assert_uint_eq (st.batches, st.log_syncs);
  ck_assert_uint_ge ((uint64_t) atomic_load (&fio.syncs), st.log_syncs);
  ck_assert_msg (st.log_syncs < total / 4,
                 "%" PRIu64 " log syncs for %" PRIu64 " records: appends "
                 "are not batched", st.log_syncs, total);

  /* Every record, once, in seq order; each thread's in its order. */
  for (int t = 0; t < GC_THREADS; ++t)
    last[t] = -1;
  ck_assert_int_eq (rlog_scan_init_at (&s, c->log, 0, 0, 0), 0);
  while (rlog_scan_next (&s, &rec, &payload) == 1) {
    int t = rec.offset >> 20, i = (rec.offset >> 9) & 0x7ff;

    ck_assert_uint_eq (rec.seq, n + 1);
    ck_assert_uint_eq (rec.op, RLOG_OP_WRITE);
    ck_assert_uint_eq (rec.length, GC_PLEN);
    ck_assert_int_lt (t, GC_THREADS);
    ck_assert_int_eq (i, last[t] + 1);
    last[t] = i;
    ck_assert (tu_check (payload, GC_PLEN, rec.offset));
    n++;
  }
  ck_assert_uint_eq (n, total);
  ck_assert_int_eq (s.stop, RLOG_STOP_EMPTY);
  rlog_scan_free (&s);
  stop (c);
}
END_TEST

/* ---- failures ---- */

/* A failed write (EIO, or a short write) fails the append with that
 * errno; nothing of it is ever scanned; the next append succeeds in a
 * new epoch, in the same place, after the burned seq.
 */
START_TEST (test_fail_pwritev)
{
  struct jctx *c = start ("eio", &test_io, NULL);
  struct jentry a, b, d, e, f;
  struct want want[3];
  struct journal_stats st;
  int fault;
  bool fenced;

  ck_assert_int_eq (append_write (&c->j, &a, 0, 4096, 1), 0);
  want_from (&want[0], &a, 1);
  journal_complete (&c->j, &a);

  atomic_store (&fio.fail_pwritev, 1);
  fio.pwritev_errno = EIO;
  errno = 0;
  ck_assert_int_eq (append_write (&c->j, &b, 4096, 4096, 2), -1);
  ck_assert_int_eq (errno, EIO);
  ck_assert (!b.inflight);
  stats (&c->j, &st, NULL, &fault, &fenced);
  ck_assert_int_eq (fault, EIO);
  ck_assert_uint_eq (st.append_errors, 1);
  ck_assert_uint_eq (st.records_appended, 1);
  ck_assert (!fenced);
  ck_assert_uint_eq (c->log->sb.epoch, 2);

  ck_assert_int_eq (append_write (&c->j, &d, 8192, 4096, 3), 0);
  want_from (&want[1], &d, 3);
  journal_complete (&c->j, &d);
  ck_assert_uint_eq (d.rec.epoch, 2);
  ck_assert_uint_eq (d.rec.seq, b.rec.seq + 1);
  ck_assert_uint_eq (d.lsn, b.lsn);
  scan_expect (c->log, want, 2, RLOG_STOP_EMPTY);

  /* A short write is a failure too (EIO). */
  atomic_store (&fio.short_pwritev, 1);
  errno = 0;
  ck_assert_int_eq (append_write (&c->j, &e, 12288, 4096, 4), -1);
  ck_assert_int_eq (errno, EIO);
  ck_assert_uint_eq (c->log->sb.epoch, 3);
  scan_expect (c->log, want, 2, RLOG_STOP_EMPTY);
  ck_assert_int_eq (append_write (&c->j, &f, 16384, 4096, 5), 0);
  want_from (&want[2], &f, 5);
  journal_complete (&c->j, &f);
  ck_assert_uint_eq (f.rec.epoch, 3);
  ck_assert_uint_gt (f.rec.seq, e.rec.seq);
  scan_expect (c->log, want, 3, RLOG_STOP_EMPTY);
  stats (&c->j, &st, NULL, NULL, NULL);
  ck_assert_uint_eq (st.append_errors, 2);
  ck_assert_uint_eq (st.records_appended, 3);
  stop (c);
}
END_TEST

/* fdatasync fails (ENOSPC) after the batch was written: the append fails
 * with ENOSPC, and neither the failed records nor what is left of them
 * behind later, smaller batches is ever returned by a scan.
 */
START_TEST (test_fail_fdatasync)
{
  enum { PLEN = RLOG_BLOCK - RLOG_REC_HDR_SIZE };   /* one block each */
  struct jctx *c = start ("enospc", &test_io, NULL);
  uint8_t buf[PLEN];
  struct jentry a, bad[3], z, d;
  struct junit u = { .entries = bad, .n = 3 };
  struct want want[3];
  uint8_t hdr[RLOG_REC_HDR_SIZE];
  struct rlog_rec r;
  static const uint8_t zero[RLOG_REC_HDR_SIZE];

  ck_assert_int_eq (append_write (&c->j, &a, 0, PLEN, 1), 0);
  want_from (&want[0], &a, 1);
  journal_complete (&c->j, &a);

  tu_fill (buf, PLEN, 2);
  for (int i = 0; i < 3; ++i)
    set_entry (&bad[i], RLOG_OP_WRITE, 0, (1 + i) << 20, PLEN, buf);
  atomic_store (&fio.fail_sync, 1);
  fio.sync_errno = ENOSPC;
  errno = 0;
  ck_assert_int_eq (journal_append (&c->j, &u), -1);
  ck_assert_int_eq (errno, ENOSPC);
  ck_assert_int_eq (u.err, ENOSPC);
  ck_assert_uint_eq (c->log->sb.epoch, 2);
  for (int i = 0; i < 3; ++i)
    ck_assert (!bad[i].inflight);
  /* The failed batch is cut at its first block; the rest of it is on
   * disk (the write went through), valid but of the old epoch.
   */
  tu_pread (c->log->fd, hdr, sizeof hdr,
            rlog_lsn_to_off (&c->log->sb, bad[0].lsn));
  ck_assert_mem_eq (hdr, zero, sizeof hdr);
  tu_pread (c->log->fd, hdr, sizeof hdr,
            rlog_lsn_to_off (&c->log->sb, bad[1].lsn));
  ck_assert_int_eq (rlog_rec_decode_hdr (hdr, sizeof hdr, RLOG_MAX_REC_SIZE,
                                         &r), RLOG_OK);
  ck_assert_uint_eq (r.epoch, 1);
  scan_expect (c->log, want, 1, RLOG_STOP_EMPTY);

  /* A smaller batch over the failed one: the leftovers are stale. */
  set_entry (&z, RLOG_OP_ZERO, 0, 0, 4096, NULL);
  u = (struct junit) { .entries = &z, .n = 1 };
  ck_assert_int_eq (journal_append (&c->j, &u), 0);
  journal_complete (&c->j, &z);
  want_from (&want[1], &z, 0);
  ck_assert_uint_eq (z.lsn, bad[0].lsn);
  ck_assert_uint_eq (z.rec.epoch, 2);
  ck_assert_uint_eq (z.rec.seq, bad[2].rec.seq + 1);
  ck_assert_uint_eq (c->j.head_lsn, bad[1].lsn);
  scan_expect (c->log, want, 2, RLOG_STOP_STALE);

  ck_assert_int_eq (append_write (&c->j, &d, 5 << 20, PLEN, 3), 0);
  journal_complete (&c->j, &d);
  want_from (&want[2], &d, 3);
  ck_assert_uint_eq (d.lsn, bad[1].lsn);
  scan_expect (c->log, want, 3, RLOG_STOP_STALE);
  stop (c);
}
END_TEST

/* If even the recovery from a failed append fails, the log is fenced:
 * every later append fails at once with EIO, without touching the disk.
 */
START_TEST (test_fenced)
{
  struct jctx *c = start ("fenced", &test_io, NULL);
  struct jentry a, b;
  struct journal_stats st;
  int fault, pw;
  bool fenced;

  atomic_store (&fio.fail_sync, -1);
  fio.sync_errno = EIO;
  ck_assert_int_eq (append_write (&c->j, &a, 0, 4096, 1), -1);
  ck_assert_int_eq (errno, EIO);
  stats (&c->j, &st, NULL, &fault, &fenced);
  ck_assert (fenced);
  ck_assert_int_eq (fault, EIO);
  ck_assert_uint_eq (c->log->sb.epoch, 1);      /* no new epoch */

  atomic_store (&fio.fail_sync, 0);
  pw = atomic_load (&fio.pwritevs);
  ck_assert_int_eq (append_write (&c->j, &b, 0, 4096, 2), -1);
  ck_assert_int_eq (errno, EIO);
  ck_assert_int_eq (atomic_load (&fio.pwritevs), pw);
  scan_expect (c->log, NULL, 0, RLOG_STOP_EMPTY);
  stop (c);
}
END_TEST

/* ---- a full log waits for a checkpoint ---- */

struct helper {
  struct jctx *c;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool wanted, stop;
  int checkpoints;
};

static void
pressure_kick (void *opaque)
{
  struct helper *h = opaque;

  pthread_mutex_lock (&h->lock);
  h->wanted = true;
  pthread_cond_signal (&h->cond);
  pthread_mutex_unlock (&h->lock);
}

static void *
helper_thread (void *arg)
{
  struct helper *h = arg;

  pthread_mutex_lock (&h->lock);
  for (;;) {
    while (!h->wanted && !h->stop)
      pthread_cond_wait (&h->cond, &h->lock);
    if (h->stop)
      break;
    h->wanted = false;
    pthread_mutex_unlock (&h->lock);
    {
      struct timespec d = { 0, 20 * 1000 * 1000 };
      nanosleep (&d, NULL);     /* let the leader go to sleep */
    }
    checkpoint (&h->c->j, h->c->log);
    pthread_mutex_lock (&h->lock);
    h->checkpoints++;
  }
  pthread_mutex_unlock (&h->lock);
  return NULL;
}

/* A log that fills up never overwrites unapplied records: the leader
 * asks for a checkpoint (pressure callback) and waits for the space.
 * Both a checkpoint made in the callback and one made later by another
 * thread let it go on.
 */
START_TEST (test_space_wait)
{
  enum { N = 60, PLEN = 256 * 1024 };
  struct jctx *c = start ("space", NULL, pressure_checkpoint);
  struct jentry e;
  struct journal_stats st;
  struct timespec t0, t1;
  double secs;

  for (int i = 0; i < N; ++i) {
    ck_assert_int_eq (append_write (&c->j, &e, (uint64_t) i * PLEN, PLEN, i),
                      0);
    journal_complete (&c->j, &e);
    ck_assert_uint_le (journal_used_bytes (&c->j), c->log->sb.ring_size);
  }
  stats (&c->j, &st, NULL, NULL, NULL);
  ck_assert_uint_gt (st.space_waits, 0);
  ck_assert_uint_eq (st.records_appended, N);
  ck_assert_uint_lt (c->log->sb.checkpoint_seq, N);
  ck_assert_uint_gt (c->log->sb.checkpoint_seq, 0);
  stop (c);

  /* Now with the checkpoint made asynchronously. */
  {
    struct helper h = { .checkpoints = 0 };
    pthread_t th;

    c = calloc (1, sizeof *c);
    ck_assert_ptr_nonnull (c);
    fio_reset ();
    c->log = tu_new_log (tmpdir, "space2", RLOG_MIN_SIZE);
    h.c = c;
    pthread_mutex_init (&h.lock, NULL);
    pthread_cond_init (&h.cond, NULL);
    ck_assert_int_eq (pthread_create (&th, NULL, helper_thread, &h), 0);
    ck_assert_int_eq (journal_start (&c->j, c->log, NULL,
                                     c->log->sb.seq_reserved,
                                     c->log->sb.checkpoint_lsn,
                                     pressure_kick, &h), 0);
    clock_gettime (CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < N; ++i) {
      ck_assert_int_eq (append_write (&c->j, &e, (uint64_t) i * PLEN,
                                      PLEN, i), 0);
      journal_complete (&c->j, &e);
    }
    clock_gettime (CLOCK_MONOTONIC, &t1);
    secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    stats (&c->j, &st, NULL, NULL, NULL);
    pthread_mutex_lock (&h.lock);
    h.stop = true;
    pthread_cond_signal (&h.cond);
    pthread_mutex_unlock (&h.lock);
    pthread_join (th, NULL);
    fprintf (stderr, "space wait: %" PRIu64 " waits, %d checkpoints, "
             "%.2f s\n", st.space_waits, h.checkpoints, secs);
    ck_assert_uint_gt (st.space_waits, 0);
    ck_assert_int_gt (h.checkpoints, 0);
    ck_assert_uint_eq (st.records_appended, N);
    /* Woken by the checkpoint, not by the 1 s timeout of each wait. */
    ck_assert_msg (secs < 0.9 * h.checkpoints,
                   "%.2f s for %d waits: the leader sleeps the full timeout "
                   "instead of being woken by journal_set_checkpoint",
                   secs, h.checkpoints);
    pthread_mutex_destroy (&h.lock);
    pthread_cond_destroy (&h.cond);
    stop (c);
  }
}
END_TEST

static Suite *
journal_suite (void)
{
  Suite *s = suite_create ("journal");
  TCase *tc;

  tc = tcase_create ("append");
  tcase_set_timeout (tc, 60);
  tcase_add_unchecked_fixture (tc, setup, teardown);
  tcase_add_test (tc, test_append_scan);
  tcase_add_test (tc, test_append_einval);
  tcase_add_test (tc, test_append_rejects_unreplayable);
  tcase_add_test (tc, test_wraparound);
  tcase_add_test (tc, test_checkpoint_inflight);
  tcase_add_test (tc, test_restart);
  tcase_add_test (tc, test_space_wait);
  suite_add_tcase (s, tc);

  tc = tcase_create ("scan");
  tcase_set_timeout (tc, 60);
  tcase_add_unchecked_fixture (tc, setup, teardown);
  tcase_add_test (tc, test_corrupt_record);
  tcase_add_test (tc, test_zeroed_header);
  tcase_add_test (tc, test_stale_records);
  suite_add_tcase (s, tc);

  tc = tcase_create ("io");
  tcase_set_timeout (tc, 60);
  tcase_add_unchecked_fixture (tc, setup, teardown);
  tcase_add_test (tc, test_group_commit);
  tcase_add_test (tc, test_fail_pwritev);
  tcase_add_test (tc, test_fail_fdatasync);
  tcase_add_test (tc, test_fenced);
  suite_add_tcase (s, tc);
  return s;
}

int
main (void)
{
  SRunner *sr = srunner_create (journal_suite ());
  int failed;

  srunner_run_all (sr, CK_NORMAL);
  failed = srunner_ntests_failed (sr);
  srunner_free (sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
