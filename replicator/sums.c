/* nbd-replicator: relaying the peer's block sums (CHAN_SUMS_REQ).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * The filter's sync engine compares its block sums with the peer's;
 * we read the peer's from its replication export (a read at
 * WIRE_SUMS_OFFSET) and pass them back in a CHAN_SUMS frame.  Every
 * CHAN_SUMS_REQ gets exactly one CHAN_SUMS, as long as the channel
 * lasts: the answers of a dropped link (ENOTCONN) are sent before its
 * CHAN_LINKDOWN.  A request that comes while the handshake is under way
 * (the peer's HELLO read, not shipping yet) is queued, not refused: the
 * filter asks for several chunks at the start of a pass, and would
 * otherwise ask for each again.
 *
 * Reads have a window of their own (MAX_INFLIGHT_SUMS), apart from the
 * batches' (peer.c), and are started before new batches in each round:
 * batches cannot starve them, and they hold up batches by at most
 * MAX_INFLIGHT_SUMS small reads.  More requests wait in a bounded ring:
 * at most SUMS_OUTSTANDING_MAX (MAX_INFLIGHT_SUMS + MAX_QUEUED_SUMS)
 * requests are unanswered at any time; beyond, the filter is told
 * EAGAIN.
 *
 * Ownership: a read's buffer is the text of its own answer frame
 * (struct sums_read, malloc'd when the read is submitted), owned by the
 * peer's slot table.  libnbd's completion callback writes to its op
 * until the command retires, so a read is freed only once done
 * (sums_progress), or after nbd_close, which returns only when libnbd
 * is finished with every command (sums_drop, from peer_close).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <inttypes.h>
#include <errno.h>

#include "replicator.h"

_Static_assert (WIRE_SUMS_MAX * WIRE_SUM_SIZE <= CHAN_TEXT_MAX,
                "a CHAN_SUMS frame holds the largest sums read");

/* Blocks of one block size that WIRE_SUMS_OFFSET can address: the
 * region of one shift is 1 << 40 bytes of sums; past it a read would
 * return another block size's sums.
 */
#define SUMS_REGION_BLOCKS ((1ULL << 40) / WIRE_SUM_SIZE)

static void
answer (struct repl *r, uint64_t off, uint64_t nblocks, uint64_t shift,
        uint64_t id, int err)
{
  chanc_sendf (&r->ch, CHAN_SUMS, off, nblocks, shift, id, err, NULL);
}

static bool
valid (const struct chan_msg *m)
{
  if (m->b < 1 || m->b > WIRE_SUMS_MAX ||
      m->c < WIRE_SUMS_MIN_SHIFT || m->c > WIRE_SUMS_MAX_SHIFT)
    return false;
  /* Whole blocks, within the region of this block size. */
  return (m->a & ((1ULL << m->c) - 1)) == 0 &&
    (m->a >> m->c) <= SUMS_REGION_BLOCKS - m->b;
}

void
sums_request (struct repl *r, const struct chan_msg *m)
{
  struct peer *p = &r->peer;
  struct sums_req *q;

  if (!valid (m)) {
    dbg ("sums request %" PRIu64 ": invalid (offset %" PRIu64 ", %" PRIu64
         " blocks, shift %" PRIu64 ")", m->d, m->a, m->b, m->c);
    answer (r, m->a, m->b, m->c, m->d, EINVAL);
    return;
  }
  /* Before a peer's HELLO is read there is no connection that will
   * ship soon; from then on (the filter starts a pass as soon as it
   * hears of the peer) the request waits in the queue until shipping
   * starts, or is answered ENOTCONN by peer_close if the link drops.
   */
  if (p->state < PEER_WAIT) {
    answer (r, m->a, m->b, m->c, m->d, ENOTCONN);
    return;
  }
  /* Counted with the reads in flight: frames that come in one burst
   * are all queued before the slots are filled, and the limit must not
   * depend on how the filter's frames were split.
   */
  if (p->sums_queued + p->sums_inflight >= SUMS_OUTSTANDING_MAX) {
    answer (r, m->a, m->b, m->c, m->d, EAGAIN);
    return;
  }
  q = &p->sums_q[(p->sums_first + p->sums_queued++) % SUMS_OUTSTANDING_MAX];
  q->off = m->a;
  q->nblocks = m->b;
  q->shift = m->c;
  q->id = m->d;
}

