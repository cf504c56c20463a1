/* nbd-replica: fixtures shared by the journal unit tests
 * (check-journal.c, check-scan.c, check-journal-io.c).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#ifndef REPLICA_JOURNALTEST_H
#define REPLICA_JOURNALTEST_H

#include <stdint.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <sys/uio.h>

#include "journal.h"

/* The test case's scratch directory (jt_setup / jt_teardown). */
extern char *tmpdir;
extern void jt_setup (void);
extern void jt_teardown (void);

/* A replaceable disk: slow, counting, failing on demand. */
struct fio {
  atomic_int pwritevs, syncs;
  atomic_int fail_pwritev;      /* fail this many calls; -1: always */
  int pwritev_errno;
  atomic_int short_pwritev;     /* report one byte fewer this many times */
  atomic_int fail_sync;         /* fail this many calls; -1: always */
  int sync_errno;
  long sync_delay_ns;
};
extern struct fio fio;
extern const struct journal_io test_io;
extern void fio_reset (void);

/* A log of RLOG_MIN_SIZE in tmpdir with a journal started on it. */
struct jctx {
  struct rlog *log;
  struct journal j;
};
extern struct jctx *jt_start (const char *name, const struct journal_io *io,
                              journal_pressure_fn pressure);
extern void jt_stop (struct jctx *c);
/* Put the head and the checkpoint at lsn, as a recovery would. */
extern void jt_move_head (struct jctx *c, uint64_t lsn);
/* plugin/checkpoint.c checkpoint_now without the backing flush. */
extern void jt_checkpoint (struct journal *j, struct rlog *log);
extern void pressure_checkpoint (void *opaque);

extern void set_entry (struct jentry *e, uint8_t op, uint32_t flags,
                       uint64_t offset, uint32_t length, const void *payload);
extern int append_write (struct journal *j, struct jentry *e,
                         uint64_t offset, uint32_t len, uint64_t seed);
extern void jt_stats (struct journal *j, struct journal_stats *st,
                      uint64_t *head, int *fault, bool *fenced);

/* What a scanned record must be. */
struct want {
  uint8_t op;
  uint32_t flags;
  uint64_t offset;
  uint32_t length;
  uint64_t seed;
  uint64_t seq, epoch;
};
extern void want_from (struct want *w, const struct jentry *e, uint64_t seed);
extern void scan_expect (struct rlog *log, const struct want *want, size_t n,
                         enum rlog_stop stop);

extern void append_n (struct jctx *c, struct jentry *ents, struct want *want,
                      int n, uint32_t plen);

#endif /* REPLICA_JOURNALTEST_H */
