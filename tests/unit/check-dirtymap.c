/* nbd-replica: unit tests of the persistent dirty bitmap (common/dirtymap.c).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/syscall.h>

#include <check.h>

#include "le.h"
#include "logfmt.h"
#include "dirtymap.h"
#include "testutil.h"

#define G        4096ULL                 /* grain at shift 12 */
#define GiB      (1024ULL * 1024 * 1024)
#define AREA_OFF ((uint64_t) RLOG_BITMAP_OFFSET)
#define AREA     ((uint64_t) RLOG_BITMAP_SIZE)
#define PB       ((uint64_t) DMAP_PAGE_BITS)   /* grains per page */

/* A temporary file (already unlinked) holding [0, AREA_OFF + area) of
 * the given byte, so a never-written page is not accidentally zero.
 */
static int
tmp_file (uint64_t area, int fill)
{
  const char *tmp = getenv ("TMPDIR");
  char path[4096];
  int fd;
  uint8_t *buf;

  if (!tmp || !*tmp)
    tmp = "/tmp";
  snprintf (path, sizeof path, "%s/check-dirtymap.XXXXXX", tmp);
  fd = mkstemp (path);
  ck_assert_int_ge (fd, 0);
  unlink (path);
  buf = malloc (AREA_OFF + area);
  ck_assert_ptr_nonnull (buf);
  memset (buf, fill, AREA_OFF + area);
  tu_pwrite (fd, buf, AREA_OFF + area, 0);
  free (buf);
  return fd;
}

static unsigned
shift_for (uint64_t area, uint64_t vol, unsigned min_shift)
{
  struct dirtymap m;
  unsigned s;

  ck_assert_int_eq (dmap_init (&m, -1, AREA_OFF, area, vol, min_shift), 0);
  s = dmap_grain_shift (&m);
  dmap_free (&m);
  return s;
}

/* Flip one byte of the file. */
static void
flip (int fd, uint64_t off)
{
  uint8_t b;

  tu_pread (fd, &b, 1, off);
  b ^= 0x5a;
  tu_pwrite (fd, &b, 1, off);
}

static uint64_t
page_off (unsigned p)
{
  return AREA_OFF + (uint64_t) p * DMAP_PAGE_SIZE;
}

/* Load a fresh map of the given geometry from fd; checks the result. */
static void
load_fresh (struct dirtymap *m, int fd, uint64_t area, uint64_t vol,
            unsigned min_shift, int want_r, unsigned want_bad, char *why,
            size_t whylen)
{
  unsigned bad = 12345;

  ck_assert_int_eq (dmap_init (m, fd, AREA_OFF, area, vol, min_shift), 0);
  ck_assert_int_eq (dmap_load (m, &bad, why, whylen), want_r);
  if (want_r == 0)
    ck_assert_msg (bad == want_bad, "bad pages %u, want %u (%s)",
                   bad, want_bad, why);
}

START_TEST (test_sizing)
{
  struct dirtymap m;
  uint64_t cap = (AREA / DMAP_PAGE_SIZE - 1) * PB;

  ck_assert_uint_eq (cap, 8339520);
  ck_assert_uint_eq (shift_for (AREA, 1 * GiB, 12), 12);
  ck_assert_uint_eq (shift_for (AREA, 64 * GiB, 12), 14);
  ck_assert_uint_eq (shift_for (AREA, 1 * GiB, 16), 16);
  ck_assert_uint_eq (shift_for (AREA, 64 * GiB, 16), 16);
  ck_assert_uint_eq (shift_for (AREA, 1024 * GiB, 12), 18);
  /* The exact capacity edge, ~31.8 GiB. */
  ck_assert_uint_eq (shift_for (AREA, cap * G, 12), 12);
  ck_assert_uint_eq (shift_for (AREA, cap * G + 1, 12), 13);
  /* Smallest area: one bit page. */
  ck_assert_uint_eq (shift_for (DMAP_MIN_AREA, PB * G, 12), 12);
  ck_assert_uint_eq (shift_for (DMAP_MIN_AREA, PB * G + 1, 12), 13);
  ck_assert_uint_eq (shift_for (DMAP_MIN_AREA, 1 * GiB, 12), 16);
  /* Huge volumes and tiny ones. */
  ck_assert_uint_eq (shift_for (DMAP_MIN_AREA, UINT64_MAX, 0), 50);
  ck_assert_uint_eq (shift_for (AREA, 1, 12), 12);
  ck_assert_uint_eq (shift_for (AREA, 0, 12), 12);

  ck_assert_int_eq (dmap_init (&m, -1, AREA_OFF, 4096, GiB, 12), -1);
  ck_assert_int_eq (errno, EINVAL);
  ck_assert_int_eq (dmap_init (&m, -1, AREA_OFF, 8192 + 100, GiB, 12), -1);
  ck_assert_int_eq (errno, EINVAL);
  ck_assert_int_eq (dmap_init (&m, -1, AREA_OFF, AREA, GiB, 64), -1);
  ck_assert_int_eq (errno, EINVAL);
  dmap_free (&m);               /* harmless after a failed init */
}
END_TEST

