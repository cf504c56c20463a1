/* nbd-replica: the role/link state machine (pure: no I/O, no clock).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * Transitions (docs/design.md "Role and link state machine"):
 *
 *   STANDALONE --PEER_SET--> CONNECTING --HANDSHAKE ok--> REPLICATING
 *   CONNECTING/REPLICATING --IO_ERROR--> DISCONNECTED (backoff 0.1 s,
 *       doubling to 10 s) --TICK at retry time--> CONNECTING
 *   CONNECTING --HANDSHAKE refused--> REFUSED --TICK after 30 s-->
 *       CONNECTING (an admin may have fixed the peer)
 *
 * Sync mode: a write replies once the peer acknowledged its seq.  If
 * writes waited longer than sync_timeout without any acknowledgement
 * from the peer (policy DEGRADE, the default),
 * the link degrades: writes reply after the local log, and the peer is
 * marked outdated (told as soon as it can be).  The link leaves the
 * degraded state when the peer has acknowledged everything up to our
 * head again; the peer is then told it is up to date.
 */
#include <string.h>
#include <stdio.h>
#include <inttypes.h>

#include "link.h"
#include "logfmt.h"

const char *
link_state_name (enum link_state s)
{
  switch (s) {
  case LINK_STANDALONE: return "standalone";
  case LINK_CONNECTING: return "connecting";
  case LINK_REPLICATING: return "replicating";
  case LINK_DISCONNECTED: return "disconnected";
  case LINK_REFUSED: return "refused";
  }
  return "unknown";
}

const char *
link_verdict_str (enum link_verdict v)
{
  switch (v) {
  case LINK_PEER_OK: return "peer accepted";
  case LINK_PEER_ADOPT: return "unpaired peer adopts this volume";
  case LINK_PEER_WRONG_VOLUME: return "peer belongs to another volume";
  case LINK_PEER_WRONG_SIZE: return "peer disk has another size";
  case LINK_PEER_SPLIT_BRAIN: return "peer is a primary too (split brain)";
  case LINK_PEER_DIVERGED: return "peer holds records this primary does "
      "not have (diverged)";
  case LINK_PEER_BEHIND: return "peer lost records it had acknowledged "
      "(its log was replaced?): it needs a resync";
  case LINK_PEER_RESYNC: return "peer needs a resync";
  }
  return "unknown";
}

void
link_init (struct link *l, enum link_mode mode, enum link_sync_policy policy,
           uint64_t sync_timeout_ms)
{
  memset (l, 0, sizeof *l);
  l->state = LINK_STANDALONE;
  l->mode = mode;
  l->policy = policy;
  l->sync_timeout_ms = sync_timeout_ms;
  l->backoff_ms = LINK_BACKOFF_MIN_MS;
}

enum link_verdict
link_check_peer (const struct link_local *local, const struct link_peer *p)
{
  bool same = memcmp (local->volume_uuid, p->volume_uuid, 16) == 0;

  if (p->role == RLOG_ROLE_PRIMARY && (same || !p->paired))
    return LINK_PEER_SPLIT_BRAIN;
  if (p->paired && !same)
    return LINK_PEER_WRONG_VOLUME;
  if (p->backing_size != local->backing_size)
    return LINK_PEER_WRONG_SIZE;
  if (p->role == RLOG_ROLE_PRIMARY)
    return LINK_PEER_SPLIT_BRAIN;
  if (!p->paired)
    return LINK_PEER_ADOPT;
  if (p->needs_resync || p->behind || p->durable_seq > local->head_seq ||
      !p->seq_known)
    return LINK_PEER_RESYNC;
  return LINK_PEER_OK;
}

/* Why link_check_peer said LINK_PEER_RESYNC, for status and the log. */
static const char *
resync_why (const struct link_local *local, const struct link_peer *p)
{
  if (p->needs_resync)
    return "the peer's last resync did not finish, or it was demoted";
  if (p->behind)
    return "the peer lost records it had acknowledged (its log was "
      "replaced?)";
  return "the peer holds records this primary does not have (diverged)";
}

const char *
link_promote_check (unsigned role, bool outdated, bool resyncing, bool force)
{
  if (role == RLOG_ROLE_PRIMARY)
    return "this node is already the primary";
  if (role != RLOG_ROLE_SECONDARY)
    return "unknown role";
  if (resyncing && !force)
    return "this secondary is being resynced (state inconsistent): "
      "promote --force rolls a staged resync back to the last consistent "
      "image, or takes a resync in place as it is (not consistent)";
  if (outdated && !force)
    return "this secondary is outdated (it missed writes acknowledged by "
      "a degraded sync primary): promote --force accepts that loss";
  return NULL;
}

bool
link_may_ack (const struct link *l, uint64_t seq)
{
  if (l->state == LINK_STANDALONE || l->mode == LINK_ASYNC || l->degraded)
    return true;
  if (l->hold && seq > l->hold_from && seq <= l->hold_to)
    return false;
  return seq <= l->acked_seq;
}

