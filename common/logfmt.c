/* nbd-replica: encode/decode of the log superblock and record headers.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * Decoders take untrusted bytes (a damaged log, later the wire) and must
 * never read past len nor trust a length field: see tests/fuzz/.
 */
#include <stdint.h>
#include <string.h>

#include <isa-l/crc.h>

#include "le.h"
#include "logfmt.h"

/* CRC-32C (Castagnoli).  ISA-L's crc32_iscsi takes and returns the raw
 * register without final inversion, so we invert on the way in and out
 * to get the standard CRC-32C (check value 0xe3069283 for "123456789"),
 * and chaining works: crc32c (crc32c (0, a), b) == crc32c (0, a||b).
 */
uint32_t
rlog_crc32c (uint32_t crc, const void *buf, size_t len)
{
  const unsigned char *p = buf;

  crc = ~crc;
  while (len > 0) {
    int n = len > (1u << 30) ? (1 << 30) : (int) len;
    crc = crc32_iscsi ((unsigned char *) p, n, crc);
    p += n;
    len -= n;
  }
  return ~crc;
}

const char *
rlog_strerror (enum rlog_err e)
{
  switch (e) {
  case RLOG_OK: return "ok";
  case RLOG_EMAGIC: return "bad magic";
  case RLOG_EVERSION: return "unsupported format version";
  case RLOG_ECRC: return "checksum mismatch";
  case RLOG_EINVAL: return "invalid field";
  }
  return "unknown error";
}

const char *
rlog_op_name (unsigned op)
{
  switch (op) {
  case RLOG_OP_WRITE: return "write";
  case RLOG_OP_ZERO: return "zero";
  case RLOG_OP_TRIM: return "trim";
  case RLOG_OP_FLUSH: return "flush";
  case RLOG_OP_WRAP: return "wrap";
  }
  return "unknown";
}

const char *
rlog_role_name (unsigned role)
{
  switch (role) {
  case RLOG_ROLE_PRIMARY: return "primary";
  case RLOG_ROLE_SECONDARY: return "secondary";
  }
  return "unknown";
}

/* Superblock slot layout (offsets in bytes, all little-endian). */
enum {
  SB_MAGIC = 0, SB_VERSION = 8, SB_ENCSIZE = 12, SB_GENERATION = 16,
  SB_UUID = 24, SB_ROLE = 40, SB_FLAGS = 44, SB_BACKING = 48,
  SB_CREATED = 56, SB_LOGSIZE = 64, SB_RINGOFF = 72, SB_RINGSIZE = 80,
  SB_BMOFF = 88, SB_BMSIZE = 96, SB_MAXPAYLOAD = 104,
  SB_CKPT_SEQ = 112, SB_CKPT_EPOCH = 120, SB_CKPT_LSN = 128,
  SB_EPOCH = 136, SB_SEQRES = 144, SB_SECRET = 152, SB_STAGE_SEQ = 184,
  SB_STAGE_EPOCH = 192, SB_BITMAP_WITNESS = 200,
  SB_CRC = RLOG_SB_ENCODED_SIZE - 4,
};

