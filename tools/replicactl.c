/* replicactl: control and inspect nbd-replica volumes.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 *   replicactl --control SOCKET status [--json]
 *   replicactl --control SOCKET promote [--force]
 *   replicactl --control SOCKET wait-synced [--timeout SECONDS]
 *   replicactl --control SOCKET set-mode sync|async
 *   replicactl --control SOCKET verify [--repair] [--timeout SECONDS]
 *   replicactl log-dump [--all] [--records N] PATH
 *   replicactl log-replay [--all] PATH IMAGE
 *   replicactl demote PATH
 */
#include <stdio.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <stdbool.h>
#include <getopt.h>
#include <inttypes.h>
#include <unistd.h>
#include <time.h>
#include <math.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/ioctl.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <pthread.h>

#include <json-c/json.h>

#include "logfile.h"
#include "ctlproto.h"
#include "replicactl.h"

static const char *control_path;

void
usage (FILE *fp, int status)
{
  fprintf (fp,
           "usage: replicactl --control SOCKET status [--json]\n"
           "       replicactl --control SOCKET promote [--force]\n"
           "       replicactl --control SOCKET wait-synced [--timeout SECONDS]\n"
           "       replicactl --control SOCKET set-mode sync|async\n"
           "       replicactl --control SOCKET verify [--repair] "
           "[--timeout SECONDS]\n"
           "       replicactl log-dump [--all] [--records N] LOGFILE\n"
           "       replicactl log-replay [--all] LOGFILE IMAGE\n"
           "       replicactl demote LOGFILE\n"
           "See replicactl(8).\n");
  exit (status);
}

/* The progress bar on stderr (progress_draw), or 0 columns if none is
 * on screen.
 */
static int bar_cols;

/* Erase the progress bar, before a message or at the end. */
static void
progress_clear (void)
{
  if (bar_cols > 0) {
    fprintf (stderr, "\r%*s\r", bar_cols, "");
    fflush (stderr);
    bar_cols = 0;
  }
}

/* Send one command, return the JSON reply (malloc'd) or NULL.  Waits
 * timeout_ms for it (-1: for as long as it takes).  *sent says whether
 * the command went out (then a NULL means its outcome is unknown).
 */
static double
mono_sec (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The end of a --timeout (mono_sec), or -1: no request waits past it. */
static double deadline = -1;

/* A request's wait for its connection and reply: at most timeout_ms
 * (-1: none), and not past the deadline by more than half a second
 * (the last status, which says why the command gives up).
 */
static int
request_timeout_ms (int timeout_ms)
{
  double left;

  if (deadline < 0)
    return timeout_ms;
  left = (deadline - mono_sec ()) * 1000;
  if (left < 500)
    left = 500;
  return timeout_ms >= 0 && timeout_ms < left ? timeout_ms : (int) left;
}

/* Connect fd to addr; a full backlog (the server busy) is retried for
 * up to timeout_ms.  0, or -1 with errno.
 */
static int
connect_control (int fd, const struct sockaddr_un *addr, int timeout_ms)
{
  double end = mono_sec () + (timeout_ms < 0 ? 1e9 : timeout_ms / 1000.0);
  int fl = fcntl (fd, F_GETFL);

  if (fl == -1 || fcntl (fd, F_SETFL, fl | O_NONBLOCK) == -1)
    return -1;
  while (connect (fd, (const struct sockaddr *) addr, sizeof *addr) == -1) {
    if (errno != EAGAIN && errno != EINTR)
      return -1;
    if (mono_sec () >= end) {
      errno = ETIMEDOUT;
      return -1;
    }
    usleep (50000);
  }
  return fcntl (fd, F_SETFL, fl);
}

static char *
ctl_request_wait (const char *cmd, int timeout_ms, bool *sent)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  char *reply;
  int fd;

  *sent = false;
  if (strlen (control_path) >= sizeof addr.sun_path) {
    fprintf (stderr, "replicactl: control socket path too long\n");
    return NULL;
  }
  strcpy (addr.sun_path, control_path);
  timeout_ms = request_timeout_ms (timeout_ms);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1 || connect_control (fd, &addr, timeout_ms) == -1) {
    int e = errno;
    progress_clear ();
    errno = e;
    fprintf (stderr, "replicactl: cannot connect to %s: %m "
             "(is nbdkit with the replica filter running?)\n", control_path);
    if (fd >= 0)
      close (fd);
    return NULL;
  }
  if (ctl_write_all (fd, cmd, strlen (cmd)) == -1 ||
      ctl_write_all (fd, "\n", 1) == -1 ||
      (*sent = true, (reply = ctl_read_all (fd, timeout_ms)) == NULL)) {
    int e = errno;
    progress_clear ();
    errno = e;
    fprintf (stderr, "replicactl: %s: %m\n", control_path);
    close (fd);
    return NULL;
  }
  close (fd);
  return reply;
}

