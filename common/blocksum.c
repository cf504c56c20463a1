/* nbd-replica: per-block checksums (see blocksum.h).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#include <string.h>

#include <xxhash.h>

#include "blocksum.h"

void
bsum_block (const void *buf, size_t len, uint8_t out[BSUM_SIZE])
{
  XXH128_canonical_t c;

  XXH128_canonicalFromHash (&c, XXH3_128bits (buf, len));
  memcpy (out, c.digest, BSUM_SIZE);
}

/* Words at a time, then the tail; the first non-zero word ends it. */
bool
bsum_is_zero (const void *buf, size_t len)
{
  const unsigned char *p = buf;
  size_t i = 0;

  for (; i + 64 <= len; i += 64) {
    uint64_t w[8], acc = 0;
    memcpy (w, p + i, 64);
    for (int k = 0; k < 8; ++k)
      acc |= w[k];
    if (acc)
      return false;
  }
  for (; i < len; ++i)
    if (p[i])
      return false;
  return true;
}
