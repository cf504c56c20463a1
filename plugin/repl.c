/* nbd-replica: replication, primary side: the link.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * One thread (the link thread) owns the channel to nbd-replicator: it
 * reads its frames, feeds them to the link state machine (common/
 * link.c) with the time, and carries out the actions: frames back to
 * the replicator, sync writers released.  The journal's leader reports
 * written batches here (repl_journal_notify); they are forwarded to the
 * replicator at once, without waiting for the link thread.
 *
 * The acked point (seq, epoch, lsn) is the last record the peer made
 * durable; the log's checkpoint never passes it (repl_clamp_checkpoint,
 * in repl-gate.c with the sync writers' wait; the state both share is
 * in repl-int.h),
 * so every record the peer lacks is still in the log when it
 * reconnects, however long it was away (writers wait when the log is
 * full).  Markers, one per written batch, count the records and age of
 * what the peer has not acknowledged yet.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <inttypes.h>
#include <unistd.h>
#include <poll.h>
#include <time.h>
#include <fcntl.h>
#include <sys/socket.h>

#include <nbdkit-filter.h>

#include "replica.h"
#include "repl.h"
#include "chan.h"
#include "wire.h"
#include "repl-int.h"

NBDKIT_DLL_PUBLIC int replica_debug_link = 0;  /* -D replica.link=1 */

struct repl_state R = { .lock = PTHREAD_MUTEX_INITIALIZER, .fd = -1,
                       .wake = { -1, -1 } };

uint64_t
now_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Decided once, at start (repl_init): a secondary promoted later is a
 * standalone primary until restarted with a peer.
 */
static bool configured;

/* A primary started without a peer, whose volume a peer has held
 * (RLOG_SB_REPLICATED): its writes are tracked in the dirty bitmap, so
 * that the peer, back at a later start, gets a resync of the blocks
 * written meanwhile instead of the whole volume (standalone tracking).
 */
static bool standalone_track;

/* Does the log keep the records after the checkpoint until the link
 * (or the dirty bitmap) lets them go: a primary with a peer, or one
 * tracking for it?
 */
bool
repl_keeps_tail (void)
{
  return configured || standalone_track;
}

bool
repl_active (void)
{
  return configured;
}

/* ---- markers (lock held) ---- */

