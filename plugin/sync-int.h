/* nbd-replica: the sync engine's state, shared by sync.c (the thread,
 * the walk, verify), sync-sums.c (the peer's sums), sync-read.c (the
 * walk's reader), sync-resend.c (re-logging differing blocks, and the
 * throttle that yields to clients) and sync-status.c.  Internal to
 * them.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#ifndef REPLICA_SYNC_INT_H
#define REPLICA_SYNC_INT_H

#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>
#include <pthread.h>

#define MAX_RANGES       64           /* verify ranges kept for status */
#define RETRY_S          5            /* a pass stopped by a local error
                                       * runs again after this */
#define READ_AHEAD       4            /* chunks the reader is asked for
                                       * ahead: while the walk waits for
                                       * the pipeline, the disk keeps
                                       * reading (with 2, a cold 4 GiB
                                       * sync onto an empty secondary
                                       * waited 1.4-1.8 s for its reads
                                       * and took 10-13% longer) */
#define READER_SLOTS     (READ_AHEAD + 1) /* and one whose re-sent runs
                                       * the finisher holds */
#define SUMS_AHEAD       8            /* chunks whose sums are asked for
                                       * ahead: their answers queue behind
                                       * the batches on the link */
#define CONFIRM_REQ      SUMS_AHEAD
#define SUMS_REQS        (SUMS_AHEAD + 1)

enum phase { PH_NONE = 0, PH_INITIAL, PH_RESYNC, PH_VERIFY };

/* What the walk waits for (sync_waited). */
enum wait_for {
  WAIT_READ,                    /* the reader thread's read of a chunk */
  WAIT_SUMS,                    /* the peer's sums */
  WAIT_THROTTLE,                /* room in the window, the ring or the
                                 * rate (throttle) */
  WAIT_FINISHER,                /* the finisher, for the chunk before */
  WAIT_N
};

/* A request for the peer's sums of one chunk, answered by sync_sums. */
struct sums_req {
  uint64_t id, off;
  uint32_t nblocks;
  bool done;
  int err;
  uint8_t *sums;                /* nblocks * WIRE_SUM_SIZE */
};

struct vrange { uint64_t off, len; };

struct sync_state {
  pthread_mutex_t lock;         /* everything below */
  pthread_cond_t cond;
  pthread_t thread;
  bool running, stopping;
  uint64_t gen;                 /* bumped when a pass starts or the link
                                 * drops: a pass of another gen aborts */
  bool want;                    /* a pass is requested for gen */
  enum phase want_phase;
  bool want_full, want_repair, want_bitmap;
  uint64_t want_base;           /* the pass's base seq (CONTROL RESYNC) */
  enum phase phase;             /* the pass running or awaiting its ack */
  uint64_t end_seq;             /* its SYNC_END record, once appended */
  struct sums_req req[SUMS_REQS]; /* sums asked for ahead (chunk i's
                                 * in i % SUMS_AHEAD) and for a
                                 * verify's confirmation (CONFIRM_REQ) */
  uint64_t next_id;
  /* Progress of the current (or last) pass. */
  uint64_t total, done, sent, differing, passes;
  uint64_t t_start_ns, t_end_ns;
  char why[160];
  uint64_t failures;            /* of this pass, by a local error: each
                                 * is retried after RETRY_S (sync.c) */
  /* Verify. */
  const char *vstate;           /* idle running clean mismatch repaired
                                 * failed */
  char verror[160];
  uint64_t vblocks;
  struct vrange vr[MAX_RANGES];
  size_t nvr;
  /* Our records not yet acknowledged by the peer (their last seq and
   * bytes, in seq order), for the window: the clients' own backlog
   * must not hold the pass back.
   */
  struct { uint64_t seq, bytes; } ours[64];
  size_t nours;
  /* Changes to the volume (sync_change_begin/_end; atomics, not under
   * the lock): started so far, and in progress now.  A client's write,
   * zero or trim is one; started also tells the throttle whether
   * clients are busy (seen_writes: the count it saw last).
   */
  uint64_t changes_started, changes_active;
  uint64_t seen_writes, busy_until_ns;
  uint64_t reused_bytes;        /* re-sent from the walk's read */
  uint64_t wait_ns[WAIT_N];     /* the walk's waits this pass (status:
                                 * where a slow pass spends its time) */
};
extern struct sync_state Y;

/* sync.c */
extern const char *phase_name (enum phase p);
extern unsigned block_shift (void);
extern void ywait_ms (unsigned ms);             /* Y.lock held */
extern bool aborted (uint64_t gen);             /* Y.lock held */
extern int read_volume (void *buf, uint64_t len, uint64_t off);
extern uint32_t block_len (uint64_t off, uint32_t i);
extern void sync_waited (enum wait_for what, uint64_t since_ns);

/* sync-sums.c: the peer's sums of a chunk.  sums_ask fills a request
 * (Y.lock held), sums_send sends it (without Y.lock: repl.c's lock comes
 * first), sums_wait waits for its answer: 0, or -1 (link lost, error,
 * timeout).
 */
extern int sums_ask (struct sums_req *q, uint64_t off, uint32_t nblocks);
extern int sums_send (const struct sums_req *q);
extern int sums_wait (struct sums_req *q, uint64_t gen);

/* Taken before a read of the volume: was any change to the volume in
 * progress, and how many had started (sync_snap_take).  If none was in
 * progress and none has started since (sync_snap_unchanged), every
 * change that reached the range before the read had completed, so the
 * bytes read are still the volume's.
 */
struct vol_snap {
  uint64_t started;
  bool quiet;
};
extern void sync_snap_take (struct vol_snap *s);
extern bool sync_snap_unchanged (const struct vol_snap *s);

/* sync-read.c: the walk's reader thread, which reads the chunks asked
 * for ahead into buffers of their own (slots 0 .. READER_SLOTS - 1),
 * and hashes their blocks (bsum_block).
 */
struct chunk_reader;
extern struct chunk_reader *chunk_reader_start (size_t bufsize);
extern void chunk_reader_ask (struct chunk_reader *r, int slot, uint64_t off,
                              uint64_t len);
extern uint8_t *chunk_reader_wait (struct chunk_reader *r, int slot,
                                   struct vol_snap *snap,
                                   const uint8_t **sums);
extern void chunk_reader_stop (struct chunk_reader *r);

/* sync-resend.c: re-log the blocks of a chunk where diff[i] is set;
 * the finisher thread completes a chunk's runs meanwhile.
 */
struct finisher;
extern struct finisher *finisher_start (void);
extern int finisher_stop (struct finisher *f);
extern int resend_chunk (struct finisher *f, uint64_t off, uint32_t nblocks,
                         const bool *diff, uint64_t gen, uint64_t t0,
                         const uint8_t *local, const struct vol_snap *snap);

#endif /* REPLICA_SYNC_INT_H */
