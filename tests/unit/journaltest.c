/* nbd-replica: fixtures shared by the journal unit tests.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <inttypes.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <time.h>
#include <pthread.h>
#include <stdatomic.h>

#include <check.h>

#include "testutil.h"
#include "journaltest.h"

char *tmpdir;

void
jt_setup (void)
{
  tmpdir = tu_mkdtemp ();
}

void
jt_teardown (void)
{
  tu_rmtree (tmpdir);
  free (tmpdir);
  tmpdir = NULL;
}


struct fio fio;

void
fio_reset (void)
{
  atomic_store (&fio.pwritevs, 0);
  atomic_store (&fio.syncs, 0);
  atomic_store (&fio.fail_pwritev, 0);
  atomic_store (&fio.short_pwritev, 0);
  atomic_store (&fio.fail_sync, 0);
  fio.pwritev_errno = fio.sync_errno = 0;
  fio.sync_delay_ns = 0;
}

/* Consume one failure from *n (0: none left; -1: forever). */
static int
take_fault (atomic_int *n)
{
  int v = atomic_load (n);

  while (v != 0) {
    if (v < 0)
      return 1;
    if (atomic_compare_exchange_weak (n, &v, v - 1))
      return 1;
  }
  return 0;
}

ssize_t
fio_pwritev (int fd, const struct iovec *iov, int n, off_t off)
{
  ssize_t r;

  atomic_fetch_add (&fio.pwritevs, 1);
  if (take_fault (&fio.fail_pwritev)) {
    errno = fio.pwritev_errno;
    return -1;
  }
  r = pwritev (fd, iov, n, off);
  if (r > 0 && take_fault (&fio.short_pwritev))
    r--;
  return r;
}

int
fio_fdatasync (int fd)
{
  atomic_fetch_add (&fio.syncs, 1);
  if (fio.sync_delay_ns > 0) {
    struct timespec ts = { 0, fio.sync_delay_ns };
    nanosleep (&ts, NULL);
  }
  if (take_fault (&fio.fail_sync)) {
    errno = fio.sync_errno;
    return -1;
  }
  return fdatasync (fd);
}

const struct journal_io test_io = {
  .pwritev = fio_pwritev,
  .fdatasync = fio_fdatasync,
};


/* The checkpointer's job (plugin/checkpoint.c checkpoint_now) without
 * the backing flush: record the checkpoint point in the superblock,
 * then free the space before it.
 */
void
jt_checkpoint (struct journal *j, struct rlog *log)
{
  uint64_t seq, epoch, lsn;
  struct rlog_sb sb;
  int r;

  journal_checkpoint_point (j, &seq, &epoch, &lsn);
  pthread_mutex_lock (&log->sb_lock);
  sb = log->sb;
  sb.checkpoint_seq = seq;
  sb.checkpoint_epoch = epoch;
  sb.checkpoint_lsn = lsn;
  r = rlog_sb_write_locked (log, &sb);
  pthread_mutex_unlock (&log->sb_lock);
  ck_assert_int_eq (r, 0);
  journal_set_checkpoint (j, lsn);
}

void
pressure_checkpoint (void *opaque)
{
  struct jctx *c = opaque;

  jt_checkpoint (&c->j, c->log);
}

struct jctx *
jt_start (const char *name, const struct journal_io *io,
       journal_pressure_fn pressure)
{
  struct jctx *c = calloc (1, sizeof *c);

  ck_assert_ptr_nonnull (c);
  fio_reset ();
  c->log = tu_new_log (tmpdir, name, RLOG_MIN_SIZE);
  ck_assert_uint_eq (c->log->sb.epoch, 1);
  ck_assert_int_eq (journal_start (&c->j, c->log, io,
                                   c->log->sb.seq_reserved,
                                   c->log->sb.checkpoint_lsn,
                                   pressure, c), 0);
  return c;
}

void
jt_stop (struct jctx *c)
{
  journal_stop (&c->j);
  rlog_close (c->log);
  free (c);
}

void
set_entry (struct jentry *e, uint8_t op, uint32_t flags, uint64_t offset,
           uint32_t length, const void *payload)
{
  memset (e, 0, sizeof *e);
  e->op = op;
  e->flags = flags;
  e->offset = offset;
  e->length = length;
  if (op == RLOG_OP_WRITE) {
    e->payload = payload;
    e->payload_crc = rlog_payload_crc (payload, length);
  }
}