static char *
ctl_request (const char *cmd)
{
  bool sent;

  return ctl_request_wait (cmd, 10000, &sent);
}

static int
cmd_status (int argc, char **argv)
{
  bool json = false;
  json_object *o;
  char *reply;

  for (int i = 1; i < argc; ++i) {
    if (strcmp (argv[i], "--json") == 0)
      json = true;
    else
      usage (stderr, 2);
  }
  if (!control_path) {
    fprintf (stderr, "replicactl: status needs --control SOCKET\n");
    return 2;
  }
  reply = ctl_request ("status");
  if (!reply)
    return 1;
  if (json) {
    fputs (reply, stdout);
    free (reply);
    return 0;
  }
  o = json_tokener_parse (reply);
  free (reply);
  if (!o || !json_object_is_type (o, json_type_object)) {
    fprintf (stderr, "replicactl: malformed reply from %s\n", control_path);
    return 1;
  }
  json_object_object_foreach (o, key, val) {
    printf ("%-20s %s\n", key,
            val ? json_object_get_string (val) : "-");
  }
  json_object_put (o);
  return 0;
}

/* promote: once asked, an interrupt (Ctrl-C, timeout(1)'s SIGTERM)
 * leaves the outcome unknown, which exit status 3 says.
 */
static void
outcome_unknown (int sig)
{
  static const char msg[] = "\nreplicactl: promote interrupted: the node may "
    "or may not have been promoted (check its status: once it says "
    "promoting false, its role is the outcome)\n";

  (void) sig;
  if (write (STDERR_FILENO, msg, sizeof msg - 1) == -1) {
    /* nothing to do */
  }
  _exit (3);
}

static void
outcome_unknown_on_signal (void)
{
  struct sigaction sa = { .sa_handler = outcome_unknown };

  sigemptyset (&sa.sa_mask);
  sigaction (SIGINT, &sa, NULL);
  sigaction (SIGTERM, &sa, NULL);
  sigaction (SIGHUP, &sa, NULL);
}

/* Secondary -> primary.  Exit 0 once the log records the new role. */
static int
cmd_promote (int argc, char **argv)
{
  bool force = false;
  json_object *o, *v;
  char *reply;
  bool sent;
  int ret = 1;

  for (int i = 1; i < argc; ++i) {
    if (strcmp (argv[i], "--force") == 0)
      force = true;
    else
      usage (stderr, 2);
  }
  if (!control_path) {
    fprintf (stderr, "replicactl: promote needs --control SOCKET\n");
    return 2;
  }
  /* No time limit: the filter applies the queued records first, as
   * long as that takes.  Once the command is out, a missing reply
   * leaves the outcome unknown, which a failover script must not take
   * for a refusal (it might promote another node): exit status 3.
   */
  outcome_unknown_on_signal ();
  reply = ctl_request_wait (force ? "promote --force" : "promote", -1, &sent);
  if (!reply && !sent)
    return 1;
  o = reply ? json_tokener_parse (reply) : NULL;
  free (reply);
  if (!o || !json_object_is_type (o, json_type_object)) {
    fprintf (stderr, "replicactl: promote: no valid reply from %s: the node "
             "may or may not have been promoted (check its status: once it says "
             "promoting false, its role is the outcome)\n",
             control_path);
    ret = 3;
  }
  else if (json_object_object_get_ex (o, "error", &v))
    fprintf (stderr, "replicactl: promote refused: %s\n",
             json_object_get_string (v));
  else {
    printf ("promoted: this node is now the primary\n");
    ret = 0;
  }
  json_object_put (o);
  return ret;
}

static json_object *
status_object (void)
{
  char *reply = ctl_request ("status");
  json_object *o;

  if (!reply)
    return NULL;
  o = json_tokener_parse (reply);
  free (reply);
  if (!o || !json_object_is_type (o, json_type_object)) {
    progress_clear ();
    fprintf (stderr, "replicactl: malformed reply from %s\n", control_path);
    json_object_put (o);
    return NULL;
  }
  return o;
}

