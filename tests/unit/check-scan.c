/* nbd-replica: unit tests of where a log scan stops (rlog_scan_* in

 * common/logfile.c): corrupt, torn, zeroed and stale records.
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
#include "journaltest.h"
#include "testutil.h"

/* A corrupt byte in a record (payload or header): the scan stops there
 * as corrupt and returns nothing from it on.
 */
START_TEST (test_corrupt_record)
{
  enum { N = 10, PLEN = 8192, BAD = 5 };
  struct jctx *c = jt_start ("corrupt", NULL, NULL);
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
  jt_stop (c);
}
END_TEST

/* A zeroed header reads as the end of the log. */
START_TEST (test_zeroed_header)
{
  enum { N = 6, BAD = 3 };
  struct jctx *c = jt_start ("zeroed", NULL, NULL);
  struct jentry ents[N];
  struct want want[N];
  static const uint8_t zero[RLOG_REC_HDR_SIZE];

  append_n (c, ents, want, N, 1000);
  tu_pwrite (c->log->fd, zero, sizeof zero,
             rlog_lsn_to_off (&c->log->sb, ents[BAD].lsn));
  scan_expect (c->log, want, BAD, RLOG_STOP_EMPTY);
  jt_stop (c);
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
  struct jctx *c = jt_start ("stale", NULL, NULL);
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
  jt_stop (c);
}
END_TEST

static Suite *
scan_suite (void)
{
  Suite *s = suite_create ("scan");
  TCase *tc;

  tc = tcase_create ("scan");
  tcase_set_timeout (tc, 60);
  tcase_add_unchecked_fixture (tc, jt_setup, jt_teardown);
  tcase_add_test (tc, test_corrupt_record);
  tcase_add_test (tc, test_zeroed_header);
  tcase_add_test (tc, test_stale_records);
  suite_add_tcase (s, tc);
  return s;
}

int
main (void)
{
  SRunner *sr = srunner_create (scan_suite ());
  int failed;

  srunner_run_all (sr, CK_NORMAL);
  failed = srunner_ntests_failed (sr);
  srunner_free (sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
