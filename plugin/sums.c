/* nbd-replica: the secondary's block sums (the replication export's
 * sums region, common/wire.h WIRE_SUMS_OFFSET).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * A read of nblocks * 16 bytes at WIRE_SUMS_OFFSET (shift, off) returns
 * the bsum_block of each block of 1 << shift bytes of our disk from
 * volume offset off, as the disk is now (applied records only: a
 * staged resync is not applied, so the sums describe the image it
 * keeps).  The primary compares them with its own (plugin/sync.c).
 */
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>
#include <errno.h>
#include <pthread.h>

#include <nbdkit-filter.h>

#include "replica.h"
#include "repl.h"
#include "conns.h"
#include "wire.h"
#include "blocksum.h"

#define READ_BYTES (4u << 20)

/* One sums read at a time.  The primary asks for its chunks in order,
 * several ahead (plugin/sync.c SUMS_AHEAD), and nbdkit would serve them
 * on as many threads at once: one at a time, the disk reads the volume
 * in order, each read's prefetch of the range after it is the next
 * read's, and a slow cache is found out after PREFETCH_SLOW_CALLS calls
 * (plugin/volread.c), not after as many as are asked at once.
 */
static pthread_mutex_t sums_lock = PTHREAD_MUTEX_INITIALIZER;

/* Decode a sums read; returns 0 or -1 (EINVAL). */
static int
sums_request (uint32_t count, uint64_t offset, unsigned *shift,
              uint64_t *off, uint32_t *nblocks)
{
  uint64_t rel = offset - WIRE_SUMS_BASE, size = rep.log->sb.backing_size;
  uint64_t index;

  *shift = rel >> 40;
  index = (rel & ((1ULL << 40) - 1)) / WIRE_SUM_SIZE;
  if (*shift < WIRE_SUMS_MIN_SHIFT || *shift > WIRE_SUMS_MAX_SHIFT ||
      rel % WIRE_SUM_SIZE || count == 0 || count % WIRE_SUM_SIZE ||
      count / WIRE_SUM_SIZE > WIRE_SUMS_MAX ||
      index > (size >> *shift) + 1)
    return -1;
  *off = index << *shift;
  *nblocks = count / WIRE_SUM_SIZE;
  /* Every block must start inside the volume. */
  if (*off >= size || (((uint64_t) *nblocks - 1) << *shift) >= size - *off)
    return -1;
  return 0;
}

/* The sums of n bytes that read as zero, from block *done on: blocks of
 * bs bytes share one sum (zsum, computed once per request: *have_zsum),
 * a short last block has its own.  data (at least bs bytes) is
 * scratch.
 */
static void
zero_sums (uint8_t *out, uint64_t n, uint32_t bs, uint8_t *data,
           uint8_t *zsum, bool *have_zsum, uint32_t *done)
{
  for (uint64_t p = 0; p < n; p += bs, ++*done) {
    uint8_t *sum = out + (size_t) *done * WIRE_SUM_SIZE;

    if (n - p < bs) {
      memset (data, 0, n - p);
      bsum_block (data, n - p, sum);
      continue;
    }
    if (!*have_zsum) {
      memset (data, 0, bs);
      bsum_block (data, bs, zsum);
      *have_zsum = true;
    }
    memcpy (sum, zsum, WIRE_SUM_SIZE);
  }
}

/* The sums of the blocks of 1 << shift bytes from off to end. */
static int
sums_compute (void *buf, uint64_t off, uint64_t end, unsigned shift,
              int *err)
{
  uint64_t size = rep.log->sb.backing_size;
  uint32_t bs = 1u << shift, done = 0;
  uint32_t piece = READ_BYTES > bs ? READ_BYTES : bs;
  uint8_t *data = malloc (piece), zsum[WIRE_SUM_SIZE];
  bool have_zsum = false;

  if (!data) {
    *err = ENOMEM;
    return -1;
  }
  /* The primary asks for the chunks in order: let the disk read the
   * next one (as long as this one) while this one is hashed and sent.
   */
  if (end < size)
    volume_prefetch (end - off < size - end ? end - off : size - end, end);
  /* A piece of whole blocks at a time, hashed as it comes; a piece that
   * reads as zero (a hole of a sparse disk: an empty secondary is all
   * holes) is neither read, nor zeroed, nor hashed block by block.
   */
  while (off < end) {
    uint64_t n = end - off < piece ? end - off : piece;
    int r = volume_read_unless_zero (data, n, off, err);

    if (r == -1) {
      free (data);
      return -1;
    }
    if (r == 1)
      zero_sums (buf, n, bs, data, zsum, &have_zsum, &done);
    else
      for (uint64_t p = 0; p < n; p += bs, done++)
        bsum_block (data + p, n - p < bs ? n - p : bs,
                    (uint8_t *) buf + (size_t) done * WIRE_SUM_SIZE);
    off += n;
  }
  free (data);
  return 0;
}

int
sums_pread (void *buf, uint32_t count, uint64_t offset, int *err)
{
  uint64_t off, size = rep.log->sb.backing_size, end;
  uint32_t nblocks;
  unsigned shift;
  int r;

  if (sums_request (count, offset, &shift, &off, &nblocks) == -1) {
    *err = EINVAL;
    return -1;
  }
  end = off + ((uint64_t) nblocks << shift);
  if (end > size)
    end = size;
  pthread_mutex_lock (&sums_lock);
  r = sums_compute (buf, off, end, shift, err);
  pthread_mutex_unlock (&sums_lock);
  return r;
}
