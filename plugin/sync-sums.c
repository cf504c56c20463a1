/* nbd-replica: the sync engine's requests for the peer's block sums.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * The walk (sync.c) asks the replicator for the peer's sums of a chunk
 * (CHAN_SUMS_REQ, answered by CHAN_SUMS through repl.c, which calls
 * sync_sums) several chunks ahead, each request in a slot of Y.req
 * matched by its id, and waits for each answer when it reaches the
 * chunk.  From the peer's HELLO on, the replicator queues requests
 * until its connection ships; one answered ENOTCONN (no connection
 * under way) is asked again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <inttypes.h>

#include <nbdkit-filter.h>

#include "replica.h"
#include "repl.h"
#include "chan.h"
#include "wire.h"
#include "sync-int.h"

#define SUMS_TIMEOUT_S   120          /* the peer hashes 16 MiB per reply */

int
sums_ask (struct sums_req *q, uint64_t off, uint32_t nblocks)
{
  q->off = off;
  q->nblocks = nblocks;
  q->done = false;
  q->err = 0;
  q->id = ++Y.next_id;
  free (q->sums);
  q->sums = malloc ((size_t) nblocks * WIRE_SUM_SIZE);
  if (!q->sums)
    return -1;
  return 0;
}

/* Sends the request (without Y.lock: repl.c's lock comes first). */
int
sums_send (const struct sums_req *q)
{
  return repl_sums_request (q->off, q->nblocks, block_shift (), q->id);
}

/* Wait for the answer to q; returns 0, or -1 (link lost, error).  The
 * replicator answers ENOTCONN when it has no connection under way (the
 * request may overtake the first handshake's start): asked again then.
 * Once a peer's HELLO is read, it queues requests until it ships.
 */
int
sums_wait (struct sums_req *q, uint64_t gen)
{
  uint64_t deadline = now_ns () + (uint64_t) SUMS_TIMEOUT_S * 1000000000;
  bool done;
  int err;

  pthread_mutex_lock (&Y.lock);
  for (;;) {
    while (!q->done && !aborted (gen) && now_ns () < deadline)
      ywait_ms (100);
    if (!q->done || q->err != ENOTCONN || aborted (gen) ||
        now_ns () >= deadline)
      break;
    q->done = false;
    q->err = 0;
    q->id = ++Y.next_id;
    ywait_ms (50);
    pthread_mutex_unlock (&Y.lock);
    sums_send (q);
    pthread_mutex_lock (&Y.lock);
  }
  if (!q->done && !aborted (gen))
    q->err = ETIMEDOUT;
  /* Read under the lock: a late answer (sync_sums) may still land. */
  done = q->done;
  err = q->err;
  pthread_mutex_unlock (&Y.lock);
  if (!done || err) {
    nbdkit_debug ("replica: sync: the peer's sums at %" PRIu64 ": %s",
                  q->off, strerror (err ? err : ENOTCONN));
    return -1;
  }
  return 0;
}

/* CHAN_SUMS from the replicator (repl.c, its lock held). */
void
sync_sums (const struct chan_msg *m)
{
  pthread_mutex_lock (&Y.lock);
  for (size_t i = 0; i < SUMS_REQS; ++i) {
    struct sums_req *q = &Y.req[i];
    if (q->id != m->d || q->done)
      continue;
    if (m->e == 0 && m->text_len == (uint64_t) q->nblocks * WIRE_SUM_SIZE)
      memcpy (q->sums, m->text, m->text_len);
    else
      q->err = m->e ? (int) m->e : EPROTO;
    q->done = true;
    pthread_cond_broadcast (&Y.cond);
  }
  pthread_mutex_unlock (&Y.lock);
}