static uint64_t
field_u64 (json_object *o, const char *k)
{
  json_object *v;

  return json_object_object_get_ex (o, k, &v) && v
    ? json_object_get_uint64 (v) : 0;
}

static const char *
field_str (json_object *o, const char *k)
{
  json_object *v;

  return json_object_object_get_ex (o, k, &v) && v
    ? json_object_get_string (v) : NULL;
}


/* A number field; false if it is absent or null. */
static bool
field_num (json_object *o, const char *k, double *out)
{
  json_object *v;

  if (!json_object_object_get_ex (o, k, &v) || !v)
    return false;
  *out = json_object_get_double (v);
  return true;
}

/* A size for people: "512 B", "4.0 KiB", "1.5 MiB", "2.0 GiB". */
static const char *
human_size (uint64_t n, char *buf, size_t len)
{
  static const char *const units[] = { "KiB", "MiB", "GiB", "TiB", "PiB" };
  double v = n;
  int u = -1;

  if (n < 1024) {
    snprintf (buf, len, "%" PRIu64 " B", n);
    return buf;
  }
  while (v >= 1024 && u < 4) {
    v /= 1024;
    u++;
  }
  snprintf (buf, len, "%.1f %s", v, units[u]);
  return buf;
}

/* One line on stderr, redrawn in place, showing the progress of the
 * filter's sync, resync or verify pass (status field sync_phase): the
 * phase, percent done, bytes done and total, rate and time left.  Only
 * when stderr is a terminal (scripts see nothing) and a pass runs;
 * progress_clear erases it.
 */
