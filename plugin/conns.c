/* nbd-replica: the client connections' plugin contexts, for checkpoints.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#include <errno.h>

#include "conns.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;  /* flushing ended */
static struct conn *head;

/* Taken only when the plugin's thread model is not parallel. */
static pthread_rwlock_t call_lock;
static bool serialize;

void
conns_init (int thread_model)
{
  pthread_rwlockattr_t a;

  /* Writer-preferring: a stream of reads must not starve checkpoints
   * (shared holders never take it recursively).
   */
  pthread_rwlockattr_init (&a);
  pthread_rwlockattr_setkind_np (&a,
                                 PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init (&call_lock, &a);
  pthread_rwlockattr_destroy (&a);
  serialize = thread_model != NBDKIT_THREAD_MODEL_PARALLEL;
}

void
plugin_call_begin (void)
{
  if (serialize)
    pthread_rwlock_rdlock (&call_lock);
}

void
plugin_call_end (void)
{
  if (serialize)
    pthread_rwlock_unlock (&call_lock);
}

void
conns_add (struct conn *c, nbdkit_next *next)
{
  pthread_mutex_lock (&lock);
  c->next = next;
  c->flushing = false;
  c->prev = NULL;
  c->nextc = head;
  if (head)
    head->prev = c;
  head = c;
  pthread_mutex_unlock (&lock);
}

/* Called from .finalize: the context must not be used after this. */
void
conns_remove (struct conn *c)
{
  pthread_mutex_lock (&lock);
  while (c->flushing)
    pthread_cond_wait (&cond, &lock);
  if (c->next) {
    if (c->prev)
      c->prev->nextc = c->nextc;
    else
      head = c->nextc;
    if (c->nextc)
      c->nextc->prev = c->prev;
    c->next = NULL;
  }
  pthread_mutex_unlock (&lock);
}

/* Flush each registered connection in turn.  A connection is marked
 * while its flush runs (the list lock is not held during I/O), so that
 * .finalize waits for it.  Every write applied before the checkpoint's
 * sample went through a context that is either still registered (and
 * flushed here) or already finalized (and flushed then: replica.c
 * replica_finalize).
 */
static int
flush_all_conns (int *err)
{
  struct conn *c;
  int ret = 0;

  pthread_mutex_lock (&lock);
  for (c = head; c && ret == 0; c = c->nextc) {
    nbdkit_next *next = c->next;
    /* Only contexts that applied writes: a connection still
     * negotiating must not see calls from this thread.
     */
    if (!next || !__atomic_load_n (&c->wrote, __ATOMIC_ACQUIRE) ||
        !c->can_flush)
      continue;
    c->flushing = true;
    pthread_mutex_unlock (&lock);
    ret = next->flush (next, 0, err);
    pthread_mutex_lock (&lock);
    c->flushing = false;
    pthread_cond_broadcast (&cond);
  }
  pthread_mutex_unlock (&lock);
  return ret;
}

/* Under the list lock (after the plugin-call lock, the checkpoint's
 * order): a checkpoint's flush of every connection never falls between
 * this flush and its failure's report.  Otherwise the checkpoint's own
 * flush of this context could "succeed" after ours failed (Linux
 * reports a writeback error once per open file), and the checkpoint
 * pass writes that were never made stable, before the volume fails.
 * Now it sees the volume failed once its flushes return (checkpoint.c).
 */
int
conns_final_flush (nbdkit_next *next, void (*failed) (int err))
{
  int err = 0, r;

  plugin_call_begin ();
  pthread_mutex_lock (&lock);
  r = next->flush (next, 0, &err);
  if (r == -1)
    failed (err);
  pthread_mutex_unlock (&lock);
  plugin_call_end ();
  return r;
}

int
conns_flush (nbdkit_next *ctx, bool all_conns, int *err)
{
  int ret = 0;

  if (serialize)
    pthread_rwlock_wrlock (&call_lock);
  /* An error is no "cannot flush": the checkpoint must not pass writes
   * whose stability nobody checked.
   */
  switch (ctx->can_flush (ctx)) {
  case -1:
    *err = EIO;
    ret = -1;
    break;
  case 0:
    break;
  default:
    ret = ctx->flush (ctx, 0, err);
  }
  if (ret == 0 && all_conns)
    ret = flush_all_conns (err);
  if (serialize)
    pthread_rwlock_unlock (&call_lock);
  return ret;
}
