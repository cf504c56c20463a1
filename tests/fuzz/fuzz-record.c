/* nbd-replica: libFuzzer target for record header decoding.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * The input is a record as it lies in the ring: a header followed by
 * (part of) its payload.  rlog_rec_decode_hdr must never read past the
 * input; when it accepts a header, the header must be self-consistent
 * and re-encode to the same bytes, and rlog_rec_verify over the payload
 * bytes present must agree with a fresh seal.
 */
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "logfmt.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct rlog_rec r, r2;
  uint8_t hdr[RLOG_REC_HDR_SIZE];
  uint32_t plen;
  bool ok;

  if (rlog_rec_decode_hdr (data, size, RLOG_MAX_REC_SIZE, &r) != RLOG_OK)
    return 0;

  /* Accepted: the fields must be within their documented ranges. */
  if (size < RLOG_REC_HDR_SIZE ||
      r.op < RLOG_OP_WRITE || r.op > RLOG_OP_WRAP ||
      r.rec_size % RLOG_REC_ALIGN != 0 ||
      r.rec_size > RLOG_MAX_REC_SIZE ||
      r.rec_size < rlog_rec_size (r.payload_len) ||
      r.payload_len > RLOG_MAX_PAYLOAD ||
      (r.op == RLOG_OP_WRITE && !(r.flags & RLOG_FLAG_ELIDED)
       ? r.payload_len != r.length : r.payload_len != 0) ||
      ((r.flags & RLOG_FLAG_ELIDED) &&
       (r.op != RLOG_OP_WRITE || !(r.flags & RLOG_FLAG_SYNC) ||
        r.length == 0 || r.length > RLOG_MAX_PAYLOAD)) ||
      r.offset + r.length < r.offset)
    abort ();

  /* Every header byte is meaningful: re-encoding gives the same bytes. */
  rlog_rec_encode_hdr (&r, hdr);
  if (memcmp (hdr, data, RLOG_REC_HDR_SIZE) != 0)
    abort ();

  /* Verify over the payload bytes the input actually has. */
  plen = r.payload_len;
  if (plen > size - RLOG_REC_HDR_SIZE)
    plen = size - RLOG_REC_HDR_SIZE;
  ok = rlog_rec_verify (data, data + RLOG_REC_HDR_SIZE, plen);

  /* A verified record is exactly what rlog_rec_seal produces for it. */
  r2 = r;
  rlog_rec_seal (&r2, hdr, rlog_payload_crc (data + RLOG_REC_HDR_SIZE, plen));
  if (ok != (memcmp (hdr, data, RLOG_REC_HDR_SIZE) == 0) ||
      ok != (r2.crc == r.crc))
    abort ();
  return 0;
}
