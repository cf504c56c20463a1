/* nbd-replica: tests/tornwrap-log: make a log whose last batch was torn
 * at its WRAP (test-replica-torn-wrap.sh).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 *   tornwrap-log LOG
 *
 * Creates LOG (a primary's, RLOG_MIN_SIZE) and appends, with the
 * journal, one batch [A, WRAP, B] across the ring's end: A (6000 bytes
 * of 'A' at offset 0) ends inside the ring's last block, the WRAP
 * follows it there, B (4096 bytes of 'B' at offset 65536) starts the
 * next lap at the ring's start.  Then the sector of the WRAP's header
 * is zeroed, as if the power went before it reached the disk: the
 * batch is torn, no record of it was acknowledged, and B must never be
 * applied, at this start or any later one.  The disk (the file plugin's
 * volume, at least 69632 bytes) is the test's.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "journal.h"
#include "logfile.h"
#include "logfmt.h"

static void
die (const char *what, const char *why)
{
  fprintf (stderr, "tornwrap-log: %s: %s\n", what, why);
  exit (EXIT_FAILURE);
}

static void
entry (struct jentry *e, uint64_t offset, uint32_t length, const void *data)
{
  memset (e, 0, sizeof *e);
  e->op = RLOG_OP_WRITE;
  e->offset = offset;
  e->length = length;
  e->payload = data;
  e->payload_crc = rlog_payload_crc (data, length);
}

int
main (int argc, char **argv)
{
  static uint8_t a[6000], b[4096];
  static const uint8_t zero[RLOG_REC_HDR_SIZE];
  char err[RLOG_ERRLEN] = "";
  struct rlog *log;
  struct rlog_sb sb;
  struct journal j;
  struct jentry e[2];
  struct junit u = { .entries = e, .n = 2 };
  uint64_t start, wrap;

  if (argc != 2) {
    fprintf (stderr, "usage: tornwrap-log LOG\n");
    return 2;
  }
  if (rlog_create (argv[1], RLOG_MIN_SIZE, RLOG_ROLE_PRIMARY, err) == -1)
    die ("rlog_create", err);
  log = rlog_open (argv[1], 1, 0, err);
  if (log == NULL)
    die ("rlog_open", err);

  /* The checkpoint (and so the head) two blocks before the ring's end,
   * in a new epoch, as a recovery would leave them.
   */
  start = log->sb.ring_size - 2 * RLOG_BLOCK;
  pthread_mutex_lock (&log->sb_lock);
  sb = log->sb;
  sb.epoch++;
  sb.checkpoint_lsn = start;
  if (rlog_sb_write_locked (log, &sb) == -1)
    die ("superblock", "write failed");
  pthread_mutex_unlock (&log->sb_lock);
  if (journal_start (&j, log, &journal_sys_io, log->sb.seq_reserved, start,
                     NULL, NULL) == -1)
    die ("journal_start", "failed");
  journal_set_last (&j, log->sb.checkpoint_seq, log->sb.checkpoint_epoch);

  memset (a, 'A', sizeof a);
  memset (b, 'B', sizeof b);
  entry (&e[0], 0, sizeof a, a);
  entry (&e[1], 65536, sizeof b, b);
  if (journal_append (&j, &u) == -1)
    die ("journal_append", "failed");
  wrap = e[0].lsn + e[0].rec.rec_size;
  if (e[1].lsn != log->sb.ring_size || wrap % RLOG_BLOCK == 0 ||
      wrap >= log->sb.ring_size)
    die ("layout", "the batch does not straddle the ring's end as planned");
  journal_stop (&j);

  if (rlog_full_pwrite (log->fd, zero, sizeof zero,
                        rlog_lsn_to_off (&log->sb, wrap)) == -1 ||
      fdatasync (log->fd) == -1)
    die ("tearing the WRAP", "write failed");
  rlog_close (log);
  printf ("A at lsn %" PRIu64 ", torn WRAP at lsn %" PRIu64
          ", B at lsn %" PRIu64 " (the ring's start)\n",
          e[0].lsn, wrap, e[1].lsn);
  return 0;
}