START_TEST (test_mark_any_boundaries)
{
  struct dirtymap m;
  const uint64_t vol = 10 * G + 1000;     /* grain 10 is partial */

  ck_assert_int_eq (dmap_init (&m, -1, AREA_OFF, AREA, vol, 12), 0);
  ck_assert_uint_eq (dmap_grain_shift (&m), 12);
  ck_assert (!dmap_any (&m, 0, vol));
  ck_assert_uint_eq (dmap_dirty_bytes (&m), 0);

  dmap_mark (&m, 0, 0);                   /* len 0: nothing */
  dmap_mark (&m, 5 * G, 0);
  ck_assert (!dmap_any (&m, 0, vol));

  dmap_mark (&m, 0, 1);                   /* offset 0 */
  ck_assert (dmap_any (&m, 0, 1));
  ck_assert (dmap_any (&m, G - 1, 1));
  ck_assert (!dmap_any (&m, G, 1));
  ck_assert (!dmap_any (&m, G, 5 * G));
  ck_assert (!dmap_any (&m, 0, 0));       /* len 0 never matches */
  ck_assert_uint_eq (dmap_dirty_bytes (&m), G);

  dmap_mark (&m, 2 * G - 1, 2);           /* straddles grains 1 and 2 */
  ck_assert (dmap_any (&m, G, 1));
  ck_assert (dmap_any (&m, 2 * G, 1));
  ck_assert (dmap_any (&m, 3 * G - 1, 1));
  ck_assert (!dmap_any (&m, 3 * G, 1));
  ck_assert_uint_eq (dmap_dirty_bytes (&m), 3 * G);

  dmap_mark (&m, 5 * G, G);               /* exactly grain 5 */
  ck_assert (!dmap_any (&m, 5 * G - 1, 1));
  ck_assert (!dmap_any (&m, 4 * G, G));
  ck_assert (dmap_any (&m, 4 * G, G + 1));
  ck_assert (dmap_any (&m, 6 * G - 1, 1));
  ck_assert (!dmap_any (&m, 6 * G, 4 * G));
  ck_assert_uint_eq (dmap_dirty_bytes (&m), 4 * G);

  /* The last, partial grain: counted for 1000 bytes only. */
  dmap_mark (&m, vol - 1, 1);
  ck_assert (dmap_any (&m, 10 * G, 1));
  ck_assert (dmap_any (&m, vol - 1, 1));
  ck_assert (dmap_any (&m, vol - 1, 1000));  /* runs past the end */
  ck_assert (!dmap_any (&m, 9 * G, G));
  ck_assert_uint_eq (dmap_dirty_bytes (&m), 4 * G + 1000);

  /* Past the end: clipped, or nothing at all. */
  dmap_mark (&m, vol, 100);
  dmap_mark (&m, UINT64_MAX - 5, 100);
  ck_assert (!dmap_any (&m, vol, 100));
  ck_assert_uint_eq (dmap_dirty_bytes (&m), 4 * G + 1000);
  dmap_mark (&m, 9 * G, UINT64_MAX);        /* off + len overflows */
  ck_assert (dmap_any (&m, 9 * G, 1));
  ck_assert_uint_eq (dmap_dirty_bytes (&m), 5 * G + 1000);

  dmap_mark (&m, 0, vol);
  ck_assert_uint_eq (dmap_dirty_bytes (&m), vol);
  dmap_clear (&m);
  ck_assert_uint_eq (dmap_dirty_bytes (&m), 0);
  ck_assert (!dmap_any (&m, 0, vol));
  dmap_free (&m);

  /* A volume that is a whole number of grains: nothing clipped. */
  ck_assert_int_eq (dmap_init (&m, -1, AREA_OFF, AREA, 10 * G, 12), 0);
  dmap_mark (&m, 10 * G - 1, 1);
  ck_assert_uint_eq (dmap_dirty_bytes (&m), G);
  dmap_free (&m);

  /* A volume of no bytes has no grains. */
  ck_assert_int_eq (dmap_init (&m, -1, AREA_OFF, AREA, 0, 12), 0);
  dmap_mark (&m, 0, 4096);
  ck_assert (!dmap_any (&m, 0, 4096));
  ck_assert_uint_eq (dmap_dirty_bytes (&m), 0);
  dmap_free (&m);
}
END_TEST

/* Bits in different pages, a mark across a page boundary, and bigger
 * grains (min_shift 16) with a partial last grain.
 */