static void
mark_push (uint64_t last_seq, uint64_t lsn_end, uint32_t nrecs)
{
  struct timespec ts;

  if (R.mlen == R.mcap) {
    size_t ncap = R.mcap ? R.mcap * 2 : 1024;
    struct mark *n = malloc (ncap * sizeof *n);
    if (!n)
      return;                   /* lag figures only; never fatal */
    for (size_t i = 0; i < R.mlen; ++i)
      n[i] = R.marks[(R.mhead + i) % R.mcap];
    free (R.marks);
    R.marks = n;
    R.mcap = ncap;
    R.mhead = 0;
  }
  clock_gettime (CLOCK_MONOTONIC, &ts);
  R.marks[(R.mhead + R.mlen) % R.mcap] = (struct mark) {
    .last_seq = last_seq, .lsn_end = lsn_end, .nrecs = nrecs,
    .t_ns = (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec,
  };
  R.mlen++;
  R.lag_records += nrecs;
}

struct mark *
mark_first (void)
{
  return R.mlen ? &R.marks[R.mhead] : NULL;
}

/* The peer acknowledged up to seq: drop whole batches it covers; within
 * the first remaining batch seqs are consecutive, so the acknowledged
 * part is counted exactly.
 */
static void
marks_acked (uint64_t seq)
{
  struct mark *m;

  while ((m = mark_first ()) && m->last_seq <= seq) {
    R.lag_records -= m->nrecs;
    R.mhead = (R.mhead + 1) % R.mcap;
    R.mlen--;
  }
  if (m && seq >= m->last_seq - m->nrecs + 1) {
    uint32_t n = seq - (m->last_seq - m->nrecs);
    R.lag_records -= n;
    m->nrecs -= n;
  }
}

/* A failed batch started at lsn: forget markers at or after it. */
static void
marks_truncate (uint64_t lsn)
{
  while (R.mlen) {
    struct mark *m = &R.marks[(R.mhead + R.mlen - 1) % R.mcap];
    if (m->lsn_end <= lsn)
      break;
    R.lag_records -= m->nrecs;
    R.mlen--;
  }
}

/* ---- channel output (any thread; lock held) ---- */

static void chan_drop (const char *why);

static void
outbox_flush (void)
{
  while (R.fd >= 0 && R.outlen > 0) {
    ssize_t n = send (R.fd, R.outbox, R.outlen, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n == -1) {
      if (errno == EAGAIN || errno == EINTR)
        return;
      chan_drop ("writing to the replicator failed");
      return;
    }
    memmove (R.outbox, R.outbox + n, R.outlen - n);
    R.outlen -= n;
  }
}

/* Queue a frame; sent at once unless the socket is full (the link
 * thread sends the rest when it drains).  Never blocks the data path.
 */
static void
send_frame_e (uint16_t type, uint64_t a, uint64_t b, uint64_t c, uint64_t d,
              uint64_t e, const char *text)
{
  struct chan_msg m;
  size_t n;

  if (R.fd < 0)
    return;
  chan_msg_init (&m, type, a, b, c, d, e, text);
  if (R.outlen + CHAN_HDR_SIZE + CHAN_TEXT_MAX > OUTBOX_MAX) {
    chan_drop ("the replicator does not read its channel");
    return;
  }
  n = chan_encode (&m, R.outbox + R.outlen);
  R.outlen += n;
  outbox_flush ();
  if (R.outlen > 0 && R.wake[1] >= 0) {
    char x = 0;
    if (write (R.wake[1], &x, 1) == -1) {
      /* full pipe: the link thread is awake anyway */
    }
  }
}

void
send_frame (uint16_t type, uint64_t a, uint64_t b, uint64_t c, uint64_t d,
            const char *text)
{
  send_frame_e (type, a, b, c, d, 0, text);
}

/* Sync: ship what is written (overlapping our own log sync).  Async:
 * only what is durable, so a crash here never leaves the peer ahead.
 */
void
send_written (void)
{
  const struct point *p = R.link.mode == LINK_SYNC ? &R.written : &R.durable;

  if (p->lsn <= R.sent.lsn)
    return;
  R.sent = *p;
  send_frame (CHAN_WRITTEN, R.sent.seq, R.sent.epoch, R.sent.lsn, 0, NULL);
}

/* ---- journal events (the leader thread) ---- */

void
repl_journal_notify (void *opaque, enum journal_event ev, uint64_t seq,
                     uint64_t epoch, uint64_t lsn, size_t nrecs)
{
  pthread_mutex_lock (&R.lock);
  switch (ev) {
  case JOURNAL_WRITTEN:
    mark_push (seq, lsn, nrecs);
    R.written = (struct point) { seq, epoch, lsn };
    send_written ();
    break;
  case JOURNAL_DURABLE:
    R.durable = (struct point) { seq, epoch, lsn };
    send_written ();
    break;
  case JOURNAL_FAILED:
    /* The batch after (seq, epoch) at lsn is void: the replicator may
     * have read it.  Rewind, and make it reconnect: a peer that got
     * those records is then found diverged.
     */
    marks_truncate (lsn);
    R.written = R.durable = (struct point) { seq, epoch, lsn };
    if (R.acked.lsn > lsn)
      R.acked = R.written;
    R.sent = R.written;
    R.ack_fence = true;
    /* The peer may hold the failed batch (shipped before our sync
     * failed), applied in place where no bit of the bitmap is set (its
     * writers got EIO and marked nothing): a bitmap pass would not look
     * there.  The next resync compares everything.
     */
    R.bitmap_resume = false;
    /* A PEER the replicator computed before it reads the RESET (say the
     * peer holds the failed batch, found in our log as it was) is void:
     * it must not become the handshake.
     */
    R.conn_id++;
    send_frame (CHAN_RESET, 0, 0, 0, 0, NULL);
    send_frame (CHAN_WRITTEN, R.sent.seq, R.sent.epoch, R.sent.lsn, 0, NULL);
    break;
  }
  pthread_mutex_unlock (&R.lock);
}

/* ---- the link state machine's actions (lock held) ---- */

static void
log_reason (void)
{
  if (R.stopping)
    return;                     /* nbdkit is shutting down: expected */
  if (R.link.reason[0])
    nbdkit_error ("replica: link %s: %s", link_state_name (R.link.state),
                  R.link.reason);
  else
    nbdkit_debug ("replica: link %s", link_state_name (R.link.state));
}

/* The primary's superblock remembers that the peer is outdated, from
 * before the first degraded write is released until the peer has
 * recorded that it is up to date again (RLOG_SB_PEER_OUTDATED).
 */
static void
persist_peer_outdated (bool outdated)
{
  if (rlog_sb_set_flag (rep.log, RLOG_SB_PEER_OUTDATED, outdated, NULL) == -1)
    nbdkit_error ("replica: recording that the peer is %s failed: %m",
                  outdated ? "outdated" : "up to date");
}

void
do_actions (unsigned act, const struct chan_msg *peer)
{
  if (R.link.peer_outdated)
    persist_peer_outdated (true);       /* before any write is released */
  if (act & LINK_ACT_LOG)
    log_reason ();
  if (act & LINK_ACT_DISCONNECT) {
    R.conn_id++;                /* a PEER still on its way is stale */
    send_frame (CHAN_DISCONNECT, 0, 0, 0, 0, R.link.reason);
    sync_link_lost ();
  }
  if (act & LINK_ACT_CONNECT)
    send_frame_e (CHAN_CONNECT, R.acked.seq, R.acked.epoch, R.acked.lsn,
                  R.unclamped ? CHAN_CONNECT_NOSCAN : 0, ++R.conn_id, NULL);
  if ((act & LINK_ACT_SHIP) && peer) {
    /* From now on a start without the peer tracks its writes for it
     * (standalone tracking).  Not fatal: without the flag (and without
     * a bitmap, which such a start keeps whole) the peer back after it
     * is BEHIND, and gets a full checksum resync instead.
     */
    if (rlog_sb_set_flag (rep.log, RLOG_SB_REPLICATED, true, NULL) == -1)
      nbdkit_error ("replica: recording that the volume is replicated: %m");
    if (act & (LINK_ACT_ADOPT | LINK_ACT_RESYNC)) {
      /* From the acked point: our log holds everything after it.  A
       * resync tells the peer to continue from there, whatever it
       * holds, and the sync pass covers what it may lack or hold
       * otherwise (sync.c).  With the bitmap, the log holds everything
       * after the durable point (no checkpoint passes it), and the
       * bitmap covers what came before: ship from there, and hold the
       * log's tail for the peer again.
       */
      if (R.unclamped) {
        /* The writes in between reach the peer by the pass: in sync
         * mode they are acknowledged only at its end.
         */
        link_hold_acks (&R.link, R.acked.seq, R.durable.seq);
        R.acked = R.durable;
        marks_acked (R.acked.seq);
        R.unclamped = false;
      }
      send_frame_e (CHAN_SHIP, R.acked.seq, R.acked.epoch, R.acked.lsn,
                    ((act & LINK_ACT_ADOPT) ? CHAN_SHIP_ADOPT : 0) |
                    ((act & LINK_ACT_RESYNC) ? CHAN_SHIP_RESYNC : 0),
                    R.link.sync_stage ? WIRE_RESYNC_STAGE : 0, NULL);
      if (act & LINK_ACT_RESYNC) {
        R.bitmap_resume = R.link.sync_bitmap;
        sync_start_pass (R.link.sync_initial, R.link.sync_full,
                         R.link.sync_bitmap, R.acked.seq, R.link.sync_why);
      }
    }
    else {
      /* The peer holds up to its durable seq, which is in our log. */
      if (peer->a > R.acked.seq)
        R.acked = (struct point) { peer->a, peer->b, peer->e };
      marks_acked (R.acked.seq);
      send_frame (CHAN_SHIP, peer->a, peer->b, peer->e, 0, NULL);
      if (sync_peer_consistent ())
        do_actions (link_release_hold (&R.link), NULL);
    }
    send_written ();
  }
  if (act & LINK_ACT_TELL_OUTDATED) {
    R.tell_id_of[0] = ++R.tell_id;
    send_frame (CHAN_TELL, WIRE_CTL_OUTDATED, R.written.seq, R.tell_id, 0,
                NULL);
  }
  if (act & LINK_ACT_TELL_UPTODATE) {
    R.tell_id_of[1] = ++R.tell_id;
    send_frame (CHAN_TELL, WIRE_CTL_UPTODATE, R.acked.seq, R.tell_id, 0,
                NULL);
  }
  if (act & LINK_ACT_RELEASE_WRITES)
    pthread_cond_broadcast (&R.acked_cond);
}

unsigned
step (enum link_event_type type, uint64_t seq, const struct link_peer *peer)
{
  struct link_event ev = { .type = type, .now_ms = now_ms (), .seq = seq };
  enum link_state before = R.link.state;
  unsigned act;

  if (peer)
    ev.peer = *peer;
  memcpy (ev.local.volume_uuid, R.uuid, 16);
  ev.local.backing_size = R.backing_size;
  ev.local.head_seq = R.written.seq;
  ev.local.acked_seq = R.acked.seq;
  ev.local.initial_sync = repl_cfg.initial_sync;
  ev.local.bitmap = bitmap_tracking ();
  ev.local.bitmap_resume = R.bitmap_resume;
  ev.mode = R.link.mode;
  act = link_step (&R.link, &ev);
  if (before != R.link.state && replica_debug_link)
    nbdkit_debug ("link: %s -> %s", link_state_name (before),
                  link_state_name (R.link.state));
  return act;
}

static void
on_peer (const struct chan_msg *m)
{
  struct link_peer p = { 0 };
  unsigned flags = (m->d >> 8) & 0xff;

  /* Only the answer to our last CONNECT, and only if no RESET or
   * DISCONNECT came after it: the replicator may have computed an
   * older one from a log that has changed since (its acked point would
   * name a burned seq, its lsn records written after).
   */
  if ((uint32_t) (m->d >> 32) != R.conn_id) {
    nbdkit_debug ("replica: a stale PEER (connection %" PRIu32 ", ours is %"
                  PRIu32 ") is ignored", (uint32_t) (m->d >> 32), R.conn_id);
    return;
  }
  if (m->text_len == 16)
    memcpy (p.volume_uuid, m->text, 16);
  p.role = m->d & 0xff;
  p.paired = flags & CHAN_PEER_PAIRED;
  p.backing_size = m->c;
  p.durable_seq = m->a;
  p.seq_known = flags & CHAN_PEER_KNOWN;
  p.behind = flags & CHAN_PEER_BEHIND;
  p.needs_resync = flags & CHAN_PEER_RESYNC;
  p.foreign = flags & CHAN_PEER_FOREIGN;
  /* The bitmap's base and span (bitmap_knows_peer): a peer that holds
   * some of the records in flight when the bitmap took over (their
   * acknowledgements lost with the link), or exactly the base after a
   * restart or a standalone run (the log may no longer reach back to
   * it: the replicator then says BEHIND), lacks only what the bitmap
   * marks.
   */
  if (R.unclamped && !p.seq_known && !p.needs_resync &&
      bitmap_knows_peer (m->a, m->b)) {
    p.seq_known = true;
    p.behind = false;
  }
  R.peer_durable = m->a;
  R.handshakes++;
  R.ack_fence = false;
  do_actions (step (LINK_EV_HANDSHAKE, 0, &p), m);
}

static void
on_ack (const struct chan_msg *m)
{
  if (R.ack_fence || R.link.state != LINK_REPLICATING)
    return;                     /* from before a RESET or a disconnect */
  /* Within what was written (seq and position): an ACK past it would
   * release writers of records the peer never got.
   */
  if (m->a > R.acked.seq && m->a <= R.written.seq &&
      m->c >= R.acked.lsn && m->c <= R.written.lsn) {
    R.acked = (struct point) { m->a, m->b, m->c };
    marks_acked (m->a);
  }
  if (sync_acked (R.acked.seq)) {
    bitmap_end ();
    R.bitmap_resume = false;
    do_actions (link_release_hold (&R.link), NULL);
  }
  do_actions (step (LINK_EV_ACK, R.acked.seq, NULL), NULL);
}

static void
on_frame (const struct chan_msg *m)
{
  switch (m->type) {
  case CHAN_HELLO:
    R.pid = m->a;
    snprintf (R.peer_uri, sizeof R.peer_uri, "%.*s",
              (int) sizeof R.peer_uri - 1, m->text);
    nbdkit_debug ("replica: replicator attached (pid %ld, peer %s)",
                  R.pid, R.peer_uri);
    break;
  case CHAN_PEER:
    on_peer (m);
    break;
  case CHAN_LINKDOWN: {
    unsigned act = step (LINK_EV_IO_ERROR, 0, NULL);
    R.link_errors++;
    snprintf (R.link.reason, sizeof R.link.reason,
              "connection to the peer failed: %.100s", m->text);
    do_actions (act, NULL);
    break;
  }
  case CHAN_ACK:
    on_ack (m);
    break;
  case CHAN_TOLD:
    /* Only the confirmation of the latest TELL of its kind counts: an
     * older one (say OUTDATED, then UPTODATE, then OUTDATED again) must
     * not clear what the newer one has yet to do.
     */
    if (m->b != R.tell_id_of[m->a == WIRE_CTL_OUTDATED ? 0 : 1])
      break;
    do_actions (step (m->a == WIRE_CTL_OUTDATED ? LINK_EV_OUTDATED_TOLD
                      : LINK_EV_UPTODATE_TOLD, 0, NULL), NULL);
    if (m->a == WIRE_CTL_UPTODATE && !R.link.peer_outdated &&
        !R.link.tell_outdated)
      persist_peer_outdated (false);
    break;
  case CHAN_SUMS:
    sync_sums (m);
    break;
  case CHAN_STATS:
    R.link_sent = m->a;
    R.link_recv = m->b;
    R.raw_shipped = m->c;
    R.wire_shipped = m->d;
    R.batches = m->e;
    break;
  default:
    chan_drop ("unknown frame from the replicator");
  }
}

static void
chan_drop (const char *why)
{
  if (R.fd < 0)
    return;
  nbdkit_debug ("replica: replicator channel closed: %s", why);
  close (R.fd);
  R.fd = -1;
  R.outlen = R.inlen = 0;
  R.pid = 0;
  {
    unsigned act = step (LINK_EV_IO_ERROR, 0, NULL);
    snprintf (R.link.reason, sizeof R.link.reason, "replicator: %s", why);
    do_actions (act, NULL);
  }
}

/* Parse whole frames out of inbuf. */
static void
chan_input (void)
{
  ssize_t n = recv (R.fd, R.inbuf + R.inlen, sizeof R.inbuf - R.inlen,
                    MSG_DONTWAIT);

  if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR)) {
    chan_drop (n == 0 ? "the replicator went away" : strerror (errno));
    return;
  }
  if (n > 0)
    R.inlen += n;
  while (R.fd >= 0 && R.inlen >= CHAN_HDR_SIZE) {
    struct chan_msg m;
    const char *why;
    size_t len;

    if (chan_decode_hdr (R.inbuf, &m, &why) == -1) {
      chan_drop (why);
      return;
    }
    len = CHAN_HDR_SIZE + m.text_len;
    if (R.inlen < len)
      return;
    memcpy (m.text, R.inbuf + CHAN_HDR_SIZE, m.text_len);
    m.text[m.text_len] = '\0';
    if (chan_check_crc (R.inbuf, &m) == -1) {
      chan_drop ("frame checksum mismatch");
      return;
    }
    memmove (R.inbuf, R.inbuf + len, R.inlen - len);
    R.inlen -= len;
    on_frame (&m);
  }
}

