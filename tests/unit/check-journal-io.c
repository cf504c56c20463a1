/* nbd-replica: unit tests of the journal on a replaceable disk

 * (struct journal_io): group commit on a slow sync, and failing
 * pwritev / fdatasync, fencing.
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
#include <semaphore.h>

#include <check.h>

#include "journal.h"
#include "journaltest.h"
#include "testutil.h"

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

    jt_checkpoint (&c->j, c->log);
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
  struct jctx *c = jt_start ("group", &test_io, pressure_checkpoint);
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
  jt_checkpoint (&c->j, c->log);
  ck_assert_uint_eq (c->log->sb.checkpoint_seq, total);
  ck_assert_uint_eq (journal_used_bytes (&c->j), 0);

  jt_stats (&c->j, &st, &head, &fault, &fenced);
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
  jt_stop (c);
}
END_TEST


/* ---- failures ---- */

/* A failed write (EIO, or a short write) fails the append with that
 * errno; nothing of it is ever scanned; the next append succeeds in a
 * new epoch, in the same place, after the burned seq.
 */
START_TEST (test_fail_pwritev)
{
  struct jctx *c = jt_start ("eio", &test_io, NULL);
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
  jt_stats (&c->j, &st, NULL, &fault, &fenced);
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
  jt_stats (&c->j, &st, NULL, NULL, NULL);
  ck_assert_uint_eq (st.append_errors, 2);
  ck_assert_uint_eq (st.records_appended, 3);
  jt_stop (c);
}
END_TEST

/* A pwritev that stops until released, then fails with ENOSPC (a
 * synchronous error: thin or CoW filesystems), once.
 */
static sem_t in_write, go_on;
static atomic_int block_next;

static ssize_t
blocking_pwritev (int fd, const struct iovec *iov, int n, off_t off)
{
  if (atomic_exchange (&block_next, 0)) {
    sem_post (&in_write);
    sem_wait (&go_on);
    errno = ENOSPC;
    return -1;
  }
  return pwritev (fd, iov, n, off);
}

static const struct journal_io blocking_io = { blocking_pwritev, fdatasync };

struct app { struct journal *j; int r; };

static void *
app_thread (void *arg)
{
  struct app *a = arg;
  struct jentry e;

  a->r = append_write (a->j, &e, 0, 8192, 33);
  return NULL;
}

/* A checkpoint taken while a batch that begins with a WRAP is in flight,
 * and the batch then fails: the checkpoint must not name the lap start
 * behind the WRAP, where the head does not go back to.  The next
 * record, written where the failed batch began, must be found from the
 * checkpoint.
 */
START_TEST (test_ckpt_wrap_fail)
{
  struct jctx *c = jt_start ("ckptwrap", &blocking_io, NULL);
  uint64_t rs = c->log->sb.ring_size, seq, epoch, lsn;
  struct app a = { &c->j, 0 };
  struct rlog_sb sb;
  struct jentry e;
  struct want w;
  pthread_t th;

  jt_move_head (c, rs - 8192);
  sem_init (&in_write, 0, 0);
  sem_init (&go_on, 0, 0);
  atomic_store (&block_next, 1);
  /* 8256 bytes of record do not fit the 8192 left: WRAP, then the lap. */
  ck_assert_int_eq (pthread_create (&th, NULL, app_thread, &a), 0);
  sem_wait (&in_write);
  /* plugin/checkpoint.c: sample, (flush), superblock, set_checkpoint. */
  journal_checkpoint_point (&c->j, &seq, &epoch, &lsn);
  ck_assert_uint_eq (lsn, rs - 8192);
  pthread_mutex_lock (&c->log->sb_lock);
  sb = c->log->sb;
  sb.checkpoint_seq = seq;
  sb.checkpoint_epoch = epoch;
  sb.checkpoint_lsn = lsn;
  ck_assert_int_eq (rlog_sb_write_locked (c->log, &sb), 0);
  pthread_mutex_unlock (&c->log->sb_lock);
  journal_set_checkpoint (&c->j, lsn);
  sem_post (&go_on);
  pthread_join (th, NULL);
  ck_assert_int_eq (a.r, -1);
  /* 8128 bytes of payload: a record that fills the room exactly. */
  ck_assert_int_eq (append_write (&c->j, &e, 65536, 8128, 44), 0);
  ck_assert_uint_eq (e.lsn, rs - 8192);
  want_from (&w, &e, 44);
  scan_expect (c->log, &w, 1, RLOG_STOP_NONE);
  sem_destroy (&in_write);
  sem_destroy (&go_on);
  jt_stop (c);
}
END_TEST

