/* nbd-replica: byte-range locks that order overlapping writes.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * The held list is short (at most the number of requests in flight,
 * nbdkit's --threads per connection times connections), so a linear
 * scan is cheaper than a tree.
 */
#include <stdbool.h>

#include "rangelock.h"

void
rangelock_init (struct rangelock *rl)
{
  pthread_mutexattr_t a;

  /* Adaptive: held for a list scan only (see journal.c). */
  pthread_mutexattr_init (&a);
  pthread_mutexattr_settype (&a, PTHREAD_MUTEX_ADAPTIVE_NP);
  pthread_mutex_init (&rl->lock, &a);
  pthread_mutexattr_destroy (&a);
  pthread_cond_init (&rl->cond, NULL);
  rl->held = NULL;
  rl->waits = 0;
}

static bool
overlaps_held (const struct rangelock *rl, const struct range *r)
{
  for (const struct range *h = rl->held; h; h = h->next)
    if (h->start < r->end && r->start < h->end)
      return true;
  return false;
}

void
rangelock_acquire (struct rangelock *rl, struct range *r,
                   uint64_t offset, uint64_t count)
{
  r->start = offset;
  r->end = offset + (count ? count : 1);
  pthread_mutex_lock (&rl->lock);
  if (overlaps_held (rl, r)) {
    rl->waits++;
    do
      pthread_cond_wait (&rl->cond, &rl->lock);
    while (overlaps_held (rl, r));
  }
  r->next = rl->held;
  rl->held = r;
  pthread_mutex_unlock (&rl->lock);
}

bool
rangelock_try_acquire (struct rangelock *rl, struct range *r,
                       uint64_t offset, uint64_t count)
{
  bool ok;

  r->start = offset;
  r->end = offset + (count ? count : 1);
  pthread_mutex_lock (&rl->lock);
  ok = !overlaps_held (rl, r);
  if (ok) {
    r->next = rl->held;
    rl->held = r;
  }
  pthread_mutex_unlock (&rl->lock);
  return ok;
}

void
rangelock_release (struct rangelock *rl, struct range *r)
{
  pthread_mutex_lock (&rl->lock);
  for (struct range **p = &rl->held; *p; p = &(*p)->next) {
    if (*p == r) {
      *p = r->next;
      break;
    }
  }
  pthread_cond_broadcast (&rl->cond);
  pthread_mutex_unlock (&rl->lock);
}