START_TEST (test_pages_and_big_grains)
{
  struct dirtymap m;
  uint64_t vol = 3 * PB * G - 123;

  ck_assert_int_eq (dmap_init (&m, -1, AREA_OFF, AREA, vol, 12), 0);
  dmap_mark (&m, (PB - 1) * G, 2 * G);     /* last of page 1, first of 2 */
  ck_assert (dmap_any (&m, (PB - 1) * G, 1));
  ck_assert (dmap_any (&m, PB * G, 1));
  ck_assert (!dmap_any (&m, (PB - 2) * G, G));
  ck_assert (!dmap_any (&m, (PB + 1) * G, G));
  ck_assert_uint_eq (dmap_dirty_bytes (&m), 2 * G);
  dmap_mark (&m, 0, vol);
  ck_assert_uint_eq (dmap_dirty_bytes (&m), vol);
  dmap_free (&m);

  vol = 10 * 65536 + 5;
  ck_assert_int_eq (dmap_init (&m, -1, AREA_OFF, AREA, vol, 16), 0);
  ck_assert_uint_eq (dmap_grain_shift (&m), 16);
  dmap_mark (&m, 65535, 2);                /* grains 0 and 1 */
  ck_assert_uint_eq (dmap_dirty_bytes (&m), 2 * 65536);
  ck_assert (!dmap_any (&m, 2 * 65536, 65536));
  dmap_mark (&m, vol - 1, 1);
  ck_assert_uint_eq (dmap_dirty_bytes (&m), 2 * 65536 + 5);
  dmap_free (&m);
}
END_TEST

/* Random marks against a plain array of flags, then a round-trip. */
START_TEST (test_random_against_reference)
{
  enum { NG = 70000 };                     /* three bit pages */
  const uint64_t vol = (uint64_t) NG * G - 777;
  struct dirtymap m, m2;
  bool *ref = calloc (NG, 1);
  uint64_t seed = 88172645463325252ULL, want;
  int fd = tmp_file (AREA, 0);
  char why[256];

#define RND() (seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17)
  ck_assert_int_eq (dmap_init (&m, fd, AREA_OFF, AREA, vol, 12), 0);
  for (int i = 0; i < 3000; i++) {
    uint64_t off = RND () % vol, len = RND () % (i % 10 == 0 ? 200 * G : 3 * G);
    uint64_t qoff = RND () % vol, qlen = RND () % (5 * G);
    bool any = false;

    dmap_mark (&m, off, len);
    if (len > 0) {
      uint64_t end = off + len > vol ? vol : off + len;
      for (uint64_t g = off / G; g <= (end - 1) / G; g++)
        ref[g] = true;
    }
    if (qlen > 0) {
      uint64_t end = qoff + qlen > vol ? vol : qoff + qlen;
      for (uint64_t g = qoff / G; g <= (end - 1) / G; g++)
        any |= ref[g];
    }
    ck_assert_int_eq (dmap_any (&m, qoff, qlen), any);
  }
#undef RND
  want = 0;
  for (uint64_t g = 0; g < NG; g++)
    if (ref[g])
      want += g == NG - 1 ? G - 777 : G;
  ck_assert_uint_eq (dmap_dirty_bytes (&m), want);

  dmap_set_base (&m, 99, 3, 0);
  ck_assert_int_eq (dmap_flush (&m), 0);
  load_fresh (&m2, fd, AREA, vol, 12, 0, 0, why, sizeof why);
  ck_assert_uint_eq (dmap_dirty_bytes (&m2), want);
  for (uint64_t g = 0; g < NG; g++)
    ck_assert_int_eq (dmap_any (&m2, g * G, 1), ref[g]);
  dmap_free (&m2);
  dmap_free (&m);
  free (ref);
  close (fd);
}
END_TEST