void
rlog_sb_encode (const struct rlog_sb *sb, void *slot)
{
  uint8_t *p = slot;

  memset (p, 0, RLOG_SB_SLOT_SIZE);
  memcpy (p + SB_MAGIC, RLOG_SB_MAGIC, 8);
  put_le32 (p + SB_VERSION, RLOG_SB_VERSION);
  put_le32 (p + SB_ENCSIZE, RLOG_SB_ENCODED_SIZE);
  put_le64 (p + SB_GENERATION, sb->generation);
  memcpy (p + SB_UUID, sb->volume_uuid, 16);
  put_le32 (p + SB_ROLE, sb->role);
  put_le32 (p + SB_FLAGS, sb->flags);
  put_le64 (p + SB_BACKING, sb->backing_size);
  put_le64 (p + SB_CREATED, sb->created_ns);
  put_le64 (p + SB_LOGSIZE, sb->log_size);
  put_le64 (p + SB_RINGOFF, sb->ring_offset);
  put_le64 (p + SB_RINGSIZE, sb->ring_size);
  put_le64 (p + SB_BMOFF, sb->bitmap_offset);
  put_le64 (p + SB_BMSIZE, sb->bitmap_size);
  put_le32 (p + SB_MAXPAYLOAD, sb->max_payload);
  put_le64 (p + SB_CKPT_SEQ, sb->checkpoint_seq);
  put_le64 (p + SB_CKPT_EPOCH, sb->checkpoint_epoch);
  put_le64 (p + SB_CKPT_LSN, sb->checkpoint_lsn);
  put_le64 (p + SB_EPOCH, sb->epoch);
  put_le64 (p + SB_SEQRES, sb->seq_reserved);
  memcpy (p + SB_SECRET, sb->pair_secret, RLOG_SECRET_SIZE);
  put_le64 (p + SB_STAGE_SEQ, sb->stage_seq);
  put_le64 (p + SB_STAGE_EPOCH, sb->stage_epoch);
  put_le64 (p + SB_BITMAP_WITNESS, sb->bitmap_witness);
  put_le32 (p + SB_CRC, rlog_crc32c (0, p, SB_CRC));
}

bool
rlog_sb_geometry_ok (const struct rlog_sb *sb)
{
  return sb->log_size >= RLOG_MIN_SIZE &&
    sb->bitmap_offset == RLOG_BITMAP_OFFSET &&
    sb->bitmap_size > 0 &&
    sb->bitmap_size <= sb->log_size &&
    sb->ring_offset >= sb->bitmap_offset + sb->bitmap_size &&
    sb->ring_offset % RLOG_BLOCK == 0 &&
    sb->ring_size % RLOG_BLOCK == 0 &&
    sb->ring_size >= 4ULL * (RLOG_MAX_PAYLOAD + RLOG_BLOCK) &&
    sb->ring_offset <= sb->log_size &&
    sb->ring_size <= sb->log_size - sb->ring_offset &&
    sb->max_payload > 0 && sb->max_payload <= RLOG_MAX_PAYLOAD &&
    (sb->role == RLOG_ROLE_PRIMARY || sb->role == RLOG_ROLE_SECONDARY) &&
    sb->checkpoint_seq <= sb->seq_reserved &&
    sb->checkpoint_epoch <= sb->epoch;
}

enum rlog_err
rlog_sb_decode (const void *slot, size_t len, struct rlog_sb *sb)
{
  const uint8_t *p = slot;

  if (len < RLOG_SB_ENCODED_SIZE || memcmp (p, RLOG_SB_MAGIC, 7) != 0)
    return RLOG_EMAGIC;
  /* The 8th magic byte and the version field both carry the version. */
  if (p[7] != RLOG_SB_MAGIC[7] || get_le32 (p + SB_VERSION) != RLOG_SB_VERSION)
    return RLOG_EVERSION;
  if (get_le32 (p + SB_ENCSIZE) != RLOG_SB_ENCODED_SIZE)
    return RLOG_EINVAL;
  if (get_le32 (p + SB_CRC) != rlog_crc32c (0, p, SB_CRC))
    return RLOG_ECRC;

  memset (sb, 0, sizeof *sb);
  sb->version = RLOG_SB_VERSION;
  sb->generation = get_le64 (p + SB_GENERATION);
  memcpy (sb->volume_uuid, p + SB_UUID, 16);
  sb->role = get_le32 (p + SB_ROLE);
  sb->flags = get_le32 (p + SB_FLAGS);
  sb->backing_size = get_le64 (p + SB_BACKING);
  sb->created_ns = get_le64 (p + SB_CREATED);
  sb->log_size = get_le64 (p + SB_LOGSIZE);
  sb->ring_offset = get_le64 (p + SB_RINGOFF);
  sb->ring_size = get_le64 (p + SB_RINGSIZE);
  sb->bitmap_offset = get_le64 (p + SB_BMOFF);
  sb->bitmap_size = get_le64 (p + SB_BMSIZE);
  sb->max_payload = get_le32 (p + SB_MAXPAYLOAD);
  sb->checkpoint_seq = get_le64 (p + SB_CKPT_SEQ);
  sb->checkpoint_epoch = get_le64 (p + SB_CKPT_EPOCH);
  sb->checkpoint_lsn = get_le64 (p + SB_CKPT_LSN);
  sb->epoch = get_le64 (p + SB_EPOCH);
  sb->seq_reserved = get_le64 (p + SB_SEQRES);
  memcpy (sb->pair_secret, p + SB_SECRET, RLOG_SECRET_SIZE);
  sb->stage_seq = get_le64 (p + SB_STAGE_SEQ);
  sb->stage_epoch = get_le64 (p + SB_STAGE_EPOCH);
  sb->bitmap_witness = get_le64 (p + SB_BITMAP_WITNESS);
  if (!rlog_sb_geometry_ok (sb))
    return RLOG_EINVAL;
  return RLOG_OK;
}

