/* nbd-replica: replication, filter side (primary and secondary).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * Primary (repl.c): the link state machine (common/link.c) fed by the
 * replicator over the local channel (common/chan.h), the sync-mode
 * gate on replies, the peer-acknowledged point that bounds the log's
 * tail, and the lag accounting.  spawn.c starts and restarts
 * nbd-replicator.  Secondary (secondary.c): the replication export.
 */
#ifndef REPLICA_REPL_H
#define REPLICA_REPL_H

#include <stdint.h>
#include <stdbool.h>

#include <json-c/json.h>
#include <nbdkit-filter.h>

#include "journal.h"
#include "link.h"

struct replica;

/* replica-* keys of replication (replica.c passes them on). */
struct repl_config {
  char *peer;                   /* replica-peer URI, or NULL */
  char *replicator;             /* replica-replicator: path, "external" */
  char *tls_psk;
  char *tls_username;
  char *tls_certificates;
  bool insecure;
  bool compress;                /* replica-compress=lz4 */
  enum link_mode mode;
  enum link_sync_policy policy;
  uint64_t sync_timeout_ms;
  enum link_initial_sync initial_sync; /* replica-initial-sync */
  unsigned sync_shift;          /* replica-sync-block-size = 1 << this */
#define REPL_SYNC_MAX_SHIFT 20    /* 1M: a block fits one record */
  uint64_t resync_rate;         /* replica-resync-rate, bytes/s; 0: none */
  char *bind;                   /* replica-bind: local address, or NULL */
  bool log_full_wait;           /* replica-log-full=wait (else bitmap) */
};
extern struct repl_config repl_cfg;

/* Returns 0 if the key was taken, -1 on a bad value (error reported),
 * 1 if the key is not a replication key.
 */
extern int repl_config_key (const char *key, const char *value);
extern int repl_config_complete (unsigned role_key);
#define repl_config_help \
  "replica-mode=sync|async   Reply after the peer's log too (default: sync).\n" \
  "replica-peer=<URI>        The secondary (nbds://host:port/, nbds+unix://...).\n" \
  "replica-tls-psk=<FILE>    PSK keys file for the peer.\n" \
  "replica-tls-username=<NAME>  PSK username (default: the URI's user,\n" \
  "                             else the login name).\n" \
  "replica-tls-certificates=<DIR>  x509 directory for the peer.\n" \
  "replica-insecure=yes      Allow a plaintext nbd:// peer.\n" \
  "replica-compress=lz4|none Compress records on the link (default: none).\n" \
  "replica-sync-timeout=<SECONDS>  Sync wait before degrading (default: 10).\n" \
  "replica-sync-policy=degrade|wait  When the peer cannot ack in sync mode.\n" \
  "replica-replicator=<PATH>|external  The replicator to start.\n" \
  "replica-initial-sync=checksum|full|none  How a new peer is synced.\n" \
  "replica-sync-block-size=<SIZE>  Block compared by sums (default: 4K).\n" \
  "replica-resync-rate=<RATE>  Cap on resent bytes/s (default: none).\n" \
  "replica-bind=<ADDR>       Local address of the replication link.\n" \
  "replica-log-full=bitmap|wait  Peer away, log full (default: bitmap)."

/* Is this a primary with a peer (replica-peer or an external
 * replicator)?  Then the log's tail is held at the peer's
 * acknowledgement.
 */
extern bool repl_active (void);
extern bool repl_keeps_tail (void);

/* Before recovery: the peer holds everything up to the checkpoint. */
extern int repl_init (uint64_t seq, uint64_t epoch, uint64_t lsn);
/* After recovery: a primary without a peer whose volume has been
 * replicated tracks its writes in the dirty bitmap from here.
 */
extern int repl_standalone_begin (void);
/* Recovery replayed a record the peer may not have. */
extern void repl_recovered (uint64_t seq, uint64_t epoch, uint64_t lsn_end,
                            uint64_t offset, uint32_t length);
/* Recovery moved the log's end (where new records go) to lsn, past the
 * last record: over a torn tail that record absorbed (bridge_gap), or
 * the checkpoint's position over unreadable bytes.
 */
extern void repl_log_end_moved (uint64_t lsn);
extern int repl_start (struct replica *r);
extern void repl_stop (void);

/* journal_notify_fn for the primary's journal. */
extern void repl_journal_notify (void *opaque, enum journal_event ev,
                                 uint64_t seq, uint64_t epoch, uint64_t lsn,
                                 size_t nrecs);