START_TEST (test_roundtrip)
{
  struct dirtymap m, m2;
  int fd = tmp_file (AREA, 0xaa);       /* garbage: first flush writes all */
  char why[256];
  uint64_t seq, epoch;
  uint32_t span;
  uint8_t hdr[DMAP_PAGE_SIZE];

  ck_assert_int_eq (dmap_init (&m, fd, AREA_OFF, AREA, GiB, 12), 0);
  dmap_mark (&m, 0, 1);
  dmap_mark (&m, 100 * G + 5, 3 * G);     /* grains 100..103 */
  dmap_mark (&m, GiB - 1, 1);
  dmap_set_base (&m, 1234, 7, 56);
  dmap_get_base (&m, &seq, &epoch, &span);
  ck_assert_uint_eq (seq, 1234);
  ck_assert_uint_eq (epoch, 7);
  ck_assert_uint_eq (span, 56);
  ck_assert_int_eq (dmap_flush (&m), 0);

  /* The header is at the area's start, as documented. */
  tu_pread (fd, hdr, sizeof hdr, AREA_OFF);
  ck_assert_mem_eq (hdr, "NBDRBMAP", 8);
  ck_assert_uint_eq (get_le32 (hdr + 8), 1);
  ck_assert_uint_eq (get_le32 (hdr + 12), 64);
  ck_assert_uint_eq (get_le32 (hdr + 16), 12);
  ck_assert_uint_eq (get_le32 (hdr + 20), 56);      /* span */
  ck_assert_uint_eq (get_le64 (hdr + 24), GiB / G);
  ck_assert_uint_eq (get_le64 (hdr + 32), 1234);
  ck_assert_uint_eq (get_le64 (hdr + 40), 7);
  ck_assert_uint_eq (get_le64 (hdr + 48), 1);       /* generation */
  ck_assert_uint_eq (get_le32 (hdr + 60), rlog_crc32c (0, hdr, 60));
  for (size_t i = 64; i < sizeof hdr; i++)
    ck_assert_uint_eq (hdr[i], 0);

  load_fresh (&m2, fd, AREA, GiB, 12, 0, 0, why, sizeof why);
  ck_assert_str_eq (why, "");
  span = 0;
  dmap_get_base (&m2, &seq, &epoch, &span);
  ck_assert_uint_eq (seq, 1234);
  ck_assert_uint_eq (epoch, 7);
  ck_assert_uint_eq (span, 56);
  ck_assert_uint_eq (dmap_dirty_bytes (&m2), 6 * G);
  ck_assert (dmap_any (&m2, 0, 1));
  ck_assert (!dmap_any (&m2, G, 99 * G));
  ck_assert (dmap_any (&m2, 103 * G, 1));
  ck_assert (!dmap_any (&m2, 104 * G, 1));
  ck_assert (dmap_any (&m2, GiB - 1, 1));

  /* A second flush of the loaded map bumps the generation. */
  dmap_mark (&m2, 50 * G, 1);
  ck_assert_int_eq (dmap_flush (&m2), 0);
  tu_pread (fd, hdr, sizeof hdr, AREA_OFF);
  ck_assert_uint_eq (get_le64 (hdr + 48), 2);
  dmap_free (&m2);
  dmap_free (&m);
  close (fd);
}
END_TEST

/* Only changed pages are written: a page corrupted behind the map's
 * back stays corrupt across a flush that changed other pages.
 */
START_TEST (test_only_changed_pages_written)
{
  struct dirtymap m, m2;
  int fd = tmp_file (AREA, 0);
  char why[256];

  ck_assert_int_eq (dmap_init (&m, fd, AREA_OFF, AREA, GiB, 12), 0);
  ck_assert_uint_eq (m.npages, 9);        /* 262144 grains */
  dmap_mark (&m, 0, 1);                   /* page 1 */
  dmap_mark (&m, (2 * PB + 7) * G, 1);    /* page 3 */
  ck_assert_int_eq (dmap_flush (&m), 0);

  flip (fd, page_off (2) + 100);          /* page 2: not changed below */
  dmap_mark (&m, (3 * PB + 5) * G, 1);    /* page 4 */
  dmap_mark (&m, 1, 1);                   /* page 1, bit already set */
  ck_assert_int_eq (dmap_flush (&m), 0);

  load_fresh (&m2, fd, AREA, GiB, 12, 0, 1, why, sizeof why);
  ck_assert_msg (strstr (why, "page 2") && strstr (why, "checksum"),
                 "why: %s", why);
  /* Page 2 all ones, everything else as marked. */
  ck_assert_uint_eq (dmap_dirty_bytes (&m2), (PB + 3) * G);
  for (uint64_t g = PB; g < 2 * PB; g += 101)
    ck_assert (dmap_any (&m2, g * G, 1));
  ck_assert (dmap_any (&m2, (2 * PB - 1) * G, 1));
  ck_assert (!dmap_any (&m2, G, (PB - 1) * G));
  ck_assert (dmap_any (&m2, (3 * PB + 5) * G, 1));

  /* The bad page was marked dirty: a flush writes it back sound. */
  ck_assert_int_eq (dmap_flush (&m2), 0);
  dmap_free (&m2);
  load_fresh (&m2, fd, AREA, GiB, 12, 0, 0, why, sizeof why);
  ck_assert_uint_eq (dmap_dirty_bytes (&m2), (PB + 3) * G);

  /* Nothing changed: a flush does no I/O (a damaged header stays). */
  flip (fd, AREA_OFF + 30);
  ck_assert_int_eq (dmap_flush (&m2), 0);
  dmap_free (&m2);
  load_fresh (&m2, fd, AREA, GiB, 12, -1, 0, why, sizeof why);
  dmap_free (&m2);
  /* ... and a change rewrites it. */
  dmap_set_base (&m, 5, 1, 0);
  ck_assert_int_eq (dmap_flush (&m), 0);
  load_fresh (&m2, fd, AREA, GiB, 12, 0, 0, why, sizeof why);
  dmap_free (&m2);

  dmap_free (&m);
  close (fd);
}
END_TEST