void
repl_attach (int fd)
{
  int fl;

  pthread_mutex_lock (&R.lock);
  if (!R.running || !repl_active ()) {
    pthread_mutex_unlock (&R.lock);
    const char *no = "{\"error\":\"this node has no peer: nothing to "
      "replicate\"}\n";
    if (write (fd, no, strlen (no)) == -1) { /* nothing to do */ }
    close (fd);
    return;
  }
  chan_drop ("another replicator attached");
  fl = fcntl (fd, F_GETFL);
  fcntl (fd, F_SETFL, fl | O_NONBLOCK);
  R.fd = fd;
  R.inlen = R.outlen = 0;
  send_frame (CHAN_CONFIG, 0, 0, 0, 0, rep.log_path);
  R.sent = R.link.mode == LINK_SYNC ? R.written : R.durable;
  send_frame (CHAN_WRITTEN, R.sent.seq, R.sent.epoch, R.sent.lsn, 0, NULL);
  if (R.link.state == LINK_CONNECTING)
    do_actions (LINK_ACT_CONNECT, NULL);
  pthread_mutex_unlock (&R.lock);
  if (write (R.wake[1], "", 1) == -1) { /* awake anyway */ }
}

static void *
link_thread (void *arg)
{
  pthread_mutex_lock (&R.lock);
  while (!R.stopping) {
    struct pollfd p[2] = {
      { .fd = R.wake[0], .events = POLLIN },
      { .fd = R.fd, .events = POLLIN | (R.outlen ? POLLOUT : 0) },
    };
    int nfds = R.fd >= 0 ? 2 : 1;

    pthread_mutex_unlock (&R.lock);
    poll (p, nfds, TICK_MS);
    pthread_mutex_lock (&R.lock);
    if (p[0].revents & POLLIN) {
      char buf[64];
      if (read (R.wake[0], buf, sizeof buf) == -1) { /* spurious */ }
    }
    if (nfds == 2 && R.fd == p[1].fd) {
      if (p[1].revents & POLLOUT)
        outbox_flush ();
      if (R.fd >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR)))
        chan_input ();
    }
    do_actions (step (LINK_EV_TICK, 0, NULL), NULL);
  }
  pthread_mutex_unlock (&R.lock);
  return NULL;
}