/* Append one WRITE of len bytes of pattern seed; returns journal_append. */
int
append_write (struct journal *j, struct jentry *e, uint64_t offset,
              uint32_t len, uint64_t seed)
{
  uint8_t *buf = malloc (len);
  struct junit u = { .entries = e, .n = 1 };
  int r, err;

  ck_assert_ptr_nonnull (buf);
  tu_fill (buf, len, seed);
  set_entry (e, RLOG_OP_WRITE, 0, offset, len, buf);
  r = journal_append (j, &u);
  err = errno;
  free (buf);                   /* the payload is only read by append */
  e->payload = NULL;
  errno = err;
  return r;
}

void
jt_stats (struct journal *j, struct journal_stats *st, uint64_t *head,
       int *fault, bool *fenced)
{
  uint64_t used, h;
  int f;
  bool fe;

  journal_get_stats (j, st, head ? head : &h, &used, fault ? fault : &f,
                     fenced ? fenced : &fe);
}

void
want_from (struct want *w, const struct jentry *e, uint64_t seed)
{
  w->op = e->op;
  w->flags = e->flags;
  w->offset = e->offset;
  w->length = e->length;
  w->seed = seed;
  w->seq = e->rec.seq;
  w->epoch = e->rec.epoch;
}

/* Scan from the superblock's checkpoint and expect exactly want[0..n),
 * then a stop of kind stop (or any clean stop if stop is NONE).
 */
void
scan_expect (struct rlog *log, const struct want *want, size_t n,
             enum rlog_stop stop)
{
  struct rlog_scan s;
  struct rlog_rec rec;
  const uint8_t *payload;
  size_t i = 0;

  ck_assert_int_eq (rlog_scan_init (&s, log), 0);
  while (rlog_scan_next (&s, &rec, &payload) == 1) {
    ck_assert_msg (i < n, "unexpected record seq %" PRIu64 " epoch %" PRIu64
                   " (%s) after the %zu expected", rec.seq, rec.epoch,
                   rlog_op_name (rec.op), n);
    ck_assert_uint_ne (rec.op, RLOG_OP_WRAP);
    ck_assert_uint_eq (rec.seq, want[i].seq);
    ck_assert_uint_eq (rec.epoch, want[i].epoch);
    ck_assert_uint_eq (rec.op, want[i].op);
    ck_assert_uint_eq (rec.flags, want[i].flags);
    ck_assert_uint_eq (rec.offset, want[i].offset);
    ck_assert_uint_eq (rec.length, want[i].length);
    if (rec.op == RLOG_OP_WRITE) {
      ck_assert_uint_eq (rec.payload_len, rec.length);
      ck_assert_msg (tu_check (payload, rec.length, want[i].seed),
                     "payload of seq %" PRIu64 " differs", rec.seq);
    }
    else
      ck_assert_uint_eq (rec.payload_len, 0);
    i++;
  }
  ck_assert_msg (i == n, "scan returned %zu records, want %zu; stop: %s (%s)",
                 i, n, rlog_stop_name (s.stop), s.why);
  ck_assert_uint_eq (s.records, n);
  if (stop != RLOG_STOP_NONE)
    ck_assert_msg (s.stop == stop, "scan stopped with %s (%s), want %s",
                   rlog_stop_name (s.stop), s.why, rlog_stop_name (stop));
  else
    ck_assert_msg (s.stop == RLOG_STOP_EMPTY || s.stop == RLOG_STOP_STALE ||
                   s.stop == RLOG_STOP_CORRUPT,
                   "scan stopped with %s (%s)", rlog_stop_name (s.stop),
                   s.why);
  rlog_scan_free (&s);
}

/* Append n WRITEs of plen bytes; fill want. */
void
append_n (struct jctx *c, struct jentry *ents, struct want *want, int n,
          uint32_t plen)
{
  for (int i = 0; i < n; ++i) {
    ck_assert_int_eq (append_write (&c->j, &ents[i], (uint64_t) i << 20,
                                    plen, 100 + i), 0);
    want_from (&want[i], &ents[i], 100 + i);
    journal_complete (&c->j, &ents[i]);
  }
}


void
jt_move_head (struct jctx *c, uint64_t lsn)
{
  const struct journal_io *io = c->j.io;
  journal_pressure_fn pressure = c->j.pressure;
  struct rlog_sb sb;

  pthread_mutex_lock (&c->log->sb_lock);
  sb = c->log->sb;
  sb.checkpoint_lsn = lsn;
  ck_assert_int_eq (rlog_sb_write_locked (c->log, &sb), 0);
  pthread_mutex_unlock (&c->log->sb_lock);
  journal_stop (&c->j);
  ck_assert_int_eq (journal_start (&c->j, c->log, io,
                                   c->log->sb.seq_reserved, lsn,
                                   pressure, c), 0);
  journal_set_last (&c->j, c->log->sb.checkpoint_seq,
                    c->log->sb.checkpoint_epoch);
}