START_TEST (test_torn_and_misdirected_pages)
{
  struct dirtymap m, m2;
  int fd = tmp_file (AREA, 0);
  char why[256];
  uint8_t pg[DMAP_PAGE_SIZE];
  const uint64_t vol = 3 * PB * G - 3 * G - 5;   /* last page partial */
  const uint64_t nbits = 3 * PB - 3;
  unsigned bad;

  ck_assert_int_eq (dmap_init (&m, fd, AREA_OFF, AREA, vol, 12), 0);
  dmap_mark (&m, 10 * G, 1);
  ck_assert_int_eq (dmap_flush (&m), 0);

  /* Torn: a flipped byte among the bits of page 1. */
  flip (fd, page_off (1) + 2000);
  load_fresh (&m2, fd, AREA, vol, 12, 0, 1, why, sizeof why);
  ck_assert_msg (strstr (why, "page 1"), "why: %s", why);
  ck_assert_uint_eq (dmap_dirty_bytes (&m2), PB * G);
  ck_assert (dmap_any (&m2, 0, 1));
  ck_assert (dmap_any (&m2, (PB - 1) * G, 1));
  ck_assert (!dmap_any (&m2, PB * G, 1));
  dmap_free (&m2);
  flip (fd, page_off (1) + 2000);

  /* Torn in the trailer (the page index). */
  flip (fd, page_off (2) + 4088);
  load_fresh (&m2, fd, AREA, vol, 12, 0, 1, why, sizeof why);
  ck_assert_msg (strstr (why, "page 2"), "why: %s", why);
  ck_assert_uint_eq (dmap_dirty_bytes (&m2), G + PB * G);
  dmap_free (&m2);
  flip (fd, page_off (2) + 4088);

  /* Misdirected: page 1's sound image written where page 3 belongs. */
  tu_pread (fd, pg, sizeof pg, page_off (1));
  tu_pwrite (fd, pg, sizeof pg, page_off (3));
  load_fresh (&m2, fd, AREA, vol, 12, 0, 1, why, sizeof why);
  ck_assert_msg (strstr (why, "page 3") && strstr (why, "misdirected"),
                 "why: %s", why);
  /* The last page all ones, clipped at the volume's end. */
  ck_assert_uint_eq (dmap_dirty_bytes (&m2),
                     G + (nbits - 2 * PB - 1) * G + (G - 5));
  ck_assert (dmap_any (&m2, vol - 1, 1));
  ck_assert (dmap_any (&m2, 2 * PB * G, 1));
  dmap_free (&m2);

  /* A sound CRC but a bit past the last grain: not trusted either. */
  memset (pg, 0, sizeof pg);
  pg[(nbits - 2 * PB) / 8] = 1u << ((nbits - 2 * PB) % 8);
  put_le32 (pg + 4088, 3);
  put_le32 (pg + 4092, rlog_crc32c (0, pg, 4092));
  tu_pwrite (fd, pg, sizeof pg, page_off (3));
  load_fresh (&m2, fd, AREA, vol, 12, 0, 1, why, sizeof why);
  ck_assert_msg (strstr (why, "page 3") && strstr (why, "past"),
                 "why: %s", why);
  dmap_free (&m2);

  /* Two bad pages: both counted, the first named. */
  flip (fd, page_off (1) + 7);
  load_fresh (&m2, fd, AREA, vol, 12, 0, 2, why, sizeof why);
  ck_assert_msg (strstr (why, "page 1") && strstr (why, "1 more"),
                 "why: %s", why);
  ck_assert_uint_eq (dmap_dirty_bytes (&m2), vol - PB * G);
  dmap_free (&m2);

  /* NULL out-parameters are allowed. */
  ck_assert_int_eq (dmap_init (&m2, fd, AREA_OFF, AREA, vol, 12), 0);
  ck_assert_int_eq (dmap_load (&m2, NULL, NULL, 0), 0);
  bad = 0;
  ck_assert_int_eq (dmap_load (&m2, &bad, why, 8), 0);   /* why truncated */
  ck_assert_uint_eq (bad, 2);
  ck_assert_uint_eq (strlen (why), 7);
  dmap_free (&m2);

  dmap_free (&m);
  close (fd);
}
END_TEST

