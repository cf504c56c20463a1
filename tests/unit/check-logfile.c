/* nbd-replica: unit tests of the log file (common/logfile.c).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <inttypes.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>

#include <check.h>

#include "logfile.h"
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

static int
read_slot (const char *path, int i, struct rlog_sb *sb)
{
  uint8_t slot[RLOG_SB_SLOT_SIZE];
  int fd = open (path, O_RDONLY | O_CLOEXEC);

  ck_assert_int_ge (fd, 0);
  tu_pread (fd, slot, sizeof slot, (uint64_t) i * RLOG_SB_SLOT_SIZE);
  close (fd);
  return rlog_sb_decode (slot, sizeof slot, sb);
}

/* Garbage in the middle of a slot on disk (a torn superblock write). */
static void
tear_slot (const char *path, int i)
{
  uint8_t junk[200];
  int fd = open (path, O_WRONLY | O_CLOEXEC);

  ck_assert_int_ge (fd, 0);
  tu_fill (junk, sizeof junk, 1000 + i);
  tu_pwrite (fd, junk, sizeof junk, (uint64_t) i * RLOG_SB_SLOT_SIZE + 40);
  close (fd);
}

START_TEST (test_create_sizes)
{
  char err[RLOG_ERRLEN];
  char *small = tu_path (tmpdir, "small");
  char *min = tu_path (tmpdir, "min");
  char *odd = tu_path (tmpdir, "odd");
  struct rlog_sb sb;
  struct stat st;

  /* Below the minimum: EINVAL, nothing left behind. */
  errno = 0;
  ck_assert_int_eq (rlog_create (small, RLOG_MIN_SIZE - RLOG_BLOCK,
                                 RLOG_ROLE_PRIMARY, err), -1);
  ck_assert_int_eq (errno, EINVAL);
  ck_assert_ptr_nonnull (strstr (err, "minimum"));
  ck_assert_int_eq (stat (small, &st), -1);
  /* Rounded down to a block, that is below the minimum too. */
  ck_assert_int_eq (rlog_create (small, RLOG_MIN_SIZE - 1,
                                 RLOG_ROLE_PRIMARY, err), -1);
  ck_assert_int_eq (stat (small, &st), -1);

  /* Exactly the minimum. */
  ck_assert_msg (rlog_create (min, RLOG_MIN_SIZE, RLOG_ROLE_SECONDARY,
                              err) == 0, "rlog_create: %s", err);
  ck_assert_int_eq (stat (min, &st), 0);
  ck_assert_int_eq (st.st_size, RLOG_MIN_SIZE);
  ck_assert_int_eq (st.st_mode & 0777, 0600);
  for (int i = 0; i < 2; ++i) {
    ck_assert_int_eq (read_slot (min, i, &sb), RLOG_OK);
    ck_assert_uint_eq (sb.log_size, RLOG_MIN_SIZE);
    ck_assert_uint_eq (sb.ring_offset, RLOG_RING_OFFSET);
    ck_assert_uint_eq (sb.ring_size, RLOG_MIN_SIZE - RLOG_RING_OFFSET);
    ck_assert_uint_eq (sb.bitmap_offset, RLOG_BITMAP_OFFSET);
    ck_assert_uint_eq (sb.bitmap_size, RLOG_BITMAP_SIZE);
    ck_assert_uint_eq (sb.role, RLOG_ROLE_SECONDARY);
    ck_assert_uint_eq (sb.max_payload, RLOG_MAX_PAYLOAD);
    ck_assert_uint_eq (sb.backing_size, 0);
    ck_assert_uint_eq (sb.epoch, 0);
    ck_assert_uint_eq (sb.seq_reserved, 0);
    ck_assert_uint_eq (sb.checkpoint_seq, 0);
    ck_assert_uint_eq (sb.checkpoint_lsn, 0);
    ck_assert_uint_eq (sb.volume_uuid[6] >> 4, 4);     /* UUID v4 */
    ck_assert_uint_eq (sb.volume_uuid[8] >> 6, 2);
    ck_assert_uint_ne (sb.created_ns, 0);
  }

  /* Already exists. */
  ck_assert_int_eq (rlog_create (min, RLOG_MIN_SIZE, RLOG_ROLE_PRIMARY,
                                 err), -1);
  ck_assert_int_eq (errno, EEXIST);
  ck_assert_int_eq (stat (min, &st), 0);      /* and it is left alone */

  /* An unaligned size is rounded down to a block. */
  ck_assert_int_eq (rlog_create (odd, RLOG_MIN_SIZE + RLOG_BLOCK + 100,
                                 RLOG_ROLE_PRIMARY, err), 0);
  ck_assert_int_eq (stat (odd, &st), 0);
  ck_assert_int_eq (st.st_size, RLOG_MIN_SIZE + RLOG_BLOCK);
  ck_assert_int_eq (read_slot (odd, 0, &sb), RLOG_OK);
  ck_assert_uint_eq (sb.ring_size % RLOG_BLOCK, 0);
  ck_assert (rlog_sb_geometry_ok (&sb));

  free (small);
  free (min);
  free (odd);
}
END_TEST

