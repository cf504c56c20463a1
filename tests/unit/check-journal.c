/* nbd-replica: unit tests of appending through the journal (common/journal.c):

 * records scan back in order, wraparound, restart, checkpoints, and a
 * full log waiting for space.
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
#include <sys/stat.h>

#include <check.h>

#include "journal.h"
#include "journaltest.h"
#include "testutil.h"

/* Mixed units of every op; each record comes back from the scan with
 * consecutive seqs and its payload.
 */
START_TEST (test_append_scan)
{
  struct jctx *c = jt_start ("append", NULL, NULL);
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
  jt_stats (&c->j, &st, &head, NULL, NULL);
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
  jt_stop (c);
}
END_TEST

/* journal_append refuses empty and oversized units. */
START_TEST (test_append_einval)
{
  struct jctx *c = jt_start ("einval", NULL, NULL);
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
  jt_stats (&c->j, &st, NULL, NULL, NULL);
  ck_assert_uint_eq (st.records_appended, 0);
  free (big);
  jt_stop (c);
}
END_TEST

/* An entry the scanner would refuse as corrupt (and with it every later
 * record) must not be acknowledged as durable: journal_append has to
 * refuse it up front.
 */
START_TEST (test_append_rejects_unreplayable)
{
  struct jctx *c = jt_start ("unreplayable", NULL, NULL);
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
    { "elided write without SYNC", RLOG_OP_WRITE, RLOG_FLAG_ELIDED, 0, 512 },
    { "elided zero", RLOG_OP_ZERO, RLOG_FLAG_SYNC | RLOG_FLAG_ELIDED, 0,
      512 },
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
  jt_stop (c);
}
END_TEST

/* An elided write (a secondary's in-place resync) is logged as its
 * header alone: 64 bytes of ring, payload_len 0, the CRC of the header;
 * it scans back in seq order with the records around it, which keep
 * their payloads (read into the scan's buffer, or the caller's).
 */
START_TEST (test_append_elided)
{
  struct jctx *c = jt_start ("elided", NULL, NULL);
  uint8_t *big = malloc (RLOG_MAX_PAYLOAD), *into = malloc (RLOG_MAX_REC_SIZE);
  const uint32_t sync_elided = RLOG_FLAG_SYNC | RLOG_FLAG_ELIDED;
  struct jentry e[4];
  struct junit u = { .entries = e, .n = 4 };
  struct rlog_scan s;
  struct rlog_rec rec;
  const uint8_t *payload;
  size_t got = 0;

  ck_assert_ptr_nonnull (big);
  tu_fill (big, RLOG_MAX_PAYLOAD, 5);
  set_entry (&e[0], RLOG_OP_WRITE, sync_elided, 0, RLOG_MAX_PAYLOAD, big);
  set_entry (&e[1], RLOG_OP_WRITE, RLOG_FLAG_SYNC, 1 << 20, 4096, big);
  set_entry (&e[2], RLOG_OP_WRITE, sync_elided, 2 << 20, RLOG_MAX_PAYLOAD,
             big);
  set_entry (&e[3], RLOG_OP_WRITE, 0, 3 << 20, 512, big);
  ck_assert_int_eq (journal_append (&c->j, &u), 0);
  ck_assert_uint_eq (e[0].rec.payload_len, 0);
  ck_assert_uint_eq (e[0].rec.rec_size, RLOG_REC_HDR_SIZE);
  ck_assert_uint_eq (e[1].rec.payload_len, 4096);
  ck_assert_uint_eq (e[2].rec.payload_len, 0);
  /* Two 1 MiB writes cost two headers, not 2 MiB. */
  ck_assert_uint_le (c->j.head_lsn, 3 * RLOG_BLOCK);

  ck_assert_int_eq (rlog_scan_init (&s, c->log), 0);
  /* Every other record read into a buffer of the caller's (s.into). */
  s.into = got % 2 ? into : NULL;
  while (rlog_scan_next (&s, &rec, &payload) == 1) {
    ck_assert_ptr_eq (payload, (got % 2 ? into : s.buf) + RLOG_REC_HDR_SIZE);
    s.into = (got + 1) % 2 ? into : NULL;
    ck_assert_uint_eq (rec.seq, got + 1);
    ck_assert_uint_eq (rec.flags, e[got].flags);
    ck_assert_uint_eq (rec.length, e[got].length);
    ck_assert_uint_eq (rec.payload_len,
                       (e[got].flags & RLOG_FLAG_ELIDED) ? 0 : e[got].length);
    if (rec.payload_len)
      ck_assert_int_eq (memcmp (payload, big, rec.payload_len), 0);
    journal_complete (&c->j, &e[got]);
    got++;
  }
  ck_assert_uint_eq (got, 4);
  ck_assert_int_eq (s.stop, RLOG_STOP_EMPTY);
  rlog_scan_free (&s);
  free (into);
  free (big);
  jt_stop (c);
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
  struct jctx *c = jt_start ("wrap", NULL, NULL);
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
    jt_checkpoint (&c->j, c->log);
    lo = i >= K ? i - K + 1 : 0;
    ck_assert_uint_eq (c->log->sb.checkpoint_seq, lo);
    ck_assert_uint_eq (c->log->sb.checkpoint_lsn, ents[lo].space_lsn);
    scan_expect (c->log, &want[lo], i + 1 - lo, RLOG_STOP_NONE);
    if (ents[lo].lsn / rs != ents[i].lsn / rs)
      crossings++;
  }
  ck_assert_uint_ge (c->j.head_lsn / rs, 3);   /* three laps at least */
  ck_assert_uint_ge (wraps, 3);
  ck_assert_uint_ge (crossings, 3);

  /* Everything applied: the log is empty after the jt_checkpoint, and what
   * lies at the head (older laps) is not returned.
   */
  for (int i = N - K; i < N; ++i)
    journal_complete (&c->j, &ents[i]);
  jt_checkpoint (&c->j, c->log);
  ck_assert_uint_eq (c->log->sb.checkpoint_seq, N);
  ck_assert_uint_eq (c->log->sb.checkpoint_lsn, c->j.head_lsn);
  scan_expect (c->log, NULL, 0, RLOG_STOP_NONE);
  jt_stats (&c->j, &st, NULL, NULL, NULL);
  ck_assert_uint_eq (st.records_appended, N);
  ck_assert_uint_eq (st.space_waits, 0);
  ck_assert_uint_eq (journal_used_bytes (&c->j), 0);
  free (ents);
  free (want);
  jt_stop (c);
}
END_TEST