START_TEST (test_bad_header)
{
  struct dirtymap m, m2;
  int fd = tmp_file (AREA, 0);
  char why[256];
  uint8_t hdr[DMAP_PAGE_SIZE];

  /* A zeroed area (a fresh log) has no header. */
  load_fresh (&m2, fd, AREA, GiB, 12, -1, 0, why, sizeof why);
  ck_assert_msg (strstr (why, "magic"), "why: %s", why);
  dmap_free (&m2);

  ck_assert_int_eq (dmap_init (&m, fd, AREA_OFF, AREA, GiB, 12), 0);
  dmap_mark (&m, 0, 1);
  ck_assert_int_eq (dmap_flush (&m), 0);
  tu_pread (fd, hdr, sizeof hdr, AREA_OFF);

  /* A flipped byte: checksum. */
  flip (fd, AREA_OFF + 30);
  load_fresh (&m2, fd, AREA, GiB, 12, -1, 0, why, sizeof why);
  ck_assert_msg (strstr (why, "checksum"), "why: %s", why);
  /* The failed load left the map as it was. */
  dmap_mark (&m2, 5 * G, 1);
  ck_assert_uint_eq (dmap_dirty_bytes (&m2), G);
  ck_assert_int_eq (dmap_load (&m2, NULL, why, sizeof why), -1);
  ck_assert_uint_eq (dmap_dirty_bytes (&m2), G);
  ck_assert (dmap_any (&m2, 5 * G, 1));
  dmap_free (&m2);
  flip (fd, AREA_OFF + 30);

  /* Another version, checksum recomputed. */
  put_le32 (hdr + 8, 2);
  put_le32 (hdr + 60, rlog_crc32c (0, hdr, 60));
  tu_pwrite (fd, hdr, sizeof hdr, AREA_OFF);
  load_fresh (&m2, fd, AREA, GiB, 12, -1, 0, why, sizeof why);
  ck_assert_msg (strstr (why, "version"), "why: %s", why);
  dmap_free (&m2);

  /* Another geometry: the volume grew, or min_shift changed. */
  put_le32 (hdr + 8, 1);
  put_le32 (hdr + 60, rlog_crc32c (0, hdr, 60));
  tu_pwrite (fd, hdr, sizeof hdr, AREA_OFF);
  load_fresh (&m2, fd, AREA, GiB, 12, 0, 0, why, sizeof why);
  dmap_free (&m2);
  load_fresh (&m2, fd, AREA, 2 * GiB, 12, -1, 0, why, sizeof why);
  ck_assert_msg (strstr (why, "geometry"), "why: %s", why);
  dmap_free (&m2);
  load_fresh (&m2, fd, AREA, GiB, 13, -1, 0, why, sizeof why);
  ck_assert_msg (strstr (why, "geometry"), "why: %s", why);
  dmap_free (&m2);

  /* Bad magic. */
  flip (fd, AREA_OFF + 0);
  load_fresh (&m2, fd, AREA, GiB, 12, -1, 0, why, sizeof why);
  ck_assert_msg (strstr (why, "magic"), "why: %s", why);
  dmap_free (&m2);

  /* A file too short to hold the header. */
  ck_assert_int_eq (ftruncate (fd, AREA_OFF + 10), 0);
  load_fresh (&m2, fd, AREA, GiB, 12, -1, 0, why, sizeof why);
  ck_assert_msg (strstr (why, "cannot read"), "why: %s", why);
  dmap_free (&m2);

  dmap_free (&m);
  close (fd);
}
END_TEST

START_TEST (test_clear)
{
  struct dirtymap m, m2;
  int fd = tmp_file (AREA, 0);
  char why[256];

  ck_assert_int_eq (dmap_init (&m, fd, AREA_OFF, AREA, 64 * GiB, 12), 0);
  dmap_mark (&m, 0, 64 * GiB);
  dmap_set_base (&m, 10, 2, 0);
  ck_assert_int_eq (dmap_flush (&m), 0);
  load_fresh (&m2, fd, AREA, 64 * GiB, 12, 0, 0, why, sizeof why);
  ck_assert_uint_eq (dmap_dirty_bytes (&m2), 64 * GiB);
  dmap_free (&m2);

  dmap_clear (&m);
  ck_assert_uint_eq (dmap_dirty_bytes (&m), 0);
  dmap_set_base (&m, 20, 3, 0);
  ck_assert_int_eq (dmap_flush (&m), 0);
  load_fresh (&m2, fd, AREA, 64 * GiB, 12, 0, 0, why, sizeof why);
  ck_assert_uint_eq (dmap_dirty_bytes (&m2), 0);
  ck_assert (!dmap_any (&m2, 0, 64 * GiB));
  {
    uint64_t seq, epoch;
    dmap_get_base (&m2, &seq, &epoch, NULL);
    ck_assert_uint_eq (seq, 20);
    ck_assert_uint_eq (epoch, 3);
  }
  dmap_free (&m2);
  dmap_free (&m);
  close (fd);
}
END_TEST

