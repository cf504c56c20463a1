/* replicactl: the commands on a log file: log-dump, log-replay and
 * demote.  They open the log file themselves (log-replay and demote
 * take the lock nbdkit holds while it serves it); the control commands
 * are replicactl.c's.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
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
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
#include <pthread.h>

#include "logfile.h"
#include "ctlproto.h"
#include "replicactl.h"

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
    /* Not supported here (tmpfs; a block device refuses unaligned
     * ranges with EINVAL): write the zeroes.
     */
    if (errno != EOPNOTSUPP && errno != EINVAL && errno != ENODEV)
      return -1;
    {
      static const char zero[65536];
      for (uint64_t n = 0; n < rec->length; n += sizeof zero) {
        uint64_t k = rec->length - n < sizeof zero ? rec->length - n
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
    { RLOG_SB_FOREIGN, "foreign" },
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

int
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
    else if (strcmp (argv[i], "--records") == 0 && i + 1 < argc) {
      char *end;
      errno = 0;
      limit = strtoull (argv[++i], &end, 10);
      if (errno || end == argv[i] || *end) {
        fprintf (stderr, "replicactl: --records: '%s' is not a number\n",
                 argv[i]);
        return 2;
      }
    }
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
              rec.flags & RLOG_FLAG_MAY_TRIM ? "trim" :
              rec.flags & RLOG_FLAG_ELIDED ? "elided" :
              rec.flags & RLOG_FLAG_SYNC_END ? "end" :
              rec.flags & RLOG_FLAG_SYNC ? "sync" : "-",
              rec.timestamp_ns / 1000000000, rec.timestamp_ns % 1000000000);
  }
  printf ("%" PRIu64 " records; end of log at lsn %" PRIu64 ": %s (%s)\n",
          scan.records, scan.lsn, rlog_stop_name (scan.stop), scan.why);
  rlog_scan_free (&scan);
  rlog_close (log);
  return scan.stop == RLOG_STOP_IOERR ? 1 : 0;
}

/* log-replay: apply the log's records, in seq order, to a raw image
 * file or block device: what crash recovery does, offline (a
 * secondary's staged resync is discarded, as there).  With --all, from
 * the first record of a log that never wrapped (tests use it to rebuild
 * a copy of the volume).
 */
struct replay {
  struct rlog *log;
  const char *path, *image;
  int fd;
  uint64_t size;                /* IMAGE's */
  bool all;
  bool staged;                  /* a secondary's staged resync: its
                                 * records after the checkpoint are
                                 * discarded by recovery, and here */
  uint64_t applied;
};

/* One pass over the records: checks every one first (apply false), so
 * that a refusal leaves IMAGE untouched, then applies them (apply
 * true).  Returns 0, or -1 after a message.
 */
static int
replay_pass (struct replay *rp, bool apply)
{
  const struct rlog_sb *sb = &rp->log->sb;
  struct rlog_scan scan;
  struct rlog_rec rec;
  const uint8_t *payload;
  uint64_t rec_lsn;
  int ret = 0;

  if ((rp->all ? rlog_scan_init_at (&scan, rp->log, 0, 0, 0)
       : rlog_scan_init (&scan, rp->log)) == -1) {
    fprintf (stderr, "replicactl: malloc: %m\n");
    return -1;
  }
  rp->applied = 0;
  while (rlog_scan_next (&scan, &rec, &payload) == 1) {
    rec_lsn = scan.lsn - rec.rec_size;
    if (rp->staged && rec_lsn >= sb->checkpoint_lsn)
      break;                    /* recovery skips them: so do we */
    /* The very first record of a log is seq 1: otherwise the ring has
     * wrapped and the start of the history is gone.
     */
    if (rp->all && scan.records == 1 && rec.seq != 1) {
      fprintf (stderr, "replicactl: %s has wrapped (its oldest record is "
               "seq %" PRIu64 "): --all needs a log that never wrapped\n",
               rp->path, rec.seq);
      goto fail;
    }
    /* (A flush's offset is no range: a pass's end record holds a seq.) */
    if (rec.op != RLOG_OP_FLUSH && rec.offset + rec.length > rp->size) {
      fprintf (stderr, "replicactl: seq %" PRIu64 " lies beyond the end "
               "of %s\n", rec.seq, rp->image);
      goto fail;
    }
    if (rec.flags & RLOG_FLAG_ELIDED) {
      fprintf (stderr, "replicactl: seq %" PRIu64 " holds no data (a block "
               "re-sent by an in-place resync, written to the volume "
               "only): this log cannot rebuild the image, which is "
               "inconsistent until the resync ends\n", rec.seq);
      goto fail;
    }
    if (apply && replay_one (rp->fd, &rec, payload) == -1) {
      fprintf (stderr, "replicactl: %s: seq %" PRIu64 ": %m\n", rp->image,
               rec.seq);
      goto fail;
    }
    rp->applied++;
  }
  if (scan.stop == RLOG_STOP_IOERR) {
    fprintf (stderr, "replicactl: %s: %s\n", rp->path, scan.why);
    goto fail;
  }
  /* --all rebuilds the whole history only if the scan from the start
   * reached the checkpoint: a torn tail that a restart left behind (the
   * new records start at the next block, past it) cuts it short.
   */
  if (rp->all && !rp->staged && scan.lsn < sb->checkpoint_lsn) {
    fprintf (stderr, "replicactl: %s: the history read from its start "
             "ends at lsn %" PRIu64 " (%s: %s), before the checkpoint at "
             "lsn %" PRIu64 ": --all cannot rebuild the volume from it\n",
             rp->path, scan.lsn, rlog_stop_name (scan.stop), scan.why,
             sb->checkpoint_lsn);
    goto fail;
  }
  if (apply)
    printf ("applied %" PRIu64 " records; end of log: %s (%s)\n",
            rp->applied, rp->staged ? "staged resync" : rlog_stop_name
            (scan.stop), rp->staged ? "discarded, as at the next start"
            : scan.why);
  goto out;
 fail:
  ret = -1;
 out:
  rlog_scan_free (&scan);
  return ret;
}

