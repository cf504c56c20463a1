/* nbd-replica: unit tests of the on-disk format (common/logfmt.c).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include <check.h>

#include "le.h"
#include "logfmt.h"
#include "testutil.h"

/* Offsets of a few header fields, as documented in logfmt.c. */
enum {
  R_MAGIC = 0, R_VERSION = 4, R_OP = 5, R_HDRSIZE = 6, R_FLAGS = 8,
  R_PAYLOAD = 12, R_SEQ = 16, R_OFFSET = 24, R_LENGTH = 32,
  R_RECSIZE = 36, R_TIME = 40, R_EPOCH = 48, R_CRC = 56, R_RESERVED = 60,
};
enum { SB_VERSION = 8, SB_ENCSIZE = 12, SB_GENERATION = 16, SB_CRC = 252 };

/* ---- CRC-32C ---- */

START_TEST (test_crc32c_check_value)
{
  uint8_t buf[32];

  ck_assert_uint_eq (rlog_crc32c (0, "123456789", 9), 0xe3069283);
  ck_assert_uint_eq (rlog_crc32c (0, "", 0), 0);
  /* RFC 3720 appendix B.4 vectors. */
  memset (buf, 0, sizeof buf);
  ck_assert_uint_eq (rlog_crc32c (0, buf, sizeof buf), 0x8a9136aa);
  memset (buf, 0xff, sizeof buf);
  ck_assert_uint_eq (rlog_crc32c (0, buf, sizeof buf), 0x62a8ab43);
  for (int i = 0; i < 32; ++i)
    buf[i] = i;
  ck_assert_uint_eq (rlog_crc32c (0, buf, sizeof buf), 0x46dd794e);
  for (int i = 0; i < 32; ++i)
    buf[i] = 31 - i;
  ck_assert_uint_eq (rlog_crc32c (0, buf, sizeof buf), 0x113fdb5c);
}
END_TEST

START_TEST (test_crc32c_chaining)
{
  uint8_t buf[1000];
  uint32_t whole;

  tu_fill (buf, sizeof buf, 42);
  whole = rlog_crc32c (0, buf, sizeof buf);
  for (size_t k = 0; k <= sizeof buf; ++k)
    ck_assert_msg (rlog_crc32c (rlog_crc32c (0, buf, k), buf + k,
                                sizeof buf - k) == whole,
                   "chaining at split %zu", k);
  /* Three pieces, and a zero-length piece in the middle. */
  ck_assert_uint_eq (rlog_crc32c (rlog_crc32c (rlog_crc32c (0, buf, 7),
                                               buf + 7, 0),
                                  buf + 7, sizeof buf - 7), whole);
  /* "123456789" in two pieces. */
  ck_assert_uint_eq (rlog_crc32c (rlog_crc32c (0, "1234", 4), "56789", 5),
                     0xe3069283);
}
END_TEST

/* ---- record headers ---- */

static struct rlog_rec
make_rec (uint8_t op, uint32_t plen)
{
  struct rlog_rec r = {
    .op = op, .payload_len = plen, .rec_size = rlog_rec_size (plen),
    .seq = 0x0102030405060708ULL, .timestamp_ns = 1700000000123456789ULL,
    .epoch = 7,
  };

  switch (op) {
  case RLOG_OP_WRITE:
    r.length = plen;
    r.offset = 1ULL << 40;
    r.flags = RLOG_FLAG_FUA;
    break;
  case RLOG_OP_ZERO:
    r.length = 1 << 20;
    r.offset = 4096;
    r.flags = RLOG_FLAG_MAY_TRIM | RLOG_FLAG_FUA;
    break;
  case RLOG_OP_TRIM:
    r.length = 65536;
    r.offset = 8192;
    break;
  default:
    break;
  }
  return r;
}

/* Seal r over payload into hdr and check it decodes back to r. */
static void
seal_and_check (struct rlog_rec *r, uint8_t *hdr, const uint8_t *payload)
{
  struct rlog_rec d;

  rlog_rec_seal (r, hdr, rlog_payload_crc (payload, r->payload_len));
  ck_assert_int_eq (rlog_rec_decode_hdr (hdr, RLOG_REC_HDR_SIZE,
                                         RLOG_MAX_REC_SIZE, &d), RLOG_OK);
  ck_assert_uint_eq (d.op, r->op);
  ck_assert_uint_eq (d.flags, r->flags);
  ck_assert_uint_eq (d.payload_len, r->payload_len);
  ck_assert_uint_eq (d.length, r->length);
  ck_assert_uint_eq (d.rec_size, r->rec_size);
  ck_assert_uint_eq (d.seq, r->seq);
  ck_assert_uint_eq (d.offset, r->offset);
  ck_assert_uint_eq (d.timestamp_ns, r->timestamp_ns);
  ck_assert_uint_eq (d.epoch, r->epoch);
  ck_assert_uint_eq (d.crc, r->crc);
  ck_assert (rlog_rec_verify (hdr, payload, r->payload_len));
}