static void
progress_draw (json_object *o)
{
  const char *phase = field_str (o, "sync_phase");
  uint64_t done = field_u64 (o, "sync_done_bytes");
  uint64_t total = field_u64 (o, "sync_total_bytes");
  char left[64], right[160], eta[32], sd[32], st[32], bar[64], line[320];
  double rate = 0, eta_sec, frac;
  struct winsize ws;
  int cols = 80, width, len;

  if (!isatty (STDERR_FILENO))
    return;
  if (!phase || strcmp (phase, "none") == 0) {
    progress_clear ();
    return;
  }
  if (ioctl (STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
    cols = ws.ws_col;
  frac = total ? (double) (done < total ? done : total) / total : 0;
  field_num (o, "sync_rate_bytes_per_sec", &rate);
  if (field_num (o, "sync_eta_sec", &eta_sec) && eta_sec >= 0) {
    uint64_t t = eta_sec + 0.5;
    snprintf (eta, sizeof eta, "%" PRIu64 ":%02u:%02u", t / 3600,
              (unsigned) (t / 60 % 60), (unsigned) (t % 60));
  }
  else
    strcpy (eta, "--");
  snprintf (left, sizeof left, "%s %3d%% ", phase, (int) (frac * 100));
  /* Fixed widths, so that the bar keeps its length as numbers change. */
  snprintf (right, sizeof right, " %10s/%s %7.1f MiB/s  ETA %8s",
            human_size (done, sd, sizeof sd),
            human_size (total, st, sizeof st), rate / (1024 * 1024), eta);
  /* The bar takes what the terminal's width leaves (the last column
   * stays free: writing there wraps on some terminals).
   */
  width = cols - 1 - (int) strlen (left) - (int) strlen (right) - 2;
  if (width > (int) sizeof bar - 1)
    width = sizeof bar - 1;
  if (width >= 5) {
    int fill = frac * width;
    memset (bar, '#', fill);
    memset (bar + fill, '.', width - fill);
    bar[width] = '\0';
    snprintf (line, sizeof line, "%s[%s]%s", left, bar, right);
  }
  else
    snprintf (line, sizeof line, "%s%s", left, right);
  /* Never wider than the terminal: a wrapped line cannot be redrawn. */
  len = strlen (line);
  if (len > cols - 1)
    len = cols - 1 > 0 ? cols - 1 : 0;
  fprintf (stderr, "\r%.*s", len, line);
  if (len < bar_cols)
    fprintf (stderr, "%*s", bar_cols - len, "");
  else
    bar_cols = len;
  fflush (stderr);
}

/* --timeout SECONDS: a finite number, at least 0; it also bounds each
 * request to the control socket (deadline).  0, or -1 with a message.
 */
static int
parse_timeout (const char *arg, double *timeout)
{
  char *end;

  errno = 0;
  *timeout = strtod (arg, &end);
  if (end == arg || *end || errno || !isfinite (*timeout) || *timeout < 0) {
    fprintf (stderr, "replicactl: --timeout: '%s' is not a number of "
             "seconds\n", arg);
    return -1;
  }
  deadline = mono_sec () + *timeout;
  return 0;
}

/* Append "; " and a printf'd reason to buf (of len bytes). */
static void __attribute__ ((format (printf, 3, 4)))
add_reason (char *buf, size_t len, const char *fmt, ...)
{
  size_t n = strlen (buf);
  va_list ap;

  if (n && n + 2 < len) {
    strcpy (buf + n, "; ");
    n += 2;
  }
  va_start (ap, fmt);
  vsnprintf (buf + n, len - n, fmt, ap);
  va_end (ap);
}

/* What keeps status o from being "synced" up to target, in words. */
static void
unsynced_reasons (json_object *o, uint64_t target, bool syncing,
                  bool outdated, char *buf, size_t len)
{
  const char *link = field_str (o, "link");
  const char *err = field_str (o, "link_error");
  const char *bitmap = field_str (o, "bitmap");
  uint64_t acked = field_u64 (o, "acked_seq");

  buf[0] = '\0';
  if (syncing)
    add_reason (buf, len, "%s still running (%" PRIu64 " of %" PRIu64
                " bytes compared)", field_str (o, "sync_phase"),
                field_u64 (o, "sync_done_bytes"),
                field_u64 (o, "sync_total_bytes"));
  if (!link || strcmp (link, "replicating") != 0)
    add_reason (buf, len, "link %s%s%s", link ? link : "?",
                err ? ": " : "", err ? err : "");
  if (acked < target)
    add_reason (buf, len, "the peer acknowledged seq %" PRIu64 " of %"
                PRIu64, acked, target);
  if (bitmap && strcmp (bitmap, "off") != 0)
    add_reason (buf, len, "dirty bitmap %s", bitmap);
  if (outdated)
    add_reason (buf, len, "the peer is still marked outdated");
}

/* Exit 0 once the peer acknowledged (made durable and applied) every
 * record up to the last one written when the command started.  On a
 * terminal, a sync or resync pass running meanwhile shows its progress.
 */
static int
cmd_wait_synced (int argc, char **argv)
{
  double timeout = -1, start = mono_sec ();
  uint64_t target;
  json_object *o;
  const char *role;

  for (int i = 1; i < argc; ++i) {
    if (strcmp (argv[i], "--timeout") == 0 && i + 1 < argc) {
      if (parse_timeout (argv[++i], &timeout) == -1)
        return 2;
    }
    else
      usage (stderr, 2);
  }
  if (!control_path) {
    fprintf (stderr, "replicactl: wait-synced needs --control SOCKET\n");
    return 2;
  }
  if (!(o = status_object ()))
    return 1;
  role = field_str (o, "role");
  if (!role || strcmp (role, "primary") != 0 || !field_str (o, "link") ||
      strcmp (field_str (o, "link"), "standalone") == 0) {
    fprintf (stderr, "replicactl: wait-synced: %s is not a primary with a "
             "peer\n", control_path);
    json_object_put (o);
    return 1;
  }
  target = field_u64 (o, "last_seq");
  for (;;) {
    uint64_t acked = field_u64 (o, "acked_seq");
    const char *link = field_str (o, "link");
    const char *phase = field_str (o, "sync_phase");
    /* A sync or resync must have ended too: until its end record is
     * acknowledged the peer is not a consistent copy.  (A verify does
     * not count: the peer is consistent during one.)
     */
    bool syncing = phase && (strcmp (phase, "initial-sync") == 0 ||
                             strcmp (phase, "resync") == 0);
    /* Nor is it while the dirty bitmap holds blocks it lacks, or before
     * the link is up (after a restart the acked point is only what the
     * log last knew).
     */
    const char *bitmap = field_str (o, "bitmap");
    /* Nor while the peer may still record that it is outdated (after a
     * degrade, until it confirms "up to date"): a promote there would
     * need --force.
     */
    json_object *po;
    bool outdated = json_object_object_get_ex (o, "peer_outdated", &po) &&
      json_object_get_boolean (po);
    bool synced = acked >= target && !syncing && link &&
      strcmp (link, "replicating") == 0 &&
      (!bitmap || strcmp (bitmap, "off") == 0) && !outdated;

    if (synced) {
      progress_clear ();
      printf ("synced: the peer holds every record up to seq %" PRIu64 "\n",
              target);
      json_object_put (o);
      return 0;
    }
    if (timeout >= 0 && mono_sec () - start >= timeout) {
      char why[1024];

      unsynced_reasons (o, target, syncing, outdated, why, sizeof why);
      progress_clear ();
      fprintf (stderr, "replicactl: wait-synced: timed out after %g s: "
               "%s\n", timeout, why);
      json_object_put (o);
      return 1;
    }
    progress_draw (o);
    json_object_put (o);
    usleep (50000);
    if (!(o = status_object ()))
      return 1;
  }
}

static int
cmd_set_mode (int argc, char **argv)
{
  json_object *o;
  const char *err;
  char cmd[64];
  char *reply;
  int ret = 1;

  if (argc != 2)
    usage (stderr, 2);
  if (strcmp (argv[1], "sync") != 0 && strcmp (argv[1], "async") != 0) {
    fprintf (stderr, "replicactl: set-mode: '%s' is not sync or async\n",
             argv[1]);
    return 2;
  }
  if (!control_path) {
    fprintf (stderr, "replicactl: set-mode needs --control SOCKET\n");
    return 2;
  }
  snprintf (cmd, sizeof cmd, "set-mode %s", argv[1]);
  if (!(reply = ctl_request (cmd)))
    return 1;
  o = json_tokener_parse (reply);
  free (reply);
  if (!o || !json_object_is_type (o, json_type_object) ||
      (!field_str (o, "error") && !field_str (o, "mode")))
    fprintf (stderr, "replicactl: malformed reply from %s\n", control_path);
  else if ((err = field_str (o, "error")))
    fprintf (stderr, "replicactl: set-mode refused: %s\n", err);
  else {
    printf ("mode: %s\n", field_str (o, "mode"));
    ret = 0;
  }
  json_object_put (o);
  return ret;
}

/* The mismatching byte ranges of the last verify (at most 64). */
static void
print_ranges (json_object *o)
{
  json_object *a;
  size_t n;

  if (!json_object_object_get_ex (o, "verify_ranges", &a) || !a ||
      !json_object_is_type (a, json_type_array))
    return;
  n = json_object_array_length (a);
  for (size_t i = 0; i < n; ++i) {
    json_object *r = json_object_array_get_idx (a, i);
    uint64_t off = field_u64 (r, "offset"), len = field_u64 (r, "length");
    char ho[32], hl[32];

    printf ("  offset %" PRIu64 " (%s), length %" PRIu64 " (%s)\n",
            off, human_size (off, ho, sizeof ho),
            len, human_size (len, hl, sizeof hl));
  }
  if (n >= 64)
    printf ("  (the filter reports at most 64 ranges: there may be "
            "more)\n");
}

/* Start a verify pass on a primary, wait for its end and print it:
 * exit 0 if the volumes match (or were repaired), 1 if they differ or
 * the pass failed, 2 on timeout.
 */
/* verify --repair: "repaired" says the resent blocks are durable here;
 * they are the peer's once it acknowledged them (a failover before
 * that would keep the corruption).  0 then; 2 on timeout; 1 if the link
 * drops first or status fails.
 */
static int
wait_repair_acked (uint64_t target, double timeout, double start)
{
  for (;;) {
    json_object *o = status_object ();
    const char *link;
    uint64_t acked;

    if (!o)
      return 1;
    acked = field_u64 (o, "acked_seq");
    link = field_str (o, "link");
    if (acked >= target) {
      json_object_put (o);
      return 0;
    }
    if (!link || strcmp (link, "replicating") != 0) {
      fprintf (stderr, "replicactl: verify: the link is %s: the peer has not "
               "acknowledged the resent blocks (seq %" PRIu64 " of %" PRIu64
               ")\n", link ? link : "?", acked, target);
      json_object_put (o);
      return 1;
    }
    json_object_put (o);
    if (timeout >= 0 && mono_sec () - start >= timeout) {
      fprintf (stderr, "replicactl: verify: timed out waiting for the peer "
               "to acknowledge the resent blocks\n");
      return 2;
    }
    usleep (50000);
  }
}

static int
cmd_verify (int argc, char **argv)
{
  double timeout = -1, start;
  bool repair = false;
  json_object *o;
  const char *state, *err;
  uint64_t blocks;
  char *reply;
  int ret = 1;

  for (int i = 1; i < argc; ++i) {
    if (strcmp (argv[i], "--repair") == 0)
      repair = true;
    else if (strcmp (argv[i], "--timeout") == 0 && i + 1 < argc) {
      if (parse_timeout (argv[++i], &timeout) == -1)
        return 2;
    }
    else
      usage (stderr, 2);
  }
  if (!control_path) {
    fprintf (stderr, "replicactl: verify needs --control SOCKET\n");
    return 2;
  }
  if (!(reply = ctl_request (repair ? "verify --repair" : "verify")))
    return 1;
  o = json_tokener_parse (reply);
  free (reply);
  if (!o || !json_object_is_type (o, json_type_object)) {
    fprintf (stderr, "replicactl: malformed reply from %s\n", control_path);
    json_object_put (o);
    return 1;
  }
  if ((err = field_str (o, "error"))) {
    fprintf (stderr, "replicactl: verify refused: %s%s\n", err,
             strcmp (err, "unknown command") == 0
             ? " (this filter has no online verify: it is older than "
               "replicactl)" : "");
    json_object_put (o);
    return 1;
  }
  json_object_put (o);

  start = mono_sec ();
  for (;;) {
    if (!(o = status_object ()))
      return 1;
    state = field_str (o, "verify_state");
    if (!state || strcmp (state, "running") != 0)
      break;
    if (timeout >= 0 && mono_sec () - start >= timeout) {
      progress_clear ();
      fprintf (stderr, "replicactl: verify: timed out after %g s; the "
               "pass goes on (status shows verify_state)\n", timeout);
      json_object_put (o);
      return 2;
    }
    progress_draw (o);
    json_object_put (o);
    usleep (200000);
  }
  progress_clear ();

  blocks = field_u64 (o, "verify_mismatched_blocks");
  if (!state)
    fprintf (stderr, "replicactl: verify: the status of %s has no "
             "verify_state\n", control_path);
  else if (strcmp (state, "clean") == 0) {
    printf ("verify: the volumes match\n");
    ret = 0;
  }
  else if (strcmp (state, "mismatch") == 0) {
    printf ("verify: the volumes differ: %" PRIu64 " block%s, in these "
            "ranges:\n", blocks, blocks == 1 ? "" : "s");
    print_ranges (o);
    printf ("verify --repair resends them to the peer\n");
  }
  else if (strcmp (state, "repaired") == 0) {
    ret = wait_repair_acked (field_u64 (o, "last_seq"), timeout, start);
    printf ("verify: repaired: %" PRIu64 " differing block%s resent to the "
            "peer%s, in these ranges:\n", blocks, blocks == 1 ? "" : "s",
            ret == 0 ? " (and acknowledged)" : "");
    print_ranges (o);
  }
  else if (strcmp (state, "failed") == 0)
    fprintf (stderr, "replicactl: verify failed: %s\n",
             field_str (o, "verify_error") ? field_str (o, "verify_error")
             : "no reason given");
  else
    fprintf (stderr, "replicactl: verify: unexpected verify_state '%s' "
             "(was the filter restarted?)\n", state);
  json_object_put (o);
  return ret;
}

int
main (int argc, char **argv)
{
  static const struct option longopts[] = {
    { "control", required_argument, NULL, 'c' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  int c;

  while ((c = getopt_long (argc, argv, "+c:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'c': control_path = optarg; break;
    case 'h': usage (stdout, 0); break;
    default: usage (stderr, 2);
    }
  }
  if (optind >= argc)
    usage (stderr, 2);
  argc -= optind;
  argv += optind;
  if (strcmp (argv[0], "status") == 0)
    return cmd_status (argc, argv);
  if (strcmp (argv[0], "promote") == 0)
    return cmd_promote (argc, argv);
  if (strcmp (argv[0], "wait-synced") == 0)
    return cmd_wait_synced (argc, argv);
  if (strcmp (argv[0], "set-mode") == 0)
    return cmd_set_mode (argc, argv);
  if (strcmp (argv[0], "log-dump") == 0)
    return cmd_log_dump (argc, argv);
  if (strcmp (argv[0], "log-replay") == 0)
    return cmd_log_replay (argc, argv);
  if (strcmp (argv[0], "verify") == 0)
    return cmd_verify (argc, argv);
  if (strcmp (argv[0], "demote") == 0)
    return cmd_demote (argc, argv);
  fprintf (stderr, "replicactl: unknown command '%s'\n", argv[0]);
  usage (stderr, 2);
}