/* A record that is not its batch's last ends exactly at the ring's end:
 * no WRAP is needed, and the next record goes to the ring's start (the
 * batch is written as two pieces), not past the end of the file.
 */
START_TEST (test_ring_end_exact)
{
  struct jctx *c = jt_start ("ringend", &test_io, NULL);
  uint64_t rs = c->log->sb.ring_size;
  /* 64-byte header + 4032 bytes: 4096 bytes of ring each. */
  static uint8_t a[4032], b[4032];
  struct jentry e[2];
  struct junit u = { .entries = e, .n = 2 };
  struct want w[2];
  struct stat st;

  jt_move_head (c, rs - 4096);
  tu_fill (a, sizeof a, 11);
  tu_fill (b, sizeof b, 22);
  set_entry (&e[0], RLOG_OP_WRITE, 0, 0, sizeof a, a);
  set_entry (&e[1], RLOG_OP_WRITE, 0, 8192, sizeof b, b);
  ck_assert_int_eq (journal_append (&c->j, &u), 0);
  ck_assert_uint_eq ((e[0].lsn + e[0].rec.rec_size) % rs, 0);
  ck_assert_uint_eq (e[1].lsn % rs, 0);
  ck_assert_int_eq (fstat (c->log->fd, &st), 0);
  ck_assert_uint_eq (st.st_size, c->log->sb.log_size);
  want_from (&w[0], &e[0], 11);
  want_from (&w[1], &e[1], 22);
  scan_expect (c->log, w, 2, RLOG_STOP_NONE);
  jt_stop (c);
}
END_TEST

/* Records found scanning from (lsn, prev_seq, prev_epoch). */
static unsigned
records_from (struct rlog *log, uint64_t lsn, uint64_t seq, uint64_t epoch)
{
  struct rlog_scan s;
  struct rlog_rec r;
  const uint8_t *p;
  unsigned n = 0;

  ck_assert_int_eq (rlog_scan_init_at (&s, log, lsn, seq, epoch), 0);
  while (rlog_scan_next (&s, &r, &p) == 1)
    n++;
  rlog_scan_free (&s);
  return n;
}

/* A batch [A, WRAP, B] whose WRAP header is torn: a scan stops inside a
 * block, and recovery puts the new head (and checkpoint) at the next
 * block boundary, the ring's start, where B lies: a WRAP takes no seq,
 * so B continues A, and a later start would replay it.  Recovery
 * clears the header there first (rlog_clear_header, plugin/recovery.c).
 */
