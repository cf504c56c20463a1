/* nbd-replicator: packing records into a BATCH (common/wire.h).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * On the wire a record occupies rlog_rec_size (payload_len) bytes: its
 * 64-byte header exactly as read from the log (the record CRC covers
 * it, so it is never re-encoded; its rec_size still says how much ring
 * it took, batch padding included), the payload, and zeroes up to the
 * 64-byte alignment.  The records of a batch are consecutive in the
 * log (WRAP records are skipped by the reader), so prev_seq/prev_epoch
 * of the header is the reader's position before the first one.
 *
 * With --compress lz4 the records are compressed as one LZ4 block,
 * sent compressed only if that is smaller.  A batch is built up to
 * BATCH_TARGET_RAW (replicator.h: why) raw bytes, within the protocol's
 * WIRE_BATCH_MAX, so header + data always fits one NBD request (64 MiB)
 * and one slot.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <inttypes.h>
#include <assert.h>

#include <lz4.h>

#include "replicator.h"

_Static_assert (WIRE_BATCH_MAX + WIRE_BATCH_HDR_SIZE <= WIRE_BATCH_SLOT,
                "a batch must fit its slot and one NBD request");
_Static_assert (WIRE_BATCH_MAX <= LZ4_MAX_INPUT_SIZE,
                "LZ4 block size limit");
_Static_assert (BATCH_TARGET_RAW >= RLOG_MAX_REC_SIZE &&
                BATCH_TARGET_RAW <= WIRE_BATCH_MAX,
                "a batch holds a largest record, within the protocol's limit");

/* Buffers of shipped batches, kept for the next ones: a fresh buffer
 * costs a page fault and a page of zeroes per 4 KiB, which at these
 * rates is a good part of the replicator's CPU.  At most POOL_MAX
 * buffers and POOL_BYTES of capacity are kept (the pipeline's own
 * limit: that much is in flight while it is full anyway).  The
 * replicator is single-threaded.
 */
#define POOL_MAX   MAX_INFLIGHT_BATCHES
#define POOL_BYTES (128u << 20)
static struct { uint8_t *buf; size_t cap; } pool[POOL_MAX];
static size_t pool_n, pool_bytes;

static void
pool_get (struct batch *b)
{
  if (!b->buf && pool_n > 0) {
    pool_n--;
    b->buf = pool[pool_n].buf;
    b->cap = pool[pool_n].cap;
    pool_bytes -= b->cap;
  }
}

static void
pool_put (uint8_t *buf, size_t cap)
{
  if (buf && pool_n < POOL_MAX && pool_bytes + cap <= POOL_BYTES) {
    pool[pool_n].buf = buf;
    pool[pool_n].cap = cap;
    pool_n++;
    pool_bytes += cap;
  }
  else
    free (buf);
}

static int
reserve (struct batch *b, size_t need, char *why, size_t whylen)
{
  size_t cap;
  uint8_t *p;

  pool_get (b);
  cap = b->cap ? b->cap : 1024 * 1024;

  if (need <= b->cap)
    return 0;
  while (cap < need)
    cap *= 2;
  /* (no batch needs more: budget <= WIRE_BATCH_MAX) */
  if (cap > WIRE_BATCH_HDR_SIZE + WIRE_BATCH_MAX &&
      need <= WIRE_BATCH_HDR_SIZE + WIRE_BATCH_MAX)
    cap = WIRE_BATCH_HDR_SIZE + WIRE_BATCH_MAX;
  p = realloc (b->buf, cap);
  if (!p) {
    snprintf (why, whylen, "realloc: %m");
    return -1;
  }
  b->buf = p;
  b->cap = cap;
  return 0;
}

/* Replace the raw records by one LZ4 block if that is smaller. */
static int
compress (struct batch *b, char *why, size_t whylen)
{
  int bound = LZ4_compressBound (b->wb.raw_len);
  uint8_t *z = malloc (WIRE_BATCH_HDR_SIZE + bound);
  int n;

  if (!z) {
    snprintf (why, whylen, "malloc: %m");
    return -1;
  }
  n = LZ4_compress_default ((const char *) b->buf + WIRE_BATCH_HDR_SIZE,
                            (char *) z + WIRE_BATCH_HDR_SIZE,
                            b->wb.raw_len, bound);
  if (n > 0 && (uint32_t) n < b->wb.raw_len) {
    pool_put (b->buf, b->cap);
    b->buf = z;
    b->cap = WIRE_BATCH_HDR_SIZE + bound;
    b->wb.wire_len = n;
    b->wb.flags |= WIRE_BATCH_LZ4;
  }
  else
    free (z);
  return 0;
}

int
batch_build (struct batch *b, struct reader *r, uint64_t limit,
             size_t budget, bool lz4, char *why, size_t whylen)
{
  struct wire_batch *wb = &b->wb;
  size_t raw = 0;

  memset (wb, 0, sizeof *wb);
  wb->prev_seq = r->prev_seq;
  wb->prev_epoch = r->prev_epoch;
  if (budget > BATCH_TARGET_RAW)
    budget = BATCH_TARGET_RAW;

  /* Stop while a largest record still fits, rather than reading one
   * too many: the reader cannot put a record back.
   */
  while (budget - raw >= RLOG_MAX_REC_SIZE) {
    struct rlog_rec rec;
    const uint8_t *hdr;
    uint8_t *p;
    uint32_t size;
    int ret;

    /* The record is read straight into the batch. */
    if (reserve (b, WIRE_BATCH_HDR_SIZE + raw + RLOG_MAX_REC_SIZE,
                 why, whylen) == -1)
      return -1;
    p = b->buf + WIRE_BATCH_HDR_SIZE + raw;
    ret = reader_next (r, limit, &rec, &hdr, p, why, whylen);
    if (ret == -1)
      return -1;
    if (ret == 0)
      break;
    assert (hdr == p);
    size = rlog_rec_size (rec.payload_len);
    /* The alignment after the payload: zeroes on the wire. */
    memset (p + RLOG_REC_HDR_SIZE + rec.payload_len, 0,
            size - RLOG_REC_HDR_SIZE - rec.payload_len);
    if (wb->count == 0)
      wb->first_seq = rec.seq;
    wb->last_seq = rec.seq;
    wb->count++;
    b->last_epoch = rec.epoch;
    b->end_lsn = r->lsn;
    raw += size;
    if (debug_flag)
      dbg ("  record seq %" PRIu64 " epoch %" PRIu64 " %s offset %" PRIu64
           " length %" PRIu32 " payload %" PRIu32 " (ends at lsn %" PRIu64
           ")", rec.seq, rec.epoch, rlog_op_name (rec.op), rec.offset,
           rec.length, rec.payload_len, r->lsn);
  }
  if (wb->count == 0)
    return 0;

  assert (raw <= WIRE_BATCH_MAX);
  wb->raw_len = wb->wire_len = raw;
  if (lz4 && compress (b, why, whylen) == -1)
    return -1;
  wb->data_crc = rlog_crc32c (0, b->buf + WIRE_BATCH_HDR_SIZE, wb->wire_len);
  wire_batch_encode_hdr (wb, b->buf);
  return 1;
}

void
batch_free (struct batch *b)
{
  if (b) {
    pool_put (b->buf, b->cap);
    free (b);
  }
}