int
rlog_sb_choose (const void *slot0, const void *slot1, struct rlog_sb *sb,
                enum rlog_err *err0, enum rlog_err *err1)
{
  struct rlog_sb a, b;

  *err0 = rlog_sb_decode (slot0, RLOG_SB_SLOT_SIZE, &a);
  *err1 = rlog_sb_decode (slot1, RLOG_SB_SLOT_SIZE, &b);
  if (*err0 == RLOG_OK && (*err1 != RLOG_OK || a.generation >= b.generation)) {
    *sb = a;
    return 0;
  }
  if (*err1 == RLOG_OK) {
    *sb = b;
    return 1;
  }
  return -1;
}

/* Record header layout. */
enum {
  R_MAGIC = 0, R_VERSION = 4, R_OP = 5, R_HDRSIZE = 6, R_FLAGS = 8,
  R_PAYLOAD = 12, R_SEQ = 16, R_OFFSET = 24, R_LENGTH = 32,
  R_RECSIZE = 36, R_TIME = 40, R_EPOCH = 48, R_CRC = 56, R_RESERVED = 60,
};

uint32_t
rlog_rec_size (uint32_t payload_len)
{
  uint64_t n = (uint64_t) RLOG_REC_HDR_SIZE + payload_len;
  return (uint32_t) ((n + RLOG_REC_ALIGN - 1) & ~(uint64_t) (RLOG_REC_ALIGN - 1));
}

void
rlog_rec_encode_hdr (const struct rlog_rec *r, void *hdr)
{
  uint8_t *p = hdr;

  memset (p, 0, RLOG_REC_HDR_SIZE);
  put_le32 (p + R_MAGIC, RLOG_REC_MAGIC);
  p[R_VERSION] = RLOG_REC_VERSION;
  p[R_OP] = r->op;
  put_le16 (p + R_HDRSIZE, RLOG_REC_HDR_SIZE);
  put_le32 (p + R_FLAGS, r->flags);
  put_le32 (p + R_PAYLOAD, r->payload_len);
  put_le64 (p + R_SEQ, r->seq);
  put_le64 (p + R_OFFSET, r->offset);
  put_le32 (p + R_LENGTH, r->length);
  put_le32 (p + R_RECSIZE, r->rec_size);
  put_le64 (p + R_TIME, r->timestamp_ns);
  put_le64 (p + R_EPOCH, r->epoch);
  put_le32 (p + R_CRC, r->crc);
}

/* The record CRC is CRC-32C over the payload followed by the header
 * with its crc field zero.  Payload first, so that the payload part can
 * be computed by the submitting thread, in parallel, before the writer
 * assigns seq and position: see journal.c.
 */
uint32_t
rlog_payload_crc (const void *payload, uint32_t payload_len)
{
  return payload_len > 0 ? rlog_crc32c (0, payload, payload_len) : 0;
}

void
rlog_rec_seal (struct rlog_rec *r, void *hdr, uint32_t payload_crc)
{
  r->crc = 0;
  rlog_rec_encode_hdr (r, hdr);
  r->crc = rlog_crc32c (payload_crc, hdr, RLOG_REC_HDR_SIZE);
  put_le32 ((uint8_t *) hdr + R_CRC, r->crc);
}

