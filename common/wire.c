/* nbd-replica: messages of the replication protocol (pure codec).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#include <stdio.h>
#include <string.h>
#include <inttypes.h>
#include <stdbool.h>

#include <stdlib.h>
#include <lz4.h>
#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>

#include "le.h"
#include "wire.h"

#define MSG_ENC_SIZE 256       /* bytes of HELLO/CONTROL under the CRC */
#define HELLO_MAGIC "NBDRHELO"
#define CTRL_MAGIC  "NBDRCTRL"
#define BATCH_MAGIC 0x54414252u /* "RBAT" as LE bytes */

const char *
wire_strerror (enum wire_err e)
{
  switch (e) {
  case WIRE_OK: return "ok";
  case WIRE_EMAGIC: return "bad magic";
  case WIRE_EVERSION: return "unsupported protocol version";
  case WIRE_ECRC: return "checksum mismatch";
  case WIRE_EINVAL: return "invalid field";
  }
  return "unknown error";
}

/* Common frame of HELLO and CONTROL: magic, version, size ... crc. */
static void
msg_seal (uint8_t *p, const char *magic)
{
  memcpy (p, magic, 8);
  put_le32 (p + 8, WIRE_VERSION);
  put_le32 (p + 12, MSG_ENC_SIZE);
  put_le32 (p + MSG_ENC_SIZE - 4, rlog_crc32c (0, p, MSG_ENC_SIZE - 4));
}

static enum wire_err
msg_check (const uint8_t *p, size_t len, const char *magic)
{
  if (len < MSG_ENC_SIZE || memcmp (p, magic, 8) != 0)
    return WIRE_EMAGIC;
  if (get_le32 (p + 8) != WIRE_VERSION)
    return WIRE_EVERSION;
  if (get_le32 (p + 12) != MSG_ENC_SIZE)
    return WIRE_EINVAL;
  if (get_le32 (p + MSG_ENC_SIZE - 4) != rlog_crc32c (0, p, MSG_ENC_SIZE - 4))
    return WIRE_ECRC;
  return WIRE_OK;
}

/* Reserved bytes [from, crc) must be zero. */
static bool
reserved_zero (const uint8_t *p, size_t from)
{
  for (size_t i = from; i < MSG_ENC_SIZE - 4; ++i)
    if (p[i] != 0)
      return false;
  return true;
}

void
wire_hello_encode (const struct wire_hello *h, uint8_t out[WIRE_MSG_SIZE])
{
  memset (out, 0, WIRE_MSG_SIZE);
  memcpy (out + 16, h->volume_uuid, 16);
  put_le32 (out + 32, h->role);
  put_le32 (out + 36, h->flags);
  put_le64 (out + 40, h->backing_size);
  put_le64 (out + 48, h->durable_seq);
  put_le64 (out + 56, h->applied_seq);
  memcpy (out + 64, h->nonce, 16);
  put_le64 (out + 80, h->durable_epoch);
  msg_seal (out, HELLO_MAGIC);
}

enum wire_err
wire_hello_decode (const void *buf, size_t len, struct wire_hello *h)
{
  const uint8_t *p = buf;
  enum wire_err e = msg_check (p, len, HELLO_MAGIC);

  if (e != WIRE_OK)
    return e;
  memcpy (h->volume_uuid, p + 16, 16);
  h->role = get_le32 (p + 32);
  h->flags = get_le32 (p + 36);
  h->backing_size = get_le64 (p + 40);
  h->durable_seq = get_le64 (p + 48);
  h->applied_seq = get_le64 (p + 56);
  memcpy (h->nonce, p + 64, 16);
  h->durable_epoch = get_le64 (p + 80);
  if ((h->role != RLOG_ROLE_PRIMARY && h->role != RLOG_ROLE_SECONDARY) ||
      (h->flags & ~(WIRE_HELLO_PAIRED | WIRE_HELLO_OUTDATED |
                     WIRE_HELLO_RESYNC | WIRE_HELLO_STAGING |
                     WIRE_HELLO_FOREIGN)) ||
      h->applied_seq > h->durable_seq || !reserved_zero (p, 88))
    return WIRE_EINVAL;
  return WIRE_OK;
}