int
repl_init (uint64_t seq, uint64_t epoch, uint64_t lsn)
{
  pthread_condattr_t a;

  pthread_condattr_init (&a);
  pthread_condattr_setclock (&a, CLOCK_MONOTONIC);
  pthread_cond_init (&R.acked_cond, &a);
  pthread_condattr_destroy (&a);
  configured = rep.role == RLOG_ROLE_PRIMARY &&
    (repl_cfg.peer != NULL ||
     (repl_cfg.replicator && strcmp (repl_cfg.replicator, "external") == 0));
  R.acked = R.written = R.durable = R.sent =
    (struct point) { seq, epoch, lsn };
  R.outbox = malloc (OUTBOX_MAX);
  link_init (&R.link, repl_cfg.mode, repl_cfg.policy,
             repl_cfg.sync_timeout_ms);
  R.link.acked_seq = seq;
  /* A degrade before a restart: the peer still has to be told. */
  if (configured && (rep.log->sb.flags & RLOG_SB_PEER_OUTDATED)) {
    R.link.peer_outdated = true;
    R.link.tell_outdated = true;
  }
  /* A bitmap on means a peer may come back to it, replicated or not
   * (the log can fill before the first handshake): keep it whole.
   */
  standalone_track = rep.role == RLOG_ROLE_PRIMARY && !configured &&
    (rep.log->sb.flags & (RLOG_SB_REPLICATED | RLOG_SB_BITMAP));
  /* The log was freed past the acked point: the bitmap covers it. */
  if ((configured || standalone_track) && bitmap_start () == -1)
    return -1;
  /* Standalone: the records replayed are marked too (repl_recovered). */
  if (standalone_track && bitmap_begin_tracking () == -1)
    return -1;
  R.unclamped = bitmap_tracking ();
  return 0;
}