/* The smallest area, and one of a few pages: any multiple of 4096. */
START_TEST (test_small_areas)
{
  for (uint64_t area = DMAP_MIN_AREA; area <= 5 * 4096; area += 4096) {
    /* Just too big for 4 KiB grains: 8 KiB, the last one whole. */
    uint64_t vol = (area / 4096 - 1) * PB * G + 4 * 4096;
    struct dirtymap m, m2;
    int fd = tmp_file (area, 0x11);
    char why[256];

    ck_assert_int_eq (dmap_init (&m, fd, AREA_OFF, area, vol, 12), 0);
    ck_assert_uint_eq (dmap_grain_shift (&m), 13);
    ck_assert_uint_le (m.npages, area / 4096 - 1);
    dmap_mark (&m, vol - 1, 1);
    dmap_mark (&m, 0, 1);
    ck_assert_int_eq (dmap_flush (&m), 0);
    load_fresh (&m2, fd, area, vol, 12, 0, 0, why, sizeof why);
    ck_assert_uint_eq (dmap_dirty_bytes (&m2), 2 * 8192);
    dmap_mark (&m2, 0, vol);
    ck_assert_uint_eq (dmap_dirty_bytes (&m2), vol);
    ck_assert_int_eq (dmap_flush (&m2), 0);
    dmap_free (&m2);
    load_fresh (&m2, fd, area, vol, 12, 0, 0, why, sizeof why);
    ck_assert_uint_eq (dmap_dirty_bytes (&m2), vol);
    dmap_free (&m2);
    dmap_free (&m);
    close (fd);
  }
}
END_TEST

/* A failed flush keeps its pages dirty; the next one writes them. */
START_TEST (test_flush_error)
{
  struct dirtymap m, m2;
  int fd = tmp_file (AREA, 0), rofd, num;
  char why[256], path[64];

  snprintf (path, sizeof path, "/proc/self/fd/%d", fd);
  rofd = open (path, O_RDONLY);
  ck_assert_int_ge (rofd, 0);
  num = dup (rofd);                         /* the map's fd number */
  ck_assert_int_ge (num, 0);

  ck_assert_int_eq (dmap_init (&m, num, AREA_OFF, AREA, GiB, 12), 0);
  dmap_mark (&m, 3 * PB * G, 1);
  ck_assert_int_eq (dmap_flush (&m), -1);
  ck_assert_int_eq (errno, EBADF);
  ck_assert_int_eq (dup2 (fd, num), num);   /* now writable */
  ck_assert_int_eq (dmap_flush (&m), 0);
  load_fresh (&m2, fd, AREA, GiB, 12, 0, 0, why, sizeof why);
  ck_assert_uint_eq (dmap_dirty_bytes (&m2), G);
  dmap_free (&m2);

  /* Again after a successful flush: only the changed page is pending. */
  dmap_mark (&m, 5 * PB * G, 1);
  ck_assert_int_eq (dup2 (rofd, num), num);
  ck_assert_int_eq (dmap_flush (&m), -1);
  ck_assert_int_eq (dup2 (fd, num), num);
  ck_assert_int_eq (dmap_flush (&m), 0);
  load_fresh (&m2, fd, AREA, GiB, 12, 0, 0, why, sizeof why);
  ck_assert_uint_eq (dmap_dirty_bytes (&m2), 2 * G);
  dmap_free (&m2);

  dmap_free (&m);
  close (num);
  close (rofd);
  close (fd);
}
END_TEST

/* This program's fdatasync replaces the libc's (dirtymap.c is linked
 * statically into it): it counts the calls on sync_fd, records the
 * generation in the file's header at each, and fails the sync_fail'th
 * with EIO.
 */
static int sync_fd = -1, sync_fail, nsync;
static uint64_t sync_gen[8];

int
fdatasync (int fd)
{
  if (fd == sync_fd) {
    uint8_t hdr[64];

    tu_pread (fd, hdr, sizeof hdr, AREA_OFF);
    if (nsync < 8)
      sync_gen[nsync] = get_le64 (hdr + 48);
    if (++nsync == sync_fail) {
      errno = EIO;
      return -1;
    }
  }
  return syscall (SYS_fdatasync, fd);
}

/* Pages are synced before the header is written, the header after;
 * a failed sync fails the flush and the next one writes it all again.
 */
