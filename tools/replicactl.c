/* replicactl: control and inspect nbd-replica volumes.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 *   replicactl --control SOCKET status [--json]
 *   replicactl --control SOCKET promote [--force]
 *   replicactl --control SOCKET wait-synced [--timeout SECONDS]
 *   replicactl --control SOCKET set-mode sync|async
 *   replicactl log-dump [--all] [--records N] PATH
 *   replicactl log-replay [--all] PATH IMAGE
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
#include <fcntl.h>
#include <sys/stat.h>

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
           "       replicactl log-dump [--all] [--records N] LOGFILE\n"
           "       replicactl log-replay [--all] LOGFILE IMAGE\n"
           "See replicactl(8).\n");
  exit (status);
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
    fprintf (stderr, "replicactl: cannot connect to %s: %m "
             "(is nbdkit with the replica filter running?)\n", control_path);
    if (fd >= 0)
      close (fd);
    return NULL;
  }
  if (ctl_write_all (fd, cmd, strlen (cmd)) == -1 ||
      ctl_write_all (fd, "\n", 1) == -1 ||
      (reply = ctl_read_all (fd, 10000)) == NULL) {
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

/* Exit 0 once the peer acknowledged (made durable and applied) every
 * record up to the last one written when the command started.
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

    if (acked >= target) {
      printf ("synced: the peer holds every record up to seq %" PRIu64 "\n",
              target);
      json_object_put (o);
      return 0;
    }
    if (timeout >= 0 && mono_sec () - start >= timeout) {
      fprintf (stderr, "replicactl: wait-synced: timed out after %g s: the "
               "peer acknowledged seq %" PRIu64 " of %" PRIu64 " (link %s%s%s)\n",
               timeout, acked, target, link ? link : "?",
               field_str (o, "link_error") ? ": " : "",
               field_str (o, "link_error") ? field_str (o, "link_error") : "");
      json_object_put (o);
      return 1;
    }
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

static int
cmd_log_dump (int argc, char **argv)
{
  char err[RLOG_ERRLEN], uuid[37];
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
  fprintf (stderr, "replicactl: unknown command '%s'\n", argv[0]);
  usage (stderr, 2);
}