START_TEST (test_torn_wrap_end)
{
  struct jctx *c = jt_start ("tornwrap", &test_io, NULL);
  uint64_t rs = c->log->sb.ring_size, p, next;
  static uint8_t a[6000], b[4096];
  static const uint8_t zero[RLOG_REC_HDR_SIZE];
  struct jentry e[2];
  struct junit u = { .entries = e, .n = 2 };
  struct rlog_scan s;
  struct rlog_rec r;
  const uint8_t *pl;

  jt_move_head (c, rs - 8192);
  tu_fill (a, sizeof a, 1);
  tu_fill (b, sizeof b, 2);
  set_entry (&e[0], RLOG_OP_WRITE, 0, 0, sizeof a, a);
  set_entry (&e[1], RLOG_OP_WRITE, 0, 65536, sizeof b, b);
  ck_assert_int_eq (journal_append (&c->j, &u), 0);
  p = e[0].lsn + e[0].rec.rec_size;           /* the WRAP */
  ck_assert_uint_eq (e[1].lsn, rs);
  ck_assert_uint_ne (p % RLOG_BLOCK, 0);
  /* The WRAP's sector was not written. */
  ck_assert_int_eq (rlog_full_pwrite (c->log->fd, zero, sizeof zero,
                                      rlog_lsn_to_off (&c->log->sb, p)), 0);
  ck_assert_int_eq (rlog_scan_init (&s, c->log), 0);
  ck_assert_int_eq (rlog_scan_next (&s, &r, &pl), 1);
  ck_assert_int_eq (rlog_scan_next (&s, &r, &pl), 0);
  ck_assert_uint_eq (s.lsn, p);
  rlog_scan_free (&s);
  next = (p + RLOG_BLOCK - 1) & ~(uint64_t) (RLOG_BLOCK - 1);
  ck_assert_uint_eq (next, rs);
  ck_assert_uint_eq (records_from (c->log, next, e[0].rec.seq,
                                   e[0].rec.epoch), 1);
  ck_assert_int_eq (rlog_clear_header (c->log, next), 0);
  ck_assert_uint_eq (records_from (c->log, next, e[0].rec.seq,
                                   e[0].rec.epoch), 0);
  jt_stop (c);
}
END_TEST

/* Stop, recover as plugin/recovery.c does (new checkpoint at the end of
 * the scanned log, new epoch), start again: seqs continue after the old
 * reservation and the whole history still scans from the beginning.
 */
START_TEST (test_restart)
{
  enum { N = 4 };
  struct jctx *c = jt_start ("restart", NULL, NULL);
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
  jt_stop (c);
}
END_TEST

/* The checkpoint never passes the oldest record still in flight. */
START_TEST (test_checkpoint_inflight)
{
  struct jctx *c = jt_start ("inflight", NULL, NULL);
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
  jt_checkpoint (&c->j, c->log);
  ck_assert_uint_eq (journal_used_bytes (&c->j), 0);
  /* An older checkpoint never moves the journal's back. */
  journal_set_checkpoint (&c->j, 0);
  ck_assert_uint_eq (journal_used_bytes (&c->j), 0);
  jt_stop (c);
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
    jt_checkpoint (&h->c->j, h->c->log);
    pthread_mutex_lock (&h->lock);
    h->checkpoints++;
  }
  pthread_mutex_unlock (&h->lock);
  return NULL;
}

/* A log that fills up never overwrites unapplied records: the leader
 * asks for a jt_checkpoint (pressure callback) and waits for the space.
 * Both a checkpoint made in the callback and one made later by another
 * thread let it go on.
 */
START_TEST (test_space_wait)
{
  enum { N = 60, PLEN = 256 * 1024 };
  struct jctx *c = jt_start ("space", NULL, pressure_checkpoint);
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
  jt_stats (&c->j, &st, NULL, NULL, NULL);
  ck_assert_uint_gt (st.space_waits, 0);
  ck_assert_uint_eq (st.records_appended, N);
  ck_assert_uint_lt (c->log->sb.checkpoint_seq, N);
  ck_assert_uint_gt (c->log->sb.checkpoint_seq, 0);
  jt_stop (c);

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
    jt_stats (&c->j, &st, NULL, NULL, NULL);
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
    /* Woken by the jt_checkpoint, not by the 1 s timeout of each wait. */
    ck_assert_msg (secs < 0.9 * h.checkpoints,
                   "%.2f s for %d waits: the leader sleeps the full timeout "
                   "instead of being woken by journal_set_checkpoint",
                   secs, h.checkpoints);
    pthread_mutex_destroy (&h.lock);
    pthread_cond_destroy (&h.cond);
    jt_stop (c);
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
  tcase_add_unchecked_fixture (tc, jt_setup, jt_teardown);
  tcase_add_test (tc, test_append_scan);
  tcase_add_test (tc, test_append_einval);
  tcase_add_test (tc, test_append_rejects_unreplayable);
  tcase_add_test (tc, test_append_elided);
  tcase_add_test (tc, test_wraparound);
  tcase_add_test (tc, test_ring_end_exact);
  tcase_add_test (tc, test_torn_wrap_end);
  tcase_add_test (tc, test_checkpoint_inflight);
  tcase_add_test (tc, test_restart);
  tcase_add_test (tc, test_space_wait);
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
