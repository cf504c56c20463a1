/* nbd-replica: the control socket (replica-control=SOCKET).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * Protocol (docs/design.md "Control channel"): a client connects, sends
 * one command line ("status"), reads one JSON object, and the server
 * closes.  The socket is created before nbdkit forks (so a bad path is
 * reported at startup) with mode 0660; the accept thread starts after
 * the fork.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <json-c/json.h>
#include <nbdkit-filter.h>

#include "replica.h"
#include "repl.h"
#include "chan.h"
#include "ctlproto.h"

int
control_bind (struct replica *rp)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  const char *rep_path = rp->control_path;
  struct stat st;
  mode_t old_mask;
  int fd, r;

  if (strlen (rep_path) >= sizeof addr.sun_path) {
    nbdkit_error ("replica-control: socket path is too long: %s",
                  rep_path);
    return -1;
  }
  strcpy (addr.sun_path, rep_path);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1) {
    nbdkit_error ("replica-control: socket: %m");
    return -1;
  }
  /* A leftover socket from a killed nbdkit: the log's flock (already
   * held) proves nobody else serves this volume, so it is stale.  Never
   * remove anything but a socket.
   */
  if (lstat (rep_path, &st) == 0) {
    if (!S_ISSOCK (st.st_mode)) {
      nbdkit_error ("replica-control: %s exists and is not a socket",
                    rep_path);
      goto fail;
    }
    if (unlink (rep_path) == -1) {
      nbdkit_error ("replica-control: cannot remove stale %s: %m",
                    rep_path);
      goto fail;
    }
  }
  /* Before the fork nbdkit is single-threaded, so a temporary umask is
   * safe: the socket is never reachable with wider permissions.
   */
  old_mask = umask (0117);
  r = bind (fd, (struct sockaddr *) &addr, sizeof addr);
  umask (old_mask);
  if (r == -1) {
    nbdkit_error ("replica-control: bind: %s: %m", rep_path);
    goto fail;
  }
  if (chmod (rep_path, 0660) == -1 || listen (fd, 16) == -1) {
    nbdkit_error ("replica-control: %s: %m", rep_path);
    goto fail;
  }
  rp->control_fd = fd;
  return 0;

 fail:
  close (fd);
  return -1;
}

const char *
volume_state_name (enum volume_state s)
{
  switch (s) {
  case VOL_RECOVERING: return "recovering";
  case VOL_STANDALONE: return "standalone";
  case VOL_FAILED: return "failed";
  }
  return "unknown";
}

/* Status fields (also repl.c and secondary.c, through repl.h). */
void
add_u64 (json_object *o, const char *k, uint64_t v)
{
  json_object_object_add (o, k, json_object_new_uint64 (v));
}

static void
add_str (json_object *o, const char *k, const char *v)
{
  json_object_object_add (o, k, v ? json_object_new_string (v) : NULL);
}

/* Build the status object; keys are documented in replicactl(8) and
 * are a stable interface: add, never rename.
 */
