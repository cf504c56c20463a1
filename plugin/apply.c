/* nbd-replica: applying one record to the plugin.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * The one place that says what a record does to the disk, shared by the
 * data path (replica.c) and crash recovery (recovery.c), so that the
 * disk and any replay of the log agree byte for byte.  Writes go down
 * without FUA: the log already made them durable.
 */
#include <nbdkit-filter.h>

#include "replica.h"

int
replica_apply (nbdkit_next *next, uint8_t op, uint32_t flags,
               const void *payload, uint32_t length, uint64_t offset,
               int *err)
{
  switch (op) {
  case RLOG_OP_WRITE:
    return next->pwrite (next, payload, length, offset, 0, err);
  case RLOG_OP_ZERO:
  case RLOG_OP_TRIM:
    /* Trim is applied as a zero that may deallocate, so the range reads
     * as zeroes on every copy that replays the log.  (Only a plugin
     * stack that cannot zero at all gets a real trim.)
     */
    if (rep.can_zero > NBDKIT_ZERO_NONE)
      return next->zero (next, length, offset,
                         op == RLOG_OP_TRIM || (flags & RLOG_FLAG_MAY_TRIM)
                         ? NBDKIT_FLAG_MAY_TRIM : 0, err);
    return next->trim (next, length, offset, 0, err);
  default:                      /* FLUSH: a barrier, nothing to apply */
    return 0;
  }
}