START_TEST (test_rec_round_trip)
{
  static const uint32_t plens[] = { 1, 63, 64, 65, 4096, RLOG_MAX_PAYLOAD };
  uint8_t *payload = malloc (RLOG_MAX_PAYLOAD);
  uint8_t hdr[RLOG_REC_HDR_SIZE];
  struct rlog_rec r;

  ck_assert_ptr_nonnull (payload);
  tu_fill (payload, RLOG_MAX_PAYLOAD, 1);
  for (size_t i = 0; i < sizeof plens / sizeof plens[0]; ++i) {
    r = make_rec (RLOG_OP_WRITE, plens[i]);
    seal_and_check (&r, hdr, payload);
    /* The encoding is little-endian at the documented offsets. */
    ck_assert_uint_eq (get_le32 (hdr + R_MAGIC), RLOG_REC_MAGIC);
    ck_assert (memcmp (hdr, "RPER", 4) == 0);
    ck_assert_uint_eq (get_le64 (hdr + R_SEQ), r.seq);
    ck_assert_uint_eq (get_le32 (hdr + R_PAYLOAD), plens[i]);
    ck_assert_uint_eq (get_le32 (hdr + R_RESERVED), 0);
  }
  for (uint8_t op = RLOG_OP_ZERO; op <= RLOG_OP_WRAP; ++op) {
    r = make_rec (op, 0);
    seal_and_check (&r, hdr, NULL);
  }
  /* Batch padding: a larger rec_size than needed is accepted. */
  r = make_rec (RLOG_OP_WRITE, 100);
  r.rec_size = rlog_rec_size (100) + 4096 - 64;
  seal_and_check (&r, hdr, payload);
  /* A WRAP filler of any 64-multiple size within max_rec. */
  r = make_rec (RLOG_OP_WRAP, 0);
  r.rec_size = 777 * 64;
  seal_and_check (&r, hdr, NULL);
  free (payload);
}
END_TEST

START_TEST (test_rec_size)
{
  ck_assert_uint_eq (rlog_rec_size (0), 64);
  ck_assert_uint_eq (rlog_rec_size (1), 128);
  ck_assert_uint_eq (rlog_rec_size (64), 128);
  ck_assert_uint_eq (rlog_rec_size (65), 192);
  ck_assert_uint_eq (rlog_rec_size (4032), 4096);
  ck_assert_uint_eq (rlog_rec_size (RLOG_MAX_PAYLOAD),
                     RLOG_MAX_PAYLOAD + 64);
  ck_assert_uint_le (rlog_rec_size (RLOG_MAX_PAYLOAD) + RLOG_BLOCK - 64,
                     RLOG_MAX_REC_SIZE);
}
END_TEST

/* Encode a valid header for op, then poke it with f; return decode result. */
static enum rlog_err
decode_poked (uint8_t op, void (*poke) (uint8_t *hdr, struct rlog_rec *r),
              size_t len, uint32_t max_rec)
{
  struct rlog_rec r = make_rec (op, op == RLOG_OP_WRITE ? 512 : 0), d;
  uint8_t hdr[RLOG_REC_HDR_SIZE];

  rlog_rec_encode_hdr (&r, hdr);
  ck_assert_int_eq (rlog_rec_decode_hdr (hdr, sizeof hdr, RLOG_MAX_REC_SIZE,
                                         &d), RLOG_OK);
  if (poke)
    poke (hdr, &r);
  return rlog_rec_decode_hdr (hdr, len, max_rec, &d);
}

#define POKE(name, body)                                                \
  static void name (uint8_t *h, struct rlog_rec *r) { body; }
