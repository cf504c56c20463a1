/* nbd-replica: unit tests of the block checksums (common/blocksum.c).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "blocksum.h"
#include "testutil.h"

/* XXH3-128 of no bytes, seed 0: xxHash's published test value. */
START_TEST (test_known_value)
{
  static const uint8_t want[BSUM_SIZE] = {
    0x99, 0xaa, 0x06, 0xd3, 0x01, 0x47, 0x98, 0xd8,
    0x60, 0x01, 0xc3, 0x24, 0x46, 0x8d, 0x49, 0x7f,
  };
  uint8_t got[BSUM_SIZE];

  bsum_block ("", 0, got);
  ck_assert_mem_eq (got, want, BSUM_SIZE);
}
END_TEST

/* Same bytes, same sum; any one byte changed anywhere, another sum. */
START_TEST (test_one_byte_changes_the_sum)
{
  enum { N = 65536 };
  uint8_t *a = malloc (N), s1[BSUM_SIZE], s2[BSUM_SIZE];

  tu_fill (a, N, 7);
  bsum_block (a, N, s1);
  bsum_block (a, N, s2);
  ck_assert_mem_eq (s1, s2, BSUM_SIZE);
  for (size_t off = 0; off < N; off += 4093) {
    a[off] ^= 0x01;
    bsum_block (a, N, s2);
    ck_assert_msg (memcmp (s1, s2, BSUM_SIZE) != 0, "offset %zu", off);
    a[off] ^= 0x01;
  }
  a[N - 1] ^= 0x80;
  bsum_block (a, N, s2);
  ck_assert (memcmp (s1, s2, BSUM_SIZE) != 0);
  free (a);
}
END_TEST

START_TEST (test_zero_detection)
{
  enum { N = 4096 + 37 };
  uint8_t *z = calloc (1, N);

  ck_assert (bsum_is_zero (z, N));
  ck_assert (bsum_is_zero (z, 0));
  for (size_t off = 0; off < N; off += 61) {
    z[off] = 1;
    ck_assert_msg (!bsum_is_zero (z, N), "offset %zu", off);
    ck_assert (bsum_is_zero (z, off));      /* the bytes before it */
    z[off] = 0;
  }
  z[N - 1] = 0x80;                           /* the tail past 64-byte words */
  ck_assert (!bsum_is_zero (z, N));
  free (z);
}
END_TEST

static Suite *
blocksum_suite (void)
{
  Suite *s = suite_create ("blocksum");
  TCase *tc = tcase_create ("core");

  tcase_add_test (tc, test_known_value);
  tcase_add_test (tc, test_one_byte_changes_the_sum);
  tcase_add_test (tc, test_zero_detection);
  suite_add_tcase (s, tc);
  return s;
}

int
main (void)
{
  SRunner *sr = srunner_create (blocksum_suite ());
  int failed;

  srunner_run_all (sr, CK_NORMAL);
  failed = srunner_ntests_failed (sr);
  srunner_free (sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
