/* nbd-replica: `replicactl promote` on a thread of its own.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * A promote waits for the batches queued before it, flushes the volume
 * after a resync in place, and writes the superblock durably
 * (replica_promote): on a busy or slow disk that takes seconds, and
 * served on the control thread it held every other command meanwhile,
 * so a monitor's `status` timed out during a failover, the moment it
 * matters most.  So the control thread hands
 * the client to this worker and goes on serving.  One promote at a
 * time: a second one asked meanwhile is refused (two quiesces and an
 * undo of one of them could interleave).  control_stop waits for a
 * promote under way (control_promote_wait) before the filter goes.
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

struct promote_job {
  struct replica *r;
  int fd;                       /* the client's, blocking; ours to close */
  bool force;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_t worker;
static bool started;            /* worker is to be joined */
static bool running;            /* ... and has not finished yet */

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

static void *
promote_worker (void *arg)
{
  struct promote_job *j = arg;
  const char *why;

  if (replica_promote (j->r, j->force, &why) == 0)
    reply (j->fd, "role", "primary");
  else
    reply (j->fd, "error", why);
  close (j->fd);
  free (j);
  pthread_mutex_lock (&lock);
  running = false;              /* the last thing it does with the lock */
  pthread_mutex_unlock (&lock);
  return NULL;
}

/* Start a promote for the client on fd: true, the descriptor is the
 * worker's now; false, it was answered here (refused) and is the
 * caller's still.  Called by the control thread only.
 */
bool
control_promote (struct replica *r, int fd, bool force)
{
  struct promote_job *j;
  int e;

  pthread_mutex_lock (&lock);
  if (running) {
    pthread_mutex_unlock (&lock);
    reply (fd, "error", "a promote is already under way");
    return false;
  }
  /* The one before has finished (it no longer needs the lock). */
  if (started)
    pthread_join (worker, NULL);
  started = false;
  j = malloc (sizeof *j);
  if (!j) {
    pthread_mutex_unlock (&lock);
    reply (fd, "error", "out of memory");
    return false;
  }
  *j = (struct promote_job) { .r = r, .fd = fd, .force = force };
  if ((e = pthread_create (&worker, NULL, promote_worker, j)) != 0) {
    pthread_mutex_unlock (&lock);
    free (j);
    nbdkit_error ("replica: promote: pthread_create: %s", strerror (e));
    reply (fd, "error", "cannot start the promote (pthread_create "
           "failed)");
    return false;
  }
  started = running = true;
  pthread_mutex_unlock (&lock);
  return true;
}

/* Wait for a promote under way (after the control thread stopped: no
 * new one can start).
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