char *
status_json (struct replica *r)
{
  json_object *o = json_object_new_object ();
  struct journal_stats st = { 0 };
  uint64_t head_seq = 0, used = 0;
  int log_errno = 0;
  bool fenced = false;
  struct rlog_sb sb;
  char uuid[37];
  char *ret;

  pthread_mutex_lock (&r->log->sb_lock);
  sb = r->log->sb;
  pthread_mutex_unlock (&r->log->sb_lock);
  if (__atomic_load_n (&r->journal_up, __ATOMIC_ACQUIRE))
    journal_get_stats (&r->journal, &st, &head_seq, &used, &log_errno,
                       &fenced);
  else
    head_seq = sb.checkpoint_seq;
  rlog_uuid_str (sb.volume_uuid, uuid);

  pthread_mutex_lock (&r->state_lock);
  add_str (o, "role", rlog_role_name (sb.role));
  json_object_object_add (o, "outdated",
                          json_object_new_boolean (sb.flags & RLOG_SB_OUTDATED));
  add_str (o, "state", r->state != VOL_STANDALONE
           ? volume_state_name (r->state) : NULL);
  add_str (o, "volume_uuid", uuid);
  add_str (o, "log_path", r->log_path);
  add_u64 (o, "log_size", sb.log_size);
  add_u64 (o, "log_capacity", sb.ring_size);
  add_u64 (o, "log_used", used);
  add_u64 (o, "backing_size", sb.backing_size);
  add_u64 (o, "head_seq", head_seq);
  add_u64 (o, "checkpoint_seq", sb.checkpoint_seq);
  add_u64 (o, "epoch", sb.epoch);
  add_u64 (o, "records_appended", st.records_appended);
  add_u64 (o, "bytes_appended", st.bytes_appended);
  add_u64 (o, "log_syncs", st.log_syncs);
  add_u64 (o, "log_full_waits", st.space_waits);
  add_u64 (o, "log_errors", st.append_errors);
  add_str (o, "log_error", log_errno ? strerror (log_errno) : NULL);
  json_object_object_add (o, "log_fenced", json_object_new_boolean (fenced));
  add_u64 (o, "checkpoints", r->checkpoints);
  add_u64 (o, "replayed_records", r->replayed_records);
  add_str (o, "replay_end", r->replay_stop);
  add_u64 (o, "backing_errors", r->backing_errors);
  add_u64 (o, "range_lock_waits", r->ranges.waits);
  add_str (o, "fault", r->state == VOL_FAILED ? r->fault : NULL);
  pthread_mutex_unlock (&r->state_lock);
  /* Replication: "link" says what the link does; "state" is the
   * volume's unless it serves normally, then the link's.
   */
  if (sb.role == RLOG_ROLE_SECONDARY)
    secondary_status (o);
  else
    repl_status (o, head_seq);
  if (!json_object_get_string (json_object_object_get (o, "state")))
    json_object_object_add (o, "state", json_object_get
                            (json_object_object_get (o, "link")));

  ret = strdup (json_object_to_json_string_ext (o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
  json_object_put (o);
  return ret;
}

static char *
reply_error (const char *why)
{
  json_object *o = json_object_new_object ();
  char *reply;

  add_str (o, "error", why);
  reply = strdup (json_object_to_json_string (o));
  json_object_put (o);
  return reply;
}

/* Returns true if fd was handed over (the replicator's channel). */
static bool
serve_one (struct replica *r, int fd)
{
  char cmd[CTL_MAX_LINE];
  char *reply = NULL;
  const char *why;
  int n;

  n = ctl_read_line (fd, cmd, sizeof cmd, 5000);
  if (n <= 0)
    return false;
  if (strcmp (cmd, CHAN_ATTACH_CMD) == 0) {
    repl_attach (fd);
    return true;
  }
  if (strncmp (cmd, "set-mode ", 9) == 0)
    reply = repl_set_mode (cmd + 9, &why) == 0 ? status_json (r)
      : reply_error (why);
  else if (strcmp (cmd, "status") == 0)
    reply = status_json (r);
  else if (strcmp (cmd, "verify") == 0 || strcmp (cmd, "verify --repair") == 0) {
    json_object *o = json_object_new_object ();

    if (rep.role == RLOG_ROLE_PRIMARY && repl_active () &&
        sync_verify (strcmp (cmd, "verify --repair") == 0, &why) == 0)
      add_str (o, "verify_state", "running");
    else
      add_str (o, "error", rep.role == RLOG_ROLE_PRIMARY && repl_active ()
               ? why : "verify runs on a primary with a peer");
    reply = strdup (json_object_to_json_string (o));
    json_object_put (o);
  }
  else if (strcmp (cmd, "promote") == 0 || strcmp (cmd, "promote --force") == 0) {
    json_object *o = json_object_new_object ();

    if (replica_promote (r, strcmp (cmd, "promote --force") == 0, &why) == 0)
      add_str (o, "role", "primary");
    else
      add_str (o, "error", why);
    reply = strdup (json_object_to_json_string (o));
    json_object_put (o);
  }
  else {
    json_object *o = json_object_new_object ();
    add_str (o, "error", "unknown command");
    add_str (o, "command", cmd);
    reply = strdup (json_object_to_json_string (o));
    json_object_put (o);
  }
  if (reply) {
    ctl_write_all (fd, reply, strlen (reply));
    ctl_write_all (fd, "\n", 1);
  }
  free (reply);
  return false;
}

static void *
control_thread (void *arg)
{
  struct replica *r = arg;

  for (;;) {
    struct pollfd p = { .fd = r->control_fd, .events = POLLIN };
    int fd;

    if (poll (&p, 1, 200) <= 0) {
      bool stop;
      pthread_mutex_lock (&r->state_lock);
      stop = r->stopping;
      pthread_mutex_unlock (&r->state_lock);
      if (stop)
        break;
      continue;
    }
    fd = accept4 (r->control_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd == -1)
      continue;
    if (!serve_one (r, fd))
      close (fd);
  }
  return NULL;
}

int
control_start (struct replica *r)
{
  int e = pthread_create (&r->control_thread, NULL, control_thread, r);

  if (e) {
    errno = e;
    nbdkit_error ("replica-control: pthread_create: %m");
    return -1;
  }
  r->control_running = true;
  return 0;
}

void
control_stop (struct replica *r)
{
  if (r->control_running) {
    pthread_mutex_lock (&r->state_lock);
    r->stopping = true;
    pthread_mutex_unlock (&r->state_lock);
    pthread_join (r->control_thread, NULL);
    r->control_running = false;
  }
  if (r->control_fd >= 0) {
    close (r->control_fd);
    unlink (r->control_path);
    r->control_fd = -1;
  }
}
