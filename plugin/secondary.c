/* nbd-replica: the secondary's replication export.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * The replicator opens export "replica-replication" (WIRE_EXPORT_NAME)
 * and speaks the protocol of common/wire.h with reads and writes:
 *  - read of HELLO: who we are, what we hold, a fresh nonce;
 *  - write of CONTROL: AUTH (an HMAC of the nonce with the pair secret),
 *    ADOPT (an unpaired log takes the primary's volume and secret),
 *    OUTDATED / UPTODATE; nothing else is accepted before AUTH or ADOPT;
 *  - write of BATCH: records, checked whole (CRCs, continuity, bounds)
 *    before any is used.
 *
 * A batch is queued to our journal in seq order (a batch waits for the
 * one it follows; one that repeats records we hold skips them), made
 * durable (the group commit covers the pipelined batches queued
 * together), then applied to the backing in seq order, and only then
 * is the NBD write replied to: the reply is the primary's proof that
 * the peer holds the records durably (and has applied them).
 */
#include <stdio.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <inttypes.h>
#include <time.h>
#include <sys/random.h>

#include <nbdkit-filter.h>

#include "replica.h"
#include "repl.h"
#include "conns.h"
#include "wire.h"
#include "logfile.h"

#define TURN_TIMEOUT_SEC 30

static struct {
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
  bool quiesced;                    /* promoted: no more batches */
  unsigned sessions;                /* authenticated replication conns */
  uint64_t batches, records, bytes, refused;
  char last_error[256];
} S = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

void
secondary_init (uint64_t seq, uint64_t epoch)
{
  S.enq_seq = S.applied_seq = S.done_seq = seq;
  S.enq_epoch = S.applied_epoch = S.done_epoch = epoch;
}

static int
refuse (int *err, int e, const char *fmt, ...)
  __attribute__ ((format (printf, 3, 4)));

static int
refuse (int *err, int e, const char *fmt, ...)
{
  va_list ap;

  pthread_mutex_lock (&S.lock);
  va_start (ap, fmt);
  vsnprintf (S.last_error, sizeof S.last_error, fmt, ap);
  va_end (ap);
  S.refused++;
  nbdkit_error ("replica: replication: %s", S.last_error);
  pthread_mutex_unlock (&S.lock);
  *err = e;
  return -1;
}

/* Any node serves the replication export's HELLO, so that a primary
 * connecting to another primary learns that it is one (split brain);
 * only a secondary accepts CONTROL and BATCH writes.
 */
int
secondary_open (struct conn *c)
{
  if (getrandom (c->nonce, sizeof c->nonce, 0) != sizeof c->nonce) {
    nbdkit_error ("getrandom: %m");
    return -1;
  }
  c->repl = true;
  return 0;
}

int
secondary_pread (struct conn *c, void *buf, uint32_t count, uint64_t offset,
                 int *err)
{
  struct wire_hello h = { 0 };
  uint8_t msg[WIRE_MSG_SIZE];
  struct rlog_sb sb;

  if (offset >= WIRE_SUMS_BASE) {
    if (!c->authed)
      return refuse (err, EPERM, "sums refused: the reader has not "
                     "authenticated");
    return sums_pread (buf, count, offset, err);
  }
  if (offset != WIRE_HELLO_OFFSET || count != WIRE_MSG_SIZE) {
    *err = EINVAL;
    return -1;
  }
  pthread_mutex_lock (&rep.log->sb_lock);
  sb = rep.log->sb;
  pthread_mutex_unlock (&rep.log->sb_lock);
  memcpy (h.volume_uuid, sb.volume_uuid, 16);
  h.role = sb.role;
  h.flags = ((sb.flags & RLOG_SB_PAIRED) ? WIRE_HELLO_PAIRED : 0) |
    ((sb.flags & RLOG_SB_OUTDATED) ? WIRE_HELLO_OUTDATED : 0) |
    ((sb.flags & RLOG_SB_RESYNC) ? WIRE_HELLO_RESYNC : 0) |
    ((sb.flags & RLOG_SB_STAGING) ? WIRE_HELLO_STAGING : 0);
  h.backing_size = sb.backing_size;
  pthread_mutex_lock (&S.lock);
  h.durable_seq = h.applied_seq = S.applied_seq;
  h.durable_epoch = S.applied_epoch;
  pthread_mutex_unlock (&S.lock);
  memcpy (h.nonce, c->nonce, 16);
  wire_hello_encode (&h, msg);
  memcpy (buf, msg, WIRE_MSG_SIZE);
  return 0;
}

/* Pair with the primary: its volume UUID and secret, and the seq our
 * log continues from, durably before anything else happens.
 */
