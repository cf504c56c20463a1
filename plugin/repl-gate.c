/* nbd-replica: replication, primary side: what waits on the link.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * Sync-mode writers waiting for the peer's acknowledgement, the log's
 * tail (the checkpoint clamped at the acked point, or the dirty bitmap
 * taking over), the sync engine's calls into the link, set-mode and
 * status.  The state and the link thread are repl.c's (repl-int.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <inttypes.h>
#include <unistd.h>
#include <time.h>

#include <nbdkit-filter.h>

#include "replica.h"
#include "repl.h"
#include "repl-int.h"

/* Has the client of this request's connection gone away (or nbdkit
 * begun to shut down)?  nbdkit_nanosleep says so (and logs it) without
 * sleeping long.  Called without R.lock.
 */
static bool
client_gone (void)
{
  return nbdkit_nanosleep (0, 1) == -1;
}

/* A writer whose client is gone returns (an error) only after the one
 * before it has had time to fail its reply.  nbdkit 1.32 aborts
 * ("raw_send_socket: Assertion `sock >= 0'") when replies race to a
 * connection whose first failed reply just closed it, and the peer's
 * acknowledgement would release all of a connection's writers at once.
 */
static void
leave_gone_client (void)
{
  static pthread_mutex_t one_at_a_time = PTHREAD_MUTEX_INITIALIZER;

  pthread_mutex_lock (&one_at_a_time);
  usleep (2000);
  pthread_mutex_unlock (&one_at_a_time);
}