/* Sync mode: wait until the reply for record seq may be sent.  Returns
 * 0, or -1 with *err when nbdkit is shutting down.
 */
extern int repl_wait_acked (uint64_t seq, int *err);
/* Never checkpoint past what the peer acknowledged. */
extern void repl_clamp_checkpoint (uint64_t *seq, uint64_t *epoch,
                                   uint64_t *lsn);

/* For the sync engine (repl.c). */
extern int repl_sums_request (uint64_t off, uint32_t nblocks, unsigned shift,
                              uint64_t id);
extern uint64_t repl_acked_seq (void);
extern bool repl_shipping (void);
extern void repl_kick_acked (void);
extern int repl_wait_peer_caught_up (unsigned timeout_s);

/* sync.c: initial sync, resync and verify of a primary's peer. */
struct chan_msg;
extern uint64_t now_ns (void);                  /* CLOCK_MONOTONIC */
extern int sync_start (void);
extern void sync_stop (void);
extern void sync_start_pass (bool initial, bool full, bool bitmap,
                             uint64_t base, const char *why);
extern void sync_link_lost (void);
extern bool sync_acked (uint64_t seq);
extern bool sync_peer_consistent (void);
extern void sync_sums (const struct chan_msg *m);
/* Around every change to a primary's volume (a client's write, zero or
 * trim), range lock held: the walk may re-send what it read before
 * unless a change began meanwhile, and a resync yields while they come.
 */
extern void sync_change_begin (void);
extern void sync_change_end (void);
extern int sync_verify (bool repair, const char **why);
extern void sync_status (json_object *o);

/* control.c */
extern void add_u64 (json_object *o, const char *k, uint64_t v);
extern void repl_attach (int fd);  /* takes the fd */
extern int repl_set_mode (const char *mode, const char **why);
extern void repl_status (json_object *o, uint64_t head_seq);

/* spawn.c */
extern int spawn_start (struct replica *r);
extern void spawn_stop (void);

/* secondary.c */
struct conn;
extern void secondary_init (uint64_t seq, uint64_t epoch);
extern int secondary_open (struct conn *c);
extern int secondary_pread (struct conn *c, void *buf, uint32_t count,
                            uint64_t offset, int *err);
extern int secondary_pwrite (nbdkit_next *next, struct conn *c,
                             const void *buf, uint32_t count,
                             uint64_t offset, int *err);
/* Promote: refuse new batches, wait for those journaled to be applied. */
extern void secondary_close (struct conn *c);
extern void secondary_quiesce (void);
extern void secondary_unquiesce (void);
extern void secondary_status (json_object *o);
extern void secondary_clamp_checkpoint (uint64_t *seq, uint64_t *epoch,
                                        uint64_t *lsn);
struct rlog_sb;
extern int secondary_promote_prepare (void);
extern bool secondary_promote_fixup (struct rlog_sb *sb);
extern void secondary_promoted (const struct rlog_sb *sb, bool rolled_back);

/* bitmap.c: a primary's dirty bitmap. */
extern int bitmap_start (void);
extern void bitmap_stop (void);
extern bool bitmap_tracking (void);
extern void bitmap_mark (uint64_t off, uint64_t len);
extern bool bitmap_any (uint64_t off, uint64_t len);
extern uint64_t bitmap_dirty_bytes (void);
extern int bitmap_flush (void);
extern int bitmap_begin_tracking (void);
extern bool bitmap_knows_peer (uint64_t seq, uint64_t epoch);
extern int bitmap_cover (uint64_t seq, uint64_t epoch, uint64_t lsn,
                         uint64_t upto, uint64_t upto_epoch,
                         const char *why);
extern void bitmap_end (void);

/* volread.c: read the volume, zeroing what the plugin says reads as
 * zero instead of reading it; ask the plugin to read ahead.
 */
extern int volume_read (void *buf, uint64_t len, uint64_t off, int *err);
/* ... or 1 with buf untouched: the whole range reads as zero. */
extern int volume_read_unless_zero (void *buf, uint64_t len, uint64_t off,
                                    int *err);
extern void volume_prefetch (uint64_t len, uint64_t off);

/* sums.c: the secondary's block sums (a read of the sums region). */
extern int sums_pread (void *buf, uint32_t count, uint64_t offset, int *err);

#endif /* REPLICA_REPL_H */