START_TEST (test_flush_sync_order)
{
  struct dirtymap m, m2;
  int fd = tmp_file (AREA, 0);
  char why[256];

  sync_fd = fd;
  ck_assert_int_eq (dmap_init (&m, fd, AREA_OFF, AREA, GiB, 12), 0);
  ck_assert_int_eq (dmap_flush (&m), 0);              /* generation 1 */
  ck_assert_int_eq (nsync, 2);

  nsync = 0;
  dmap_mark (&m, 7 * G, 1);
  ck_assert_int_eq (dmap_flush (&m), 0);
  ck_assert_int_eq (nsync, 2);
  ck_assert_uint_eq (sync_gen[0], 1);     /* pages synced, header old */
  ck_assert_uint_eq (sync_gen[1], 2);     /* then the header */

  nsync = 0;                              /* base only: the header */
  dmap_set_base (&m, 8, 1, 0);
  ck_assert_int_eq (dmap_flush (&m), 0);
  ck_assert_int_eq (nsync, 1);
  nsync = 0;                              /* nothing: no I/O */
  ck_assert_int_eq (dmap_flush (&m), 0);
  ck_assert_int_eq (nsync, 0);

  /* The pages' sync fails: the header is not written. */
  nsync = 0;
  sync_fail = 1;
  dmap_mark (&m, 4 * PB * G, 1);
  dmap_set_base (&m, 9, 1, 0);
  ck_assert_int_eq (dmap_flush (&m), -1);
  ck_assert_int_eq (errno, EIO);
  ck_assert_int_eq (nsync, 1);
  load_fresh (&m2, fd, AREA, GiB, 12, 0, 0, why, sizeof why);
  {
    uint64_t seq;
    dmap_get_base (&m2, &seq, NULL, NULL);
    ck_assert_uint_eq (seq, 8);
  }
  dmap_free (&m2);
  nsync = 0;
  sync_fail = 0;
  ck_assert_int_eq (dmap_flush (&m), 0);
  ck_assert_int_eq (nsync, 2);

  /* The header's sync fails: both are written again. */
  nsync = 0;
  sync_fail = 2;
  dmap_mark (&m, 6 * PB * G, 1);
  ck_assert_int_eq (dmap_flush (&m), -1);
  nsync = 0;
  sync_fail = 0;
  ck_assert_int_eq (dmap_flush (&m), 0);
  ck_assert_int_eq (nsync, 2);

  load_fresh (&m2, fd, AREA, GiB, 12, 0, 0, why, sizeof why);
  ck_assert_uint_eq (dmap_dirty_bytes (&m2), 3 * G);
  {
    uint64_t seq;
    dmap_get_base (&m2, &seq, NULL, NULL);
    ck_assert_uint_eq (seq, 9);
  }
  dmap_free (&m2);
  dmap_free (&m);
  sync_fd = -1;
  close (fd);
}
END_TEST

struct marker {
  struct dirtymap *m;
  unsigned t;
};

enum { NTHREADS = 4, NMARKS = 20000 };

static void *
marker (void *arg)
{
  struct marker *a = arg;

  for (uint64_t i = a->t; i < NMARKS * NTHREADS; i += NTHREADS)
    dmap_mark (a->m, (i * 13) % (GiB / G) * G, 1);
  return NULL;
}

/* Marks from several threads while another flushes. */
START_TEST (test_threads)
{
  struct dirtymap m, m2;
  int fd = tmp_file (AREA, 0);
  pthread_t th[NTHREADS];
  struct marker a[NTHREADS];
  char why[256];
  const uint64_t want = NMARKS * NTHREADS;

  ck_assert_int_eq (dmap_init (&m, fd, AREA_OFF, AREA, GiB, 12), 0);
  for (unsigned t = 0; t < NTHREADS; t++) {
    a[t].m = &m;
    a[t].t = t;
    ck_assert_int_eq (pthread_create (&th[t], NULL, marker, &a[t]), 0);
  }
  for (int i = 0; i < 20; i++) {
    dmap_set_base (&m, i, 1, 0);
    ck_assert_int_eq (dmap_flush (&m), 0);
  }
  for (unsigned t = 0; t < NTHREADS; t++)
    pthread_join (th[t], NULL);
  ck_assert_int_eq (dmap_flush (&m), 0);

  /* 13 is invertible mod 2^18: the i * 13 are distinct grains. */
  load_fresh (&m2, fd, AREA, GiB, 12, 0, 0, why, sizeof why);
  ck_assert_uint_eq (dmap_dirty_bytes (&m2), want * G);
  for (uint64_t i = 0; i < NMARKS * NTHREADS; i += 997)
    ck_assert (dmap_any (&m2, (i * 13) % (GiB / G) * G, 1));
  dmap_free (&m2);
  dmap_free (&m);
  close (fd);
}
END_TEST

static Suite *
dirtymap_suite (void)
{
  Suite *s = suite_create ("dirtymap");
  TCase *tc = tcase_create ("core");

  tcase_add_test (tc, test_sizing);
  tcase_add_test (tc, test_mark_any_boundaries);
  tcase_add_test (tc, test_pages_and_big_grains);
  tcase_add_test (tc, test_random_against_reference);
  tcase_add_test (tc, test_roundtrip);
  tcase_add_test (tc, test_only_changed_pages_written);
  tcase_add_test (tc, test_torn_and_misdirected_pages);
  tcase_add_test (tc, test_bad_header);
  tcase_add_test (tc, test_clear);
  tcase_add_test (tc, test_small_areas);
  tcase_add_test (tc, test_flush_error);
  tcase_add_test (tc, test_flush_sync_order);
  tcase_add_test (tc, test_threads);
  suite_add_tcase (s, tc);
  return s;
}

int
main (void)
{
  SRunner *sr = srunner_create (dirtymap_suite ());
  int failed;

  srunner_run_all (sr, CK_NORMAL);
  failed = srunner_ntests_failed (sr);
  srunner_free (sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