POKE (poke_magic0, h[0] ^= 1)
POKE (poke_magic3, h[3] ^= 0x80)
POKE (poke_version0, h[R_VERSION] = 0)
POKE (poke_version2, h[R_VERSION] = 2)
POKE (poke_hdrsize, put_le16 (h + R_HDRSIZE, 128))
POKE (poke_reserved, put_le32 (h + R_RESERVED, 1))
POKE (poke_reserved_hi, h[R_RESERVED + 3] = 0x80)
POKE (poke_flags, put_le32 (h + R_FLAGS, 0x20))
/* SYNC_END belongs to a flush only; a wrap takes no flags. */
POKE (poke_sync_end, put_le32 (h + R_FLAGS, RLOG_FLAG_SYNC_END))
/* ELIDED: a SYNC write's header without its payload, nothing else. */
POKE (poke_elided, put_le32 (h + R_FLAGS, RLOG_FLAG_SYNC | RLOG_FLAG_ELIDED);
      put_le32 (h + R_PAYLOAD, 0); put_le32 (h + R_RECSIZE, 64))
POKE (poke_elided_nosync, put_le32 (h + R_FLAGS, RLOG_FLAG_ELIDED);
      put_le32 (h + R_PAYLOAD, 0); put_le32 (h + R_RECSIZE, 64))
POKE (poke_elided_payload, put_le32 (h + R_FLAGS,
                                     RLOG_FLAG_SYNC | RLOG_FLAG_ELIDED))
POKE (poke_elided_nolength, put_le32 (h + R_FLAGS,
                                      RLOG_FLAG_SYNC | RLOG_FLAG_ELIDED);
      put_le32 (h + R_PAYLOAD, 0); put_le32 (h + R_RECSIZE, 64);
      put_le32 (h + R_LENGTH, 0))
POKE (poke_elided_huge, put_le32 (h + R_FLAGS,
                                  RLOG_FLAG_SYNC | RLOG_FLAG_ELIDED);
      put_le32 (h + R_PAYLOAD, 0); put_le32 (h + R_RECSIZE, 64);
      put_le32 (h + R_LENGTH, RLOG_MAX_PAYLOAD + 1))
POKE (poke_op0, h[R_OP] = 0)
POKE (poke_op6, h[R_OP] = 6)
POKE (poke_op255, h[R_OP] = 255)
POKE (poke_plen_more, put_le32 (h + R_PAYLOAD, r->payload_len + 1))
POKE (poke_plen_less, put_le32 (h + R_PAYLOAD, r->payload_len - 64))
POKE (poke_length_more, put_le32 (h + R_LENGTH, r->length + 1))
POKE (poke_write_empty, put_le32 (h + R_PAYLOAD, 0); put_le32 (h + R_LENGTH, 0);
      put_le32 (h + R_RECSIZE, 64))
POKE (poke_write_huge, put_le32 (h + R_PAYLOAD, RLOG_MAX_PAYLOAD + 64);
      put_le32 (h + R_LENGTH, RLOG_MAX_PAYLOAD + 64);
      put_le32 (h + R_RECSIZE, RLOG_MAX_PAYLOAD + 128))
POKE (poke_zero_payload, put_le32 (h + R_PAYLOAD, 64);
      put_le32 (h + R_RECSIZE, 128))
POKE (poke_zero_nolength, put_le32 (h + R_LENGTH, 0))
POKE (poke_flush_length, put_le32 (h + R_LENGTH, 512))
POKE (poke_flush_offset, put_le64 (h + R_OFFSET, 4096))
POKE (poke_flush_payload, put_le32 (h + R_PAYLOAD, 64);
      put_le32 (h + R_RECSIZE, 128))
POKE (poke_recsize_unaligned, put_le32 (h + R_RECSIZE, r->rec_size + 1))
POKE (poke_recsize_small, put_le32 (h + R_RECSIZE, 0))
POKE (poke_recsize_short, put_le32 (h + R_RECSIZE, r->rec_size - 64))
POKE (poke_recsize_huge, put_le32 (h + R_RECSIZE, 0xffffffc0))
POKE (poke_offset_wraps, put_le64 (h + R_OFFSET, UINT64_MAX - 100))