void
wire_control_encode (const struct wire_control *c, uint8_t out[WIRE_MSG_SIZE])
{
  memset (out, 0, WIRE_MSG_SIZE);
  put_le32 (out + 16, c->type);
  memcpy (out + 24, c->volume_uuid, 16);
  put_le64 (out + 40, c->backing_size);
  put_le64 (out + 48, c->seq);
  memcpy (out + 56, c->mac, 32);
  put_le64 (out + 88, c->epoch);
  memcpy (out + 96, c->secret, WIRE_SECRET_SIZE);
  put_le32 (out + 128, c->flags);
  msg_seal (out, CTRL_MAGIC);
}

enum wire_err
wire_control_decode (const void *buf, size_t len, struct wire_control *c)
{
  const uint8_t *p = buf;
  enum wire_err e = msg_check (p, len, CTRL_MAGIC);

  if (e != WIRE_OK)
    return e;
  c->type = get_le32 (p + 16);
  memcpy (c->volume_uuid, p + 24, 16);
  c->backing_size = get_le64 (p + 40);
  c->seq = get_le64 (p + 48);
  memcpy (c->mac, p + 56, 32);
  c->epoch = get_le64 (p + 88);
  memcpy (c->secret, p + 96, WIRE_SECRET_SIZE);
  c->flags = get_le32 (p + 128);
  if (c->type < WIRE_CTL_ADOPT || c->type > WIRE_CTL_RESYNC ||
      (c->type == WIRE_CTL_RESYNC && (c->flags & ~WIRE_RESYNC_STAGE)) ||
      (c->type == WIRE_CTL_ADOPT && (c->flags & ~WIRE_ADOPT_SYNC)) ||
      (c->type != WIRE_CTL_RESYNC && c->type != WIRE_CTL_ADOPT &&
       c->flags != 0) ||
      get_le32 (p + 20) != 0 || !reserved_zero (p, 132))
    return WIRE_EINVAL;
  return WIRE_OK;
}

int
wire_control_mac (const struct wire_control *c, const uint8_t nonce[16],
                  const uint8_t secret[WIRE_SECRET_SIZE],
                  uint8_t mac[WIRE_MAC_SIZE])
{
  struct wire_control copy = *c;
  uint8_t msg[16 + WIRE_MSG_SIZE];

  memset (copy.mac, 0, sizeof copy.mac);
  memcpy (msg, nonce, 16);
  wire_control_encode (&copy, msg + 16);
  return gnutls_hmac_fast (GNUTLS_MAC_SHA256, secret, WIRE_SECRET_SIZE,
                           msg, 16 + MSG_ENC_SIZE, mac) == 0 ? 0 : -1;
}

bool
wire_control_mac_ok (const struct wire_control *c, const uint8_t nonce[16],
                     const uint8_t secret[WIRE_SECRET_SIZE])
{
  uint8_t want[WIRE_MAC_SIZE];
  uint8_t diff = 0;

  if (wire_control_mac (c, nonce, secret, want) == -1)
    return false;
  for (size_t i = 0; i < WIRE_MAC_SIZE; ++i)
    diff |= want[i] ^ c->mac[i];
  return diff == 0;
}

/* Batch header layout. */
enum {
  B_MAGIC = 0, B_VERSION = 4, B_FLAGS = 5, B_HDRSIZE = 6, B_PREV = 8,
  B_PREV_EPOCH = 16, B_FIRST = 24, B_LAST = 32, B_COUNT = 40, B_RAW = 44,
  B_WIRE = 48, B_DATACRC = 52, B_RESERVED = 56, B_CRC = 60,
};

void
wire_batch_encode_hdr (const struct wire_batch *b,
                       uint8_t out[WIRE_BATCH_HDR_SIZE])
{
  memset (out, 0, WIRE_BATCH_HDR_SIZE);
  put_le32 (out + B_MAGIC, BATCH_MAGIC);
  out[B_VERSION] = WIRE_VERSION;
  out[B_FLAGS] = b->flags;
  put_le16 (out + B_HDRSIZE, WIRE_BATCH_HDR_SIZE);
  put_le64 (out + B_PREV, b->prev_seq);
  put_le64 (out + B_PREV_EPOCH, b->prev_epoch);
  put_le64 (out + B_FIRST, b->first_seq);
  put_le64 (out + B_LAST, b->last_seq);
  put_le32 (out + B_COUNT, b->count);
  put_le32 (out + B_RAW, b->raw_len);
  put_le32 (out + B_WIRE, b->wire_len);
  put_le32 (out + B_DATACRC, b->data_crc);
  put_le32 (out + B_CRC, rlog_crc32c (0, out, B_CRC));
}