/* After recovery, before any checkpoint: a standalone primary that was
 * not tracking yet makes the bitmap durable with its base at the
 * checkpoint of this start (what the peer holds at least: a primary
 * with a peer never checkpoints past the peer's acknowledgement), the
 * records after it marked by the replay.  From then on checkpoints
 * flush the bitmap before they free records (checkpoint_now), and a
 * peer back at the base gets a resync of the marked blocks only.
 */
int
repl_standalone_begin (void)
{
  if (!standalone_track || (rep.log->sb.flags & RLOG_SB_BITMAP))
    return 0;
  /* (Not R.acked.lsn: repl_log_end_moved moved it to the log's end.) */
  if (bitmap_cover (rep.log->sb.checkpoint_seq, rep.log->sb.checkpoint_epoch,
                    rep.log->sb.checkpoint_lsn,
                    rep.recovered_seq, rep.recovered_epoch,
                    "this primary runs without its peer") == -1)
    return -1;
  return 0;
}

void
repl_recovered (uint64_t seq, uint64_t epoch, uint64_t lsn_end,
                uint64_t offset, uint32_t length)
{
  bitmap_mark (offset, length);
  if (!configured)
    return;
  pthread_mutex_lock (&R.lock);
  mark_push (seq, lsn_end, 1);
  R.written = R.durable = R.sent = (struct point) { seq, epoch, lsn_end };
  pthread_mutex_unlock (&R.lock);
}