START_TEST (test_rec_reject)
{
  /* Control: unpoked headers decode. */
  for (uint8_t op = RLOG_OP_WRITE; op <= RLOG_OP_WRAP; ++op)
    ck_assert_int_eq (decode_poked (op, NULL, 64, RLOG_MAX_REC_SIZE),
                      RLOG_OK);

  /* Short buffer. */
  ck_assert_int_eq (decode_poked (RLOG_OP_WRITE, NULL, 63,
                                  RLOG_MAX_REC_SIZE), RLOG_EMAGIC);
  ck_assert_int_eq (decode_poked (RLOG_OP_WRITE, NULL, 0,
                                  RLOG_MAX_REC_SIZE), RLOG_EMAGIC);
#define REJECT(op, poke, want)                                          \
  ck_assert_msg (decode_poked (op, poke, 64, RLOG_MAX_REC_SIZE) == want, \
                 "%s on %s: got %s, want %s", #poke, rlog_op_name (op), \
                 rlog_strerror (decode_poked (op, poke, 64,            \
                                              RLOG_MAX_REC_SIZE)),     \
                 rlog_strerror (want))
  REJECT (RLOG_OP_WRITE, poke_magic0, RLOG_EMAGIC);
  REJECT (RLOG_OP_WRITE, poke_magic3, RLOG_EMAGIC);
  REJECT (RLOG_OP_WRITE, poke_version0, RLOG_EVERSION);
  REJECT (RLOG_OP_WRITE, poke_version2, RLOG_EVERSION);
  REJECT (RLOG_OP_WRITE, poke_hdrsize, RLOG_EVERSION);
  REJECT (RLOG_OP_WRITE, poke_reserved, RLOG_EINVAL);
  REJECT (RLOG_OP_ZERO, poke_reserved_hi, RLOG_EINVAL);
  REJECT (RLOG_OP_WRITE, poke_flags, RLOG_EINVAL);
  REJECT (RLOG_OP_WRITE, poke_sync_end, RLOG_EINVAL);
  REJECT (RLOG_OP_ZERO, poke_sync_end, RLOG_EINVAL);
  REJECT (RLOG_OP_WRITE, poke_elided, RLOG_OK);
  REJECT (RLOG_OP_WRITE, poke_elided_nosync, RLOG_EINVAL);
  REJECT (RLOG_OP_WRITE, poke_elided_payload, RLOG_EINVAL);
  REJECT (RLOG_OP_WRITE, poke_elided_nolength, RLOG_EINVAL);
  REJECT (RLOG_OP_WRITE, poke_elided_huge, RLOG_EINVAL);
  REJECT (RLOG_OP_ZERO, poke_elided, RLOG_EINVAL);
  REJECT (RLOG_OP_TRIM, poke_elided, RLOG_EINVAL);
  REJECT (RLOG_OP_FLUSH, poke_elided, RLOG_EINVAL);
  REJECT (RLOG_OP_WRAP, poke_elided, RLOG_EINVAL);
  REJECT (RLOG_OP_WRITE, poke_op0, RLOG_EINVAL);
  REJECT (RLOG_OP_ZERO, poke_op6, RLOG_EINVAL);
  REJECT (RLOG_OP_FLUSH, poke_op255, RLOG_EINVAL);
  REJECT (RLOG_OP_WRITE, poke_plen_more, RLOG_EINVAL);
  REJECT (RLOG_OP_WRITE, poke_plen_less, RLOG_EINVAL);
  REJECT (RLOG_OP_WRITE, poke_length_more, RLOG_EINVAL);
  REJECT (RLOG_OP_WRITE, poke_write_empty, RLOG_EINVAL);
  REJECT (RLOG_OP_WRITE, poke_write_huge, RLOG_EINVAL);
  REJECT (RLOG_OP_ZERO, poke_zero_payload, RLOG_EINVAL);
  REJECT (RLOG_OP_TRIM, poke_zero_payload, RLOG_EINVAL);
  REJECT (RLOG_OP_ZERO, poke_zero_nolength, RLOG_EINVAL);
  REJECT (RLOG_OP_TRIM, poke_zero_nolength, RLOG_EINVAL);
  REJECT (RLOG_OP_FLUSH, poke_flush_length, RLOG_EINVAL);
  REJECT (RLOG_OP_FLUSH, poke_flush_offset, RLOG_EINVAL);
  REJECT (RLOG_OP_FLUSH, poke_flush_payload, RLOG_EINVAL);
  REJECT (RLOG_OP_WRAP, poke_flush_length, RLOG_EINVAL);
  REJECT (RLOG_OP_WRAP, poke_flush_offset, RLOG_EINVAL);
  REJECT (RLOG_OP_WRAP, poke_flush_payload, RLOG_EINVAL);
  REJECT (RLOG_OP_WRITE, poke_recsize_unaligned, RLOG_EINVAL);
  REJECT (RLOG_OP_FLUSH, poke_recsize_small, RLOG_EINVAL);
  REJECT (RLOG_OP_WRITE, poke_recsize_short, RLOG_EINVAL);
  REJECT (RLOG_OP_WRITE, poke_recsize_huge, RLOG_EINVAL);
  REJECT (RLOG_OP_ZERO, poke_offset_wraps, RLOG_EINVAL);
#undef REJECT

  /* max_rec bounds rec_size. */
  ck_assert_int_eq (decode_poked (RLOG_OP_WRITE, NULL, 64,
                                  rlog_rec_size (512) - 64), RLOG_EINVAL);
  ck_assert_int_eq (decode_poked (RLOG_OP_WRITE, NULL, 64,
                                  rlog_rec_size (512)), RLOG_OK);
}
END_TEST