static int
adopt (struct conn *c, const struct wire_control *ctl, int *err)
{
  struct rlog_sb sb;
  int r;

  pthread_mutex_lock (&rep.log->sb_lock);
  sb = rep.log->sb;
  if (sb.flags & RLOG_SB_PAIRED) {
    pthread_mutex_unlock (&rep.log->sb_lock);
    return refuse (err, EPERM, "adopt refused: this secondary is already "
                   "paired with a volume");
  }
  if (ctl->backing_size != sb.backing_size) {
    pthread_mutex_unlock (&rep.log->sb_lock);
    return refuse (err, EINVAL, "adopt refused: the primary's disk has %"
                   PRIu64 " bytes, ours %" PRIu64, ctl->backing_size,
                   sb.backing_size);
  }
  memcpy (sb.volume_uuid, ctl->volume_uuid, 16);
  memcpy (sb.pair_secret, ctl->secret, RLOG_SECRET_SIZE);
  sb.flags |= RLOG_SB_PAIRED;
  if (sb.seq_reserved < ctl->seq)
    sb.seq_reserved = ctl->seq;
  if (sb.epoch < ctl->epoch)
    sb.epoch = ctl->epoch;
  /* Our log is empty (a secondary appends nothing before it pairs):
   * the checkpoint is where the first record goes, and it now stands
   * for the primary's base point, which a restart must report.
   */
  sb.checkpoint_seq = ctl->seq;
  sb.checkpoint_epoch = ctl->epoch;
  r = rlog_sb_write_locked (rep.log, &sb);
  pthread_mutex_unlock (&rep.log->sb_lock);
  if (r == -1)
    return refuse (err, EIO, "adopt: writing the superblock: %m");
  pthread_mutex_lock (&S.lock);
  S.enq_seq = S.applied_seq = S.done_seq = ctl->seq;
  S.enq_epoch = S.applied_epoch = S.done_epoch = ctl->epoch;
  pthread_mutex_unlock (&S.lock);
  journal_rebase (&rep.journal, ctl->seq, ctl->epoch);
  nbdkit_debug ("replica: paired with the primary's volume; continuing "
                "from seq %" PRIu64, ctl->seq);
  return 0;
}

static int
set_outdated (bool outdated, int *err)
{
  struct rlog_sb sb;
  int r = 0;

  pthread_mutex_lock (&rep.log->sb_lock);
  sb = rep.log->sb;
  if (!!(sb.flags & RLOG_SB_OUTDATED) != outdated) {
    sb.flags ^= RLOG_SB_OUTDATED;
    r = rlog_sb_write_locked (rep.log, &sb);
  }
  pthread_mutex_unlock (&rep.log->sb_lock);
  if (r == -1)
    return refuse (err, EIO, "writing the superblock: %m");
  nbdkit_debug ("replica: the primary says this secondary is %s",
                outdated ? "outdated" : "up to date");
  return 0;
}

/* ---- resync (docs/design.md "The secondary during a resync") ---- */

static int apply_unit (struct junit *u, int *err);

/* Wait (S.lock held) until every queued record is committed, at most
 * TURN_TIMEOUT_SEC: a resync starts from a quiet log.
 */
