/* nbd-replicator: what the filter says (common/chan.h), and our replies.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * The filter decides (common/link.c runs there); we do the I/O.  One
 * attach is one session: CONFIG names the log (opened read-only and
 * without the lock, which the filter holds), we answer HELLO, then
 * follow CONNECT / SHIP / TELL / DISCONNECT / RESET / SUMS_REQ and
 * report PEER, ACK, TOLD, LINKDOWN, SUMS and, every second, STATS.
 *
 * written_lsn only grows (a WRITTEN below it is stale and ignored),
 * except that RESET (the log lost records it had written) forgets it:
 * nothing is read until the next WRITTEN.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <inttypes.h>
#include <unistd.h>

#include "replicator.h"

/* A log that cannot be opened is reported, and retried at the next
 * CONNECT: the channel stays up, so the filter sees why.
 */
static int
open_log (struct repl *r)
{
  char err[RLOG_ERRLEN];

  r->log = rlog_open (r->log_path, 0 /* no lock */, 1 /* read-only */, err);
  if (!r->log) {
    char why[sizeof r->log_err];

    /* Each new reason once (CONNECT reports it to the filter). */
    snprintf (why, sizeof why, "cannot open the log: %s", err);
    if (strcmp (why, r->log_err) != 0)
      msg ("%s", why);
    memcpy (r->log_err, why, sizeof why);
    return -1;
  }
  r->log_err[0] = '\0';
  msg ("log %s (ring %" PRIu64 " bytes)", r->log_path, r->log->sb.ring_size);
  return 0;
}

static void
on_config (struct repl *r, const struct chan_msg *m)
{
  if (r->log_path && strcmp (r->log_path, m->text) == 0 && r->log) {
    dbg ("CONFIG: same log %s", m->text);
    return;
  }
  if (r->peer.state != PEER_IDLE)
    peer_linkdown (r, "the log changed");
  rlog_close (r->log);
  r->log = NULL;
  free (r->log_path);
  r->log_path = strdup (m->text);
  if (!r->log_path) {
    chanc_break (&r->ch, "strdup: %m");
    return;
  }
  open_log (r);                 /* a failure is reported at CONNECT */
  chanc_sendf (&r->ch, CHAN_HELLO, getpid (), 0, 0, 0, 0, r->opt->peer_uri);
}

static void
on_written (struct repl *r, const struct chan_msg *m)
{
  if (r->written_known && m->c < r->written_lsn) {
    dbg ("WRITTEN lsn %" PRIu64 " below %" PRIu64 ": ignored",
         m->c, r->written_lsn);
    return;
  }
  r->written_known = true;
  r->written_lsn = m->c;
}

void
session_frame (void *opaque, const struct chan_msg *m)
{
  struct repl *r = opaque;

  if (m->type != CHAN_WRITTEN)
    dbg ("frame %u: a=%" PRIu64 " b=%" PRIu64 " c=%" PRIu64 " d=%" PRIu64
         " e=%" PRIu64 "%s%.*s", m->type, m->a, m->b, m->c, m->d, m->e,
         m->text_len ? " text=" : "", (int) m->text_len, m->text);
  if (m->type == CHAN_CONNECT && !r->log && r->log_path)
    open_log (r);
  if (m->type != CHAN_CONFIG && !r->log) {
    /* Everything else needs the log. */
    if (m->type == CHAN_CONNECT)
      peer_linkdown (r, "%s", r->log_path ? r->log_err
                     : "no log configured yet");
    else if (m->type == CHAN_WRITTEN)
      on_written (r, m);
    else if (m->type == CHAN_RESET) {
      r->written_known = false;
      r->written_lsn = 0;
    }
    else if (m->type == CHAN_SUMS_REQ)
      sums_request (r, m);      /* every request is answered: ENOTCONN */
    else
      dbg ("frame %u without a log: ignored", m->type);
    return;
  }

  switch (m->type) {
  case CHAN_CONFIG:
    on_config (r, m);
    break;
  case CHAN_WRITTEN:
    on_written (r, m);
    break;
  case CHAN_CONNECT:
    peer_connect (r, m->a, m->b, m->c, m->d & CHAN_CONNECT_NOSCAN,
                  (uint32_t) m->e);
    break;
  case CHAN_DISCONNECT:
    if (r->peer.state != PEER_IDLE)
      msg ("disconnected from the peer: %s",
           m->text_len ? m->text : "as the filter asked");
    peer_close (r);
    break;
  case CHAN_SHIP:
    peer_ship (r, m->a, m->b, m->c, m->d, m->e);
    break;
  case CHAN_TELL:
    peer_tell (r, m->a, m->b, m->c);
    break;
  case CHAN_RESET:
    r->written_known = false;
    r->written_lsn = 0;
    /* With no connection under way there is no link to drop: a
     * LINKDOWN now would cross the filter's next CONNECT and be taken
     * for that connection's failure.
     */
    if (r->peer.state != PEER_IDLE)
      peer_linkdown (r, "local log reset");
    break;
  case CHAN_SUMS_REQ:
    sums_request (r, m);
    break;
  default:
    dbg ("unknown frame type %u: ignored", m->type);
  }
}

void
session_attached (struct repl *r)
{
  r->written_known = false;
  r->written_lsn = 0;
  r->next_stats_ms = now_ms () + STATS_INTERVAL_MS;
}

void
session_detach (struct repl *r)
{
  peer_close (r);
  rlog_close (r->log);
  r->log = NULL;
  free (r->log_path);
  r->log_path = NULL;
  r->log_err[0] = '\0';
  r->written_known = false;
  r->written_lsn = 0;
  chanc_close (&r->ch);
}

void
session_tick (struct repl *r)
{
  uint64_t now = now_ms ();

  if (r->ch.fd == -1 || now < r->next_stats_ms)
    return;
  r->next_stats_ms = now + STATS_INTERVAL_MS;
  chanc_sendf (&r->ch, CHAN_STATS, r->st.sent, r->st.received, r->st.raw,
               r->st.wire, r->st.batches, NULL);
}