/* fdatasync fails (ENOSPC) after the batch was written: the append fails
 * with ENOSPC, and neither the failed records nor what is left of them
 * behind later, smaller batches is ever returned by a scan.
 */
START_TEST (test_fail_fdatasync)
{
  enum { PLEN = RLOG_BLOCK - RLOG_REC_HDR_SIZE };   /* one block each */
  struct jctx *c = jt_start ("enospc", &test_io, NULL);
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
  jt_stop (c);
}
END_TEST

/* The FAILED notice names the record the failed batch follows: the last
 * real one, also after an earlier failure burned the seqs in between
 * (repl.c rewinds its written and acked points to it).
 */
static uint64_t failed_seq, failed_epoch;
static int failed_count;

static void
note_failed (void *opaque, enum journal_event ev, uint64_t seq,
             uint64_t epoch, uint64_t lsn, size_t nrecs)
{
  if (ev == JOURNAL_FAILED) {
    failed_seq = seq;
    failed_epoch = epoch;
    failed_count++;
  }
}

START_TEST (test_failed_names_last)
{
  struct jctx *c = jt_start ("failedlast", &test_io, NULL);
  struct jentry a, bad1, bad2, d;

  c->j.notify = note_failed;
  ck_assert_int_eq (append_write (&c->j, &a, 0, 4096, 1), 0);
  journal_complete (&c->j, &a);
  fio.sync_errno = EIO;
  for (int i = 0; i < 2; ++i) {
    atomic_store (&fio.fail_sync, 1);          /* the batch's sync */
    ck_assert_int_eq (append_write (&c->j, i ? &bad2 : &bad1, 4096, 4096,
                                    2 + i), -1);
    ck_assert_int_eq (failed_count, 1 + i);
    ck_assert_uint_eq (failed_seq, a.rec.seq);
    ck_assert_uint_eq (failed_epoch, a.rec.epoch);
  }
  ck_assert_uint_gt (bad2.rec.seq, bad1.rec.seq);
  ck_assert_int_eq (append_write (&c->j, &d, 8192, 4096, 4), 0);
  journal_complete (&c->j, &d);
  ck_assert_uint_eq (d.prev_seq, a.rec.seq);
  jt_stop (c);
}
END_TEST

/* If even the recovery from a failed append fails, the log is fenced:
 * every later append fails at once with EIO, without touching the disk.
 */
START_TEST (test_fenced)
{
  struct jctx *c = jt_start ("fenced", &test_io, NULL);
  struct jentry a, b;
  struct journal_stats st;
  int fault, pw;
  bool fenced;

  atomic_store (&fio.fail_sync, -1);
  fio.sync_errno = EIO;
  ck_assert_int_eq (append_write (&c->j, &a, 0, 4096, 1), -1);
  ck_assert_int_eq (errno, EIO);
  jt_stats (&c->j, &st, NULL, &fault, &fenced);
  ck_assert (fenced);
  ck_assert_int_eq (fault, EIO);
  ck_assert_uint_eq (c->log->sb.epoch, 1);      /* no new epoch */

  atomic_store (&fio.fail_sync, 0);
  pw = atomic_load (&fio.pwritevs);
  ck_assert_int_eq (append_write (&c->j, &b, 0, 4096, 2), -1);
  ck_assert_int_eq (errno, EIO);
  ck_assert_int_eq (atomic_load (&fio.pwritevs), pw);
  scan_expect (c->log, NULL, 0, RLOG_STOP_EMPTY);
  jt_stop (c);
}
END_TEST


static Suite *
journal_io_suite (void)
{
  Suite *s = suite_create ("journal_io");
  TCase *tc;

  tc = tcase_create ("io");
  tcase_set_timeout (tc, 60);
  tcase_add_unchecked_fixture (tc, jt_setup, jt_teardown);
  tcase_add_test (tc, test_group_commit);
  tcase_add_test (tc, test_fail_pwritev);
  tcase_add_test (tc, test_failed_names_last);
  tcase_add_test (tc, test_ckpt_wrap_fail);
  tcase_add_test (tc, test_fail_fdatasync);
  tcase_add_test (tc, test_fenced);
  suite_add_tcase (s, tc);
  return s;
}

int
main (void)
{
  SRunner *sr = srunner_create (journal_io_suite ());
  int failed;

  srunner_run_all (sr, CK_NORMAL);
  failed = srunner_ntests_failed (sr);
  srunner_free (sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
