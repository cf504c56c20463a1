/* nbd-replica: the control socket (replica-control=SOCKET).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * Protocol (docs/design.md "Control channel"): a client connects, sends
 * one command line ("status"), reads one JSON object, and the server
 * closes.  The socket is created before nbdkit forks (so a bad path is
 * reported at startup) with mode 0660; the accept thread starts after
 * the fork.  It reads the lines of up to CLIENTS_MAX clients at once,
 * each within CLIENT_TIMEOUT_MS, so that a silent client delays no one
 * (the replicator attaches here too; a new client takes the place of
 * the oldest when all are taken), and it sees nbdkit stopping within
 * POLL_MS whatever the clients do.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <time.h>
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

#define CLIENTS_MAX       32
#define CLIENT_TIMEOUT_MS 5000
#define POLL_MS           200

/* Is a socket at path being served?  A connect tells: refused, it is a
 * leftover of a killed process.  1 yes, 0 no, -1 cannot tell (errno).
 */
static int
socket_served (const struct sockaddr_un *addr)
{
  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  int r;

  if (fd == -1)
    return -1;
  r = connect (fd, (const struct sockaddr *) addr, sizeof *addr);
  if (r == 0 || errno == EAGAIN || errno == EINPROGRESS)
    r = 1;                      /* accepted, or a full backlog */
  else if (errno == ECONNREFUSED || errno == ENOENT)
    r = 0;                      /* a leftover, or gone meanwhile */
  else
    r = -1;
  close (fd);
  return r;
}

int
control_check_dir (struct replica *rp)
{
  char *copy = strdup (rp->control_path);
  struct stat st;
  int r = 0;

  if (!copy) {
    nbdkit_error ("replica-control: strdup: %m");
    return -1;
  }
  if (stat (dirname (copy), &st) == -1 || !S_ISDIR (st.st_mode)) {
    nbdkit_error ("replica-control: directory %s does not exist", copy);
    r = -1;
  }
  free (copy);
  return r;
}

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
  /* A leftover socket from a killed nbdkit is removed; one that another
   * process serves (replica-control= given the same path twice) is not
   * taken over: that node would lose its status and promote.  Never
   * remove anything but a socket.
   */
  if (lstat (rep_path, &st) == 0) {
    if (!S_ISSOCK (st.st_mode)) {
      nbdkit_error ("replica-control: %s exists and is not a socket",
                    rep_path);
      goto fail;
    }
    r = socket_served (&addr);
    if (r != 0) {
      if (r == 1)
        nbdkit_error ("replica-control: %s is in use by another process "
                      "(another nbdkit with the same replica-control?)",
                      rep_path);
      else
        nbdkit_error ("replica-control: %s: %m", rep_path);
      goto fail;
    }
    if (unlink (rep_path) == -1 && errno != ENOENT) {
      nbdkit_error ("replica-control: cannot remove stale %s: %m",
                    rep_path);
      goto fail;
    }
  }
  /* Before the fork nbdkit is single-threaded, so a temporary umask is
   * safe: the socket is created with mode 0660 and is never reachable
   * with wider permissions (no chmod by path, which would follow a
   * symlink put in its place).
   */
  old_mask = umask (0117);
  r = bind (fd, (struct sockaddr *) &addr, sizeof addr);
  umask (old_mask);
  if (r == -1) {
    nbdkit_error ("replica-control: bind: %s: %m", rep_path);
    goto fail;
  }
  /* What we bound: at exit only that is removed (control_stop).  After
   * listen: before it, another nbdkit's probe would take it for a
   * leftover.
   */
  if (listen (fd, 16) == -1 || lstat (rep_path, &st) == -1) {
    nbdkit_error ("replica-control: %s: %m", rep_path);
    goto fail;
  }
  rp->control_dev = st.st_dev;
  rp->control_ino = st.st_ino;
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
  /* A promote asked for and not answered yet: the role may change any
   * moment.  Read before the role: "secondary, not promoting" must
   * never describe a node whose promote had already ended.
   */
  bool promoting = control_promoting ();

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
  json_object_object_add (o, "promoting", json_object_new_boolean (promoting));
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

/* Returns true if fd was handed over (the replicator's channel, a
 * promote's worker); else it was answered and is the caller's.
 */
