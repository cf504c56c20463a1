/* nbd-replica: helpers shared by the Check unit tests.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#ifndef REPLICA_TESTUTIL_H
#define REPLICA_TESTUTIL_H

#include <stdint.h>
#include <stddef.h>

#include "logfile.h"

/* A fresh directory under $TMPDIR (or /tmp) for one test case, and its
 * removal with everything in it (one level: tests create plain files).
 */
extern char *tu_mkdtemp (void);
extern void tu_rmtree (const char *dir);

/* dir/name in a malloc'd string. */
extern char *tu_path (const char *dir, const char *name);

/* Deterministic pattern bytes for (seed, i): payloads that differ per
 * record and can be checked after a scan.
 */
extern void tu_fill (void *buf, size_t len, uint64_t seed);
extern int tu_check (const void *buf, size_t len, uint64_t seed);

/* Create a log of the given size at dir/name, open it read-write and
 * locked, and start a new epoch in its superblock, as recovery does
 * before the journal starts.  Aborts the test on failure.
 */
extern struct rlog *tu_new_log (const char *dir, const char *name,
                                uint64_t size);

/* Raw access to the log file, for corruption. */
extern void tu_pwrite (int fd, const void *buf, size_t len, uint64_t off);
extern void tu_pread (int fd, void *buf, size_t len, uint64_t off);

#endif /* REPLICA_TESTUTIL_H */