bool
link_peer_outdated (const struct link *l)
{
  return l->peer_outdated || l->tell_outdated || l->tell_uptodate;
}

void
link_hold_acks (struct link *l, uint64_t from, uint64_t to)
{
  if (to <= from)
    return;
  if (l->hold && l->hold_from < from)
    from = l->hold_from;          /* an earlier hold still stands */
  l->hold = true;
  l->hold_from = from;
  l->hold_to = to > l->hold_to ? to : l->hold_to;
}

unsigned
link_release_hold (struct link *l)
{
  if (!l->hold)
    return 0;
  l->hold = false;
  return LINK_ACT_RELEASE_WRITES;
}

static unsigned
lose_peer (struct link *l, uint64_t now, const char *why)
{
  l->state = LINK_DISCONNECTED;
  l->retry_at_ms = now + l->backoff_ms;
  l->backoff_ms = l->backoff_ms * 2 > LINK_BACKOFF_MAX_MS
    ? LINK_BACKOFF_MAX_MS : l->backoff_ms * 2;
  snprintf (l->reason, sizeof l->reason, "%s", why);
  return LINK_ACT_DISCONNECT | LINK_ACT_LOG;
}

static unsigned
on_handshake (struct link *l, const struct link_event *ev)
{
  unsigned act = 0;

  l->verdict = link_check_peer (&ev->local, &ev->peer);
  if (l->verdict != LINK_PEER_OK && l->verdict != LINK_PEER_ADOPT &&
      l->verdict != LINK_PEER_RESYNC) {
    l->state = LINK_REFUSED;
    l->retry_at_ms = ev->now_ms + LINK_REFUSED_RETRY_MS;
    snprintf (l->reason, sizeof l->reason, "%s",
              link_verdict_str (l->verdict));
    return LINK_ACT_DISCONNECT | LINK_ACT_LOG;
  }
  /* An unpaired secondary starts from the point the log still holds
   * everything after (the primary's disk as it was when it started with
   * a peer): the admin started the pair from identical images
   * (docs/design.md "Pairing").
   */
  if (l->verdict == LINK_PEER_ADOPT) {
    act |= LINK_ACT_ADOPT;
    l->acked_seq = ev->local.acked_seq;
    if (ev->local.initial_sync != LINK_INITIAL_NONE) {
      /* Its disk is not known to match ours: sync it in place (it holds
       * no image of this volume to keep).
       */
      act |= LINK_ACT_RESYNC;
      l->sync_full = ev->local.initial_sync == LINK_INITIAL_FULL;
      l->sync_stage = false;
      l->sync_initial = true;
      l->sync_bitmap = false;
      snprintf (l->sync_why, sizeof l->sync_why, "initial sync of a new "
                "peer");
    }
    else if (ev->local.bitmap) {
      /* The admin says its disk is ours as of the acked point, but our
       * log no longer holds the records after it: the dirty bitmap
       * says which blocks to compare.
       */
      act |= LINK_ACT_RESYNC;
      l->sync_full = false;
      l->sync_stage = true;
      l->sync_initial = false;
      l->sync_bitmap = true;
      snprintf (l->sync_why, sizeof l->sync_why, "a new peer taken as "
                "identical (replica-initial-sync=none), but the log no "
                "longer holds what came since: the dirty bitmap's blocks");
    }
  }
  else if (l->verdict == LINK_PEER_RESYNC) {
    /* Our volume, but its disk is no known state of ours: compare all
     * of it, from the point our log holds everything after; the peer
     * keeps its own image until the pass ends, if it can.
     */
    act |= LINK_ACT_RESYNC;
    l->acked_seq = ev->local.acked_seq;
    l->sync_full = false;
    l->sync_stage = true;
    l->sync_initial = false;
    /* Our own bitmap pass, interrupted: the bitmap still covers
     * everything the peer may lack (every write since it was started
     * marks it), so that pass starts again.  Not for a peer that may
     * hold writes of its own (demoted since): those lie where no bit
     * of ours is set.
     */
    l->sync_bitmap = ev->local.bitmap && ev->local.bitmap_resume &&
      ev->peer.needs_resync && !ev->peer.foreign;
    snprintf (l->sync_why, sizeof l->sync_why, "%s",
              l->sync_bitmap ? "the peer's resync from the dirty bitmap "
              "was interrupted" : resync_why (&ev->local, &ev->peer));
  }
  else if (ev->local.bitmap) {
    /* A known prefix of our history, but our log no longer holds all
     * it lacks: the dirty bitmap says which blocks to compare.
     */
    act |= LINK_ACT_RESYNC;
    l->verdict = LINK_PEER_RESYNC;
    l->acked_seq = ev->local.acked_seq;
    l->sync_full = false;
    l->sync_stage = true;
    l->sync_initial = false;
    l->sync_bitmap = true;
    snprintf (l->sync_why, sizeof l->sync_why, "the peer was away longer "
              "than the log could hold: the dirty bitmap's blocks");
  }
  else
    l->acked_seq = ev->peer.durable_seq;
  l->state = LINK_REPLICATING;
  l->backoff_ms = LINK_BACKOFF_MIN_MS;
  l->reason[0] = '\0';
  act |= LINK_ACT_SHIP;
  /* What the peer was to be told and has not confirmed yet. */
  if (l->tell_outdated)
    act |= LINK_ACT_TELL_OUTDATED;
  else if (l->tell_uptodate)
    act |= LINK_ACT_TELL_UPTODATE;
  return act;
}