START_TEST (test_open)
{
  char err[RLOG_ERRLEN];
  char *path = tu_path (tmpdir, "open-log");
  char *junk = tu_path (tmpdir, "open-junk");
  struct rlog *log, *log2;
  uint8_t uuid[16];
  int fd;

  ck_assert_int_eq (rlog_create (path, RLOG_MIN_SIZE, RLOG_ROLE_PRIMARY,
                                 err), 0);
  log = rlog_open (path, 1, 0, err);
  ck_assert_msg (log != NULL, "rlog_open: %s", err);
  ck_assert_str_eq (log->path, path);
  ck_assert_uint_eq (log->sb.generation, 2);
  ck_assert_uint_eq (log->sb.log_size, RLOG_MIN_SIZE);
  memcpy (uuid, log->sb.volume_uuid, 16);

  /* Exclusive lock. */
  log2 = rlog_open (path, 1, 0, err);
  ck_assert_ptr_null (log2);
  ck_assert_ptr_nonnull (strstr (err, "in use"));
  /* Read-only without the lock is fine (tools). */
  log2 = rlog_open (path, 0, 1, err);
  ck_assert_msg (log2 != NULL, "rlog_open: %s", err);
  ck_assert_mem_eq (log2->sb.volume_uuid, uuid, 16);
  rlog_close (log2);
  rlog_close (log);
  log = rlog_open (path, 1, 0, err);        /* lock released at close */
  ck_assert_msg (log != NULL, "rlog_open: %s", err);
  rlog_close (log);
  rlog_close (NULL);

  /* Missing file. */
  ck_assert_ptr_null (rlog_open (junk, 0, 1, err));
  ck_assert_int_eq (errno, ENOENT);

  /* Not a log: tiny, then big but zero. */
  fd = open (junk, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  ck_assert_int_ge (fd, 0);
  tu_pwrite (fd, "hello", 5, 0);
  ck_assert_ptr_null (rlog_open (junk, 0, 1, err));
  ck_assert_ptr_nonnull (strstr (err, "bad magic"));
  ck_assert_int_eq (ftruncate (fd, RLOG_MIN_SIZE), 0);
  tu_pwrite (fd, "\0\0\0\0\0", 5, 0);
  ck_assert_ptr_null (rlog_open (junk, 0, 1, err));
  ck_assert_ptr_nonnull (strstr (err, "bad magic"));
  close (fd);

  /* Truncated log. */
  ck_assert_int_eq (truncate (path, RLOG_MIN_SIZE / 2), 0);
  ck_assert_ptr_null (rlog_open (path, 1, 0, err));
  ck_assert_ptr_nonnull (strstr (err, "truncated"));
  ck_assert_int_eq (truncate (path, RLOG_MIN_SIZE), 0);
  log = rlog_open (path, 1, 0, err);
  ck_assert_msg (log != NULL, "rlog_open: %s", err);

  /* A future format version in both slots. */
  tu_pwrite (log->fd, "\x02", 1, 7);
  tu_pwrite (log->fd, "\x02", 1, RLOG_SB_SLOT_SIZE + 7);
  rlog_close (log);
  ck_assert_ptr_null (rlog_open (path, 1, 0, err));
  ck_assert_ptr_nonnull (strstr (err, "version"));

  free (path);
  free (junk);
}
END_TEST

START_TEST (test_open_both_corrupt)
{
  char err[RLOG_ERRLEN];
  char *path = tu_path (tmpdir, "corrupt-log");

  ck_assert_int_eq (rlog_create (path, RLOG_MIN_SIZE, RLOG_ROLE_PRIMARY,
                                 err), 0);
  tear_slot (path, 0);
  tear_slot (path, 1);
  errno = 0;
  ck_assert_ptr_null (rlog_open (path, 1, 0, err));
  ck_assert_int_eq (errno, EINVAL);
  ck_assert_ptr_nonnull (strstr (err, "both superblock slots are corrupt"));
  free (path);
}
END_TEST

/* Write n superblock generations, each with a distinct backing_size. */
static void
write_generations (struct rlog *log, int n)
{
  for (int k = 0; k < n; ++k) {
    struct rlog_sb sb;
    uint64_t before = log->sb.generation;

    pthread_mutex_lock (&log->sb_lock);
    sb = log->sb;
    sb.backing_size = (before + 1) << 20;
    ck_assert_int_eq (rlog_sb_write_locked (log, &sb), 0);
    pthread_mutex_unlock (&log->sb_lock);
    ck_assert_uint_eq (sb.generation, before + 1);
    ck_assert_uint_eq (log->sb.generation, before + 1);
    ck_assert_uint_eq (log->sb.backing_size, (before + 1) << 20);
  }
}

/* After every superblock write from the third on (see
 * test_sb_write_first), the two slots hold the new generation and the
 * one before it, alternating.
 */
START_TEST (test_sb_write_alternates)
{
  char err[RLOG_ERRLEN];
  char *path = tu_path (tmpdir, "alt-log");
  struct rlog *log;
  int prev_slot = -1;

  ck_assert_int_eq (rlog_create (path, RLOG_MIN_SIZE, RLOG_ROLE_PRIMARY,
                                 err), 0);
  log = rlog_open (path, 1, 0, err);
  ck_assert_ptr_nonnull (log);
  write_generations (log, 1);
  for (int k = 0; k < 8; ++k) {
    struct rlog_sb s0, s1;
    uint64_t g;
    int newest;

    write_generations (log, 1);
    g = log->sb.generation;
    ck_assert_int_eq (read_slot (path, 0, &s0), RLOG_OK);
    ck_assert_int_eq (read_slot (path, 1, &s1), RLOG_OK);
    newest = s1.generation > s0.generation;
    ck_assert_uint_eq (newest ? s1.generation : s0.generation, g);
    ck_assert_uint_eq (newest ? s0.generation : s1.generation, g - 1);
    ck_assert_uint_eq ((newest ? s1 : s0).backing_size, g << 20);
    ck_assert_uint_eq ((newest ? s0 : s1).backing_size, (g - 1) << 20);
    ck_assert_int_ne (newest, prev_slot);
    prev_slot = newest;
  }
  rlog_close (log);
  free (path);
}
END_TEST

/* rlog_sb_write_locked promises to write "into the other slot", so the
 * slot holding the newest generation survives a torn write.  That must
 * also hold for the very first write after rlog_create, which left
 * generation 1 in slot 0 and generation 2 in slot 1.
 */
START_TEST (test_sb_write_first)
{
  char err[RLOG_ERRLEN];
  char *path = tu_path (tmpdir, "first-log");
  struct rlog *log;
  struct rlog_sb s0, s1;

  ck_assert_int_eq (rlog_create (path, RLOG_MIN_SIZE, RLOG_ROLE_PRIMARY,
                                 err), 0);
  ck_assert_int_eq (read_slot (path, 0, &s0), RLOG_OK);
  ck_assert_int_eq (read_slot (path, 1, &s1), RLOG_OK);
  ck_assert_uint_eq (s0.generation, 1);
  ck_assert_uint_eq (s1.generation, 2);
  log = rlog_open (path, 1, 0, err);
  ck_assert_ptr_nonnull (log);
  ck_assert_uint_eq (log->sb.generation, 2);
  write_generations (log, 1);
  ck_assert_uint_eq (log->sb.generation, 3);
  ck_assert_int_eq (read_slot (path, 0, &s0), RLOG_OK);
  ck_assert_int_eq (read_slot (path, 1, &s1), RLOG_OK);
  ck_assert_msg ((s0.generation == 3 && s1.generation == 2) ||
                 (s1.generation == 3 && s0.generation == 2),
                 "after the first write the slots hold generations %"
                 PRIu64 " and %" PRIu64 ": generation 3 overwrote the "
                 "newest one (2) instead of the other slot",
                 s0.generation, s1.generation);
  rlog_close (log);
  free (path);
}
END_TEST

/* A torn write of the newest slot falls back to the previous generation,
 * with that generation's contents.
 */
START_TEST (test_sb_write_torn)
{
  char err[RLOG_ERRLEN];
  char *path = tu_path (tmpdir, "torn-log");
  struct rlog *log;

  ck_assert_int_eq (rlog_create (path, RLOG_MIN_SIZE, RLOG_ROLE_PRIMARY,
                                 err), 0);
  log = rlog_open (path, 1, 0, err);
  ck_assert_ptr_nonnull (log);
  write_generations (log, 1);
  for (int k = 0; k < 4; ++k) {
    struct rlog_sb s0, s1;
    uint64_t g;
    int newest;

    write_generations (log, 1 + k);
    g = log->sb.generation;
    rlog_close (log);
    ck_assert_int_eq (read_slot (path, 0, &s0), RLOG_OK);
    ck_assert_int_eq (read_slot (path, 1, &s1), RLOG_OK);
    newest = s1.generation == g;
    ck_assert_uint_eq ((newest ? s1 : s0).generation, g);
    tear_slot (path, newest);

    log = rlog_open (path, 1, 0, err);
    ck_assert_msg (log != NULL, "rlog_open after a torn slot: %s", err);
    ck_assert_uint_eq (log->sb.generation, g - 1);
    ck_assert_uint_eq (log->sb.backing_size, (g - 1) << 20);
    /* The next write goes over the torn slot, not the surviving one. */
    write_generations (log, 1);
    ck_assert_uint_eq (log->sb.generation, g);
    ck_assert_int_eq (read_slot (path, newest, &s0), RLOG_OK);
    ck_assert_uint_eq (s0.generation, g);
    ck_assert_int_eq (read_slot (path, !newest, &s1), RLOG_OK);
    ck_assert_uint_eq (s1.generation, g - 1);
  }
  rlog_close (log);
  free (path);
}
END_TEST

START_TEST (test_scan_empty)
{
  char err[RLOG_ERRLEN];
  char *path = tu_path (tmpdir, "scan-log");
  struct rlog *log;
  struct rlog_scan s;
  struct rlog_rec rec;
  const uint8_t *payload;

  ck_assert_int_eq (rlog_create (path, RLOG_MIN_SIZE, RLOG_ROLE_PRIMARY,
                                 err), 0);
  log = rlog_open (path, 1, 0, err);
  ck_assert_ptr_nonnull (log);
  ck_assert_int_eq (rlog_scan_init (&s, log), 0);
  ck_assert_int_eq (rlog_scan_next (&s, &rec, &payload), 0);
  ck_assert_int_eq (s.stop, RLOG_STOP_EMPTY);
  ck_assert_uint_eq (s.records, 0);
  ck_assert_uint_eq (s.lsn, 0);
  ck_assert_str_eq (rlog_stop_name (s.stop), "end");
  /* Stays stopped. */
  ck_assert_int_eq (rlog_scan_next (&s, &rec, &payload), 0);
  rlog_scan_free (&s);
  rlog_scan_free (&s);          /* idempotent */
  rlog_close (log);
  ck_assert_str_eq (rlog_stop_name (RLOG_STOP_CORRUPT), "corrupt");
  ck_assert_str_eq (rlog_stop_name (RLOG_STOP_STALE), "stale");
  free (path);
}
END_TEST

static Suite *
logfile_suite (void)
{
  Suite *s = suite_create ("logfile");
  TCase *tc = tcase_create ("logfile");

  tcase_set_timeout (tc, 30);
  tcase_add_unchecked_fixture (tc, setup, teardown);
  tcase_add_test (tc, test_create_sizes);
  tcase_add_test (tc, test_open);
  tcase_add_test (tc, test_open_both_corrupt);
  tcase_add_test (tc, test_sb_write_alternates);
  tcase_add_test (tc, test_sb_write_first);
  tcase_add_test (tc, test_sb_write_torn);
  tcase_add_test (tc, test_scan_empty);
  suite_add_tcase (s, tc);
  return s;
}

int
main (void)
{
  SRunner *sr = srunner_create (logfile_suite ());
  int failed;

  srunner_run_all (sr, CK_NORMAL);
  failed = srunner_ntests_failed (sr);
  srunner_free (sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