/* Recovery moved the log's end to lsn (bridge_gap, or the checkpoint
 * moved over unreadable bytes): every point naming the last record
 * must name lsn as the position after it, since a pass whose base is
 * our durable point (a bitmap resync) has the replicator read from
 * there, and the bytes before lsn are the torn tail.
 */
void
repl_log_end_moved (uint64_t lsn)
{
  pthread_mutex_lock (&R.lock);
  if (R.acked.seq == R.written.seq && R.acked.epoch == R.written.epoch)
    R.acked.lsn = lsn;
  if (R.mlen > 0)
    R.marks[(R.mhead + R.mlen - 1) % R.mcap].lsn_end = lsn;
  R.written.lsn = R.durable.lsn = R.sent.lsn = lsn;
  pthread_mutex_unlock (&R.lock);
}

int
repl_start (struct replica *r)
{
  int e;

  if (!R.outbox || pipe2 (R.wake, O_CLOEXEC | O_NONBLOCK) == -1) {
    nbdkit_error ("replica: replication setup: %m");
    return -1;
  }
  memcpy (R.uuid, r->log->sb.volume_uuid, 16);
  R.backing_size = r->log->sb.backing_size;
  pthread_mutex_lock (&R.lock);
  do_actions (step (LINK_EV_PEER_SET, 0, NULL), NULL);
  pthread_mutex_unlock (&R.lock);
  e = pthread_create (&R.thread, NULL, link_thread, NULL);
  if (e) {
    errno = e;
    nbdkit_error ("replica: pthread_create: %m");
    return -1;
  }
  R.running = true;
  if (sync_start () == -1)
    return -1;
  if (!(repl_cfg.replicator && strcmp (repl_cfg.replicator, "external") == 0))
    return spawn_start (r);
  return 0;
}

void
repl_stop (void)
{
  pthread_mutex_lock (&R.lock);
  R.stopping = true;            /* (the replicator's end is expected) */
  pthread_cond_broadcast (&R.acked_cond);
  pthread_mutex_unlock (&R.lock);
  sync_stop ();
  spawn_stop ();
  if (R.running) {
    if (write (R.wake[1], "", 1) == -1) { /* awake anyway */ }
    pthread_join (R.thread, NULL);
    R.running = false;
  }
  pthread_mutex_lock (&R.lock);
  if (R.fd >= 0)
    close (R.fd);
  R.fd = -1;
  pthread_mutex_unlock (&R.lock);
}