enum wire_err
wire_batch_decode_hdr (const void *buf, size_t len, struct wire_batch *b)
{
  const uint8_t *p = buf;

  if (len < WIRE_BATCH_HDR_SIZE || get_le32 (p + B_MAGIC) != BATCH_MAGIC)
    return WIRE_EMAGIC;
  if (p[B_VERSION] != WIRE_VERSION ||
      get_le16 (p + B_HDRSIZE) != WIRE_BATCH_HDR_SIZE)
    return WIRE_EVERSION;
  if (get_le32 (p + B_CRC) != rlog_crc32c (0, p, B_CRC))
    return WIRE_ECRC;
  memset (b, 0, sizeof *b);
  b->flags = p[B_FLAGS];
  b->prev_seq = get_le64 (p + B_PREV);
  b->prev_epoch = get_le64 (p + B_PREV_EPOCH);
  b->first_seq = get_le64 (p + B_FIRST);
  b->last_seq = get_le64 (p + B_LAST);
  b->count = get_le32 (p + B_COUNT);
  b->raw_len = get_le32 (p + B_RAW);
  b->wire_len = get_le32 (p + B_WIRE);
  b->data_crc = get_le32 (p + B_DATACRC);
  if ((b->flags & ~WIRE_BATCH_LZ4) || get_le32 (p + B_RESERVED) != 0 ||
      b->count == 0 || b->first_seq <= b->prev_seq ||
      b->last_seq < b->first_seq ||
      b->last_seq - b->first_seq < (uint64_t) b->count - 1 ||
      b->raw_len > WIRE_BATCH_MAX || b->wire_len > WIRE_BATCH_MAX ||
      b->raw_len < (uint64_t) b->count * RLOG_REC_HDR_SIZE ||
      (!(b->flags & WIRE_BATCH_LZ4) && b->wire_len != b->raw_len))
    return WIRE_EINVAL;
  return WIRE_OK;
}