/* The sync timeout measures how long waiting writes see no progress:
 * each acknowledgement that moves acked_seq restarts the clock if
 * writes still wait (a peer that keeps up under a steady stream of
 * writes is never declared dead just because some write always waits).
 */
static unsigned
on_ack (struct link *l, const struct link_event *ev)
{
  unsigned act = 0;
  bool progress = ev->seq > l->acked_seq;

  if (progress)
    l->acked_seq = ev->seq;
  if (l->waiting_since_ms && l->acked_seq >= l->waiting_seq) {
    l->waiting_since_ms = 0;
    act |= LINK_ACT_RELEASE_WRITES;
  }
  else if (l->waiting_since_ms) {
    if (progress)
      l->waiting_since_ms = ev->now_ms ? ev->now_ms : 1;
    act |= LINK_ACT_RELEASE_WRITES;     /* some of them */
  }
  if ((l->degraded || l->peer_outdated) && !l->hold &&
      l->acked_seq >= ev->local.head_seq) {
    l->degraded = false;
    l->peer_outdated = false;
    l->tell_outdated = false;
    l->tell_uptodate = true;
    act |= LINK_ACT_TELL_UPTODATE;
  }
  return act;
}

/* Sync mode: a write has waited too long for the peer. */
static unsigned
check_sync_timeout (struct link *l, uint64_t now)
{
  if (l->mode != LINK_SYNC || l->degraded || l->policy != LINK_SYNC_DEGRADE ||
      !l->waiting_since_ms || now - l->waiting_since_ms < l->sync_timeout_ms)
    return 0;
  l->degraded = true;
  l->peer_outdated = true;
  l->tell_outdated = true;
  l->tell_uptodate = false;
  l->waiting_since_ms = 0;
  snprintf (l->reason, sizeof l->reason, "sync mode degraded to async: the "
            "peer did not acknowledge seq %" PRIu64 " within %" PRIu64
            " ms; the peer is outdated", l->waiting_seq, l->sync_timeout_ms);
  return LINK_ACT_RELEASE_WRITES | LINK_ACT_LOG |
    (l->state == LINK_REPLICATING ? LINK_ACT_TELL_OUTDATED : 0);
}

unsigned
link_step (struct link *l, const struct link_event *ev)
{
  unsigned act = 0;

  switch (ev->type) {
  case LINK_EV_TICK:
    if ((l->state == LINK_DISCONNECTED || l->state == LINK_REFUSED) &&
        ev->now_ms >= l->retry_at_ms) {
      l->state = LINK_CONNECTING;
      act |= LINK_ACT_CONNECT;
    }
    break;
  case LINK_EV_PEER_SET:
    if (l->state == LINK_STANDALONE) {
      l->state = LINK_CONNECTING;
      act |= LINK_ACT_CONNECT;
    }
    break;
  case LINK_EV_HANDSHAKE:
    if (l->state == LINK_CONNECTING)
      act |= on_handshake (l, ev);
    break;
  case LINK_EV_IO_ERROR:
    if (l->state == LINK_CONNECTING || l->state == LINK_REPLICATING)
      act |= lose_peer (l, ev->now_ms, "connection to the peer failed");
    break;
  case LINK_EV_ACK:
    if (l->state == LINK_REPLICATING)
      act |= on_ack (l, ev);
    break;
  case LINK_EV_WRITE_WAITING:
    if (!link_may_ack (l, ev->seq)) {
      if (!l->waiting_since_ms)
        l->waiting_since_ms = ev->now_ms ? ev->now_ms : 1;
      if (ev->seq > l->waiting_seq)
        l->waiting_seq = ev->seq;
    }
    else
      act |= LINK_ACT_RELEASE_WRITES;
    break;
  case LINK_EV_SET_MODE:
    l->mode = ev->mode;
    if (ev->mode == LINK_ASYNC) {
      l->waiting_since_ms = 0;
      act |= LINK_ACT_RELEASE_WRITES;
    }
    break;
  case LINK_EV_OUTDATED_TOLD:
    l->tell_outdated = false;
    break;
  case LINK_EV_UPTODATE_TOLD:
    l->tell_uptodate = false;
    break;
  }
  return act | check_sync_timeout (l, ev->now_ms);
}