enum rlog_err
rlog_rec_decode_hdr (const void *hdr, size_t len, uint32_t max_rec,
                     struct rlog_rec *r)
{
  const uint8_t *p = hdr;

  if (len < RLOG_REC_HDR_SIZE || get_le32 (p + R_MAGIC) != RLOG_REC_MAGIC)
    return RLOG_EMAGIC;
  if (p[R_VERSION] != RLOG_REC_VERSION ||
      get_le16 (p + R_HDRSIZE) != RLOG_REC_HDR_SIZE)
    return RLOG_EVERSION;

  memset (r, 0, sizeof *r);
  r->op = p[R_OP];
  r->flags = get_le32 (p + R_FLAGS);
  r->payload_len = get_le32 (p + R_PAYLOAD);
  r->seq = get_le64 (p + R_SEQ);
  r->offset = get_le64 (p + R_OFFSET);
  r->length = get_le32 (p + R_LENGTH);
  r->rec_size = get_le32 (p + R_RECSIZE);
  r->timestamp_ns = get_le64 (p + R_TIME);
  r->epoch = get_le64 (p + R_EPOCH);
  r->crc = get_le32 (p + R_CRC);

  if (get_le32 (p + R_RESERVED) != 0 ||
      (r->flags & ~(RLOG_FLAG_FUA | RLOG_FLAG_MAY_TRIM | RLOG_FLAG_SYNC |
                    RLOG_FLAG_SYNC_END | RLOG_FLAG_ELIDED)) != 0 ||
      r->rec_size % RLOG_REC_ALIGN != 0 ||
      r->rec_size < RLOG_REC_HDR_SIZE || r->rec_size > max_rec)
    return RLOG_EINVAL;
  switch (r->op) {
  case RLOG_OP_WRITE:
    /* An elided write is a re-sent block whose data went to the disk
     * only: a header, no payload.
     */
    if ((r->flags & RLOG_FLAG_SYNC_END) ||
        r->length == 0 || r->length > RLOG_MAX_PAYLOAD ||
        ((r->flags & RLOG_FLAG_ELIDED)
         ? !(r->flags & RLOG_FLAG_SYNC) || r->payload_len != 0
         : r->payload_len != r->length))
      return RLOG_EINVAL;
    break;
  case RLOG_OP_ZERO:
  case RLOG_OP_TRIM:
    if ((r->flags & (RLOG_FLAG_SYNC_END | RLOG_FLAG_ELIDED)) ||
        r->payload_len != 0 || r->length == 0)
      return RLOG_EINVAL;
    break;
  case RLOG_OP_FLUSH:
  case RLOG_OP_WRAP:
    /* A SYNC_END flush names its pass by the pass's base seq, in offset. */
    if ((r->flags & ~RLOG_FLAG_SYNC_END) != 0 ||
        (r->op == RLOG_OP_WRAP && r->flags != 0) ||
        r->payload_len != 0 || r->length != 0 ||
        (r->offset != 0 && !(r->flags & RLOG_FLAG_SYNC_END)))
      return RLOG_EINVAL;
    break;
  default:
    return RLOG_EINVAL;
  }
  if (r->offset + r->length < r->offset)
    return RLOG_EINVAL;
  if (rlog_rec_size (r->payload_len) > r->rec_size)
    return RLOG_EINVAL;
  return RLOG_OK;
}

bool
rlog_rec_verify_pcrc (const void *hdr, uint32_t payload_crc)
{
  uint8_t tmp[RLOG_REC_HDR_SIZE];
  uint32_t want;

  memcpy (tmp, hdr, RLOG_REC_HDR_SIZE);
  want = get_le32 (tmp + R_CRC);
  put_le32 (tmp + R_CRC, 0);
  return rlog_crc32c (payload_crc, tmp, RLOG_REC_HDR_SIZE) == want;
}

bool
rlog_rec_verify (const void *hdr, const void *payload, uint32_t payload_len)
{
  return rlog_rec_verify_pcrc (hdr, rlog_payload_crc (payload, payload_len));
}
