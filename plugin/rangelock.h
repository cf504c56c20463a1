/* nbd-replica: byte-range locks that order overlapping writes.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * A writer holds its range from before it takes a seq until its record
 * is applied to the backing.  Two overlapping writes therefore take
 * their seqs in the same order as they reach the backing, which is what
 * makes a replay of the log in seq order byte-identical to the backing.
 * Non-overlapping writes never wait for each other.
 */
#ifndef REPLICA_RANGELOCK_H
#define REPLICA_RANGELOCK_H

#include <stdint.h>
#include <stdbool.h>
#include <pthread.h>

struct range {
  uint64_t start, end;          /* [start, end) */
  struct range *next;
};

struct rangelock {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct range *held;
  uint64_t waits;               /* times a writer waited (statistics) */
};

extern void rangelock_init (struct rangelock *rl);
extern void rangelock_acquire (struct rangelock *rl, struct range *r,
                               uint64_t offset, uint64_t count);
/* Acquire only if nobody holds an overlapping range; false otherwise. */
extern bool rangelock_try_acquire (struct rangelock *rl, struct range *r,
                                   uint64_t offset, uint64_t count);
extern void rangelock_release (struct rangelock *rl, struct range *r);

#endif /* REPLICA_RANGELOCK_H */