/* Answer the reads that completed, in any order (the filter matches
 * them by id), and free them.
 */
static void
reap (struct repl *r)
{
  struct peer *p = &r->peer;

  for (unsigned i = 0; i < MAX_INFLIGHT_SUMS; ++i) {
    struct sums_read *s = p->sums[i];

    if (!s || !s->op.done)
      continue;
    p->last_reply_ms = now_ms ();
    s->m.e = s->op.err;
    s->m.text_len = s->op.err ? 0 : s->m.b * WIRE_SUM_SIZE;
    if (s->op.err)
      dbg ("sums read %" PRIu64 " failed: %s", s->m.d,
           strerror (s->op.err));
    chanc_send (&r->ch, &s->m);
    free (s);
    p->sums[i] = NULL;
    p->sums_inflight--;
  }
}

/* Start the oldest queued request in a free slot.  1: started (or
 * answered: out of memory), 0: nothing to start, -1: the link went
 * down (the request is still queued: peer_close answers it).
 */
static int
submit_one (struct repl *r)
{
  struct peer *p = &r->peer;
  const struct sums_req *q = &p->sums_q[p->sums_first];
  struct sums_read *s;
  unsigned slot;
  uint64_t len;

  if (p->sums_queued == 0 || p->sums_inflight == MAX_INFLIGHT_SUMS)
    return 0;
  for (slot = 0; p->sums[slot]; ++slot)
    ;
  len = q->nblocks * WIRE_SUM_SIZE;
  s = malloc (sizeof *s);
  if (!s) {
    answer (r, q->off, q->nblocks, q->shift, q->id, ENOMEM);
    goto dequeue;
  }
  chan_msg_init (&s->m, CHAN_SUMS, q->off, q->nblocks, q->shift, q->id, 0,
                 NULL);
  if (!peer_busy (p))
    p->last_reply_ms = now_ms ();
  if (nbd_aio_pread (p->h, s->m.text, len,
                     WIRE_SUMS_OFFSET (q->shift, q->off),
                     op_arm (&s->op, &r->st, NBD_REPLY_HDR + len), 0) == -1) {
    const char *e = nbd_get_error ();

    free (s);
    peer_linkdown (r, "reading block sums: %s",
                   e ? e : "unknown libnbd error");
    return -1;
  }
  dbg ("sums read %" PRIu64 ": offset %" PRIu64 ", %" PRIu64 " blocks of %"
       PRIu64 " bytes", q->id, q->off, q->nblocks, UINT64_C (1) << q->shift);
  r->st.sent += NBD_REQUEST_HDR;
  p->sums[slot] = s;
  p->sums_inflight++;

 dequeue:
  p->sums_first = (p->sums_first + 1) % SUMS_OUTSTANDING_MAX;
  p->sums_queued--;
  return 1;
}

int
sums_progress (struct repl *r)
{
  int ret;

  reap (r);
  while ((ret = submit_one (r)) == 1)
    ;
  return ret;
}

void
sums_drop (struct repl *r)
{
  struct peer *p = &r->peer;

  for (unsigned i = 0; i < MAX_INFLIGHT_SUMS; ++i) {
    struct sums_read *s = p->sums[i];

    if (!s)
      continue;
    answer (r, s->m.a, s->m.b, s->m.c, s->m.d, ENOTCONN);
    free (s);
    p->sums[i] = NULL;
  }
  p->sums_inflight = 0;
  while (p->sums_queued > 0) {
    const struct sums_req *q = &p->sums_q[p->sums_first];

    answer (r, q->off, q->nblocks, q->shift, q->id, ENOTCONN);
    p->sums_first = (p->sums_first + 1) % SUMS_OUTSTANDING_MAX;
    p->sums_queued--;
  }
}