/* Every single-bit flip in the header or payload fails verification,
 * and so do a sample of double flips and a truncated payload.
 */
START_TEST (test_rec_bitflip)
{
  enum { PLEN = 300 };
  uint8_t payload[PLEN], hdr[RLOG_REC_HDR_SIZE];
  struct rlog_rec r = make_rec (RLOG_OP_WRITE, PLEN);
  uint64_t s = 12345;

  tu_fill (payload, PLEN, 9);
  rlog_rec_seal (&r, hdr, rlog_payload_crc (payload, PLEN));
  ck_assert (rlog_rec_verify (hdr, payload, PLEN));

  for (size_t bit = 0; bit < 8 * RLOG_REC_HDR_SIZE; ++bit) {
    hdr[bit / 8] ^= 1 << (bit % 8);
    ck_assert_msg (!rlog_rec_verify (hdr, payload, PLEN),
                   "header bit %zu flip not detected", bit);
    hdr[bit / 8] ^= 1 << (bit % 8);
  }
  for (size_t bit = 0; bit < 8 * PLEN; ++bit) {
    payload[bit / 8] ^= 1 << (bit % 8);
    ck_assert_msg (!rlog_rec_verify (hdr, payload, PLEN),
                   "payload bit %zu flip not detected", bit);
    payload[bit / 8] ^= 1 << (bit % 8);
  }
  for (int k = 0; k < 2000; ++k) {
    size_t total = 8 * (RLOG_REC_HDR_SIZE + PLEN), a, b;
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    a = (s >> 33) % total;
    b = ((s >> 13) & 0xfffff) % total;
    if (a == b)
      continue;
#define FLIP(x) ((x) < 8 * RLOG_REC_HDR_SIZE                            \
                 ? (void) (hdr[(x) / 8] ^= 1 << ((x) % 8))             \
                 : (void) (payload[(x) / 8 - RLOG_REC_HDR_SIZE] ^= 1 << ((x) % 8)))
    FLIP (a);
    FLIP (b);
    ck_assert_msg (!rlog_rec_verify (hdr, payload, PLEN),
                   "double flip %zu,%zu not detected", a, b);
    FLIP (a);
    FLIP (b);
#undef FLIP
  }
  ck_assert (rlog_rec_verify (hdr, payload, PLEN));
  ck_assert (!rlog_rec_verify (hdr, payload, PLEN - 1));
  /* A swapped payload of the same length. */
  tu_fill (payload, PLEN, 10);
  ck_assert (!rlog_rec_verify (hdr, payload, PLEN));
}
END_TEST

/* A header sealed for one payload does not verify against no payload. */
START_TEST (test_rec_verify_empty)
{
  uint8_t hdr[RLOG_REC_HDR_SIZE];
  struct rlog_rec r = make_rec (RLOG_OP_FLUSH, 0);

  rlog_rec_seal (&r, hdr, 0);
  ck_assert (rlog_rec_verify (hdr, NULL, 0));
  ck_assert (rlog_rec_verify (hdr, "x", 0));
  hdr[R_SEQ] ^= 1;
  ck_assert (!rlog_rec_verify (hdr, NULL, 0));
}
END_TEST

/* ---- superblock ---- */

