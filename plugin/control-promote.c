/* nbd-replica: `replicactl promote` on a thread of its own.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * A promote waits for the batches queued before it, flushes the volume
 * after a resync in place, and writes the superblock durably
 * (replica_promote): on a busy or slow disk that takes seconds, and
 * served on the control thread it held every other command meanwhile,
 * so a monitor's `status` timed out during a failover, the moment it
 * matters most.  So the control thread hands the client to a worker
 * and goes on serving.  The promotes asked for are served one after
 * the other, each with its own outcome, as they were on the control
 * thread (a second one asked meanwhile waits, then gets its own
 * answer: "already the primary" after a first that succeeded).  Until
 * the last has answered, status says `promoting`: its role may change
 * any moment, and a failover script that lost its promote's answer
 * must wait for that to end before it reads the role (replicactl(8)).
 * control_stop waits for them (control_promote_wait) before the filter
 * goes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdbool.h>
#include <pthread.h>
#include <unistd.h>

#include <json-c/json.h>
#include <nbdkit-filter.h>

#include "replica.h"
#include "ctlproto.h"

#define PROMOTES_WAITING_MAX 16 /* beyond: refused, the outcome unknown */

struct promote_job {
  struct promote_job *next;
  struct replica *r;
  int fd;                       /* the client's, blocking; ours to close */
  bool force;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_t worker;
static bool started;            /* worker is to be joined */
static bool running;            /* ... and serves the queue */
static struct promote_job *head, *tail;
static unsigned queued;

/* One JSON line to fd: {"role":"primary"} or {"error":why}. */
static void
reply (int fd, const char *key, const char *value)
{
  json_object *o = json_object_new_object ();
  const char *s;

  json_object_object_add (o, key, json_object_new_string (value));
  s = json_object_to_json_string (o);
  ctl_write_all (fd, s, strlen (s));
  ctl_write_all (fd, "\n", 1);
  json_object_put (o);
}

/* Serve the queue until it is empty; running goes false (under the
 * lock, the last thing done with it) only then, so a promote asked
 * meanwhile is always served by this worker or by a new one.
 */
static void *
promote_worker (void *arg)
{
  (void) arg;
  pthread_mutex_lock (&lock);
  while (head) {
    struct promote_job *j = head;
    const char *why;
    bool ok;

    head = j->next;
    if (!head)
      tail = NULL;
    queued--;
    pthread_mutex_unlock (&lock);
    ok = replica_promote (j->r, j->force, &why) == 0;
    reply (j->fd, ok ? "role" : "error", ok ? "primary" : why);
    close (j->fd);
    free (j);
    pthread_mutex_lock (&lock);
  }
  running = false;
  pthread_mutex_unlock (&lock);
  return NULL;
}

/* Queue a promote for the client on fd: true, the descriptor is the
 * worker's now; false, it was answered here (refused) and is the
 * caller's still.  Called by the control thread only.
 */
bool
control_promote (struct replica *r, int fd, bool force)
{
  struct promote_job *j;
  int e;

  pthread_mutex_lock (&lock);
  if (queued >= PROMOTES_WAITING_MAX) {
    pthread_mutex_unlock (&lock);
    reply (fd, "error", "too many promotes waiting");
    return false;
  }
  j = malloc (sizeof *j);
  if (!j) {
    pthread_mutex_unlock (&lock);
    reply (fd, "error", "out of memory");
    return false;
  }
  *j = (struct promote_job) { .r = r, .fd = fd, .force = force };
  if (!running) {
    /* The one before has left the lock for good: it ends at once. */
    if (started)
      pthread_join (worker, NULL);
    started = false;
    if ((e = pthread_create (&worker, NULL, promote_worker, NULL)) != 0) {
      pthread_mutex_unlock (&lock);
      free (j);
      nbdkit_error ("replica: promote: pthread_create: %s", strerror (e));
      reply (fd, "error", "cannot start the promote (pthread_create "
             "failed)");
      return false;
    }
    started = running = true;
  }
  if (tail)
    tail->next = j;
  else
    head = j;
  tail = j;
  queued++;
  pthread_mutex_unlock (&lock);
  return true;
}

/* Is a promote asked for and not answered yet?  (status: promoting) */
bool
control_promoting (void)
{
  bool r;

  pthread_mutex_lock (&lock);
  r = running;
  pthread_mutex_unlock (&lock);
  return r;
}

/* Wait for the promotes asked for (after the control thread stopped:
 * no new one can come).
 */
void
control_promote_wait (void)
{
  bool join;

  pthread_mutex_lock (&lock);
  join = started;
  started = false;
  pthread_mutex_unlock (&lock);
  if (join)
    pthread_join (worker, NULL);
}
