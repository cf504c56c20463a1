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
 * the peer holds the records durably (and has applied them).  A resync
 * (staging, its start and end) is secondary-resync.c's.
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
#include "secondary-int.h"

struct secondary_state S = {
  .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER
};

void
secondary_init (uint64_t seq, uint64_t epoch)
{
  S.enq_seq = S.applied_seq = S.done_seq = seq;
  S.enq_epoch = S.applied_epoch = S.done_epoch = epoch;
}

int
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
    if (!__atomic_load_n (&c->authed, __ATOMIC_ACQUIRE))
      return refuse (err, EPERM, "sums refused: the reader has not "
                     "authenticated");
    /* A promoted node's disk is its own clients': a verify against it
     * would compare two primaries (as BATCH, refused).
     */
    if (__atomic_load_n (&rep.role, __ATOMIC_ACQUIRE) != RLOG_ROLE_SECONDARY)
      return refuse (err, EPERM, "sums refused: this node was promoted");
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
    ((sb.flags & RLOG_SB_STAGING) ? WIRE_HELLO_STAGING : 0) |
    ((sb.flags & RLOG_SB_FOREIGN) ? WIRE_HELLO_FOREIGN : 0);
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
  /* An initial sync follows: our disk is no image of the volume, and
   * says so from the moment we are paired.  Were the pairing durable
   * without these, a link lost before the RESYNC would leave a paired
   * peer that looks like a known prefix of the primary's history: no
   * sync at the next handshake, and promote without --force.
   */
  if (ctl->flags & WIRE_ADOPT_SYNC)
    sb.flags |= RLOG_SB_RESYNC | RLOG_SB_INCONSISTENT;
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

/* TELL OUTDATED / UPTODATE.  Under sb_lock, as promote's last check of
 * the flag and its role change are: an OUTDATED recorded before that
 * check makes promote refuse (without --force); one after it finds the
 * node a primary and is refused, so the old primary never takes a
 * confirmation for a mark that promote erased.
 */
static int
set_outdated (bool outdated, int *err)
{
  struct rlog_sb sb;
  int r = 0;

  pthread_mutex_lock (&rep.log->sb_lock);
  sb = rep.log->sb;
  if (sb.role != RLOG_ROLE_SECONDARY) {
    pthread_mutex_unlock (&rep.log->sb_lock);
    return refuse (err, EPERM, "%s refused: this node was promoted",
                   outdated ? "outdated" : "up to date");
  }
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
  /* Under S.lock: two CONTROLs of one connection may run at once, and
   * secondary_close counts the connection out once.
   */
  pthread_mutex_lock (&S.lock);
  if (!c->authed) {
    __atomic_store_n (&c->authed, true, __ATOMIC_RELEASE);
    S.sessions++;
  }
  pthread_mutex_unlock (&S.lock);
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
 * (wire_batch_unpack): one pass over the payloads for the CRCs, whose
 * payload parts the journal reuses to seal our copies.
 */
struct collect {
  const struct wire_batch *b;       /* filled by unpack before the walk */
  struct jentry *ents;
  size_t n;
};

static int
collect_one (void *opaque, const struct rlog_rec *r, const uint8_t *payload,
             uint32_t payload_crc)
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
    e->payload_crc = payload_crc;       /* the walk's, for its check */
  }
  return 0;
}

/* During an in-place resync the disk is inconsistent anyway (the
 * superblock says so, durably) and a crash makes the primary run a new
 * pass over every block it may have touched.  So a re-sent block needs
 * no copy in our log: its record is logged as a header (flag ELIDED,
 * which keeps the seq chain whole) and its data goes to the disk only,
 * applied in seq order like any record.  This saves writing every
 * re-sent byte twice.  Replay skips such records; resync_end makes the
 * disk durable and moves the checkpoint past them before it clears
 * INCONSISTENT, so a consistent log never holds one.  Records after
 * the pass's own SYNC_END keep their data.  S.lock held (docs/design.md
 * 21.4).
 */
static void
mark_elided (struct jentry *ents, size_t n)
{
  for (size_t i = 0; i < n; ++i) {
    struct jentry *e = &ents[i];

    if (e->op == RLOG_OP_FLUSH && (e->flags & RLOG_FLAG_SYNC_END) &&
        S.resyncing && e->offset == S.resync_base) {
      S.elide = false;
      S.end_queued = true;
    }
    if (S.elide && e->op == RLOG_OP_WRITE && (e->flags & RLOG_FLAG_SYNC)) {
      e->flags |= RLOG_FLAG_ELIDED;
      S.elided_records++;
      S.elided_bytes += e->length;
    }
  }
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
  /* A batch after an earlier record that goes on past ours must hold
   * our last record: a sender's records are consecutive in its log, so
   * one that skips it never had it (its append failed after we got
   * it, and the seq was burned): our copy diverged.  (A batch after
   * exactly our last record is checked by its caller.)
   */
  bool seen = col->b->prev_seq >= S.enq_seq;
  size_t i = 0;

  for (; i < col->n && col->ents[i].seq <= S.enq_seq; ++i)
    if (col->ents[i].seq == S.enq_seq) {
      if (col->ents[i].epoch != S.enq_epoch)
        return -1;
      seen = true;
    }
  if (i < col->n) {
    const struct jentry *e = &col->ents[i];
    if (!seen || e->epoch < S.enq_epoch ||
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
    uint32_t sz = rlog_rec_size (ents[i].op == RLOG_OP_WRITE &&
                                 !(ents[i].flags & RLOG_FLAG_ELIDED)
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
int
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

  if (!__atomic_load_n (&c->authed, __ATOMIC_ACQUIRE))
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
    mark_elided (ents, nnew);
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

/* A promote refused after its quiesce: batches are accepted again. */
void
secondary_unquiesce (void)
{
  pthread_mutex_lock (&S.lock);
  S.quiesced = false;
  pthread_cond_broadcast (&S.cond);
  pthread_mutex_unlock (&S.lock);
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
  add_u64 (o, "elided_records", S.elided_records);
  add_u64 (o, "elided_bytes", S.elided_bytes);
  add_u64 (o, "received_seq", S.enq_seq);
  add_u64 (o, "batches_received", S.batches);
  add_u64 (o, "records_received", S.records);
  add_u64 (o, "link_bytes_received", S.bytes);
  add_u64 (o, "refused", S.refused);
  json_object_object_add (o, "link_error", S.last_error[0]
                          ? json_object_new_string (S.last_error) : NULL);
  pthread_mutex_unlock (&S.lock);
}