/* IMAGE's size: a file's, or a block device's. */
static int
image_size (int fd, uint64_t *size)
{
  struct stat st;

  if (fstat (fd, &st) == -1)
    return -1;
  if (S_ISBLK (st.st_mode))
    return ioctl (fd, BLKGETSIZE64, size);
  *size = st.st_size;
  return 0;
}

int
cmd_log_replay (int argc, char **argv)
{
  char err[RLOG_ERRLEN];
  struct replay rp = { .fd = -1 };
  int ret = 1;

  for (int i = 1; i < argc; ++i) {
    if (strcmp (argv[i], "--all") == 0)
      rp.all = true;
    else if (argv[i][0] == '-')
      usage (stderr, 2);
    else if (!rp.path)
      rp.path = argv[i];
    else if (!rp.image)
      rp.image = argv[i];
    else
      usage (stderr, 2);
  }
  if (!rp.path || !rp.image)
    usage (stderr, 2);
  rp.log = rlog_open (rp.path, 1, 1, err);
  if (!rp.log) {
    fprintf (stderr, "replicactl: %s\n", err);
    return 1;
  }
  rp.staged = rp.log->sb.role == RLOG_ROLE_SECONDARY &&
    (rp.log->sb.flags & RLOG_SB_STAGING);
  rp.fd = open (rp.image, O_RDWR | O_CLOEXEC);
  if (rp.fd == -1) {
    fprintf (stderr, "replicactl: %s: %m\n", rp.image);
    goto out;
  }
  if (image_size (rp.fd, &rp.size) == -1) {
    fprintf (stderr, "replicactl: %s: %m\n", rp.image);
    goto out;
  }
  if (rp.log->sb.backing_size != 0 && rp.size != rp.log->sb.backing_size) {
    fprintf (stderr, "replicactl: %s is %" PRIu64 " bytes, but the log "
             "belongs to a volume of %" PRIu64 " bytes\n", rp.image,
             rp.size, rp.log->sb.backing_size);
    goto out;
  }
  if (replay_pass (&rp, false) == -1 || replay_pass (&rp, true) == -1)
    goto sync;
  ret = 0;
 sync:
  /* Even after a failure part way (an I/O error of IMAGE): what was
   * applied is a prefix of the log, crash-consistent, and on disk.
   */
  if (fdatasync (rp.fd) == -1) {
    fprintf (stderr, "replicactl: %s: fdatasync: %m\n", rp.image);
    ret = 1;
  }
 out:
  if (rp.fd >= 0)
    close (rp.fd);
  rlog_close (rp.log);
  return ret;
}

/* Failback, offline: the log of a stopped old primary becomes a
 * secondary's, whose disk the promoted node resynchronises by block
 * checksums (RLOG_SB_RESYNC) before shipping records to it.  The
 * volume's UUID and pair secret stay: the promoted node has the same.
 */
int
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
    sb.flags |= RLOG_SB_PAIRED | RLOG_SB_RESYNC | RLOG_SB_FOREIGN;
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