static bool
serve_one (struct replica *r, int fd, const char *cmd)
{
  char *reply = NULL;
  const char *why;

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
  else if (strcmp (cmd, "promote") == 0 || strcmp (cmd, "promote --force") == 0)
    /* On a thread of its own (control-promote.c), answered there. */
    return control_promote (r, fd, strcmp (cmd, "promote --force") == 0);
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

/* A client whose command line is being read. */
struct client {
  int fd;                       /* -1: a free slot */
  int64_t deadline;             /* monotonic ms */
  size_t n;
  char line[CTL_MAX_LINE];
};

static int64_t
mono_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool
control_stopping (struct replica *r)
{
  bool stop;

  pthread_mutex_lock (&r->state_lock);
  stop = r->stopping;
  pthread_mutex_unlock (&r->state_lock);
  return stop;
}

static void
drop_client (struct client *c)
{
  close (c->fd);
  c->fd = -1;
}

/* Its command is complete (a newline, or the end of what it sends):
 * serve it, the descriptor blocking again as the commands expect.
 */
static void
finish_client (struct replica *r, struct client *c)
{
  int fl = fcntl (c->fd, F_GETFL);

  c->line[c->n] = '\0';
  if (fl != -1)
    fcntl (c->fd, F_SETFL, fl & ~O_NONBLOCK);
  if (serve_one (r, c->fd, c->line))
    c->fd = -1;                 /* handed over: no longer ours */
  else
    drop_client (c);
}

/* Read what c sent; serve it once its line is complete.  Nothing after
 * the newline is consumed: after "attach" the replicator's first
 * channel frames may already be queued behind it, and they are the
 * channel's (a peek first, then a read of the line's bytes only).
 */
static void
read_client (struct replica *r, struct client *c)
{
  ssize_t got = recv (c->fd, c->line + c->n, sizeof c->line - 1 - c->n,
                      MSG_PEEK);
  char *nl;

  if (got > 0) {
    nl = memchr (c->line + c->n, '\n', got);
    if (nl)
      got = nl - (c->line + c->n) + 1;
    got = read (c->fd, c->line + c->n, got);
  }
  if (got == -1) {
    if (errno != EINTR && errno != EAGAIN)
      drop_client (c);
    return;
  }
  if (got == 0) {
    if (c->n)
      finish_client (r, c);     /* a last line without its newline */
    else
      drop_client (c);
    return;
  }
  nl = memchr (c->line + c->n, '\n', got);
  c->n += got;
  if (nl) {
    c->n = nl - c->line;
    finish_client (r, c);
  }
  else if (c->n == sizeof c->line - 1) {
    static const char too_long[] =
      "{ \"error\": \"command line too long\" }\n";
    ctl_write_all (c->fd, too_long, sizeof too_long - 1);
    drop_client (c);
  }
}

static void
accept_client (struct replica *r, struct client *clients)
{
  int fd = accept4 (r->control_fd, NULL, NULL,
                    SOCK_CLOEXEC | SOCK_NONBLOCK);
  int slot = 0;

  if (fd == -1) {
    /* Out of descriptors or memory: the connection stays queued, and
     * poll would return at once.  Let a little time pass.
     */
    if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
      poll (NULL, 0, 100);
    return;
  }
  /* A free slot, else the oldest client's: a live client sends its
   * line at once, so the oldest is likely one that never will.
   */
  for (int i = 0; i < CLIENTS_MAX; ++i)
    if (clients[i].deadline < clients[slot].deadline)
      slot = i;
  for (int i = 0; i < CLIENTS_MAX; ++i)
    if (clients[i].fd == -1) {
      slot = i;
      break;
    }
  if (clients[slot].fd != -1)
    drop_client (&clients[slot]);
  clients[slot].fd = fd;
  clients[slot].n = 0;
  clients[slot].deadline = mono_ms () + CLIENT_TIMEOUT_MS;
}

static void *
control_thread (void *arg)
{
  struct replica *r = arg;
  static struct client clients[CLIENTS_MAX];
  struct pollfd p[CLIENTS_MAX + 1];
  int idx[CLIENTS_MAX + 1];

  for (int i = 0; i < CLIENTS_MAX; ++i)
    clients[i].fd = -1;
  while (!control_stopping (r)) {
    int64_t now = mono_ms ();
    int n = 0, timeout = POLL_MS;

    for (int i = 0; i < CLIENTS_MAX; ++i) {
      if (clients[i].fd == -1)
        continue;
      if (clients[i].deadline - now < timeout)
        timeout = clients[i].deadline > now ? clients[i].deadline - now : 0;
      p[n] = (struct pollfd) { .fd = clients[i].fd, .events = POLLIN };
      idx[n++] = i;
    }
    p[n] = (struct pollfd) { .fd = r->control_fd, .events = POLLIN };
    idx[n++] = -1;
    if (poll (p, n, timeout) == -1)
      continue;
    now = mono_ms ();
    for (int k = 0; k < n; ++k) {
      if (idx[k] == -1) {
        if (p[k].revents)
          accept_client (r, clients);
      }
      else if (p[k].revents)
        read_client (r, &clients[idx[k]]);
      /* Expired, and nothing came: a line that arrived while another
       * command was served is still read.
       */
      else if (now >= clients[idx[k]].deadline)
        drop_client (&clients[idx[k]]);
    }
  }
  for (int i = 0; i < CLIENTS_MAX; ++i)
    if (clients[i].fd != -1)
      drop_client (&clients[i]);
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
  control_promote_wait ();
  if (r->control_fd >= 0) {
    struct stat st;

    close (r->control_fd);
    /* Only the socket we bound (not one that replaced it). */
    if (lstat (r->control_path, &st) == 0 && st.st_dev == r->control_dev &&
        st.st_ino == r->control_ino)
      unlink (r->control_path);
    r->control_fd = -1;
  }
}
