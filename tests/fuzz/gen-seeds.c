/* nbd-replica: writes the seed corpora of the fuzz targets.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * Usage: fuzz-gen-seeds RECORD-DIR SUPERBLOCK-DIR
 * Deterministic output; the checked-in corpus-record/ and
 * corpus-superblock/ were made with it (re-run it when the format
 * changes; tools/fuzz also adds its output to the corpus it fuzzes).
 */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "logfmt.h"
#include <lz4.h>

#include "wire.h"

static void
put (const char *dir, const char *name, const void *buf, size_t len)
{
  char path[4096];
  FILE *fp;

  snprintf (path, sizeof path, "%s/%s", dir, name);
  fp = fopen (path, "wb");
  if (!fp || fwrite (buf, 1, len, fp) != len || fclose (fp) != 0) {
    perror (path);
    exit (EXIT_FAILURE);
  }
}

static void
fill (uint8_t *p, size_t len, unsigned seed)
{
  for (size_t i = 0; i < len; ++i)
    p[i] = (uint8_t) (seed * 131 + i * 7 + (i >> 8));
}

/* Header + the first have bytes of a plen-byte payload. */
static void
record (const char *dir, const char *name, struct rlog_rec r, size_t have)
{
  static uint8_t buf[RLOG_REC_HDR_SIZE + 8192];

  if (r.rec_size == 0)
    r.rec_size = rlog_rec_size (r.payload_len);
  if (r.seq == 0)
    r.seq = 42;
  r.epoch = 3;
  r.timestamp_ns = 1767225600000000000ULL;
  fill (buf + RLOG_REC_HDR_SIZE, r.payload_len, r.seq);
  rlog_rec_seal (&r, buf, rlog_payload_crc (buf + RLOG_REC_HDR_SIZE,
                                            r.payload_len));
  put (dir, name, buf, RLOG_REC_HDR_SIZE + have);
}

static struct rlog_sb
sb (uint64_t gen)
{
  struct rlog_sb s = {
    .version = RLOG_SB_VERSION, .generation = gen,
    .role = RLOG_ROLE_PRIMARY, .backing_size = 1ULL << 30,
    .created_ns = 1767225600000000000ULL,
    .log_size = RLOG_MIN_SIZE, .ring_offset = RLOG_RING_OFFSET,
    .ring_size = RLOG_MIN_SIZE - RLOG_RING_OFFSET,
    .bitmap_offset = RLOG_BITMAP_OFFSET, .bitmap_size = RLOG_BITMAP_SIZE,
    .max_payload = RLOG_MAX_PAYLOAD, .checkpoint_seq = 10 * gen,
    .checkpoint_epoch = 2, .checkpoint_lsn = 4096 * gen, .epoch = 3,
    .seq_reserved = 65536 + 10 * gen,
  };

  for (int i = 0; i < 16; ++i)
    s.volume_uuid[i] = 0x10 * i + 1;
  return s;
}

static void
slots (const char *dir, const char *name, uint64_t g0, uint64_t g1,
       size_t slot_len, int tear)
{
  static uint8_t buf[2 * RLOG_SB_SLOT_SIZE];
  uint8_t slot[RLOG_SB_SLOT_SIZE];
  struct rlog_sb s;

  s = sb (g0);
  rlog_sb_encode (&s, slot);
  memcpy (buf, slot, slot_len);
  s = sb (g1);
  rlog_sb_encode (&s, slot);
  if (tear)
    fill (slot + 96, 64, 7);
  memcpy (buf + slot_len, slot, slot_len);
  put (dir, name, buf, 2 * slot_len);
}

/* Wire seeds: a selector byte (0 hello, 1 control, 2 batch, 3 batch
 * unpacked as the secondary does, LZ4 included), then the message (see
 * fuzz-wire.c).
 */