static struct rlog_sb
make_sb (uint64_t gen)
{
  struct rlog_sb sb = {
    .version = RLOG_SB_VERSION, .generation = gen,
    .role = RLOG_ROLE_SECONDARY, .flags = 0,
    .backing_size = 10ULL << 30, .created_ns = 1700000000000000001ULL,
    .log_size = 64ULL << 20, .ring_offset = RLOG_RING_OFFSET,
    .ring_size = (64ULL << 20) - RLOG_RING_OFFSET,
    .bitmap_offset = RLOG_BITMAP_OFFSET, .bitmap_size = RLOG_BITMAP_SIZE,
    .max_payload = RLOG_MAX_PAYLOAD,
    .checkpoint_seq = 1000 + gen, .checkpoint_epoch = 3,
    .checkpoint_lsn = 123 * 4096, .epoch = 4, .seq_reserved = 70000 + gen,
  };

  for (int i = 0; i < 16; ++i)
    sb.volume_uuid[i] = 0xa0 + i;
  return sb;
}

static void
sb_assert_eq (const struct rlog_sb *a, const struct rlog_sb *b)
{
  ck_assert_uint_eq (a->version, b->version);
  ck_assert_uint_eq (a->generation, b->generation);
  ck_assert_mem_eq (a->volume_uuid, b->volume_uuid, 16);
  ck_assert_uint_eq (a->role, b->role);
  ck_assert_uint_eq (a->flags, b->flags);
  ck_assert_uint_eq (a->backing_size, b->backing_size);
  ck_assert_uint_eq (a->created_ns, b->created_ns);
  ck_assert_uint_eq (a->log_size, b->log_size);
  ck_assert_uint_eq (a->ring_offset, b->ring_offset);
  ck_assert_uint_eq (a->ring_size, b->ring_size);
  ck_assert_uint_eq (a->bitmap_offset, b->bitmap_offset);
  ck_assert_uint_eq (a->bitmap_size, b->bitmap_size);
  ck_assert_uint_eq (a->max_payload, b->max_payload);
  ck_assert_uint_eq (a->checkpoint_seq, b->checkpoint_seq);
  ck_assert_uint_eq (a->checkpoint_epoch, b->checkpoint_epoch);
  ck_assert_uint_eq (a->checkpoint_lsn, b->checkpoint_lsn);
  ck_assert_uint_eq (a->epoch, b->epoch);
  ck_assert_uint_eq (a->seq_reserved, b->seq_reserved);
}

START_TEST (test_sb_round_trip)
{
  uint8_t slot[RLOG_SB_SLOT_SIZE];
  struct rlog_sb sb = make_sb (5), d;

  memset (slot, 0xee, sizeof slot);
  rlog_sb_encode (&sb, slot);
  ck_assert (memcmp (slot, RLOG_SB_MAGIC, 8) == 0);
  ck_assert_uint_eq (get_le32 (slot + SB_VERSION), RLOG_SB_VERSION);
  ck_assert_uint_eq (get_le64 (slot + SB_GENERATION), 5);
  /* The whole slot is rewritten: nothing of the old bytes is left. */
  for (size_t i = RLOG_SB_ENCODED_SIZE; i < sizeof slot; ++i)
    ck_assert_uint_eq (slot[i], 0);
  ck_assert_int_eq (rlog_sb_decode (slot, sizeof slot, &d), RLOG_OK);
  sb_assert_eq (&sb, &d);
  /* Only the encoded part is needed. */
  ck_assert_int_eq (rlog_sb_decode (slot, RLOG_SB_ENCODED_SIZE, &d), RLOG_OK);
  ck_assert_int_eq (rlog_sb_decode (slot, RLOG_SB_ENCODED_SIZE - 1, &d),
                    RLOG_EMAGIC);
  ck_assert (rlog_sb_geometry_ok (&sb));
}
END_TEST

