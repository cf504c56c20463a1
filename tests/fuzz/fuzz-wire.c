/* nbd-replica: libFuzzer target for what arrives on the replication
 * export: HELLO and CONTROL messages, and batches of records.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * The first input byte picks the decoder; the rest is the message.
 * Decoders must never read past the input, and whatever they accept
 * must re-encode to the same bytes (messages) or be a self-consistent,
 * ordered run of records (batches).
 */
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static uint64_t last_seq;
static uint32_t seen;

static int
check_record (void *opaque, const struct rlog_rec *r, const uint8_t *payload,
              uint32_t payload_crc)
{
  const struct wire_batch *b = opaque;

  /* (a SYNC_END flush carries its pass's base seq in offset, not a
   * place on the disk)
   */
  if (r->seq <= last_seq || r->seq > b->last_seq ||
      r->op == RLOG_OP_WRAP ||
      (r->op != RLOG_OP_FLUSH && r->offset + r->length > (1ULL << 40)) ||
      (r->op == RLOG_OP_FLUSH && r->offset != 0 &&
       !(r->flags & RLOG_FLAG_SYNC_END)) ||
      payload_crc != rlog_payload_crc (payload, r->payload_len))
    abort ();
  last_seq = r->seq;
  seen++;
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  uint8_t out[WIRE_MSG_SIZE], *copy;
  struct wire_hello h;
  struct wire_control c;
  struct wire_batch b;
  char why[256];

  if (size < 1)
    return 0;
  /* An exact-size heap copy, so any over-read is caught by ASan. */
  copy = malloc (size - 1 ? size - 1 : 1);
  memcpy (copy, data + 1, size - 1);
  switch (data[0] % 4) {
  case 0:
    if (wire_hello_decode (copy, size - 1, &h) == WIRE_OK) {
      wire_hello_encode (&h, out);
      if (memcmp (out, copy, 256) != 0)
        abort ();
    }
    break;
  case 1:
    if (wire_control_decode (copy, size - 1, &c) == WIRE_OK) {
      wire_control_encode (&c, out);
      if (memcmp (out, copy, 256) != 0)
        abort ();
    }
    break;
  case 2:
    if (wire_batch_decode_hdr (copy, size - 1, &b) == WIRE_OK &&
        !(b.flags & WIRE_BATCH_LZ4)) {
      size_t n = size - 1 - WIRE_BATCH_HDR_SIZE;
      last_seq = b.prev_seq;
      seen = 0;
      if (wire_batch_walk (&b, copy + WIRE_BATCH_HDR_SIZE, n, 1ULL << 40,
                           check_record, &b, why, sizeof why) == WIRE_OK &&
          (seen != b.count || last_seq != b.last_seq))
        abort ();
    }
    break;
  case 3: {
    /* What the secondary runs on a BATCH write (LZ4 included). */
    const uint8_t *records;
    uint8_t *owned;
    if (wire_batch_unpack (copy, size - 1, 1ULL << 40, &b, &records, &owned,
                           NULL, NULL, why, sizeof why) == WIRE_OK) {
      last_seq = b.prev_seq;
      seen = 0;
      if (wire_batch_walk (&b, records, b.raw_len, 1ULL << 40, check_record,
                           &b, why, sizeof why) != WIRE_OK ||
          seen != b.count || last_seq != b.last_seq)
        abort ();
      free (owned);
    }
    break;
  }
  }
  free (copy);
  return 0;
}