static void
wire_seeds (const char *dir)
{
  static uint8_t buf[1 + WIRE_MSG_SIZE + 3 * 256];
  static uint8_t lz[1 + WIRE_BATCH_HDR_SIZE + 1024];
  struct wire_hello h = { .role = RLOG_ROLE_SECONDARY,
                          .flags = WIRE_HELLO_PAIRED, .backing_size = 1 << 30,
                          .durable_seq = 7, .applied_seq = 5 };
  struct wire_control c = { .type = WIRE_CTL_OUTDATED,
                            .backing_size = 1 << 30, .seq = 9 };
  struct wire_batch b = { .prev_seq = 10, .prev_epoch = 2, .first_seq = 11,
                          .last_seq = 13, .count = 3 };
  uint8_t *p = buf + 1 + WIRE_BATCH_HDR_SIZE;
  uint8_t payload[100];

  buf[0] = 0;
  wire_hello_encode (&h, buf + 1);
  put (dir, "hello", buf, 1 + 256);
  buf[0] = 1;
  wire_control_encode (&c, buf + 1);
  put (dir, "control", buf, 1 + 256);

  memset (payload, 0xab, sizeof payload);
  for (int i = 0; i < 3; ++i) {
    struct rlog_rec r = { .op = i == 1 ? RLOG_OP_ZERO : RLOG_OP_WRITE,
                          .seq = 11 + i, .epoch = 2, .offset = 4096 * i };
    r.payload_len = r.op == RLOG_OP_WRITE ? sizeof payload : 0;
    r.length = r.op == RLOG_OP_WRITE ? sizeof payload : 65536;
    r.rec_size = rlog_rec_size (r.payload_len);
    if (r.payload_len)
      memcpy (p + RLOG_REC_HDR_SIZE, payload, sizeof payload);
    rlog_rec_seal (&r, p, rlog_payload_crc (payload, r.payload_len));
    p += r.rec_size;
  }
  b.raw_len = b.wire_len = p - (buf + 1 + WIRE_BATCH_HDR_SIZE);
  b.data_crc = rlog_crc32c (0, buf + 1 + WIRE_BATCH_HDR_SIZE, b.raw_len);
  buf[0] = 2;
  wire_batch_encode_hdr (&b, buf + 1);
  put (dir, "batch", buf, p - buf);

  /* The same records, LZ4-compressed. */
  {
    int n = LZ4_compress_default ((const char *) buf + 1 + WIRE_BATCH_HDR_SIZE,
                                  (char *) lz + 1 + WIRE_BATCH_HDR_SIZE,
                                  b.raw_len, 1024);
    b.flags = WIRE_BATCH_LZ4;
    b.wire_len = n;
    b.data_crc = rlog_crc32c (0, lz + 1 + WIRE_BATCH_HDR_SIZE, n);
    lz[0] = 3;
    wire_batch_encode_hdr (&b, lz + 1);
    put (dir, "batch-lz4", lz, 1 + WIRE_BATCH_HDR_SIZE + n);
  }
}

int
main (int argc, char *argv[])
{
  const char *rd, *sd;

  if (argc != 3 && argc != 4) {
    fprintf (stderr, "usage: %s RECORD-DIR SUPERBLOCK-DIR [WIRE-DIR]\n",
             argv[0]);
    return EXIT_FAILURE;
  }
  rd = argv[1];
  sd = argv[2];
  if (argc == 4)
    wire_seeds (argv[3]);

  record (rd, "write-100", (struct rlog_rec) {
      .op = RLOG_OP_WRITE, .flags = RLOG_FLAG_FUA, .payload_len = 100,
      .length = 100, .offset = 1 << 20 }, 100);
  record (rd, "write-1000-padded", (struct rlog_rec) {
      .op = RLOG_OP_WRITE, .payload_len = 1000, .length = 1000,
      .offset = 4096, .rec_size = 4096 }, 1000);
  record (rd, "write-2000-truncated", (struct rlog_rec) {
      .op = RLOG_OP_WRITE, .payload_len = 2000, .length = 2000,
      .offset = 0 }, 500);
  record (rd, "zero", (struct rlog_rec) {
      .op = RLOG_OP_ZERO, .flags = RLOG_FLAG_MAY_TRIM, .length = 1 << 20,
      .offset = 8192 }, 0);
  record (rd, "trim", (struct rlog_rec) {
      .op = RLOG_OP_TRIM, .length = 65536, .offset = 1ULL << 40 }, 0);
  record (rd, "flush", (struct rlog_rec) { .op = RLOG_OP_FLUSH }, 0);
  record (rd, "wrap", (struct rlog_rec) {
      .op = RLOG_OP_WRAP, .rec_size = 8192 }, 0);

  slots (sd, "two-slots", 1, 2, RLOG_SB_SLOT_SIZE, 0);
  slots (sd, "newer-first", 5, 4, RLOG_SB_SLOT_SIZE, 0);
  slots (sd, "compact", 7, 8, RLOG_SB_ENCODED_SIZE, 0);
  slots (sd, "torn-newest", 3, 4, RLOG_SB_SLOT_SIZE, 1);
  return EXIT_SUCCESS;
}
