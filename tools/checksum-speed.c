/* checksum-speed: how fast one core hashes blocks (the choice of the
 * block checksum of initial sync, resync and verify: common/blocksum.h).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 *   checksum-speed [MiB [BLOCK-KiB]]       (default 256 MiB, 64 KiB blocks)
 *
 * Hashes a buffer of random bytes, block by block, with each candidate
 * on one thread, best of 3 passes, and prints GB/s per core: XXH3-128
 * (the one used), XXH3-64, SHA-256 (GnuTLS), CRC-32C (ISA-L, the log's
 * checksum), and zero detection on a zero buffer.  Compare with the
 * disk's sequential read rate (docs/design.md section 20 does).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/random.h>

#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>
#include <xxhash.h>

#include "blocksum.h"
#include "logfmt.h"

static uint8_t *buf, *zeroes;
static size_t len, block;
static volatile uint64_t sink;

static double
now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
run_xxh128 (const uint8_t *p)
{
  uint8_t out[BSUM_SIZE];

  for (size_t o = 0; o < len; o += block) {
    bsum_block (p + o, block, out);
    sink += out[0];
  }
}

static void
run_xxh64 (const uint8_t *p)
{
  for (size_t o = 0; o < len; o += block)
    sink += XXH3_64bits (p + o, block);
}

static void
run_sha256 (const uint8_t *p)
{
  uint8_t out[32];

  for (size_t o = 0; o < len; o += block) {
    gnutls_hash_fast (GNUTLS_DIG_SHA256, p + o, block, out);
    sink += out[0];
  }
}

static void
run_crc32c (const uint8_t *p)
{
  for (size_t o = 0; o < len; o += block)
    sink += rlog_crc32c (0, p + o, block);
}

static void
run_zero (const uint8_t *p)
{
  for (size_t o = 0; o < len; o += block)
    sink += bsum_is_zero (p + o, block);
}

static void
measure (const char *name, void (*fn) (const uint8_t *), const uint8_t *p,
         const char *note)
{
  double best = 1e9;

  for (int i = 0; i < 3; ++i) {
    double t = now ();
    fn (p);
    t = now () - t;
    if (t < best)
      best = t;
  }
  printf ("%-22s %7.2f GB/s per core   %s\n", name, len / best / 1e9, note);
}

int
main (int argc, char **argv)
{
  len = (argc > 1 ? strtoull (argv[1], NULL, 10) : 256) << 20;
  block = (argc > 2 ? strtoull (argv[2], NULL, 10) : 64) << 10;
  if (len == 0 || block == 0 || len % block) {
    fprintf (stderr, "usage: checksum-speed [MiB [BLOCK-KiB]]\n");
    return 2;
  }
  buf = malloc (len);
  zeroes = calloc (1, len);
  if (!buf || !zeroes) {
    perror ("malloc");
    return 1;
  }
  for (size_t o = 0; o < len; o += 1 << 20)
    if (getrandom (buf + o, len - o < (1 << 20) ? len - o : 1 << 20, 0) < 0) {
      perror ("getrandom");
      return 1;
    }
  printf ("%zu MiB of random data in %zu KiB blocks, one thread, best of 3\n",
          len >> 20, block >> 10);
  measure ("XXH3-128 (used)", run_xxh128, buf, "libxxhash");
  measure ("XXH3-64", run_xxh64, buf, "libxxhash");
  measure ("SHA-256", run_sha256, buf, "GnuTLS (nettle)");
  measure ("CRC-32C", run_crc32c, buf, "ISA-L, the log's checksum");
  measure ("zero detection", run_zero, zeroes, "bsum_is_zero, all-zero data");
  return 0;
}
