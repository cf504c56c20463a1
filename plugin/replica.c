/* nbd-replica: the "replica" nbdkit filter: callbacks, data path (its
 * keys and the log's opening: startup.c).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * Every pwrite, zero and trim is appended durably to the sequenced log
 * (common/journal.c), then applied to the backing, then replied to.
 * Capabilities offered (docs/design.md "Capabilities"):
 *  - FUA: native.  Every reply already follows a durable log append, so
 *    FUA costs nothing more; the backing is written without FUA.
 *  - flush: always.  A client flush appends a FLUSH barrier record and
 *    returns once it is durable: the log already holds every write that
 *    was replied to; the backing is flushed by checkpoints.
 *  - multi-conn, trim, zero, extents, cache: the plugin's own answer.
 *  - fast zero: not offered (a journaled zero is never "fast").
 */
#include <stdio.h>
#include <stdlib.h>
#include <stdarg.h>
#include <string.h>
#include <errno.h>
#include <inttypes.h>
#include <unistd.h>

#include <nbdkit-filter.h>

#include "replica.h"
#include "conns.h"
#include "link.h"
#include "repl.h"
#include "wire.h"

NBDKIT_DLL_PUBLIC int replica_debug_verbose = 0; /* -D replica.verbose=1 */

struct replica rep = { .log_size = -1, .control_fd = -1 };

static int
replica_get_ready (int thread_model)
{
  conns_init (thread_model);
  pthread_mutex_init (&rep.state_lock, NULL);
  {
    /* Timed waits on it measure CLOCK_MONOTONIC (checkpoint.c): a step
     * of the wall clock must not stop checkpoints for its length.
     */
    pthread_condattr_t a;
    pthread_condattr_init (&a);
    pthread_condattr_setclock (&a, CLOCK_MONOTONIC);
    pthread_cond_init (&rep.ckpt_cond, &a);
    pthread_condattr_destroy (&a);
  }
  pthread_mutex_init (&rep.ckpt_lock, NULL);
  rangelock_init (&rep.ranges);
  if (replica_open_log () == -1)
    return -1;
  return control_bind (&rep);
}