int
repl_wait_acked (uint64_t seq, int *err)
{
  struct timespec ts;
  bool waited = false, gone = false;
  int ret = 0;

  if (!repl_active ())
    return 0;
  pthread_mutex_lock (&R.lock);
  if (!link_may_ack (&R.link, seq))
    do_actions (step (LINK_EV_WRITE_WAITING, seq, NULL), NULL);
  while (!link_may_ack (&R.link, seq) && !gone) {
    if (R.stopping) {
      *err = ESHUTDOWN;
      ret = -1;
      break;
    }
    clock_gettime (CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += TICK_MS * 1000000L;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    waited = true;
    /* Woken by an acknowledgement, or every tick to see whether our
     * client is still there.
     */
    if (pthread_cond_timedwait (&R.acked_cond, &R.lock, &ts) == ETIMEDOUT) {
      pthread_mutex_unlock (&R.lock);
      gone = client_gone ();
      pthread_mutex_lock (&R.lock);
    }
  }
  pthread_mutex_unlock (&R.lock);
  if (ret == 0 && waited && (gone || client_gone ())) {
    leave_gone_client ();
    *err = ESHUTDOWN;
    ret = -1;
  }
  return ret;
}

/* Should the dirty bitmap take over the log's tail (lock held)?  The
 * peer is away, the log three quarters full, and the admin allows it.
 */
static bool
bitmap_wanted (void)
{
  return !repl_cfg.log_full_wait && !R.unclamped &&
    R.link.state != LINK_REPLICATING &&
    journal_used_bytes (&rep.journal) >= rep.journal.ring_size / 4 * 3;
}

/* Switch to the bitmap (the checkpointer, ckpt_lock held, R.lock not):
 * writes mark it from now on; the records after the acked point, up to
 * the durable point read after that (every record whose writer may not
 * have seen the switch is durable by then), are marked from the log;
 * then it is durable, and only then may checkpoints pass the acked
 * point.
 */
static void
enter_bitmap (void)
{
  struct point a, d;

  pthread_mutex_lock (&R.lock);
  if (!bitmap_wanted () || bitmap_begin_tracking () == -1) {
    pthread_mutex_unlock (&R.lock);
    return;
  }
  a = R.acked;
  d = R.durable;
  /* In sync mode the peer may acknowledge a batch before our own sync
   * of it returns.  Should that sync fail, those seqs are burned and
   * the peer holds records we do not: the bitmap's base (which
   * bitmap_knows_peer trusts) is never past what is durable here.
   */
  if (a.seq > d.seq)
    a = d;
  pthread_mutex_unlock (&R.lock);
  if (bitmap_cover (a.seq, a.epoch, a.lsn, d.seq, d.epoch,
                    "the peer is away and the log is nearly full") == -1)
    return;                     /* tracking, but still clamped */
  pthread_mutex_lock (&R.lock);
  /* A handshake meanwhile saw the tail clamped, and shipped (or will
   * ship, after its pass's base) from the acked point: unclamping now
   * would let checkpoints free what it still ships, and nothing would
   * clamp again.  The bitmap stays on; that pass covers it.  Nor once
   * that pass has ended (bitmap_end turned tracking off): nothing
   * would mark what checkpoints free.
   */
  if (R.link.state != LINK_REPLICATING && bitmap_tracking ())
    R.unclamped = true;
  pthread_mutex_unlock (&R.lock);
}

void
repl_clamp_checkpoint (uint64_t *seq, uint64_t *epoch, uint64_t *lsn)
{
  bool want;

  if (__atomic_load_n (&rep.role, __ATOMIC_ACQUIRE) == RLOG_ROLE_SECONDARY) {
    secondary_clamp_checkpoint (seq, epoch, lsn);
    return;
  }
  if (!repl_active ())
    return;
  pthread_mutex_lock (&R.lock);
  want = bitmap_wanted ();
  pthread_mutex_unlock (&R.lock);
  if (want)
    enter_bitmap ();
  pthread_mutex_lock (&R.lock);
  /* At equal positions too: the acked point names a record the peer
   * holds, which a later start hands the replicator as its base.
   */
  if (!R.unclamped && R.acked.lsn <= *lsn) {
    *seq = R.acked.seq;
    *epoch = R.acked.epoch;
    *lsn = R.acked.lsn;
  }
  pthread_mutex_unlock (&R.lock);
}

/* ---- for the sync engine (sync.c; never called with its lock) ---- */

int
repl_sums_request (uint64_t off, uint32_t nblocks, unsigned shift,
                   uint64_t id)
{
  int r = -1;

  pthread_mutex_lock (&R.lock);
  if (R.fd >= 0 && R.link.state == LINK_REPLICATING) {
    send_frame (CHAN_SUMS_REQ, off, nblocks, shift, id, NULL);
    r = 0;
  }
  pthread_mutex_unlock (&R.lock);
  return r;
}

uint64_t
repl_acked_seq (void)
{
  uint64_t r;

  pthread_mutex_lock (&R.lock);
  r = R.acked.seq;
  pthread_mutex_unlock (&R.lock);
  return r;
}

bool
repl_shipping (void)
{
  bool r;

  pthread_mutex_lock (&R.lock);
  r = repl_active () && R.fd >= 0 && R.link.state == LINK_REPLICATING;
  pthread_mutex_unlock (&R.lock);
  return r;
}

/* The sync pass appended its end record: it may be acknowledged. */
void
repl_kick_acked (void)
{
  pthread_mutex_lock (&R.lock);
  if (sync_acked (R.acked.seq)) {
    bitmap_end ();
    R.bitmap_resume = false;
    do_actions (link_release_hold (&R.link), NULL);
  }
  pthread_mutex_unlock (&R.lock);
}

/* Wait until the peer acknowledged everything written now; -1 if the
 * link is lost or it takes more than timeout_s.
 */
int
repl_wait_peer_caught_up (unsigned timeout_s)
{
  uint64_t want, deadline = now_ms () + timeout_s * 1000ULL;
  int r = -1;

  pthread_mutex_lock (&R.lock);
  want = R.written.seq;
  while (R.link.state == LINK_REPLICATING && !R.stopping &&
         now_ms () < deadline) {
    struct timespec ts;
    if (R.acked.seq >= want) {
      r = 0;
      break;
    }
    clock_gettime (CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += 5000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait (&R.acked_cond, &R.lock, &ts);
  }
  pthread_mutex_unlock (&R.lock);
  return r;
}

int
repl_set_mode (const char *mode, const char **why)
{
  struct link_event ev = { .type = LINK_EV_SET_MODE };

  if (strcmp (mode, "sync") == 0)
    ev.mode = LINK_SYNC;
  else if (strcmp (mode, "async") == 0)
    ev.mode = LINK_ASYNC;
  else {
    *why = "unknown mode (use sync or async)";
    return -1;
  }
  if (rep.role != RLOG_ROLE_PRIMARY) {
    *why = "only a primary has a replication mode";
    return -1;
  }
  pthread_mutex_lock (&R.lock);
  ev.now_ms = now_ms ();
  ev.local.head_seq = R.written.seq;
  do_actions (link_step (&R.link, &ev), NULL);
  repl_cfg.mode = ev.mode;
  if (ev.mode == LINK_ASYNC)
    send_written ();
  pthread_mutex_unlock (&R.lock);
  nbdkit_debug ("replica: mode set to %s", mode);
  return 0;
}

/* head_seq: the journal's, for a primary without a peer. */
void
repl_status (json_object *o, uint64_t head_seq)
{
  struct timespec ts;
  struct mark *m;
  bool active = repl_active ();

  pthread_mutex_lock (&R.lock);
  json_object_object_add (o, "mode", json_object_new_string
                          (R.link.mode == LINK_SYNC ? "sync" : "async"));
  json_object_object_add (o, "peer", repl_cfg.peer
                          ? json_object_new_string (repl_cfg.peer)
                          : R.peer_uri[0]
                          ? json_object_new_string (R.peer_uri) : NULL);
  json_object_object_add (o, "link", json_object_new_string
                          (active ? link_state_name (R.link.state)
                           : "standalone"));
  json_object_object_add (o, "link_error", active && R.link.reason[0]
                          ? json_object_new_string (R.link.reason) : NULL);
  json_object_object_add (o, "degraded",
                          json_object_new_boolean (R.link.degraded));
  json_object_object_add (o, "peer_outdated",
                          json_object_new_boolean
                          (link_peer_outdated (&R.link)));
  add_u64 (o, "last_seq", active ? R.written.seq : head_seq);
  add_u64 (o, "acked_seq", active ? R.acked.seq : head_seq);
  add_u64 (o, "lag_entries", active ? R.lag_records : 0);
  add_u64 (o, "lag_bytes", active ? R.written.lsn - R.acked.lsn : 0);
  clock_gettime (CLOCK_MONOTONIC, &ts);
  m = mark_first ();
  add_u64 (o, "oldest_unacked_age_ms", active && m
           ? ((uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec - m->t_ns)
             / 1000000 : 0);
  add_u64 (o, "link_bytes_sent", R.link_sent);
  add_u64 (o, "link_bytes_received", R.link_recv);
  add_u64 (o, "shipped_bytes", R.raw_shipped);
  add_u64 (o, "shipped_wire_bytes", R.wire_shipped);
  json_object_object_add (o, "compression_ratio", json_object_new_double
                          (R.wire_shipped ? (double) R.raw_shipped /
                           R.wire_shipped : 1.0));
  add_u64 (o, "batches_shipped", R.batches);
  add_u64 (o, "replicator_pid", R.pid);
  add_u64 (o, "handshakes", R.handshakes);
  add_u64 (o, "link_errors", R.link_errors);
  json_object_object_add (o, "bitmap", json_object_new_string
                          (!bitmap_tracking () ? "off" : R.unclamped
                           ? "tracking" : "resyncing"));
  add_u64 (o, "bitmap_dirty_bytes", bitmap_dirty_bytes ());
  pthread_mutex_unlock (&R.lock);
  if (active)
    sync_status (o);
}
