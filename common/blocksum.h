/* nbd-replica: per-block checksums (initial sync, resync, verify).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * Both sides of a pair hash their blocks and compare the hashes, so
 * only differing blocks cross the link.  The hash is XXH3-128 (Debian's
 * libxxhash): 128 bits, so two different blocks collide with
 * probability 2^-128 per comparison, and it runs at memory speed
 * (tools/checksum-speed measures it; docs/design.md "Block checksums"
 * records the choice).  It is not a cryptographic hash: both ends are
 * authenticated peers comparing their own data, nobody chooses blocks
 * to collide.  Zero blocks are told apart without hashing
 * (bsum_is_zero), so holes cost no data on the link.
 */
#ifndef REPLICA_BLOCKSUM_H
#define REPLICA_BLOCKSUM_H

#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>

#define BSUM_SIZE 16

/* XXH3-128 of a block, in its canonical (big-endian) byte order, so a
 * checksum is the same bytes on every machine and on the wire.
 */
extern void bsum_block (const void *buf, size_t len, uint8_t out[BSUM_SIZE]);

/* Every byte of buf is zero (len may be anything). */
extern bool bsum_is_zero (const void *buf, size_t len);

#endif /* REPLICA_BLOCKSUM_H */
