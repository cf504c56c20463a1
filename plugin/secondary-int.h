/* nbd-replica: the secondary's state, shared by secondary.c (the
 * replication export: HELLO, CONTROL, BATCH, applying) and
 * secondary-resync.c (a resync: its start, staging, its end, and what
 * promote does to one).  Internal to them.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#ifndef REPLICA_SECONDARY_INT_H
#define REPLICA_SECONDARY_INT_H

#include <stdint.h>
#include <stdbool.h>
#include <pthread.h>

#include "journal.h"
#include "wire.h"

#define TURN_TIMEOUT_SEC 30

struct secondary_state {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  uint64_t enq_seq, enq_epoch;      /* last record queued to the journal */
  uint64_t applied_seq, applied_epoch; /* last record applied */
  uint64_t done_seq, done_epoch;    /* last record committed: applied,
                                     * or staged (a staged resync) */
  bool staging;                     /* records are journaled, applied
                                     * only at the resync's end */
  bool resyncing;                   /* a CONTROL RESYNC began a pass, */
  uint64_t resync_base;             /* ... from this base: only its own
                                     * SYNC_END ends it */
  uint64_t staged_records;
  bool elide;                       /* in place (INCONSISTENT durably set,
                                     * not staging), before the pass's
                                     * SYNC_END: re-sent writes are logged
                                     * as headers only (mark_elided) */
  bool end_queued;                  /* this pass's SYNC_END is queued */
  bool ending;                      /* commit_unit is committing the unit
                                     * holding it, resync_end included: a
                                     * new RESYNC waits (wait_committed) */
  uint64_t elided_records, elided_bytes;
  bool quiesced;                    /* promoted: no more batches */
  unsigned sessions;                /* authenticated replication conns */
  uint64_t batches, records, bytes, refused;
  char last_error[256];
};
extern struct secondary_state S;

/* secondary.c */
extern int refuse (int *err, int e, const char *fmt, ...)
  __attribute__ ((format (printf, 3, 4)));
extern int apply_unit (struct junit *u, int *err);

/* secondary-resync.c */
extern int resync_begin (const struct wire_control *ctl, int *err);
extern int commit_unit (struct junit *u, int *err);

#endif /* REPLICA_SECONDARY_INT_H */