enum wire_err
wire_batch_walk (const struct wire_batch *b, const uint8_t *records,
                 size_t len, uint64_t backing_size,
                 wire_record_fn fn, void *opaque, char *why, size_t whylen)
{
  uint64_t prev_seq = b->prev_seq, prev_epoch = b->prev_epoch;
  size_t off = 0;
  uint32_t n = 0;

  if (len != b->raw_len) {
    snprintf (why, whylen, "batch holds %zu bytes of records, header "
              "says %" PRIu32, len, b->raw_len);
    return WIRE_EINVAL;
  }
  while (off < len) {
    struct rlog_rec r;
    enum rlog_err e;
    uint32_t need, pcrc;

    e = rlog_rec_decode_hdr (records + off, len - off, RLOG_MAX_REC_SIZE, &r);
    if (e != RLOG_OK) {
      snprintf (why, whylen, "record %" PRIu32 " of the batch: %s", n,
                rlog_strerror (e));
      return e == RLOG_EMAGIC ? WIRE_EMAGIC : WIRE_EINVAL;
    }
    /* On the wire a record occupies its unpadded size. */
    need = rlog_rec_size (r.payload_len);
    if (r.op == RLOG_OP_WRAP || (r.flags & RLOG_FLAG_ELIDED) ||
        need > len - off) {
      snprintf (why, whylen, "record %" PRIu32 " of the batch: %s", n,
                r.op == RLOG_OP_WRAP ? "WRAP record on the wire"
                : (r.flags & RLOG_FLAG_ELIDED) ? "a record without its "
                "data (ELIDED) on the wire" : "truncated");
      return WIRE_EINVAL;
    }
    pcrc = rlog_payload_crc (records + off + RLOG_REC_HDR_SIZE,
                             r.payload_len);
    if (!rlog_rec_verify_pcrc (records + off, pcrc)) {
      snprintf (why, whylen, "record seq %" PRIu64 ": checksum mismatch",
                r.seq);
      return WIRE_ECRC;
    }
    if (r.epoch < prev_epoch ||
        !(r.seq == prev_seq + 1 || (r.epoch > prev_epoch && r.seq > prev_seq))) {
      snprintf (why, whylen, "record seq %" PRIu64 " epoch %" PRIu64
                " does not follow seq %" PRIu64 " epoch %" PRIu64,
                r.seq, r.epoch, prev_seq, prev_epoch);
      return WIRE_EINVAL;
    }
    if (r.op != RLOG_OP_FLUSH && r.offset + r.length > backing_size) {
      snprintf (why, whylen, "record seq %" PRIu64 " lies beyond the end "
                "of the disk", r.seq);
      return WIRE_EINVAL;
    }
    /* Before the callback, which may size its output by the count and
     * must never see a record the header does not cover.
     */
    if (n == b->count) {
      snprintf (why, whylen, "batch holds more than the %" PRIu32
                " records its header says", b->count);
      return WIRE_EINVAL;
    }
    if (r.seq > b->last_seq) {
      snprintf (why, whylen, "record seq %" PRIu64 " is after the batch's "
                "last, seq %" PRIu64, r.seq, b->last_seq);
      return WIRE_EINVAL;
    }
    if (n == 0 && r.seq != b->first_seq) {
      snprintf (why, whylen, "first record is seq %" PRIu64 ", header "
                "says %" PRIu64, r.seq, b->first_seq);
      return WIRE_EINVAL;
    }
    if (fn && fn (opaque, &r, records + off + RLOG_REC_HDR_SIZE, pcrc) == -1) {
      snprintf (why, whylen, "record seq %" PRIu64 ": refused", r.seq);
      return WIRE_EINVAL;
    }
    prev_seq = r.seq;
    prev_epoch = r.epoch;
    off += need;
    n++;
  }
  if (n != b->count || prev_seq != b->last_seq) {
    snprintf (why, whylen, "batch holds %" PRIu32 " records up to seq %"
              PRIu64 ", header says %" PRIu32 " up to %" PRIu64,
              n, prev_seq, b->count, b->last_seq);
    return WIRE_EINVAL;
  }
  return WIRE_OK;
}

enum wire_err
wire_batch_unpack (const uint8_t *buf, size_t len, uint64_t backing_size,
                   struct wire_batch *b, const uint8_t **records,
                   uint8_t **owned, wire_record_fn fn, void *opaque,
                   char *why, size_t whylen)
{
  enum wire_err e = wire_batch_decode_hdr (buf, len, b);
  const uint8_t *data = buf + WIRE_BATCH_HDR_SIZE;

  *owned = NULL;
  *records = NULL;
  if (e != WIRE_OK) {
    snprintf (why, whylen, "bad batch header: %s", wire_strerror (e));
    return e;
  }
  if ((uint64_t) len != WIRE_BATCH_HDR_SIZE + (uint64_t) b->wire_len ||
      rlog_crc32c (0, data, b->wire_len) != b->data_crc) {
    snprintf (why, whylen, "batch after seq %" PRIu64 ": length or "
              "checksum mismatch", b->prev_seq);
    return WIRE_ECRC;
  }
  *records = data;
  if (b->flags & WIRE_BATCH_LZ4) {
    *owned = malloc (b->raw_len ? b->raw_len : 1);
    if (!*owned) {
      snprintf (why, whylen, "malloc: out of memory");
      return WIRE_EINVAL;
    }
    if (LZ4_decompress_safe ((const char *) data, (char *) *owned,
                             b->wire_len, b->raw_len) != (int) b->raw_len) {
      free (*owned);
      *owned = NULL;
      snprintf (why, whylen, "batch after seq %" PRIu64 ": bad LZ4 data",
                b->prev_seq);
      return WIRE_EINVAL;
    }
    *records = *owned;
  }
  e = wire_batch_walk (b, *records, b->raw_len, backing_size, fn, opaque,
                       why, whylen);
  if (e != WIRE_OK) {
    free (*owned);
    *owned = NULL;
  }
  return e;
}