START_TEST (test_sb_reject)
{
  uint8_t slot[RLOG_SB_SLOT_SIZE];
  struct rlog_sb sb = make_sb (5), d;

  rlog_sb_encode (&sb, slot);
  slot[0] = 'X';
  ck_assert_int_eq (rlog_sb_decode (slot, sizeof slot, &d), RLOG_EMAGIC);

  rlog_sb_encode (&sb, slot);
  slot[7] = 2;                  /* the version byte of the magic */
  ck_assert_int_eq (rlog_sb_decode (slot, sizeof slot, &d), RLOG_EVERSION);

  rlog_sb_encode (&sb, slot);
  put_le32 (slot + SB_VERSION, 2);
  put_le32 (slot + SB_CRC, rlog_crc32c (0, slot, SB_CRC));
  ck_assert_int_eq (rlog_sb_decode (slot, sizeof slot, &d), RLOG_EVERSION);

  rlog_sb_encode (&sb, slot);
  put_le32 (slot + SB_ENCSIZE, 512);
  put_le32 (slot + SB_CRC, rlog_crc32c (0, slot, SB_CRC));
  ck_assert_int_eq (rlog_sb_decode (slot, sizeof slot, &d), RLOG_EINVAL);

  /* Any flipped bit in the covered bytes: checksum (or magic/version). */
  for (size_t bit = 8 * 16; bit < 8 * RLOG_SB_ENCODED_SIZE; ++bit) {
    rlog_sb_encode (&sb, slot);
    slot[bit / 8] ^= 1 << (bit % 8);
    ck_assert_msg (rlog_sb_decode (slot, sizeof slot, &d) == RLOG_ECRC,
                   "superblock bit %zu flip not detected", bit);
  }

  /* Valid checksum, invalid geometry. */
#define BAD_GEOMETRY(field, value)                                      \
  do {                                                                  \
    struct rlog_sb b = make_sb (5);                                     \
    b.field = value;                                                    \
    ck_assert (!rlog_sb_geometry_ok (&b));                              \
    rlog_sb_encode (&b, slot);                                          \
    ck_assert_msg (rlog_sb_decode (slot, sizeof slot, &d) == RLOG_EINVAL, \
                   "bad %s accepted", #field);                          \
  } while (0)
  BAD_GEOMETRY (log_size, RLOG_MIN_SIZE - 4096);
  BAD_GEOMETRY (bitmap_offset, 4096);
  BAD_GEOMETRY (bitmap_size, 0);
  BAD_GEOMETRY (ring_offset, RLOG_RING_OFFSET - 4096);
  BAD_GEOMETRY (ring_offset, RLOG_RING_OFFSET + 64);
  BAD_GEOMETRY (ring_size, b.ring_size - 64);
  BAD_GEOMETRY (ring_size, b.ring_size + 4096);
  BAD_GEOMETRY (ring_size, 4096);
  BAD_GEOMETRY (ring_offset, UINT64_MAX & ~4095ULL);
  BAD_GEOMETRY (max_payload, 0);
  BAD_GEOMETRY (max_payload, RLOG_MAX_PAYLOAD + 1);
  BAD_GEOMETRY (role, 0);
  BAD_GEOMETRY (role, 3);
  BAD_GEOMETRY (checkpoint_seq, b.seq_reserved + 1);
  BAD_GEOMETRY (checkpoint_epoch, b.epoch + 1);
#undef BAD_GEOMETRY
}
END_TEST

/* Garbage in the middle of a slot, as a torn 4 KiB write leaves it. */
static void
tear (uint8_t *slot, uint64_t seed)
{
  tu_fill (slot + 100, 120, seed);
}

START_TEST (test_sb_choose)
{
  uint8_t s0[RLOG_SB_SLOT_SIZE], s1[RLOG_SB_SLOT_SIZE];
  struct rlog_sb a = make_sb (10), b = make_sb (11), out;
  enum rlog_err e0, e1;

  b.backing_size = 77 << 20;    /* tell them apart beyond the generation */

  /* Higher generation wins, whichever slot holds it. */
  rlog_sb_encode (&a, s0);
  rlog_sb_encode (&b, s1);
  ck_assert_int_eq (rlog_sb_choose (s0, s1, &out, &e0, &e1), 1);
  ck_assert_int_eq (e0, RLOG_OK);
  ck_assert_int_eq (e1, RLOG_OK);
  sb_assert_eq (&out, &b);
  ck_assert_int_eq (rlog_sb_choose (s1, s0, &out, &e0, &e1), 0);
  sb_assert_eq (&out, &b);

  /* Generations far apart (64-bit comparison). */
  a.generation = 1ULL << 40;
  rlog_sb_encode (&a, s0);
  ck_assert_int_eq (rlog_sb_choose (s0, s1, &out, &e0, &e1), 0);
  ck_assert_uint_eq (out.generation, 1ULL << 40);
  a.generation = 10;

  /* Newest slot torn: the older one is used. */
  rlog_sb_encode (&a, s0);
  rlog_sb_encode (&b, s1);
  tear (s1, 1);
  ck_assert_int_eq (rlog_sb_choose (s0, s1, &out, &e0, &e1), 0);
  ck_assert_int_eq (e0, RLOG_OK);
  ck_assert_int_eq (e1, RLOG_ECRC);
  sb_assert_eq (&out, &a);

  /* Older slot torn: the newer one is used. */
  rlog_sb_encode (&b, s1);
  tear (s0, 2);
  ck_assert_int_eq (rlog_sb_choose (s0, s1, &out, &e0, &e1), 1);
  ck_assert_int_eq (e0, RLOG_ECRC);
  ck_assert_int_eq (e1, RLOG_OK);
  sb_assert_eq (&out, &b);

  /* Both torn. */
  tear (s1, 3);
  memset (&out, 0x5a, sizeof out);
  ck_assert_int_eq (rlog_sb_choose (s0, s1, &out, &e0, &e1), -1);
  ck_assert_int_eq (e0, RLOG_ECRC);
  ck_assert_int_eq (e1, RLOG_ECRC);

  /* Neither is a superblock: never-formatted file. */
  memset (s0, 0, sizeof s0);
  memset (s1, 0, sizeof s1);
  ck_assert_int_eq (rlog_sb_choose (s0, s1, &out, &e0, &e1), -1);
  ck_assert_int_eq (e0, RLOG_EMAGIC);
  ck_assert_int_eq (e1, RLOG_EMAGIC);

  /* A future version in one slot, a valid one in the other. */
  rlog_sb_encode (&a, s0);
  rlog_sb_encode (&b, s1);
  s1[7] = 2;
  ck_assert_int_eq (rlog_sb_choose (s0, s1, &out, &e0, &e1), 0);
  ck_assert_int_eq (e1, RLOG_EVERSION);
  /* Both future. */
  s0[7] = 2;
  ck_assert_int_eq (rlog_sb_choose (s0, s1, &out, &e0, &e1), -1);
  ck_assert_int_eq (e0, RLOG_EVERSION);
  ck_assert_int_eq (e1, RLOG_EVERSION);

  /* Garbage after the encoded part is not covered and does not matter. */
  rlog_sb_encode (&a, s0);
  rlog_sb_encode (&b, s1);
  tu_fill (s1 + RLOG_SB_ENCODED_SIZE, 1000, 4);
  ck_assert_int_eq (rlog_sb_choose (s0, s1, &out, &e0, &e1), 1);
  sb_assert_eq (&out, &b);
}
END_TEST

START_TEST (test_names)
{
  for (int e = RLOG_OK; e <= RLOG_EINVAL; ++e)
    ck_assert_str_ne (rlog_strerror (e), "unknown error");
  ck_assert_str_eq (rlog_strerror (RLOG_ECRC), "checksum mismatch");
  ck_assert_str_eq (rlog_op_name (RLOG_OP_WRITE), "write");
  ck_assert_str_eq (rlog_op_name (RLOG_OP_WRAP), "wrap");
  ck_assert_str_eq (rlog_op_name (0), "unknown");
  ck_assert_str_eq (rlog_role_name (RLOG_ROLE_PRIMARY), "primary");
  ck_assert_str_eq (rlog_role_name (RLOG_ROLE_SECONDARY), "secondary");
  ck_assert_str_eq (rlog_role_name (9), "unknown");
}
END_TEST

static Suite *
logfmt_suite (void)
{
  Suite *s = suite_create ("logfmt");
  TCase *tc;

  tc = tcase_create ("crc32c");
  tcase_add_test (tc, test_crc32c_check_value);
  tcase_add_test (tc, test_crc32c_chaining);
  suite_add_tcase (s, tc);

  tc = tcase_create ("record");
  tcase_set_timeout (tc, 30);
  tcase_add_test (tc, test_rec_round_trip);
  tcase_add_test (tc, test_rec_size);
  tcase_add_test (tc, test_rec_reject);
  tcase_add_test (tc, test_rec_bitflip);
  tcase_add_test (tc, test_rec_verify_empty);
  suite_add_tcase (s, tc);

  tc = tcase_create ("superblock");
  tcase_add_test (tc, test_sb_round_trip);
  tcase_add_test (tc, test_sb_reject);
  tcase_add_test (tc, test_sb_choose);
  tcase_add_test (tc, test_names);
  suite_add_tcase (s, tc);
  return s;
}

int
main (void)
{
  SRunner *sr = srunner_create (logfmt_suite ());
  int failed;

  srunner_run_all (sr, CK_NORMAL);
  failed = srunner_ntests_failed (sr);
  srunner_free (sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
