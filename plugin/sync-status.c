/* nbd-replica: the sync engine's part of the status (sync_*, verify_*).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#include <stdio.h>
#include <inttypes.h>

#include <nbdkit-filter.h>

#include "replica.h"
#include "repl.h"
#include "sync-int.h"

static const char *
initial_sync_name (void)
{
  switch (repl_cfg.initial_sync) {
  case LINK_INITIAL_FULL: return "full";
  case LINK_INITIAL_NONE: return "none";
  default: return "checksum";
  }
}

/* sync_reason (Y.lock held): why the pass runs, and whether it failed
 * and is retried.
 */
static void
add_reason (json_object *o)
{
  char text[sizeof Y.why + 128];

  if (Y.phase == PH_NONE || Y.phase == PH_VERIFY || !Y.why[0]) {
    json_object_object_add (o, "sync_reason", NULL);
    return;
  }
  if (Y.failures == 0)
    snprintf (text, sizeof text, "%s", Y.why);
  else
    snprintf (text, sizeof text, "%s; the pass failed %" PRIu64 " time%s "
              "(see nbdkit's log) and is retried every %d s", Y.why,
              Y.failures, Y.failures == 1 ? "" : "s", RETRY_S);
  json_object_object_add (o, "sync_reason", json_object_new_string (text));
}

void
sync_status (json_object *o)
{
  uint64_t t, elapsed, rate, left;
  json_object *ranges;

  pthread_mutex_lock (&Y.lock);
  left = Y.total > Y.done ? Y.total - Y.done : 0;
  t = Y.t_end_ns ? Y.t_end_ns : now_ns ();
  elapsed = Y.t_start_ns ? t - Y.t_start_ns : 0;
  rate = elapsed > 0 ? (uint64_t) (Y.done * 1e9 / elapsed) : 0;
  json_object_object_add (o, "sync_phase",
                          json_object_new_string (phase_name (Y.phase)));
  add_reason (o);
  add_u64 (o, "sync_total_bytes", Y.total);
  add_u64 (o, "sync_done_bytes", Y.done);
  add_u64 (o, "sync_remaining_bytes", left);
  add_u64 (o, "sync_rate_bytes_per_sec", Y.phase != PH_NONE ? rate : 0);
  json_object_object_add (o, "sync_eta_sec", Y.phase != PH_NONE && rate > 0
                          ? json_object_new_int64 (left / rate)
                          : NULL);
  add_u64 (o, "sync_sent_bytes", Y.sent);
  add_u64 (o, "sync_reused_bytes",
           __atomic_load_n (&Y.reused_bytes, __ATOMIC_RELAXED));
  add_u64 (o, "sync_wait_read_ms", Y.wait_ns[WAIT_READ] / 1000000);
  add_u64 (o, "sync_wait_sums_ms", Y.wait_ns[WAIT_SUMS] / 1000000);
  add_u64 (o, "sync_wait_throttle_ms", Y.wait_ns[WAIT_THROTTLE] / 1000000);
  add_u64 (o, "sync_wait_finisher_ms", Y.wait_ns[WAIT_FINISHER] / 1000000);
  add_u64 (o, "sync_blocks_differing", Y.differing);
  add_u64 (o, "sync_passes", Y.passes);
  add_u64 (o, "sync_block_size", 1ULL << block_shift ());
  json_object_object_add (o, "initial_sync",
                          json_object_new_string (initial_sync_name ()));
  json_object_object_add (o, "verify_state",
                          json_object_new_string (Y.vstate));
  add_u64 (o, "verify_mismatched_blocks", Y.vblocks);
  ranges = json_object_new_array ();
  for (size_t i = 0; i < Y.nvr; ++i) {
    json_object *r = json_object_new_object ();
    add_u64 (r, "offset", Y.vr[i].off);
    add_u64 (r, "length", Y.vr[i].len);
    json_object_array_add (ranges, r);
  }
  json_object_object_add (o, "verify_ranges", ranges);
  json_object_object_add (o, "verify_error", Y.verror[0]
                          ? json_object_new_string (Y.verror) : NULL);
  pthread_mutex_unlock (&Y.lock);
}