static bool
wait_committed (void)
{
  struct timespec ts;
  time_t deadline = time (NULL) + TURN_TIMEOUT_SEC;

  while (S.done_seq != S.enq_seq && rep.state != VOL_FAILED &&
         time (NULL) < deadline) {
    clock_gettime (CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    pthread_cond_timedwait (&S.cond, &S.lock, &ts);
  }
  return S.done_seq == S.enq_seq && rep.state != VOL_FAILED;
}

/* The superblock at the start of a resync (ckpt_lock, S.lock and
 * sb_lock held).  Everything journaled is applied and flushed, so the
 * checkpoint moves to the head: the log is empty.  Staged: the disk
 * stays the image of the last applied record, which the checkpoint
 * keeps naming (a restart discards the staged records and reports it);
 * the staged records follow the primary's base.  In place: the disk
 * is marked inconsistent, and the checkpoint names the base, which the
 * records that follow continue.
 */
static void
resync_sb (struct rlog_sb *sb, const struct wire_control *ctl, bool stage,
           uint64_t head)
{
  sb->flags |= RLOG_SB_RESYNC;
  if (stage) {
    if (!(sb->flags & RLOG_SB_STAGING)) {
      sb->checkpoint_seq = S.applied_seq;
      sb->checkpoint_epoch = S.applied_epoch;
    }
    sb->flags |= RLOG_SB_STAGING;
    sb->stage_seq = ctl->seq;
    sb->stage_epoch = ctl->epoch;
  }
  else {
    sb->flags = (sb->flags | RLOG_SB_INCONSISTENT) & ~RLOG_SB_STAGING;
    sb->checkpoint_seq = ctl->seq;
    sb->checkpoint_epoch = ctl->epoch;
  }
  sb->checkpoint_lsn = head;
  if (sb->seq_reserved < ctl->seq)
    sb->seq_reserved = ctl->seq;
  if (sb->epoch < ctl->epoch)
    sb->epoch = ctl->epoch;
}

/* CONTROL RESYNC: the records that follow continue after the primary's
 * base, whatever we hold; the primary's sync pass re-sends every block
 * where our disk differs, then a SYNC_END record.  A staged resync
 * (asked for, and our disk is consistent) keeps the disk's image until
 * then; a resync in place (an initial sync, or a disk already
 * inconsistent) applies as it goes.
 */
static int
resync_begin (const struct wire_control *ctl, int *err)
{
  struct rlog_sb sb;
  uint64_t head;
  bool stage = false;
  int ferr, r;

  /* Wait for the queued records first, without ckpt_lock: a unit still
   * queued may need a checkpoint to free log space.  Then again under
   * it (a batch of an older connection may have queued meanwhile).
   */
  pthread_mutex_lock (&S.lock);
  wait_committed ();
  pthread_mutex_unlock (&S.lock);
  pthread_mutex_lock (&rep.ckpt_lock);
  pthread_mutex_lock (&S.lock);
  if (S.quiesced || S.done_seq != S.enq_seq || rep.state == VOL_FAILED) {
    bool promoted = S.quiesced;
    pthread_mutex_unlock (&S.lock);
    pthread_mutex_unlock (&rep.ckpt_lock);
    return refuse (err, promoted ? EPERM : EIO, "resync refused: %s",
                   promoted ? "this node was promoted"
                   : "records of an older connection are still being "
                   "applied (the primary retries)");
  }
  head = journal_head_lsn (&rep.journal);
  r = conns_flush (rep.ctx, rep.all_conns, &ferr);
  if (r == 0) {
    pthread_mutex_lock (&rep.log->sb_lock);
    sb = rep.log->sb;
    stage = (ctl->flags & WIRE_RESYNC_STAGE) &&
      !(sb.flags & RLOG_SB_INCONSISTENT);
    resync_sb (&sb, ctl, stage, head);
    r = rlog_sb_write_locked (rep.log, &sb);
    ferr = errno;
    pthread_mutex_unlock (&rep.log->sb_lock);
  }
  if (r == -1) {
    pthread_mutex_unlock (&S.lock);
    pthread_mutex_unlock (&rep.ckpt_lock);
    replica_fail (&rep, ferr, "starting a resync: %s", strerror (ferr));
    *err = EIO;
    return -1;
  }
  journal_set_checkpoint (&rep.journal, head);
  journal_rebase (&rep.journal, ctl->seq, ctl->epoch);
  S.enq_seq = S.done_seq = ctl->seq;
  S.enq_epoch = S.done_epoch = ctl->epoch;
  if (!stage) {
    S.applied_seq = ctl->seq;
    S.applied_epoch = ctl->epoch;
  }
  S.staging = stage;
  S.staged_records = 0;
  S.resyncing = true;
  S.resync_base = ctl->seq;
  pthread_mutex_unlock (&S.lock);
  pthread_mutex_unlock (&rep.ckpt_lock);
  nbdkit_debug ("replica: resync from the primary's seq %" PRIu64 " starts "
                "(%s)", ctl->seq, stage ? "staged: the disk keeps its image "
                "until the resync ends" : "in place: the disk is "
                "inconsistent until the resync ends");
  return 0;
}

/* Apply the staged records up to seq upto, reading them back from our
 * log.  First the superblock says the disk is inconsistent (a crash
 * while applying must not let a restart discard half-applied records
 * as a staged set), and its checkpoint names the stage's base, which
 * the staged records continue, so a replay finds them.
 */
static int
apply_staged (uint64_t upto)
{
  struct rlog_scan scan;
  struct rlog_rec rec = { 0 };
  const uint8_t *payload;
  struct rlog_sb sb;
  int r, e = 0;

  pthread_mutex_lock (&rep.ckpt_lock);
  pthread_mutex_lock (&rep.log->sb_lock);
  sb = rep.log->sb;
  sb.flags = (sb.flags | RLOG_SB_INCONSISTENT) & ~RLOG_SB_STAGING;
  sb.checkpoint_seq = sb.stage_seq;
  sb.checkpoint_epoch = sb.stage_epoch;
  r = rlog_sb_write_locked (rep.log, &sb);
  pthread_mutex_unlock (&rep.log->sb_lock);
  /* S.staging stays set until the records are applied: it holds the
   * checkpoint at the stage's start (secondary_clamp_checkpoint), and
   * their space in the ring, meanwhile.
   */
  pthread_mutex_unlock (&rep.ckpt_lock);
  if (r == -1 || rlog_scan_init_at (&scan, rep.log, sb.checkpoint_lsn,
                                    sb.stage_seq, sb.stage_epoch) == -1) {
    replica_fail (&rep, EIO, "applying the staged resync: %m");
    return 1;
  }
  while (e == 0 && (r = rlog_scan_next (&scan, &rec, &payload)) == 1) {
    plugin_call_begin ();
    r = replica_apply (rep.ctx, rec.op, rec.flags, payload, rec.length,
                       rec.offset, &e);
    plugin_call_end ();
    if (r == -1 || rec.seq >= upto)
      break;
  }
  if (e || rec.seq != upto) {
    replica_fail (&rep, EIO, "applying the staged resync stopped before "
                  "seq %" PRIu64 ": %s", upto, e ? strerror (e) : scan.why);
    rlog_scan_free (&scan);
    return 1;
  }
  rlog_scan_free (&scan);
  pthread_mutex_lock (&S.lock);
  S.applied_seq = upto;
  S.applied_epoch = rec.epoch;
  S.staging = false;            /* the checkpoint may pass them now */
  pthread_mutex_unlock (&S.lock);
  nbdkit_debug ("replica: applied the staged resync up to seq %" PRIu64,
                upto);
  return 0;
}

/* The SYNC_END record is applied: the disk is a state of the primary
 * again.
 */
static int
resync_end (uint64_t seq)
{
  struct rlog_sb sb;
  int r;

  pthread_mutex_lock (&rep.log->sb_lock);
  sb = rep.log->sb;
  sb.flags &= ~(RLOG_SB_INCONSISTENT | RLOG_SB_RESYNC | RLOG_SB_STAGING);
  r = rlog_sb_write_locked (rep.log, &sb);
  pthread_mutex_unlock (&rep.log->sb_lock);
  if (r == -1) {
    replica_fail (&rep, EIO, "ending the resync: writing the superblock: "
                  "%m");
    return 1;
  }
  pthread_mutex_lock (&S.lock);
  S.resyncing = false;
  pthread_mutex_unlock (&S.lock);
  nbdkit_debug ("replica: resync complete at the primary's seq %" PRIu64
                ": this secondary is consistent", seq);
  return 0;
}

/* The seq of the current pass's SYNC_END record in the unit, or 0.
 * An older pass's end record (shipped again after a reconnect, from a
 * base before it) names another base: it ends nothing.
 */
static uint64_t
unit_end (const struct junit *u)
{
  uint64_t end = 0;

  pthread_mutex_lock (&S.lock);
  for (size_t i = 0; i < u->n && S.resyncing; ++i)
    if (u->entries[i].op == RLOG_OP_FLUSH &&
        (u->entries[i].flags & RLOG_FLAG_SYNC_END) &&
        u->entries[i].offset == S.resync_base)
      end = u->entries[i].seq;
  pthread_mutex_unlock (&S.lock);
  return end;
}

/* Staged: the unit is durable; it is applied at the resync's end. */
static void
stage_unit (struct junit *u)
{
  for (size_t i = 0; i < u->n; ++i)
    journal_complete (&rep.journal, &u->entries[i]);
  pthread_mutex_lock (&S.lock);
  S.staged_records += u->n;
  pthread_mutex_unlock (&S.lock);
}

/* The unit is committed: the next batch may commit (wait_done). */
static void
publish_done (const struct junit *u)
{
  pthread_mutex_lock (&S.lock);
  S.done_seq = u->entries[u->n - 1].seq;
  S.done_epoch = u->entries[u->n - 1].epoch;
  pthread_cond_broadcast (&S.cond);
  pthread_mutex_unlock (&S.lock);
}

/* Commit a durable unit: apply it, or stage it.  A staged set is
 * applied at the end record, or once it fills half our log (then the
 * resync goes on in place: the limit of staging).  The next batch
 * commits only once this unit's commit is complete, staged set
 * included: its records must reach the disk after the staged ones.
 * Returns 0, or 1 (failed; see apply_unit).
 */
static int
commit_unit (struct junit *u, int *err)
{
  uint64_t end = unit_end (u), last = u->entries[u->n - 1].seq;
  bool staging;
  int r = 0;

  pthread_mutex_lock (&S.lock);
  staging = S.staging;
  pthread_mutex_unlock (&S.lock);
  if (!staging)
    r = apply_unit (u, err);
  else {
    stage_unit (u);
    if (end)
      r = apply_staged (last);
    else if (journal_used_bytes (&rep.journal) > rep.journal.ring_size / 2) {
      nbdkit_error ("replica: the staged resync fills half of the log: "
                    "applying it now; this secondary is inconsistent until "
                    "the resync ends (a larger log keeps it consistent "
                    "through larger resyncs)");
      r = apply_staged (last);
    }
    if (r)
      *err = EIO;
    else
      publish_done (u);
  }
  if (r == 0 && end)
    r = resync_end (end);
  return r;
}

void
secondary_clamp_checkpoint (uint64_t *seq, uint64_t *epoch, uint64_t *lsn)
{
  pthread_mutex_lock (&S.lock);
  if (S.staging) {
    pthread_mutex_lock (&rep.log->sb_lock);
    *seq = rep.log->sb.checkpoint_seq;
    *epoch = rep.log->sb.checkpoint_epoch;
    *lsn = rep.log->sb.checkpoint_lsn;
    pthread_mutex_unlock (&rep.log->sb_lock);
  }
  pthread_mutex_unlock (&S.lock);
}

/* Promote (replica_promote, sb_lock held, quiesced): a staged resync is
 * rolled back (its records skipped: the disk is the image of the last
 * applied record); a resync in place leaves an inconsistent disk, which
 * only --force accepts.  Returns true if the journal must follow
 * (secondary_promoted).
 */
bool
secondary_promote_fixup (struct rlog_sb *sb)
{
  bool rolled_back = false;

  if (sb->flags & RLOG_SB_STAGING) {
    sb->checkpoint_lsn = journal_head_lsn (&rep.journal);
    rolled_back = true;
    nbdkit_error ("replica: promote: the staged resync is rolled back; the "
                  "volume is the image of seq %" PRIu64 " (crash-"
                  "consistent)", sb->checkpoint_seq);
  }
  else if (sb->flags & RLOG_SB_INCONSISTENT)
    nbdkit_error ("replica: promote --force: the resync in place did not "
                  "finish: the volume is NOT consistent");
  sb->flags &= ~(RLOG_SB_STAGING | RLOG_SB_INCONSISTENT | RLOG_SB_RESYNC);
  return rolled_back;
}

/* After the promote's superblock write. */
void
secondary_promoted (const struct rlog_sb *sb, bool rolled_back)
{
  if (!rolled_back)
    return;
  journal_set_checkpoint (&rep.journal, sb->checkpoint_lsn);
  journal_set_last (&rep.journal, sb->checkpoint_seq, sb->checkpoint_epoch);
  pthread_mutex_lock (&S.lock);
  S.staging = false;
  pthread_mutex_unlock (&S.lock);
}

static int
control (struct conn *c, const void *buf, int *err)
{
  struct wire_control ctl;
  enum wire_err e = wire_control_decode (buf, WIRE_MSG_SIZE, &ctl);
  struct rlog_sb sb;

  if (e != WIRE_OK)
    return refuse (err, EINVAL, "bad control message: %s",
                   wire_strerror (e));
  pthread_mutex_lock (&rep.log->sb_lock);
  sb = rep.log->sb;
  pthread_mutex_unlock (&rep.log->sb_lock);
  if (ctl.type == WIRE_CTL_ADOPT && !(sb.flags & RLOG_SB_PAIRED)) {
    if (adopt (c, &ctl, err) == -1)
      return -1;
  }
  else if (!(sb.flags & RLOG_SB_PAIRED) ||
           memcmp (ctl.volume_uuid, sb.volume_uuid, 16) != 0 ||
           !wire_control_mac_ok (&ctl, c->nonce, sb.pair_secret))
    return refuse (err, EPERM, "authentication failed: the writer does not "
                   "hold this volume's pair secret");
  if (!c->authed) {
    c->authed = true;
    pthread_mutex_lock (&S.lock);
    S.sessions++;
    pthread_mutex_unlock (&S.lock);
  }
  if (ctl.type == WIRE_CTL_OUTDATED || ctl.type == WIRE_CTL_UPTODATE)
    return set_outdated (ctl.type == WIRE_CTL_OUTDATED, err);
  if (ctl.type == WIRE_CTL_RESYNC)
    return resync_begin (&ctl, err);
  return 0;
}

void
secondary_close (struct conn *c)
{
  if (c->authed) {
    pthread_mutex_lock (&S.lock);
    S.sessions--;
    pthread_mutex_unlock (&S.lock);
  }
}

/* The records of a batch, collected by the same walk that checks them
 * (wire_batch_unpack): one pass over the payloads for the CRCs.
 */
struct collect {
  const struct wire_batch *b;       /* filled by unpack before the walk */
  struct jentry *ents;
  size_t n;
};

static int
collect_one (void *opaque, const struct rlog_rec *r, const uint8_t *payload)
{
  struct collect *col = opaque;
  struct jentry *e;

  if (!col->ents && !(col->ents = calloc (col->b->count, sizeof *e)))
    return -1;
  e = &col->ents[col->n++];
  e->op = r->op;
  e->flags = r->flags;
  e->offset = r->offset;
  e->length = r->length;
  e->seq = r->seq;
  e->epoch = r->epoch;
  if (r->op == RLOG_OP_WRITE) {
    e->payload = payload;
    e->payload_crc = rlog_payload_crc (payload, r->length);
  }
  return 0;
}

/* Records we hold already (a batch resent after a reconnect) are
 * skipped: returns the index of the first one to keep, or -1 if the
 * batch contradicts what we hold (S.lock held): the record at enq_seq
 * must carry our epoch, and the first kept record must follow
 * (enq_seq, enq_epoch) by the continuity rule of the log.
 */
static ssize_t
first_new (const struct collect *col)
{
  size_t i = 0;

  for (; i < col->n && col->ents[i].seq <= S.enq_seq; ++i)
    if (col->ents[i].seq == S.enq_seq && col->ents[i].epoch != S.enq_epoch)
      return -1;
  if (i < col->n) {
    const struct jentry *e = &col->ents[i];
    if (e->epoch < S.enq_epoch ||
        !(e->seq == S.enq_seq + 1 || e->epoch > S.enq_epoch))
      return -1;
  }
  return i;
}

/* Wait (S.lock held) until *seq reaches want.  Batches stop waiting
 * when the node is promoted (unless applying: what is journaled is
 * applied first) or fails.
 */
static bool
wait_turn (uint64_t *seq, bool applying, uint64_t want)
{
  struct timespec ts;
  time_t deadline = time (NULL) + TURN_TIMEOUT_SEC;

  while (*seq < want && (applying || !S.quiesced) &&
         rep.state != VOL_FAILED && time (NULL) < deadline) {
    clock_gettime (CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    pthread_cond_timedwait (&S.cond, &S.lock, &ts);
  }
  return *seq >= want && rep.state != VOL_FAILED;
}

static int
decode_batch (const uint8_t *buf, uint32_t count, struct wire_batch *b,
              struct collect *col, uint8_t **owned, int *err)
{
  const uint8_t *records;
  char why[256];

  col->b = b;
  if (wire_batch_unpack (buf, count, rep.log->sb.backing_size, b, &records,
                         owned, collect_one, col, why,
                         sizeof why) != WIRE_OK)
    return refuse (err, EINVAL, "%s", why);
  return 0;
}

/* Split the records into units the journal takes (at most a quarter
 * of our ring each: the primary's ring, hence its batches, may be
 * larger than ours).
 */
static size_t
split_units (struct jentry *ents, size_t n, struct junit *units)
{
  uint64_t max = journal_max_unit_bytes (&rep.journal), bytes = 0;
  size_t nu = 0;

  for (size_t i = 0; i < n; ++i) {
    uint32_t sz = rlog_rec_size (ents[i].op == RLOG_OP_WRITE
                                 ? ents[i].length : 0);
    if (nu == 0 || bytes + sz > max) {
      units[nu++] = (struct junit) { .entries = &ents[i] };
      bytes = 0;
    }
    units[nu - 1].n++;
    bytes += sz;
  }
  return nu;
}

/* Apply one durable unit.  Returns 0, or 1: the backing failed after
 * the records were durable; they stay pinned in flight (the caller must
 * not free them: replay applies them at the next start).
 */
static int
apply_unit (struct junit *u, int *err)
{
  for (size_t i = 0; i < u->n; ++i) {
    struct jentry *e = &u->entries[i];
    int berr = 0, ar;

    /* Through the filter's own context, which checkpoints flush (and
     * whose capabilities were queried at start).
     */
    plugin_call_begin ();
    ar = replica_apply (rep.ctx, e->op, e->flags, e->payload, e->length,
                        e->offset, &berr);
    plugin_call_end ();
    if (ar == -1) {
      replica_fail (&rep, berr, "backing %s failed at offset %" PRIu64
                    " (replicated seq %" PRIu64 "): %s; the record is kept "
                    "in the log and is replayed at the next start",
                    rlog_op_name (e->op), e->offset, e->seq,
                    strerror (berr));
      *err = EIO;
      return 1;
    }
    journal_complete (&rep.journal, e);
  }
  pthread_mutex_lock (&S.lock);
  S.applied_seq = S.done_seq = u->entries[u->n - 1].seq;
  S.applied_epoch = S.done_epoch = u->entries[u->n - 1].epoch;
  pthread_cond_broadcast (&S.cond);
  pthread_mutex_unlock (&S.lock);
  return 0;
}

/* Wait (S.lock held) until the committed point reaches want.  No
 * timeout: every batch queued before ours is committed by its own
 * thread (it never gives up once queued), unless the volume fails.
 */
static bool
wait_done (uint64_t want)
{
  struct timespec ts;

  while (S.done_seq < want && rep.state != VOL_FAILED) {
    clock_gettime (CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    pthread_cond_timedwait (&S.cond, &S.lock, &ts);
  }
  return S.done_seq >= want && rep.state != VOL_FAILED;
}

/* Units queued in order; each is applied once durable, after the batch
 * queued before ours (which ended at seq after) is applied, so space is
 * freed as we go even when a batch is larger than our ring.  Returns 0,
 * or 1 with *err: something failed (the volume is failed then), and
 * the entries stay allocated, as they may be on the journal's in-flight
 * list (apply_unit).  Once queued, a unit is always waited for.
 */
static int
commit_units (struct junit *units, size_t nu, uint64_t after, int *err)
{
  size_t i;
  int ret = 0;
  bool ok;

  pthread_mutex_lock (&S.lock);
  ok = wait_done (after) && S.done_seq == after;
  pthread_mutex_unlock (&S.lock);
  if (!ok) {
    replica_fail (&rep, EIO, "replicated records after seq %" PRIu64
                  " could not be applied in order", after);
    ret = 1;
  }
  for (i = 0; i < nu; ++i) {
    if (journal_wait (&rep.journal, &units[i]) == -1) {
      if (ret == 0)
        replica_fail (&rep, errno, "journaling replicated records failed: "
                      "%m");
      ret = 1;
    }
    else if (ret == 0)
      ret = commit_unit (&units[i], err);
  }
  if (ret) {
    *err = EIO;
    /* Later batches wait for this one: wake them, to fail. */
    pthread_mutex_lock (&S.lock);
    pthread_cond_broadcast (&S.cond);
    pthread_mutex_unlock (&S.lock);
  }
  return ret;
}

static int
batch (nbdkit_next *next, struct conn *c, const void *buf, uint32_t count,
       int *err)
{
  struct wire_batch b;
  uint8_t *owned = NULL;
  struct collect col = { 0 };
  struct junit *units = NULL;
  struct jentry *ents;              /* the records we do not hold yet */
  size_t nu = 0, nnew = 0;
  ssize_t first;
  uint64_t after;
  int ret = -1;

  if (!c->authed)
    return refuse (err, EPERM, "batch refused: the writer has not "
                   "authenticated");
  if (decode_batch (buf, count, &b, &col, &owned, err) == -1) {
    free (col.ents);
    return -1;
  }
  units = calloc (b.count, sizeof *units);
  if (!col.ents || !units) {
    refuse (err, ENOMEM, "calloc: %m");
    goto out;
  }

  /* Our turn: the records this batch follows are queued. */
  pthread_mutex_lock (&S.lock);
  if (!wait_turn (&S.enq_seq, false, b.prev_seq)) {
    bool promoted = S.quiesced;
    pthread_mutex_unlock (&S.lock);
    if (promoted)
      refuse (err, EPERM, "batch refused: this node was promoted");
    else
      refuse (err, EIO, "batch after seq %" PRIu64 " waited %d s for its "
              "predecessor", b.prev_seq, TURN_TIMEOUT_SEC);
    goto out;
  }
  if (S.quiesced) {
    /* Promote has begun: wait_turn lets a batch through whose turn has
     * come, but nothing may be queued after the quiesce.
     */
    pthread_mutex_unlock (&S.lock);
    refuse (err, EPERM, "batch refused: this node was promoted");
    goto out;
  }
  if (S.enq_seq == b.prev_seq && S.enq_epoch != b.prev_epoch) {
    uint64_t ours = S.enq_epoch;
    pthread_mutex_unlock (&S.lock);
    refuse (err, EINVAL, "batch follows seq %" PRIu64 " of epoch %" PRIu64
            ", ours is of epoch %" PRIu64 " (diverged)", b.prev_seq,
            b.prev_epoch, ours);
    goto out;
  }
  after = S.enq_seq;
  if ((first = first_new (&col)) == -1) {
    uint64_t ours = S.enq_seq, epoch = S.enq_epoch;
    pthread_mutex_unlock (&S.lock);
    refuse (err, EINVAL, "batch after seq %" PRIu64 " does not continue "
            "our seq %" PRIu64 " of epoch %" PRIu64 " (diverged)",
            b.prev_seq, ours, epoch);
    goto out;
  }
  ents = col.ents + first;
  nnew = col.n - first;
  if (nnew > 0) {
    nu = split_units (ents, nnew, units);
    for (size_t i = 0; i < nu; ++i) {
      if (journal_enqueue (&rep.journal, &units[i]) == -1) {
        int e = errno;
        pthread_mutex_unlock (&S.lock);
        replica_fail (&rep, e, "journaling replicated records failed: %s",
                      strerror (e));
        /* Wait out the units already queued (they fail now, or were
         * already being written: then they are in flight, so their
         * entries must stay allocated, like pinned ones).
         */
        for (size_t k = 0; k < i; ++k)
          journal_wait (&rep.journal, &units[k]);
        if (i > 0) {
          col.ents = NULL;
          owned = NULL;
        }
        *err = EIO;
        goto out;
      }
    }
    S.enq_seq = ents[nnew - 1].seq;
    S.enq_epoch = ents[nnew - 1].epoch;
    pthread_cond_broadcast (&S.cond);
  }
  S.batches++;
  S.records += nnew;
  S.bytes += count;
  pthread_mutex_unlock (&S.lock);

  if (nnew == 0) {
    /* Everything repeated: reply once what we hold is applied (and
     * only then: the reply says the records are durable here).
     */
    bool ok;
    pthread_mutex_lock (&S.lock);
    ok = wait_done (b.last_seq);
    pthread_mutex_unlock (&S.lock);
    if (ok)
      ret = 0;
    else
      refuse (err, EIO, "records up to seq %" PRIu64 " could not be "
              "applied", b.last_seq);
    goto out;
  }
  ret = commit_units (units, nu, after, err);
  if (ret == 1) {
    /* pinned in flight: never free the entries nor their payloads */
    col.ents = NULL;
    owned = NULL;
    ret = -1;
  }
 out:
  free (units);
  free (col.ents);
  free (owned);
  return ret;
}

int
secondary_pwrite (nbdkit_next *next, struct conn *c, const void *buf,
                  uint32_t count, uint64_t offset, int *err)
{
  if (__atomic_load_n (&rep.role, __ATOMIC_ACQUIRE) != RLOG_ROLE_SECONDARY)
    return refuse (err, EPERM, "replication write refused: this node is a "
                   "primary");
  if (offset == WIRE_CONTROL_OFFSET && count == WIRE_MSG_SIZE)
    return control (c, buf, err);
  if (offset >= WIRE_BATCH_BASE && count >= WIRE_BATCH_HDR_SIZE)
    return batch (next, c, buf, count, err);
  *err = EINVAL;
  return -1;
}

void
secondary_quiesce (void)
{
  pthread_mutex_lock (&S.lock);
  S.quiesced = true;
  pthread_cond_broadcast (&S.cond);
  /* Batches already queued to the journal are applied first. */
  while (S.done_seq != S.enq_seq && rep.state != VOL_FAILED) {
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    pthread_cond_timedwait (&S.cond, &S.lock, &ts);
  }
  pthread_mutex_unlock (&S.lock);
}

void
secondary_status (json_object *o)
{
  uint32_t flags;

  /* The superblock's flags first: promote takes S.lock under sb_lock. */
  pthread_mutex_lock (&rep.log->sb_lock);
  flags = rep.log->sb.flags;
  pthread_mutex_unlock (&rep.log->sb_lock);
  pthread_mutex_lock (&S.lock);
  json_object_object_add (o, "link", json_object_new_string
                          (S.sessions ? "replicating" : "waiting"));
  {
    bool inconsistent = S.staging || (flags & RLOG_SB_INCONSISTENT);
    json_object_object_add (o, "resync", json_object_new_string
                            (!(flags & RLOG_SB_RESYNC) ? "none"
                             : S.staging ? "staged"
                             : (flags & RLOG_SB_INCONSISTENT) ? "in-place"
                             : "pending"));
    if (inconsistent && rep.state == VOL_STANDALONE)
      json_object_object_add (o, "state",
                              json_object_new_string ("inconsistent"));
  }
  add_u64 (o, "applied_seq", S.applied_seq);
  add_u64 (o, "staged_records", S.staging ? S.staged_records : 0);
  add_u64 (o, "received_seq", S.enq_seq);
  add_u64 (o, "batches_received", S.batches);
  add_u64 (o, "records_received", S.records);
  add_u64 (o, "link_bytes_received", S.bytes);
  add_u64 (o, "refused", S.refused);
  json_object_object_add (o, "link_error", S.last_error[0]
                          ? json_object_new_string (S.last_error) : NULL);
  pthread_mutex_unlock (&S.lock);
}
