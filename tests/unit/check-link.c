/* nbd-replica: unit tests of the role/link state machine (common/link.c).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * Pure: no sockets, no clock; time is the now_ms of each event.
 */
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "link.h"
#include "logfmt.h"

static const uint8_t uuid_a[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
static const uint8_t uuid_b[16] = { 9, 8, 7, 6, 5, 4, 3, 2, 1 };

static struct link_event
ev (enum link_event_type t, uint64_t now)
{
  struct link_event e;

  memset (&e, 0, sizeof e);
  e.type = t;
  e.now_ms = now;
  memcpy (e.local.volume_uuid, uuid_a, 16);
  e.local.backing_size = 1 << 30;
  e.local.head_seq = 100;
  memcpy (e.peer.volume_uuid, uuid_a, 16);
  e.peer.paired = true;
  e.peer.role = RLOG_ROLE_SECONDARY;
  e.peer.backing_size = 1 << 30;
  e.peer.durable_seq = 90;
  e.peer.seq_known = true;
  return e;
}

/* Bring a fresh link to REPLICATING with the peer at seq 90. */
static void
connect_link (struct link *l, enum link_mode mode, enum link_sync_policy p)
{
  struct link_event e;

  link_init (l, mode, p, 1000);
  e = ev (LINK_EV_PEER_SET, 0);
  ck_assert_uint_eq (link_step (l, &e), LINK_ACT_CONNECT);
  ck_assert_int_eq (l->state, LINK_CONNECTING);
  e = ev (LINK_EV_HANDSHAKE, 1);
  ck_assert_uint_eq (link_step (l, &e), LINK_ACT_SHIP);
  ck_assert_int_eq (l->state, LINK_REPLICATING);
  ck_assert_uint_eq (l->acked_seq, 90);
}

START_TEST (test_standalone_acks_locally)
{
  struct link l;

  link_init (&l, LINK_SYNC, LINK_SYNC_DEGRADE, 1000);
  ck_assert_int_eq (l.state, LINK_STANDALONE);
  ck_assert (link_may_ack (&l, 12345));
}
END_TEST

START_TEST (test_backoff_doubles_and_caps)
{
  struct link l;
  struct link_event e;
  uint64_t now = 0, expect = LINK_BACKOFF_MIN_MS;

  connect_link (&l, LINK_ASYNC, LINK_SYNC_DEGRADE);
  for (int i = 0; i < 12; ++i) {
    e = ev (LINK_EV_IO_ERROR, now);
    ck_assert_uint_eq (link_step (&l, &e),
                       LINK_ACT_DISCONNECT | LINK_ACT_LOG);
    ck_assert_int_eq (l.state, LINK_DISCONNECTED);
    ck_assert_uint_eq (l.retry_at_ms, now + expect);
    /* Not before the retry time ... */
    e = ev (LINK_EV_TICK, now + expect - 1);
    ck_assert_uint_eq (link_step (&l, &e), 0);
    ck_assert_int_eq (l.state, LINK_DISCONNECTED);
    /* ... then connect again. */
    now += expect;
    e = ev (LINK_EV_TICK, now);
    ck_assert_uint_eq (link_step (&l, &e), LINK_ACT_CONNECT);
    ck_assert_int_eq (l.state, LINK_CONNECTING);
    expect = expect * 2 > LINK_BACKOFF_MAX_MS ? LINK_BACKOFF_MAX_MS
      : expect * 2;
  }
  ck_assert_uint_eq (l.backoff_ms, LINK_BACKOFF_MAX_MS);
  /* A successful handshake resets the backoff. */
  e = ev (LINK_EV_HANDSHAKE, now);
  link_step (&l, &e);
  ck_assert_uint_eq (l.backoff_ms, LINK_BACKOFF_MIN_MS);
}
END_TEST

START_TEST (test_verdicts)
{
  struct link_event e = ev (LINK_EV_HANDSHAKE, 0);

  ck_assert_int_eq (link_check_peer (&e.local, &e.peer), LINK_PEER_OK);
  e.peer.paired = false;
  memcpy (e.peer.volume_uuid, uuid_b, 16);
  ck_assert_int_eq (link_check_peer (&e.local, &e.peer), LINK_PEER_ADOPT);
  e.peer.backing_size--;
  ck_assert_int_eq (link_check_peer (&e.local, &e.peer), LINK_PEER_WRONG_SIZE);
  e = ev (LINK_EV_HANDSHAKE, 0);
  memcpy (e.peer.volume_uuid, uuid_b, 16);
  ck_assert_int_eq (link_check_peer (&e.local, &e.peer),
                    LINK_PEER_WRONG_VOLUME);
  e = ev (LINK_EV_HANDSHAKE, 0);
  e.peer.role = RLOG_ROLE_PRIMARY;
  ck_assert_int_eq (link_check_peer (&e.local, &e.peer),
                    LINK_PEER_SPLIT_BRAIN);
  e.peer.paired = false;
  ck_assert_int_eq (link_check_peer (&e.local, &e.peer),
                    LINK_PEER_SPLIT_BRAIN);
  e = ev (LINK_EV_HANDSHAKE, 0);
  e.peer.durable_seq = 101;                 /* ahead of our head */
  ck_assert_int_eq (link_check_peer (&e.local, &e.peer), LINK_PEER_RESYNC);
  e = ev (LINK_EV_HANDSHAKE, 0);
  e.peer.seq_known = false;                 /* a burned seq of ours */
  ck_assert_int_eq (link_check_peer (&e.local, &e.peer), LINK_PEER_RESYNC);
  e = ev (LINK_EV_HANDSHAKE, 0);
  e.peer.seq_known = false;
  e.peer.behind = true;                     /* lost what it acknowledged */
  ck_assert_int_eq (link_check_peer (&e.local, &e.peer), LINK_PEER_RESYNC);
  e = ev (LINK_EV_HANDSHAKE, 0);
  e.peer.needs_resync = true;               /* interrupted resync */
  ck_assert_int_eq (link_check_peer (&e.local, &e.peer), LINK_PEER_RESYNC);
  /* A primary is never resynced: split brain stays an admin's call. */
  e.peer.role = RLOG_ROLE_PRIMARY;
  ck_assert_int_eq (link_check_peer (&e.local, &e.peer),
                    LINK_PEER_SPLIT_BRAIN);
}
END_TEST

START_TEST (test_refused_then_retry)
{
  struct link l;
  struct link_event e;

  link_init (&l, LINK_SYNC, LINK_SYNC_DEGRADE, 1000);
  e = ev (LINK_EV_PEER_SET, 0);
  link_step (&l, &e);
  e = ev (LINK_EV_HANDSHAKE, 5);
  e.peer.role = RLOG_ROLE_PRIMARY;
  ck_assert_uint_eq (link_step (&l, &e), LINK_ACT_DISCONNECT | LINK_ACT_LOG);
  ck_assert_int_eq (l.state, LINK_REFUSED);
  ck_assert_ptr_nonnull (strstr (l.reason, "split brain"));
  e = ev (LINK_EV_TICK, 5 + LINK_REFUSED_RETRY_MS - 1);
  ck_assert_uint_eq (link_step (&l, &e), 0);
  e = ev (LINK_EV_TICK, 5 + LINK_REFUSED_RETRY_MS);
  ck_assert_uint_eq (link_step (&l, &e), LINK_ACT_CONNECT);
}
END_TEST

START_TEST (test_adopt_starts_at_acked_point)
{
  struct link l;
  struct link_event e;

  link_init (&l, LINK_ASYNC, LINK_SYNC_DEGRADE, 1000);
  e = ev (LINK_EV_PEER_SET, 0);
  link_step (&l, &e);
  e = ev (LINK_EV_HANDSHAKE, 1);
  e.peer.paired = false;
  e.peer.durable_seq = 0;
  memset (e.peer.volume_uuid, 0, 16);
  e.local.acked_seq = 40;
  e.local.initial_sync = LINK_INITIAL_NONE;
  ck_assert_uint_eq (link_step (&l, &e), LINK_ACT_SHIP | LINK_ACT_ADOPT);
  ck_assert_uint_eq (l.acked_seq, 40);
  /* Taken as identical, but the bitmap holds what our log freed since
   * the acked point: a pass over the bitmap's blocks, not nothing.
   */
  link_init (&l, LINK_ASYNC, LINK_SYNC_DEGRADE, 1000);
  e.type = LINK_EV_PEER_SET;
  link_step (&l, &e);
  e.type = LINK_EV_HANDSHAKE;
  e.local.bitmap = true;
  ck_assert_uint_eq (link_step (&l, &e),
                     LINK_ACT_SHIP | LINK_ACT_ADOPT | LINK_ACT_RESYNC);
  ck_assert (l.sync_bitmap && !l.sync_full && !l.sync_initial);
}
END_TEST

/* The default initial sync: adopt, then a checksum pass in place. */
START_TEST (test_adopt_with_initial_sync)
{
  struct link l;
  struct link_event e;

  link_init (&l, LINK_SYNC, LINK_SYNC_DEGRADE, 1000);
  e = ev (LINK_EV_PEER_SET, 0);
  link_step (&l, &e);
  e = ev (LINK_EV_HANDSHAKE, 1);
  e.peer.paired = false;
  memset (e.peer.volume_uuid, 0, 16);
  e.local.acked_seq = 40;
  ck_assert_uint_eq (link_step (&l, &e),
                     LINK_ACT_SHIP | LINK_ACT_ADOPT | LINK_ACT_RESYNC);
  ck_assert (!l.sync_full && !l.sync_stage && l.sync_initial);
  ck_assert_int_eq (l.state, LINK_REPLICATING);
  link_init (&l, LINK_SYNC, LINK_SYNC_DEGRADE, 1000);
  e.type = LINK_EV_PEER_SET;
  link_step (&l, &e);
  e.type = LINK_EV_HANDSHAKE;
  e.local.initial_sync = LINK_INITIAL_FULL;
  link_step (&l, &e);
  ck_assert (l.sync_full);
}
END_TEST

/* A paired peer that is not a known prefix of our history (here: it
 * reports a seq beyond our head) is resynced from our acked point,
 * staged, not refused.
 */
START_TEST (test_diverged_peer_is_resynced)
{
  struct link l;
  struct link_event e;

  link_init (&l, LINK_SYNC, LINK_SYNC_DEGRADE, 1000);
  e = ev (LINK_EV_PEER_SET, 0);
  link_step (&l, &e);
  e = ev (LINK_EV_HANDSHAKE, 1);
  e.peer.durable_seq = 150;
  e.local.acked_seq = 70;
  ck_assert_uint_eq (link_step (&l, &e), LINK_ACT_SHIP | LINK_ACT_RESYNC);
  ck_assert_int_eq (l.state, LINK_REPLICATING);
  ck_assert_uint_eq (l.acked_seq, 70);
  ck_assert (l.sync_stage && !l.sync_full && !l.sync_initial);
  ck_assert_ptr_nonnull (strstr (l.sync_why, "diverged"));
  ck_assert (!l.sync_bitmap);
}
END_TEST

/* A good peer, but our log dropped records it lacks (the dirty bitmap
 * holds their blocks): a staged resync of the bitmap's blocks.
 */
START_TEST (test_bitmap_resync)
{
  struct link l;
  struct link_event e;

  link_init (&l, LINK_ASYNC, LINK_SYNC_DEGRADE, 1000);
  e = ev (LINK_EV_PEER_SET, 0);
  link_step (&l, &e);
  e = ev (LINK_EV_HANDSHAKE, 1);
  e.local.bitmap = true;
  e.local.acked_seq = 95;
  ck_assert_uint_eq (link_step (&l, &e), LINK_ACT_SHIP | LINK_ACT_RESYNC);
  ck_assert (l.sync_bitmap && l.sync_stage && !l.sync_full);
  ck_assert_uint_eq (l.acked_seq, 95);
  /* A diverged peer gets the full pass even with a bitmap. */
  link_init (&l, LINK_ASYNC, LINK_SYNC_DEGRADE, 1000);
  e.type = LINK_EV_PEER_SET;
  link_step (&l, &e);
  e.type = LINK_EV_HANDSHAKE;
  e.peer.seq_known = false;
  link_step (&l, &e);
  ck_assert (!l.sync_bitmap);
  /* Our bitmap pass was interrupted (the peer says it needs a resync):
   * the bitmap pass again; not if the pass was not ours.
   */
  link_init (&l, LINK_ASYNC, LINK_SYNC_DEGRADE, 1000);
  e.type = LINK_EV_PEER_SET;
  link_step (&l, &e);
  e.type = LINK_EV_HANDSHAKE;
  e.peer.needs_resync = true;
  e.peer.behind = true;
  e.local.bitmap_resume = true;
  link_step (&l, &e);
  ck_assert (l.sync_bitmap && l.sync_stage);
  /* ... but a demoted peer, which may hold writes of its own where no
   * bit is set, gets the full pass.
   */
  link_init (&l, LINK_ASYNC, LINK_SYNC_DEGRADE, 1000);
  e.type = LINK_EV_PEER_SET;
  link_step (&l, &e);
  e.type = LINK_EV_HANDSHAKE;
  e.peer.foreign = true;
  link_step (&l, &e);
  ck_assert (!l.sync_bitmap && l.sync_stage);
  e.peer.foreign = false;
  link_init (&l, LINK_ASYNC, LINK_SYNC_DEGRADE, 1000);
  e.type = LINK_EV_PEER_SET;
  link_step (&l, &e);
  e.type = LINK_EV_HANDSHAKE;
  e.local.bitmap_resume = false;
  link_step (&l, &e);
  ck_assert (!l.sync_bitmap);
}
END_TEST

START_TEST (test_sync_waits_for_peer_ack)
{
  struct link l;
  struct link_event e;

  connect_link (&l, LINK_SYNC, LINK_SYNC_DEGRADE);
  ck_assert (link_may_ack (&l, 90));
  ck_assert (!link_may_ack (&l, 91));
  e = ev (LINK_EV_WRITE_WAITING, 10);
  e.seq = 95;
  ck_assert_uint_eq (link_step (&l, &e), 0);
  e = ev (LINK_EV_ACK, 20);
  e.seq = 93;
  ck_assert (link_step (&l, &e) & LINK_ACT_RELEASE_WRITES);
  ck_assert (link_may_ack (&l, 93));
  ck_assert (!link_may_ack (&l, 94));
  ck_assert_uint_ne (l.waiting_since_ms, 0);
  e = ev (LINK_EV_ACK, 30);
  e.seq = 95;
  ck_assert (link_step (&l, &e) & LINK_ACT_RELEASE_WRITES);
  ck_assert_uint_eq (l.waiting_since_ms, 0);
  ck_assert (!l.degraded);
  /* Async acks locally. */
  link_init (&l, LINK_ASYNC, LINK_SYNC_DEGRADE, 1000);
  e = ev (LINK_EV_PEER_SET, 0);
  link_step (&l, &e);
  ck_assert (link_may_ack (&l, 1000));
}
END_TEST

/* A peer that keeps acknowledging under a steady stream of writes (some
 * write always waits) never times out: the clock restarts at each ack
 * that makes progress.  It times out once acks stop.
 */
/* "Up to date" not confirmed before the link dropped is told again at
 * the next handshake (else the peer would stay outdated for ever).
 */
START_TEST (test_uptodate_retold_after_reconnect)
{
  struct link l;
  struct link_event e;

  connect_link (&l, LINK_SYNC, LINK_SYNC_DEGRADE);
  e = ev (LINK_EV_WRITE_WAITING, 100);
  e.seq = 95;
  link_step (&l, &e);
  e = ev (LINK_EV_TICK, 100 + 1000);
  link_step (&l, &e);
  ck_assert (l.degraded);
  e = ev (LINK_EV_OUTDATED_TOLD, 1200);
  link_step (&l, &e);
  e = ev (LINK_EV_ACK, 1300);
  e.seq = e.local.head_seq;
  ck_assert (link_step (&l, &e) & LINK_ACT_TELL_UPTODATE);
  ck_assert (!l.degraded && l.tell_uptodate);
  ck_assert (link_peer_outdated (&l));      /* until it confirms */
  e = ev (LINK_EV_IO_ERROR, 1400);          /* dropped before confirmed */
  link_step (&l, &e);
  e = ev (LINK_EV_TICK, 1400 + LINK_BACKOFF_MIN_MS);
  link_step (&l, &e);
  e = ev (LINK_EV_HANDSHAKE, 1600);
  ck_assert_uint_eq (link_step (&l, &e),
                     LINK_ACT_SHIP | LINK_ACT_TELL_UPTODATE);
  ck_assert (link_peer_outdated (&l));
  e = ev (LINK_EV_UPTODATE_TOLD, 1700);
  link_step (&l, &e);
  ck_assert (!l.tell_uptodate);
  ck_assert (!link_peer_outdated (&l));
}
END_TEST

START_TEST (test_sync_progress_restarts_timeout)
{
  struct link l;
  struct link_event e;
  uint64_t t, seq = 90;

  connect_link (&l, LINK_SYNC, LINK_SYNC_DEGRADE);
  for (t = 100; t < 10000; t += 400) {
    e = ev (LINK_EV_WRITE_WAITING, t);
    e.seq = seq + 10;
    link_step (&l, &e);
    e = ev (LINK_EV_ACK, t + 300);
    e.seq = seq += 5;                     /* always behind the waiters */
    link_step (&l, &e);
    e = ev (LINK_EV_TICK, t + 399);
    link_step (&l, &e);
    ck_assert (!l.degraded);
  }
  e = ev (LINK_EV_TICK, t + 1000);
  link_step (&l, &e);
  ck_assert (l.degraded);
}
END_TEST

START_TEST (test_sync_degrades_after_timeout)
{
  struct link l;
  struct link_event e;
  unsigned act;

  connect_link (&l, LINK_SYNC, LINK_SYNC_DEGRADE);
  e = ev (LINK_EV_WRITE_WAITING, 100);
  e.seq = 95;
  link_step (&l, &e);
  e = ev (LINK_EV_TICK, 100 + 999);
  ck_assert_uint_eq (link_step (&l, &e), 0);
  ck_assert (!link_may_ack (&l, 95));
  e = ev (LINK_EV_TICK, 100 + 1000);
  act = link_step (&l, &e);
  ck_assert_uint_eq (act, LINK_ACT_RELEASE_WRITES | LINK_ACT_LOG |
                     LINK_ACT_TELL_OUTDATED);
  ck_assert (l.degraded && l.peer_outdated && l.tell_outdated);
  ck_assert (link_may_ack (&l, 95));
  ck_assert_ptr_nonnull (strstr (l.reason, "outdated"));
  /* The link drops; on reconnect the peer is told it is outdated. */
  e = ev (LINK_EV_IO_ERROR, 2000);
  link_step (&l, &e);
  e = ev (LINK_EV_TICK, 2000 + LINK_BACKOFF_MIN_MS);
  link_step (&l, &e);
  e = ev (LINK_EV_HANDSHAKE, 2200);
  act = link_step (&l, &e);
  ck_assert_uint_eq (act, LINK_ACT_SHIP | LINK_ACT_TELL_OUTDATED);
  e = ev (LINK_EV_OUTDATED_TOLD, 2201);
  link_step (&l, &e);
  ck_assert (!l.tell_outdated && l.peer_outdated);
  /* Still degraded until the peer has everything up to our head. */
  e = ev (LINK_EV_ACK, 2300);
  e.seq = 99;
  link_step (&l, &e);
  ck_assert (l.degraded);
  e = ev (LINK_EV_ACK, 2400);
  e.seq = 100;
  ck_assert (link_step (&l, &e) & LINK_ACT_TELL_UPTODATE);
  ck_assert (!l.degraded && !l.peer_outdated);
  ck_assert (!link_may_ack (&l, 101));   /* sync again */
}
END_TEST

START_TEST (test_sync_wait_policy_never_degrades)
{
  struct link l;
  struct link_event e;

  connect_link (&l, LINK_SYNC, LINK_SYNC_WAIT);
  e = ev (LINK_EV_WRITE_WAITING, 100);
  e.seq = 95;
  link_step (&l, &e);
  e = ev (LINK_EV_IO_ERROR, 200);
  link_step (&l, &e);
  e = ev (LINK_EV_TICK, 1000000);
  link_step (&l, &e);
  ck_assert (!l.degraded);
  ck_assert (!link_may_ack (&l, 95));
}
END_TEST

START_TEST (test_set_mode)
{
  struct link l;
  struct link_event e;

  connect_link (&l, LINK_SYNC, LINK_SYNC_WAIT);
  e = ev (LINK_EV_WRITE_WAITING, 100);
  e.seq = 95;
  link_step (&l, &e);
  e = ev (LINK_EV_SET_MODE, 150);
  e.mode = LINK_ASYNC;
  ck_assert_uint_eq (link_step (&l, &e), LINK_ACT_RELEASE_WRITES);
  ck_assert (link_may_ack (&l, 95));
  e.mode = LINK_SYNC;
  link_step (&l, &e);
  ck_assert (!link_may_ack (&l, 95));
}
END_TEST

/* Writes whose records the peer gets only through a sync pass wait,
 * in sync mode, for the pass's end, whatever is acknowledged after.
 */
START_TEST (test_hold_until_pass_end)
{
  struct link l;
  struct link_event e;

  connect_link (&l, LINK_SYNC, LINK_SYNC_DEGRADE);
  link_hold_acks (&l, 90, 120);
  e = ev (LINK_EV_ACK, 10);
  e.seq = 130;
  e.local.head_seq = 130;
  link_step (&l, &e);
  ck_assert (link_may_ack (&l, 90));
  ck_assert (!link_may_ack (&l, 91));
  ck_assert (!link_may_ack (&l, 120));
  ck_assert (link_may_ack (&l, 121));
  ck_assert (link_may_ack (&l, 130));
  ck_assert_uint_eq (link_release_hold (&l), LINK_ACT_RELEASE_WRITES);
  ck_assert (link_may_ack (&l, 100));
  ck_assert_uint_eq (link_release_hold (&l), 0);
  /* Async mode never holds. */
  connect_link (&l, LINK_ASYNC, LINK_SYNC_DEGRADE);
  link_hold_acks (&l, 90, 120);
  ck_assert (link_may_ack (&l, 100));
}
END_TEST

START_TEST (test_promote_check)
{
  ck_assert_ptr_null (link_promote_check (RLOG_ROLE_SECONDARY, false, false,
                                          false));
  ck_assert_ptr_nonnull (link_promote_check (RLOG_ROLE_PRIMARY, false, false,
                                             false));
  ck_assert_ptr_nonnull (link_promote_check (RLOG_ROLE_PRIMARY, false, false,
                                             true));
  /* Outdated: only with --force. */
  ck_assert_ptr_nonnull (strstr (link_promote_check (RLOG_ROLE_SECONDARY,
                                                     true, false, false),
                                 "--force"));
  ck_assert_ptr_null (link_promote_check (RLOG_ROLE_SECONDARY, true, false,
                                          true));
  /* Being resynced (inconsistent): only with --force. */
  ck_assert_ptr_nonnull (strstr (link_promote_check (RLOG_ROLE_SECONDARY,
                                                     false, true, false),
                                 "inconsistent"));
  ck_assert_ptr_null (link_promote_check (RLOG_ROLE_SECONDARY, false, true,
                                          true));
}
END_TEST

static Suite *
link_suite (void)
{
  Suite *s = suite_create ("link");
  TCase *tc = tcase_create ("core");

  tcase_add_test (tc, test_standalone_acks_locally);
  tcase_add_test (tc, test_backoff_doubles_and_caps);
  tcase_add_test (tc, test_verdicts);
  tcase_add_test (tc, test_refused_then_retry);
  tcase_add_test (tc, test_adopt_starts_at_acked_point);
  tcase_add_test (tc, test_adopt_with_initial_sync);
  tcase_add_test (tc, test_diverged_peer_is_resynced);
  tcase_add_test (tc, test_bitmap_resync);
  tcase_add_test (tc, test_hold_until_pass_end);
  tcase_add_test (tc, test_sync_waits_for_peer_ack);
  tcase_add_test (tc, test_sync_degrades_after_timeout);
  tcase_add_test (tc, test_sync_progress_restarts_timeout);
  tcase_add_test (tc, test_uptodate_retold_after_reconnect);
  tcase_add_test (tc, test_sync_wait_policy_never_degrades);
  tcase_add_test (tc, test_set_mode);
  tcase_add_test (tc, test_promote_check);
  suite_add_tcase (s, tc);
  return s;
}

int
main (void)
{
  SRunner *sr = srunner_create (link_suite ());
  int failed;

  srunner_run_all (sr, CK_NORMAL);
  failed = srunner_ntests_failed (sr);
  srunner_free (sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