void
replica_fail (struct replica *r, int err, const char *fmt, ...)
{
  va_list ap;
  bool first;

  pthread_mutex_lock (&r->state_lock);
  first = r->state != VOL_FAILED;
  if (first) {
    va_start (ap, fmt);
    vsnprintf (r->fault, sizeof r->fault, fmt, ap);
    va_end (ap);
    __atomic_store_n (&r->state, VOL_FAILED, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock (&r->state_lock);
  if (first) {
    nbdkit_error ("replica: volume failed, all further I/O returns EIO "
                  "until restart: %s", r->fault);
    /* Writers queued or waiting for log space fail now (their records
     * have no seq yet: nothing of them was written).
     */
    if (r->journal_up)
      journal_abort (&r->journal);
  }
}

/* The journal could not contain a failed append (journal.c
 * recover_from_failure): its records may still be replayed, so its
 * writers must get no reply at all.  Exit as a crash would; the next
 * start replays whatever the log holds.
 */
static void
replica_fatal (void *opaque, const char *why)
{
  nbdkit_error ("replica: %s: exiting without replying to the writes "
                "concerned (their outcome is decided by replay at the "
                "next start)", why);
  _exit (EXIT_FAILURE);
}

/* After recovery.  A primary continues with its own seqs after the
 * reservation; with a peer it keeps the unacknowledged tail and reports
 * written batches to the replicator.  A secondary follows the seqs of
 * the records it receives, from the last one it holds.
 */
static int
start_journal (void)
{
  bool secondary = rep.role == RLOG_ROLE_SECONDARY;

  if (journal_start (&rep.journal, rep.log, NULL,
                     secondary ? rep.recovered_seq : rep.log->sb.seq_reserved,
                     rep.recovered_lsn, checkpoint_kick, &rep) == -1) {
    nbdkit_error ("replica: starting the log writer: %m");
    return -1;
  }
  rep.journal.fatal = replica_fatal;
  journal_set_last (&rep.journal, rep.recovered_seq, rep.recovered_epoch);
  if (secondary) {
    journal_follow (&rep.journal, rep.recovered_epoch);
    secondary_init (rep.recovered_seq, rep.recovered_epoch);
  }
  else if (repl_keeps_tail ()) {
    journal_keep_tail (&rep.journal, rep.log->sb.checkpoint_lsn);
    if (repl_active ())
      rep.journal.notify = repl_journal_notify;
  }
  return 0;
}

/* Learn the backing's size and capabilities through our own context,
 * check it against the log, replay, then start the threads.
 */
static int
replica_after_fork (nbdkit_backend *backend)
{
  struct rlog_sb sb;
  int64_t size;
  int r;

  rep.ctx = nbdkit_next_context_open (backend, 0, "", 1);
  if (!rep.ctx) {
    nbdkit_error ("replica: cannot open the plugin");
    return -1;
  }
  if (rep.ctx->prepare (rep.ctx) == -1)
    return -1;
  size = rep.ctx->get_size (rep.ctx);
  rep.can_write = rep.ctx->can_write (rep.ctx);
  rep.can_flush = rep.ctx->can_flush (rep.ctx);
  rep.can_zero = rep.ctx->can_zero (rep.ctx);
  /* nbdkit asserts that can_* were asked before the first request. */
  if (size == -1 || rep.can_write == -1 || rep.can_flush == -1 ||
      rep.can_zero == -1 || rep.ctx->can_trim (rep.ctx) == -1 ||
      rep.ctx->can_fua (rep.ctx) == -1 ||
      rep.ctx->can_fast_zero (rep.ctx) == -1 ||
      rep.ctx->can_extents (rep.ctx) == -1 ||
      rep.ctx->can_cache (rep.ctx) == -1 ||
      rep.ctx->can_multi_conn (rep.ctx) == -1)
    return -1;
  /* A sync pass reads the peer's sums of blocks of this size. */
  if ((uint64_t) size > WIRE_SUMS_MAX_VOLUME (repl_cfg.sync_shift)) {
    nbdkit_error ("replica-sync-block-size: blocks of %u bytes cover "
                  "volumes of up to %" PRIu64 " TiB, and this one is %"
                  PRIi64 " bytes: use a larger block size",
                  1u << repl_cfg.sync_shift,
                  WIRE_SUMS_MAX_VOLUME (repl_cfg.sync_shift) >> 40, size);
    return -1;
  }

  pthread_mutex_lock (&rep.log->sb_lock);
  sb = rep.log->sb;
  r = 0;
  if (sb.backing_size == 0) {
    sb.backing_size = size;
    r = rlog_sb_write_locked (rep.log, &sb);
  }
  pthread_mutex_unlock (&rep.log->sb_lock);
  if (r == -1) {
    nbdkit_error ("replica-log: writing the superblock of %s: %m",
                  rep.log_path);
    return -1;
  }
  if (sb.backing_size != (uint64_t) size) {
    nbdkit_error ("replica-log: %s was recorded for a backing of %" PRIu64
                  " bytes, but the plugin's size is %" PRIi64
                  " bytes (wrong log for this disk?)",
                  rep.log_path, sb.backing_size, size);
    return -1;
  }

  /* The peer holds at least what was checkpointed. */
  if (repl_init (rep.log->sb.checkpoint_seq, rep.log->sb.checkpoint_epoch,
                 rep.log->sb.checkpoint_lsn) == -1)
    return -1;
  /* Status is served during a long replay already (state recovering). */
  if (control_start (&rep) == -1 || replica_recover (&rep) == -1)
    return -1;
  if (repl_standalone_begin () == -1 || start_journal () == -1)
    return -1;
  __atomic_store_n (&rep.journal_up, true, __ATOMIC_RELEASE);
  __atomic_store_n (&rep.state, VOL_STANDALONE, __ATOMIC_RELEASE);
  /* Without multi-conn, a flush through our own context need not
   * cover writes made through the clients' contexts: checkpoints (and
   * each connection's close) flush those too.
   */
  rep.all_conns = rep.ctx->can_multi_conn (rep.ctx) == 0;
  if (checkpoint_start (&rep) == -1)
    return -1;
  if (repl_active () && repl_start (&rep) == -1)
    return -1;
  return 0;
}

static void
replica_cleanup (nbdkit_backend *backend)
{
  repl_stop ();
  control_stop (&rep);
  checkpoint_stop (&rep);
  if (rep.journal_up) {
    uint64_t seq, epoch, lsn;

    journal_stop (&rep.journal);
    /* Orderly shutdown: checkpoint everything applied, so the next
     * start has nothing to replay.  (Not needed for safety: SIGKILL
     * skips this and replay covers it.)
     */
    journal_checkpoint_point (&rep.journal, &seq, &epoch, &lsn);
    repl_clamp_checkpoint (&seq, &epoch, &lsn);
    if (rep.state != VOL_FAILED && lsn != rep.log->sb.checkpoint_lsn)
      checkpoint_now (&rep, seq, epoch, lsn);
  }
  bitmap_stop ();               /* after the last checkpoint's flush */
  if (rep.ctx) {
    rep.ctx->finalize (rep.ctx);
    nbdkit_next_context_close (rep.ctx);
  }
  rlog_close (rep.log);
  free (rep.log_path);
  free (rep.control_path);
}

/* On every request: a lock-free read (state is only ever set under
 * state_lock, and FAILED is final until restart).
 */
static bool
volume_failed (int *err)
{
  if (__atomic_load_n (&rep.state, __ATOMIC_ACQUIRE) == VOL_FAILED) {
    *err = EIO;
    return true;
  }
  return false;
}

/* Append a unit durably, apply it, release its records.  If the backing
 * fails after the records are durable, the write is NOT reported as
 * failed (replay will apply it): the volume is failed instead, and the
 * records stay in flight so the checkpoint never passes them.
 */
static int
append_and_apply (nbdkit_next *next, struct junit *u, int *err)
{
  if (journal_append (&rep.journal, u) == -1) {
    *err = errno;
    nbdkit_debug ("replica: log append failed: %m");
    if (journal_fenced (&rep.journal))
      replica_fail (&rep, EIO, "the log device failed and the failed "
                    "append could not be invalidated: the log is fenced");
    return -1;
  }
  /* Durable; before the apply, hence before any checkpoint passes it:
   * the dirty bitmap, if the log no longer keeps the peer's backlog.
   */
  for (size_t i = 0; i < u->n; ++i)
    bitmap_mark (u->entries[i].offset, u->entries[i].length);
  for (size_t i = 0; i < u->n; ++i) {
    struct jentry *e = &u->entries[i];
    int berr = 0;

    int ar;

    plugin_call_begin ();
    ar = replica_apply (next, e->op, e->flags, e->payload, e->length,
                        e->offset, &berr);
    plugin_call_end ();
    if (ar == -1) {
      pthread_mutex_lock (&rep.state_lock);
      rep.backing_errors++;
      pthread_mutex_unlock (&rep.state_lock);
      replica_fail (&rep, berr, "backing %s failed at offset %" PRIu64
                    " (seq %" PRIu64 "): %s; the record is kept in the log "
                    "and is replayed at the next start",
                    rlog_op_name (e->op), e->offset, e->rec.seq,
                    strerror (berr));
      return 1;                 /* pinned: caller must not free u */
    }
    journal_complete (&rep.journal, e);
  }
  return 0;
}

static bool
is_secondary (int *err)
{
  if (__atomic_load_n (&rep.role, __ATOMIC_ACQUIRE) == RLOG_ROLE_SECONDARY) {
    *err = EROFS;
    return true;
  }
  return false;
}

static int
journaled_op (nbdkit_next *next, struct conn *c, uint8_t op, const void *buf,
              uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  uint32_t chunk = op == RLOG_OP_WRITE ? RLOG_MAX_PAYLOAD : count;
  size_t n = op == RLOG_OP_WRITE ? (count + chunk - 1) / chunk : 1;
  uint64_t max_unit = journal_max_unit_bytes (&rep.journal);
  struct jentry *ents;
  struct range range;
  size_t i, done = 0;
  uint64_t last_seq = 0;
  int ret = 0;

  if (volume_failed (err) || is_secondary (err))
    return -1;
  if (count == 0)
    return 0;
  ents = calloc (n, sizeof *ents);
  if (!ents) {
    *err = ENOMEM;
    return -1;
  }
  for (i = 0; i < n; ++i) {
    struct jentry *e = &ents[i];
    e->op = op;
    e->offset = offset + (uint64_t) i * chunk;
    e->length = i + 1 < n ? chunk : count - i * chunk;
    e->flags = ((flags & NBDKIT_FLAG_FUA) ? RLOG_FLAG_FUA : 0) |
      ((flags & NBDKIT_FLAG_MAY_TRIM) ? RLOG_FLAG_MAY_TRIM : 0);
    if (op == RLOG_OP_WRITE) {
      e->payload = (const char *) buf + (uint64_t) i * chunk;
      e->payload_crc = rlog_payload_crc (e->payload, e->length);
    }
  }

  /* Before the first apply: checkpoints now flush this context too. */
  __atomic_store_n (&c->wrote, true, __ATOMIC_RELEASE);
  rangelock_acquire (&rep.ranges, &range, offset, count);
  /* The volume changes from here on (and a resync yields to busy
   * clients: it counts these).
   */
  sync_change_begin ();
  /* Units of at most a quarter of the ring, so a request larger than
   * the log still makes progress (each unit is applied, hence freeable,
   * before the next is appended).
   */
  while (done < n && ret == 0) {
    /* (A request is several units only with a log under 256M.  If the
     * backing fails in one that is not the last, the rest is never
     * journaled, so the request must be reported failed: NBD leaves
     * the range unspecified then, and replay applies the first part.)
     */
    struct junit u = { .entries = &ents[done] };
    uint64_t bytes = 0;

    while (done + u.n < n) {
      const struct jentry *e = &ents[done + u.n];
      uint32_t sz = rlog_rec_size (e->op == RLOG_OP_WRITE ? e->length : 0);
      if (u.n > 0 && bytes + sz > max_unit)
        break;
      bytes += sz;
      u.n++;
    }
    ret = append_and_apply (next, &u, err);
    done += u.n;
    if (ret >= 0)               /* the unit's records are durable */
      last_seq = ents[done - 1].rec.seq;
  }
  sync_change_end ();
  rangelock_release (&rep.ranges, &range);
  /* Sync mode: the reply waits for the peer's log too (its round trip
   * started before our own log sync: repl_journal_notify); so does the
   * success reported for a write whose backing failed after its
   * records were durable.
   */
  if (ret == 1 && done < n) {   /* durable, backing failed: see above */
    *err = EIO;
    return -1;                  /* (ents stay pinned in flight) */
  }
  if (ret >= 0 && repl_wait_acked (last_seq, err) == -1) {
    if (ret == 1)
      return -1;
    ret = -1;
  }
  if (ret == 1)                 /* acknowledged: replay applies it */
    return 0;
  free (ents);
  return ret;
}

/* The replication export (secondary.c) answers only the requests of
 * its protocol.
 */
static bool
is_repl (void *handle, int *err)
{
  if (((struct conn *) handle)->repl) {
    *err = EINVAL;
    return true;
  }
  return false;
}

static int
replica_pwrite (nbdkit_next *next, void *handle, const void *buf,
                uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  if (((struct conn *) handle)->repl)
    return volume_failed (err) ? -1
      : secondary_pwrite (next, handle, buf, count, offset, err);
  if (replica_debug_verbose)
    nbdkit_debug ("pwrite: offset %" PRIu64 " count %" PRIu32, offset, count);
  return journaled_op (next, handle, RLOG_OP_WRITE, buf, count, offset,
                       flags, err);
}

static int
replica_zero (nbdkit_next *next, void *handle, uint32_t count,
              uint64_t offset, uint32_t flags, int *err)
{
  if (is_repl (handle, err))
    return -1;
  return journaled_op (next, handle, RLOG_OP_ZERO, NULL, count, offset,
                       flags, err);
}

static int
replica_trim (nbdkit_next *next, void *handle, uint32_t count,
              uint64_t offset, uint32_t flags, int *err)
{
  if (is_repl (handle, err))
    return -1;
  return journaled_op (next, handle, RLOG_OP_TRIM, NULL, count, offset,
                       flags, err);
}

static int
replica_flush (nbdkit_next *next, void *handle, uint32_t flags, int *err)
{
  struct jentry e = { .op = RLOG_OP_FLUSH };
  struct junit u = { .entries = &e, .n = 1 };

  if (volume_failed (err))
    return -1;
  if (__atomic_load_n (&rep.role, __ATOMIC_ACQUIRE) == RLOG_ROLE_SECONDARY)
    return 0;                   /* read-only: nothing to make durable */
  if (journal_append (&rep.journal, &u) == -1) {
    *err = errno;
    return -1;
  }
  journal_complete (&rep.journal, &e);
  /* Sync mode: what the flush covers must be on the peer too.  A write
   * replied to in sync mode already is; one replied to in async mode
   * (before set-mode sync) may not be.  So wait for the record before
   * ours (our FLUSH itself carries nothing), by the rules writes wait
   * by (async, degraded: no wait).
   */
  return repl_wait_acked (e.prev_seq, err);
}

static int
replica_pread (nbdkit_next *next, void *handle, void *buf, uint32_t count,
               uint64_t offset, uint32_t flags, int *err)
{
  int r;

  if (volume_failed (err))
    return -1;
  if (((struct conn *) handle)->repl)
    return secondary_pread (handle, buf, count, offset, err);
  plugin_call_begin ();
  r = next->pread (next, buf, count, offset, flags, err);
  plugin_call_end ();
  return r;
}

static int
replica_extents (nbdkit_next *next, void *handle, uint32_t count,
                 uint64_t offset, uint32_t flags,
                 struct nbdkit_extents *extents, int *err)
{
  int r;

  if (volume_failed (err) || is_repl (handle, err))
    return -1;
  plugin_call_begin ();
  r = next->extents (next, count, offset, flags, extents, err);
  plugin_call_end ();
  return r;
}

/* One volume, one log: the log's records name no export, and replay,
 * checkpoints and the secondary all use the plugin's default export.
 * So that is the only export served (a client asking for another
 * would have its writes replayed or replicated onto the default one).
 */
static int
replica_list_exports (nbdkit_next_list_exports *next, nbdkit_backend *nxdata,
                      int readonly, int is_tls,
                      struct nbdkit_exports *exports)
{
  return nbdkit_add_export (exports, "", NULL);
}

static const char *
replica_default_export (nbdkit_next_default_export *next,
                        nbdkit_backend *nxdata, int readonly, int is_tls)
{
  return "";
}

/* Per connection: its plugin context, for checkpoints (conns.c). */
static void *
replica_open (nbdkit_next_open *next, nbdkit_context *context,
              int readonly, const char *exportname, int is_tls)
{
  bool repl = strcmp (exportname, WIRE_EXPORT_NAME) == 0;
  struct conn *c;
  int r;

  /* The pair secret travels in an ADOPT and batches carry no MAC: the
   * replication export is TLS only (nbdkit --tls=on also lets
   * plaintext clients in), unless replica-insecure=yes says otherwise.
   */
  if (repl && !is_tls && !repl_cfg.insecure) {
    nbdkit_error ("replica: the replication export refused a plaintext "
                  "connection (serve it with --tls=require, or give the "
                  "secondary replica-insecure=yes)");
    return NULL;
  }
  if (!repl && exportname[0] != '\0') {
    nbdkit_error ("replica: export \"%s\" refused: the filter serves only "
                  "the default export (\"\"), the volume its log records",
                  exportname);
    return NULL;
  }

  /* The replication export writes through to the plugin's default
   * export (the volume).
   */
  /* (Under the plugin-call lock, as the plugin's other calls: a
   * plugin that is not parallel never sees a checkpoint's flush at the
   * same time.  Calls nbdkit makes without us in between, such as
   * its .prepare, .finalize and .close, cannot be ordered so: design
   * 7.)
   */
  plugin_call_begin ();
  r = next (context, repl ? 0 : readonly, repl ? "" : exportname);
  plugin_call_end ();
  if (r == -1)
    return NULL;
  c = calloc (1, sizeof *c);
  if (!c) {
    nbdkit_error ("calloc: %m");
    return NULL;
  }
  if (repl && secondary_open (c) == -1) {
    free (c);
    return NULL;
  }
  return c;
}

/* nbdkit skips .finalize when a handshake fails after .prepare: make
 * sure the connection is off the list before it is freed.
 */
static void
replica_close (void *handle)
{
  secondary_close (handle);
  conns_remove (handle);
  free (handle);
}

static int
replica_prepare (nbdkit_next *next, void *handle, int readonly)
{
  struct conn *c = handle;
  int r;

  /* Asked once, here: if the plugin cannot say, checkpoints and
   * .finalize could not tell "nothing to flush" from "flush unknown",
   * so the connection fails before it writes anything.
   */
  plugin_call_begin ();
  r = next->can_flush (next);
  plugin_call_end ();
  if (r == -1) {
    nbdkit_error ("replica: the plugin cannot say whether it can flush "
                  "this connection's writes: refusing the connection");
    return -1;
  }
  c->can_flush = r > 0;
  conns_add (c, next);
  return 0;
}

static void
final_flush_failed (int err)
{
  replica_fail (&rep, err, "flushing a closing connection's plugin "
                "context failed: %s", strerror (err));
}

static int
replica_finalize (nbdkit_next *next, void *handle)
{
  struct conn *c = handle;

  /* Writes applied through this context must be stable before a
   * checkpoint passes them: flush while the connection is still on the
   * list (a checkpoint running meanwhile flushes it too, and sees the
   * volume failed if this flush fails: conns_final_flush), and only
   * then leave it.
   */
  if (rep.all_conns && __atomic_load_n (&c->wrote, __ATOMIC_ACQUIRE) &&
      c->can_flush)
    conns_final_flush (next, final_flush_failed);
  conns_remove (c);
  return 0;
}

/* A plugin's can_* answer, under the plugin-call lock (conns.h). */
static int
plugin_can (int (*can) (nbdkit_next *), nbdkit_next *next)
{
  int r;

  plugin_call_begin ();
  r = can (next);
  plugin_call_end ();
  return r;
}

/* A secondary serves its volume read-only to ordinary clients (nbdkit
 * then refuses writes with EPERM).  A connection opened after promote
 * is writable.
 */
static int
replica_can_write (nbdkit_next *next, void *handle)
{
  if (((struct conn *) handle)->repl)
    return 1;
  if (__atomic_load_n (&rep.role, __ATOMIC_ACQUIRE) == RLOG_ROLE_SECONDARY)
    return 0;
  return plugin_can (next->can_write, next);
}

/* Why promote is refused now, or NULL. */
static const char *
promote_refusal (struct replica *r, bool force)
{
  struct rlog_sb sb;

  pthread_mutex_lock (&r->log->sb_lock);
  sb = r->log->sb;
  pthread_mutex_unlock (&r->log->sb_lock);
  return link_promote_check (sb.role, sb.flags & RLOG_SB_OUTDATED,
                             sb.flags & RLOG_SB_RESYNC, force);
}

/* Promote a secondary (replicactl promote): every journaled record is
 * already applied (replay at start, and a secondary takes no writes),
 * so this is the role change in the superblock, durably, then in
 * memory.
 */
int
replica_promote (struct replica *r, bool force, const char **why)
{
  struct rlog_sb sb;
  bool rolled_back;
  int ret = 0;

  switch (__atomic_load_n (&r->state, __ATOMIC_ACQUIRE)) {
  case VOL_STANDALONE:
    break;
  case VOL_RECOVERING:
    /* The journal is not started and records wait to be replayed. */
    *why = "the log is still being replayed (state recovering): promote "
      "once the node serves";
    return -1;
  default:
    *why = "the volume failed";
    return -1;
  }
  if ((*why = promote_refusal (r, force)) != NULL)
    return -1;
  /* No batch is accepted from now on; those journaled are committed. */
  secondary_quiesce ();
  if (__atomic_load_n (&r->state, __ATOMIC_ACQUIRE) == VOL_FAILED) {
    *why = "the volume failed";
    return -1;
  }
  pthread_mutex_lock (&r->ckpt_lock);
  if (secondary_promote_prepare () == -1) {
    pthread_mutex_unlock (&r->ckpt_lock);
    *why = "flushing the volume failed";
    return -1;
  }
  pthread_mutex_lock (&r->log->sb_lock);
  sb = r->log->sb;
  /* Again, under the lock held until the role changes: a TELL OUTDATED
   * may have been recorded while the queue drained (set_outdated
   * refuses one once we are primary).  A refusal undoes the quiesce.
   */
  *why = link_promote_check (sb.role, sb.flags & RLOG_SB_OUTDATED,
                             sb.flags & RLOG_SB_RESYNC, force);
  if (*why) {
    pthread_mutex_unlock (&r->log->sb_lock);
    pthread_mutex_unlock (&r->ckpt_lock);
    secondary_unquiesce ();
    return -1;
  }
  sb.role = RLOG_ROLE_PRIMARY;
  /* A primary's flags left by an older demote mean nothing here. */
  sb.flags &= ~(RLOG_SB_OUTDATED | RLOG_SB_BITMAP | RLOG_SB_REPLICATED);
  rolled_back = secondary_promote_fixup (&sb);
  sb.epoch++;                   /* our own records from now on */
  ret = rlog_sb_write_locked (r->log, &sb);
  if (ret == -1)
    *why = "writing the superblock failed";
  else {
    secondary_promoted (&sb, rolled_back);
    journal_lead (&r->journal, sb.epoch);
    __atomic_store_n (&r->role, RLOG_ROLE_PRIMARY, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock (&r->log->sb_lock);
  pthread_mutex_unlock (&r->ckpt_lock);
  if (*why) {
    secondary_unquiesce ();     /* still a secondary: take batches again */
    return -1;
  }
  nbdkit_debug ("replica: promoted to primary");
  return 0;
}

static int
replica_cache (nbdkit_next *next, void *handle, uint32_t count,
               uint64_t offset, uint32_t flags, int *err)
{
  int r;

  if (volume_failed (err) || is_repl (handle, err))
    return -1;
  plugin_call_begin ();
  r = next->cache (next, count, offset, flags, err);
  plugin_call_end ();
  return r;
}

static int64_t
replica_get_size (nbdkit_next *next, void *handle)
{
  int64_t r;

  if (((struct conn *) handle)->repl)
    return WIRE_EXPORT_SIZE;
  plugin_call_begin ();
  r = next->get_size (next);
  plugin_call_end ();
  return r;
}

/* What the replication export does not offer. */
#define NOT_ON_REPL(name)                                     \
  static int                                                  \
  replica_##name (nbdkit_next *next, void *handle)            \
  {                                                           \
    if (((struct conn *) handle)->repl)                       \
      return 0;                                               \
    return plugin_can (next->name, next);                     \
  }
NOT_ON_REPL (can_zero)
NOT_ON_REPL (can_trim)
NOT_ON_REPL (can_extents)
NOT_ON_REPL (can_cache)
NOT_ON_REPL (can_multi_conn)

/* Passed through, under the plugin-call lock like the rest. */
static int
replica_is_rotational (nbdkit_next *next, void *handle)
{
  return plugin_can (next->is_rotational, next);
}

/* The plugin's I/O size rules are for clients.  The replication
 * connection never reaches the plugin (the filter answers it: HELLO,
 * batches, sums reads of 16 bytes a block), and libnbd enforces a
 * server's minimum on its own side: passing the plugin's on would make
 * the replicator's requests fail there, and the link never come up.
 */
static int
replica_block_size (nbdkit_next *next, void *handle, uint32_t *minimum,
                    uint32_t *preferred, uint32_t *maximum)
{
  int r;

  if (((struct conn *) handle)->repl) {
    *minimum = *preferred = *maximum = 0;       /* no constraints */
    return 0;
  }
  plugin_call_begin ();
  r = next->block_size (next, minimum, preferred, maximum);
  plugin_call_end ();
  return r;
}

static int
replica_can_fua (nbdkit_next *next, void *handle)
{
  int w = ((struct conn *) handle)->repl ? 0 : replica_can_write (next, handle);

  if (w == -1)
    return -1;
  return w ? NBDKIT_FUA_NATIVE : NBDKIT_FUA_NONE;
}

static int
replica_can_flush (nbdkit_next *next, void *handle)
{
  return 1;
}

static int
replica_can_fast_zero (nbdkit_next *next, void *handle)
{
  return 0;
}

static struct nbdkit_filter filter = {
  .name              = "replica",
  .longname          = "nbd-replica replication filter",
  .config            = replica_config,
  .config_complete   = replica_config_complete,
  .config_help       = replica_config_help,
  .get_ready         = replica_get_ready,
  .after_fork        = replica_after_fork,
  .cleanup           = replica_cleanup,
  .list_exports      = replica_list_exports,
  .default_export    = replica_default_export,
  .open              = replica_open,
  .close             = replica_close,
  .prepare           = replica_prepare,
  .finalize          = replica_finalize,
  .get_size          = replica_get_size,
  .block_size        = replica_block_size,
  .is_rotational     = replica_is_rotational,
  .can_write         = replica_can_write,
  .can_zero          = replica_can_zero,
  .can_trim          = replica_can_trim,
  .can_extents       = replica_can_extents,
  .can_cache         = replica_can_cache,
  .can_multi_conn    = replica_can_multi_conn,
  .can_fua           = replica_can_fua,
  .can_flush         = replica_can_flush,
  .can_fast_zero     = replica_can_fast_zero,
  .pread             = replica_pread,
  .pwrite            = replica_pwrite,
  .zero              = replica_zero,
  .trim              = replica_trim,
  .flush             = replica_flush,
  .extents           = replica_extents,
  .cache             = replica_cache,
};

NBDKIT_REGISTER_FILTER (filter)
