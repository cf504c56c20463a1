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
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <stdbool.h>
#include <getopt.h>
#include <inttypes.h>
#include <unistd.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/ioctl.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <pthread.h>

#include <json-c/json.h>

#include "logfile.h"
#include "ctlproto.h"

static const char *control_path;

static void
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

/* Send one command, return the JSON reply (malloc'd) or NULL. */
static char *
ctl_request (const char *cmd)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  char *reply;
  int fd;

  if (strlen (control_path) >= sizeof addr.sun_path) {
    fprintf (stderr, "replicactl: control socket path too long\n");
    return NULL;
  }
  strcpy (addr.sun_path, control_path);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1 || connect (fd, (struct sockaddr *) &addr, sizeof addr) == -1) {
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
      (reply = ctl_read_all (fd, 10000)) == NULL) {
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

/* Secondary -> primary.  Exit 0 once the log records the new role. */
static int
cmd_promote (int argc, char **argv)
{
  bool force = false;
  json_object *o, *v;
  char *reply;
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
  reply = ctl_request (force ? "promote --force" : "promote");
  if (!reply)
    return 1;
  o = json_tokener_parse (reply);
  free (reply);
  if (!o || !json_object_is_type (o, json_type_object))
    fprintf (stderr, "replicactl: malformed reply from %s\n", control_path);
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

static double
mono_sec (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
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
    char *end;
    if (strcmp (argv[i], "--timeout") == 0 && i + 1 < argc) {
      timeout = strtod (argv[++i], &end);
      if (*end || timeout < 0) {
        fprintf (stderr, "replicactl: --timeout: '%s' is not a number of "
                 "seconds\n", argv[i]);
        return 2;
      }
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
    bool synced = acked >= target && !syncing && link &&
      strcmp (link, "replicating") == 0 &&
      (!bitmap || strcmp (bitmap, "off") == 0);

    if (synced) {
      progress_clear ();
      printf ("synced: the peer holds every record up to seq %" PRIu64 "\n",
              target);
      json_object_put (o);
      return 0;
    }
    if (timeout >= 0 && mono_sec () - start >= timeout) {
      progress_clear ();
      fprintf (stderr, "replicactl: wait-synced: timed out after %g s: the "
               "peer acknowledged seq %" PRIu64 " of %" PRIu64 " (link %s%s%s)\n",
               timeout, acked, target, link ? link : "?",
               field_str (o, "link_error") ? ": " : "",
               field_str (o, "link_error") ? field_str (o, "link_error") : "");
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

  if (argc != 2 || (strcmp (argv[1], "sync") != 0 &&
                    strcmp (argv[1], "async") != 0))
    usage (stderr, 2);
  if (!control_path) {
    fprintf (stderr, "replicactl: set-mode needs --control SOCKET\n");
    return 2;
  }
  snprintf (cmd, sizeof cmd, "set-mode %s", argv[1]);
  if (!(reply = ctl_request (cmd)))
    return 1;
  o = json_tokener_parse (reply);
  free (reply);
  if (!o)
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
    char *end;
    if (strcmp (argv[i], "--repair") == 0)
      repair = true;
    else if (strcmp (argv[i], "--timeout") == 0 && i + 1 < argc) {
      timeout = strtod (argv[++i], &end);
      if (*end || timeout < 0) {
        fprintf (stderr, "replicactl: --timeout: '%s' is not a number of "
                 "seconds\n", argv[i]);
        return 2;
      }
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
    printf ("verify: repaired: %" PRIu64 " differing block%s resent to the "
            "peer, in these ranges:\n", blocks, blocks == 1 ? "" : "s");
    print_ranges (o);
    ret = 0;
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

static void
print_time (const char *label, uint64_t ns)
{
  time_t t = ns / 1000000000;
  struct tm tm;
  char buf[64];

  gmtime_r (&t, &tm);
  strftime (buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  printf ("%-18s %s\n", label, buf);
}

static int
replay_one (int fd, const struct rlog_rec *rec, const uint8_t *payload)
{
  switch (rec->op) {
  case RLOG_OP_WRITE:
    return rlog_full_pwrite (fd, payload, rec->length, rec->offset);
  case RLOG_OP_ZERO:
  case RLOG_OP_TRIM:
    /* Both read as zeroes afterwards (docs/design.md). */
    if (fallocate (fd, FALLOC_FL_ZERO_RANGE, rec->offset, rec->length) == 0)
      return 0;
    if (errno != EOPNOTSUPP)
      return -1;
    {
      static const char zero[65536];
      for (uint32_t n = 0; n < rec->length; n += sizeof zero) {
        uint32_t k = rec->length - n < sizeof zero ? rec->length - n
          : sizeof zero;
        if (rlog_full_pwrite (fd, zero, k, rec->offset + n) == -1)
          return -1;
      }
    }
    return 0;
  default:
    return 0;
  }
}

/* The superblock's flags by name ("paired,resync"), "-" if none. */
static const char *
sb_flags_str (uint32_t flags, char *buf, size_t len)
{
  static const struct { uint32_t bit; const char *name; } names[] = {
    { RLOG_SB_OUTDATED, "outdated" },
    { RLOG_SB_PAIRED, "paired" },
    { RLOG_SB_PEER_OUTDATED, "peer-outdated" },
    { RLOG_SB_INCONSISTENT, "inconsistent" },
    { RLOG_SB_STAGING, "staging" },
    { RLOG_SB_RESYNC, "resync" },
    { RLOG_SB_BITMAP, "bitmap" },
    { RLOG_SB_REPLICATED, "replicated" },
  };
  size_t n = 0;

  buf[0] = '\0';
  for (size_t i = 0; i < sizeof names / sizeof names[0]; ++i)
    if (flags & names[i].bit) {
      n += snprintf (buf + n, len - n, "%s%s", n ? "," : "", names[i].name);
      flags &= ~names[i].bit;
      if (n >= len)
        return buf;
    }
  if (flags)
    snprintf (buf + n, len - n, "%s0x%" PRIx32, n ? "," : "", flags);
  else if (n == 0)
    snprintf (buf, len, "-");
  return buf;
}

static int
cmd_log_dump (int argc, char **argv)
{
  char err[RLOG_ERRLEN], uuid[37], flags[128];
  uint64_t limit = UINT64_MAX, shown = 0;
  struct rlog_scan scan;
  struct rlog_rec rec;
  const uint8_t *payload;
  struct rlog *log;
  const char *path = NULL;
  bool all = false;

  for (int i = 1; i < argc; ++i) {
    if (strcmp (argv[i], "--all") == 0)
      all = true;
    else if (strcmp (argv[i], "--records") == 0 && i + 1 < argc)
      limit = strtoull (argv[++i], NULL, 10);
    else if (argv[i][0] == '-' || path)
      usage (stderr, 2);
    else
      path = argv[i];
  }
  if (!path)
    usage (stderr, 2);
  log = rlog_open (path, 0, 1, err);
  if (!log) {
    fprintf (stderr, "replicactl: %s\n", err);
    return 1;
  }
  rlog_uuid_str (log->sb.volume_uuid, uuid);
  printf ("superblock (generation %" PRIu64 ")\n", log->sb.generation);
  printf ("%-18s %u\n", "format_version", log->sb.version);
  printf ("%-18s %s\n", "volume_uuid", uuid);
  printf ("%-18s %s\n", "role", rlog_role_name (log->sb.role));
  printf ("%-18s %s\n", "flags", sb_flags_str (log->sb.flags, flags,
                                                sizeof flags));
  printf ("%-18s %" PRIu64 "\n", "backing_size", log->sb.backing_size);
  print_time ("created", log->sb.created_ns);
  printf ("%-18s %" PRIu64 "\n", "log_size", log->sb.log_size);
  printf ("%-18s %" PRIu64 "\n", "bitmap_offset", log->sb.bitmap_offset);
  printf ("%-18s %" PRIu64 "\n", "bitmap_size", log->sb.bitmap_size);
  printf ("%-18s %" PRIu64 "\n", "ring_offset", log->sb.ring_offset);
  printf ("%-18s %" PRIu64 "\n", "ring_size", log->sb.ring_size);
  printf ("%-18s %" PRIu32 "\n", "max_payload", log->sb.max_payload);
  printf ("%-18s %" PRIu64 "\n", "checkpoint_seq", log->sb.checkpoint_seq);
  printf ("%-18s %" PRIu64 "\n", "checkpoint_epoch", log->sb.checkpoint_epoch);
  printf ("%-18s %" PRIu64 "\n", "checkpoint_lsn", log->sb.checkpoint_lsn);
  printf ("%-18s %" PRIu64 "\n", "epoch", log->sb.epoch);
  printf ("%-18s %" PRIu64 "\n", "seq_reserved", log->sb.seq_reserved);
  printf (all ? "records from the start of the ring:\n"
          : "records after the checkpoint:\n");
  printf ("%12s %14s %6s %-5s %14s %10s %6s %s\n", "seq", "lsn", "epoch",
          "op", "offset", "length", "flags", "time");
  if ((all ? rlog_scan_init_at (&scan, log, 0, 0, 0)
       : rlog_scan_init (&scan, log)) == -1) {
    fprintf (stderr, "replicactl: malloc: %m\n");
    rlog_close (log);
    return 1;
  }
  for (;;) {
    uint64_t lsn = scan.lsn;
    if (rlog_scan_next (&scan, &rec, &payload) != 1)
      break;
    if (shown++ < limit)
      printf ("%12" PRIu64 " %14" PRIu64 " %6" PRIu64 " %-5s %14" PRIu64
              " %10" PRIu32 " %6s %" PRIu64 ".%09" PRIu64 "\n",
              rec.seq, lsn, rec.epoch, rlog_op_name (rec.op), rec.offset,
              rec.length,
              rec.flags & RLOG_FLAG_FUA ? "fua" :
              rec.flags & RLOG_FLAG_MAY_TRIM ? "trim" : "-",
              rec.timestamp_ns / 1000000000, rec.timestamp_ns % 1000000000);
  }
  printf ("%" PRIu64 " records; end of log at lsn %" PRIu64 ": %s (%s)\n",
          scan.records, scan.lsn, rlog_stop_name (scan.stop), scan.why);
  rlog_scan_free (&scan);
  rlog_close (log);
  return scan.stop == RLOG_STOP_IOERR ? 1 : 0;
}

/* Apply the log's records, in seq order, to a raw image file: what
 * crash recovery does, offline.  With --all, from the first record of a
 * log that never wrapped (tests use it to rebuild a copy of the volume).
 */
static int
cmd_log_replay (int argc, char **argv)
{
  char err[RLOG_ERRLEN];
  const char *path = NULL, *image = NULL;
  struct rlog_scan scan;
  struct rlog_rec rec;
  const uint8_t *payload;
  struct rlog *log;
  bool all = false;
  struct stat st;
  int fd, ret = 0;

  for (int i = 1; i < argc; ++i) {
    if (strcmp (argv[i], "--all") == 0)
      all = true;
    else if (argv[i][0] == '-')
      usage (stderr, 2);
    else if (!path)
      path = argv[i];
    else if (!image)
      image = argv[i];
    else
      usage (stderr, 2);
  }
  if (!path || !image)
    usage (stderr, 2);
  log = rlog_open (path, 1, 1, err);
  if (!log) {
    fprintf (stderr, "replicactl: %s\n", err);
    return 1;
  }
  fd = open (image, O_RDWR | O_CLOEXEC);
  if (fd == -1) {
    fprintf (stderr, "replicactl: %s: %m\n", image);
    rlog_close (log);
    return 1;
  }
  if ((all ? rlog_scan_init_at (&scan, log, 0, 0, 0)
       : rlog_scan_init (&scan, log)) == -1) {
    fprintf (stderr, "replicactl: malloc: %m\n");
    ret = 1;
    goto out;
  }
  if (fstat (fd, &st) == -1 ||
      (log->sb.backing_size != 0 &&
       (uint64_t) st.st_size != log->sb.backing_size)) {
    fprintf (stderr, "replicactl: %s is %" PRIu64 " bytes, but the log "
             "belongs to a volume of %" PRIu64 " bytes\n", image,
             (uint64_t) st.st_size, log->sb.backing_size);
    ret = 1;
    goto out_scan;
  }
  while (ret == 0 && rlog_scan_next (&scan, &rec, &payload) == 1) {
    /* The very first record of a log is seq 1: otherwise the ring has
     * wrapped and the start of the history is gone.
     */
    if (all && scan.records == 1 && rec.seq != 1) {
      fprintf (stderr, "replicactl: %s has wrapped (its oldest record is "
               "seq %" PRIu64 "): --all needs a log that never wrapped\n",
               path, rec.seq);
      ret = 1;
      break;
    }
    if (rec.offset + rec.length > (uint64_t) st.st_size) {
      fprintf (stderr, "replicactl: seq %" PRIu64 " lies beyond the end "
               "of %s\n", rec.seq, image);
      ret = 1;
      break;
    }
    if (replay_one (fd, &rec, payload) == -1) {
      fprintf (stderr, "replicactl: %s: seq %" PRIu64 ": %m\n", image,
               rec.seq);
      ret = 1;
    }
  }
  if (ret == 0 && fdatasync (fd) == -1) {
    fprintf (stderr, "replicactl: %s: fdatasync: %m\n", image);
    ret = 1;
  }
  if (scan.stop == RLOG_STOP_IOERR)
    ret = 1;
  if (ret == 0)
    printf ("applied %" PRIu64 " records; end of log: %s (%s)\n",
            scan.records, rlog_stop_name (scan.stop), scan.why);
 out_scan:
  rlog_scan_free (&scan);
 out:
  close (fd);
  rlog_close (log);
  return ret;
}

/* Failback, offline: the log of a stopped old primary becomes a
 * secondary's, whose disk the promoted node resynchronises by block
 * checksums (RLOG_SB_RESYNC) before shipping records to it.  The
 * volume's UUID and pair secret stay: the promoted node has the same.
 */
static int
cmd_demote (int argc, char **argv)
{
  char err[RLOG_ERRLEN];
  const char *path = NULL, *why = NULL;
  struct rlog *log;
  struct rlog_sb sb;

  for (int i = 1; i < argc; ++i) {
    if (argv[i][0] == '-' || path)
      usage (stderr, 2);
    else
      path = argv[i];
  }
  if (!path)
    usage (stderr, 2);
  /* The lock nbdkit holds while it serves the log. */
  log = rlog_open (path, 1, 0, err);
  if (!log) {
    if (errno == EWOULDBLOCK)
      fprintf (stderr, "replicactl: demote: %s is locked by a running "
               "nbdkit (or another replicactl): stop nbdkit first\n", path);
    else
      fprintf (stderr, "replicactl: %s\n", err);
    return 1;
  }
  pthread_mutex_lock (&log->sb_lock);
  sb = log->sb;
  if (sb.role == RLOG_ROLE_SECONDARY)
    why = "it is already a secondary's log";
  else if (sb.role != RLOG_ROLE_PRIMARY)
    why = "it records an unknown role";
  else {
    sb.role = RLOG_ROLE_SECONDARY;
    sb.flags |= RLOG_SB_PAIRED | RLOG_SB_RESYNC;
    /* A primary's flags: a bitmap says what a peer of ours lacks, which
     * means nothing once we are the one to receive records.
     */
    sb.flags &= ~(RLOG_SB_PEER_OUTDATED | RLOG_SB_BITMAP |
                  RLOG_SB_REPLICATED);
    if (rlog_sb_write_locked (log, &sb) == -1) {
      snprintf (err, sizeof err, "writing the superblock: %m");
      why = err;
    }
  }
  pthread_mutex_unlock (&log->sb_lock);
  rlog_close (log);
  if (why) {
    fprintf (stderr, "replicactl: demote: %s: %s\n", path, why);
    return 1;
  }
  printf ("demoted: %s is now the log of a secondary, to be resynchronised "
          "by the primary\n"
          "next:\n"
          "  1. start nbdkit on it as a secondary, with the secondary's "
          "command line\n"
          "     (no replica-peer; TLS for the primary's replicator):\n"
          "       nbdkit --tls=require ... --filter=replica PLUGIN ... "
          "replica-log=%s\n"
          "  2. restart the promoted node with replica-peer=URI of this "
          "node (and its\n"
          "     replica-tls-* keys): a checksum resync sends the blocks "
          "that differ\n"
          "  3. on the new primary, follow it with replicactl --control "
          "SOCKET status:\n"
          "     the resync is over when sync_phase is none\n",
          path, path);
  return 0;
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
