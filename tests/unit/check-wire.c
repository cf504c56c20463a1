/* nbd-replica: unit tests of the replication messages (common/wire.c).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "le.h"
#include "wire.h"

START_TEST (test_hello_roundtrip_and_damage)
{
  struct wire_hello h = { .role = RLOG_ROLE_SECONDARY,
                          .flags = WIRE_HELLO_PAIRED | WIRE_HELLO_OUTDATED,
                          .backing_size = 1ULL << 33, .durable_seq = 77,
                          .applied_seq = 70 }, h2;
  uint8_t buf[WIRE_MSG_SIZE];

  memset (h.volume_uuid, 0x5a, 16);
  memset (h.nonce, 0xc3, 16);
  wire_hello_encode (&h, buf);
  ck_assert_int_eq (wire_hello_decode (buf, sizeof buf, &h2), WIRE_OK);
  ck_assert_mem_eq (&h, &h2, sizeof h);
  ck_assert_int_eq (wire_hello_decode (buf, 127, &h2), WIRE_EMAGIC);
  /* Every byte under the CRC matters. */
  for (size_t i = 16; i < 128; ++i) {
    buf[i] ^= 0x10;
    ck_assert_int_eq (wire_hello_decode (buf, sizeof buf, &h2), WIRE_ECRC);
    buf[i] ^= 0x10;
  }
  buf[0] ^= 1;
  ck_assert_int_eq (wire_hello_decode (buf, sizeof buf, &h2), WIRE_EMAGIC);
  buf[0] ^= 1;
  put_le32 (buf + 8, WIRE_VERSION + 1);
  ck_assert_int_eq (wire_hello_decode (buf, sizeof buf, &h2), WIRE_EVERSION);
  /* applied beyond durable is refused even with a good CRC. */
  h.applied_seq = 78;
  wire_hello_encode (&h, buf);
  ck_assert_int_eq (wire_hello_decode (buf, sizeof buf, &h2), WIRE_EINVAL);
}
END_TEST

START_TEST (test_control_roundtrip)
{
  struct wire_control c, c2;
  uint8_t buf[WIRE_MSG_SIZE], key[WIRE_SECRET_SIZE], nonce[16];

  /* Zeroed whole (padding included), so memcmp compares fields only. */
  memset (&c, 0, sizeof c);
  memset (&c2, 0, sizeof c2);
  c.type = WIRE_CTL_ADOPT;
  c.backing_size = 1 << 20;
  c.seq = 9;
  c.epoch = 3;
  memset (c.mac, 0x11, 32);
  memset (c.secret, 0x22, 32);
  wire_control_encode (&c, buf);
  ck_assert_int_eq (wire_control_decode (buf, sizeof buf, &c2), WIRE_OK);
  ck_assert_mem_eq (&c, &c2, sizeof c);
  /* The MAC binds the message to the nonce and the secret. */
  memset (key, 0x33, sizeof key);
  memset (nonce, 0x44, sizeof nonce);
  ck_assert_int_eq (wire_control_mac (&c, nonce, key, c.mac), 0);
  ck_assert (wire_control_mac_ok (&c, nonce, key));
  nonce[0] ^= 1;
  ck_assert (!wire_control_mac_ok (&c, nonce, key));
  nonce[0] ^= 1;
  key[31] ^= 1;
  ck_assert (!wire_control_mac_ok (&c, nonce, key));
  key[31] ^= 1;
  c.seq++;
  ck_assert (!wire_control_mac_ok (&c, nonce, key));
  c.seq--;
  /* Flags: each type its own (ADOPT: a sync follows; RESYNC: staged),
   * none elsewhere, no unknown bit.
   */
  c.flags = WIRE_ADOPT_SYNC;
  wire_control_encode (&c, buf);
  ck_assert_int_eq (wire_control_decode (buf, sizeof buf, &c2), WIRE_OK);
  ck_assert_uint_eq (c2.flags, WIRE_ADOPT_SYNC);
  c.flags = 0x2;
  wire_control_encode (&c, buf);
  ck_assert_int_eq (wire_control_decode (buf, sizeof buf, &c2), WIRE_EINVAL);
  c.type = WIRE_CTL_RESYNC;
  c.flags = WIRE_RESYNC_STAGE;
  wire_control_encode (&c, buf);
  ck_assert_int_eq (wire_control_decode (buf, sizeof buf, &c2), WIRE_OK);
  c.type = WIRE_CTL_AUTH;
  wire_control_encode (&c, buf);
  ck_assert_int_eq (wire_control_decode (buf, sizeof buf, &c2), WIRE_EINVAL);
  c.flags = 0;
  c.type = WIRE_CTL_UPTODATE;
  memset (c.secret, 0, sizeof c.secret);
  c.type = 99;
  wire_control_encode (&c, buf);
  ck_assert_int_eq (wire_control_decode (buf, sizeof buf, &c2), WIRE_EINVAL);
  /* A HELLO is not a CONTROL. */
  ck_assert_int_eq (wire_hello_decode (buf, sizeof buf,
                                       &(struct wire_hello) { 0 }),
                    WIRE_EMAGIC);
}
END_TEST

/* Build a batch of n records from seq first (epoch 3), WRITE with a
 * 100-byte payload or ZERO alternately.  Returns the bytes used.
 */
static size_t
make_records (uint8_t *p, uint64_t first, int n, uint64_t *epochs)
{
  uint8_t payload[100];
  size_t off = 0;

  memset (payload, 0x42, sizeof payload);
  for (int i = 0; i < n; ++i) {
    struct rlog_rec r = { .op = i % 2 ? RLOG_OP_ZERO : RLOG_OP_WRITE,
                          .seq = first + i, .epoch = epochs ? epochs[i] : 3,
                          .offset = 8192 * i };
    r.payload_len = r.op == RLOG_OP_WRITE ? sizeof payload : 0;
    r.length = r.op == RLOG_OP_WRITE ? sizeof payload : 4096;
    r.rec_size = rlog_rec_size (r.payload_len);
    if (r.payload_len)
      memcpy (p + off + RLOG_REC_HDR_SIZE, payload, sizeof payload);
    rlog_rec_seal (&r, p + off, rlog_payload_crc (payload, r.payload_len));
    off += r.rec_size;
  }
  return off;
}

static int
count_cb (void *opaque, const struct rlog_rec *r, const uint8_t *payload,
          uint32_t payload_crc)
{
  /* The walk hands over the payload's CRC it checked. */
  ck_assert_uint_eq (payload_crc, rlog_payload_crc (payload, r->payload_len));
  (*(int *) opaque)++;
  return 0;
}

START_TEST (test_batch_walk)
{
  static uint8_t recs[64 * 1024], hdr[WIRE_BATCH_HDR_SIZE];
  struct wire_batch b = { .prev_seq = 10, .prev_epoch = 3, .first_seq = 11,
                          .last_seq = 15, .count = 5 }, b2;
  char why[256];
  int n = 0;
  size_t len = make_records (recs, 11, 5, NULL);

  b.raw_len = b.wire_len = len;
  b.data_crc = rlog_crc32c (0, recs, len);
  wire_batch_encode_hdr (&b, hdr);
  ck_assert_int_eq (wire_batch_decode_hdr (hdr, sizeof hdr, &b2), WIRE_OK);
  ck_assert_mem_eq (&b, &b2, sizeof b);
  ck_assert_int_eq (wire_batch_walk (&b, recs, len, 1 << 20, count_cb, &n,
                                     why, sizeof why), WIRE_OK);
  ck_assert_int_eq (n, 5);

  /* Truncated, too small a disk, wrong count, damaged payload. */
  ck_assert_int_ne (wire_batch_walk (&b, recs, len - 1, 1 << 20, NULL, NULL,
                                     why, sizeof why), WIRE_OK);
  ck_assert_int_eq (wire_batch_walk (&b, recs, len, 8192 * 3, NULL, NULL,
                                     why, sizeof why), WIRE_EINVAL);
  ck_assert_ptr_nonnull (strstr (why, "beyond the end"));
  b2 = b;
  b2.count = 4;
  n = 0;
  ck_assert_int_eq (wire_batch_walk (&b2, recs, len, 1 << 20, count_cb, &n,
                                     why, sizeof why), WIRE_EINVAL);
  /* Refused before the callback sees more records than the count (the
   * secondary sizes its entries by it).
   */
  ck_assert_int_eq (n, 4);
  ck_assert_ptr_nonnull (strstr (why, "more than the 4 records"));
  /* Nor a record after the header's last seq (found by fuzz-wire). */
  b2 = b;
  b2.last_seq = 13;
  n = 0;
  ck_assert_int_eq (wire_batch_walk (&b2, recs, len, 1 << 20, count_cb, &n,
                                     why, sizeof why), WIRE_EINVAL);
  ck_assert_int_eq (n, 3);
  ck_assert_ptr_nonnull (strstr (why, "after the batch's last"));
  recs[RLOG_REC_HDR_SIZE + 5] ^= 1;
  ck_assert_int_eq (wire_batch_walk (&b, recs, len, 1 << 20, NULL, NULL,
                                     why, sizeof why), WIRE_ECRC);
  recs[RLOG_REC_HDR_SIZE + 5] ^= 1;

  /* A record without its data (a secondary's in-place resync logs
   * them) is never valid on the wire, even with a valid CRC.
   */
  {
    static uint8_t er[1024];
    struct wire_batch be = { .prev_seq = 10, .prev_epoch = 3, .first_seq = 11,
                             .last_seq = 11, .count = 1 };
    struct rlog_rec r = { .op = RLOG_OP_WRITE, .seq = 11, .epoch = 3,
                          .flags = RLOG_FLAG_SYNC | RLOG_FLAG_ELIDED,
                          .length = 4096, .rec_size = RLOG_REC_HDR_SIZE };
    rlog_rec_seal (&r, er, 0);
    be.raw_len = be.wire_len = RLOG_REC_HDR_SIZE;
    n = 0;
    ck_assert_int_eq (wire_batch_walk (&be, er, RLOG_REC_HDR_SIZE, 1 << 20,
                                       count_cb, &n, why, sizeof why),
                      WIRE_EINVAL);
    ck_assert_ptr_nonnull (strstr (why, "ELIDED"));
    ck_assert_int_eq (n, 0);
  }

  /* Not following prev_seq: refused before any callback. */
  b2 = b;
  b2.prev_seq = 9;
  n = 0;
  ck_assert_int_eq (wire_batch_walk (&b2, recs, len, 1 << 20, count_cb, &n,
                                     why, sizeof why), WIRE_EINVAL);
  ck_assert_int_eq (n, 0);
}
END_TEST

START_TEST (test_batch_epoch_jump)
{
  static uint8_t recs[64 * 1024];
  uint64_t epochs[3] = { 3, 4, 4 };
  struct wire_batch b = { .prev_seq = 10, .prev_epoch = 3, .first_seq = 11,
                          .last_seq = 13, .count = 3 };
  char why[256];
  size_t len = make_records (recs, 11, 3, epochs);

  b.raw_len = b.wire_len = len;
  ck_assert_int_eq (wire_batch_walk (&b, recs, len, 1 << 20, NULL, NULL,
                                     why, sizeof why), WIRE_OK);
  /* An epoch going backwards is refused. */
  epochs[2] = 2;
  len = make_records (recs, 11, 3, epochs);
  ck_assert_int_eq (wire_batch_walk (&b, recs, len, 1 << 20, NULL, NULL,
                                     why, sizeof why), WIRE_EINVAL);
}
END_TEST

START_TEST (test_batch_hdr_invalid)
{
  uint8_t hdr[WIRE_BATCH_HDR_SIZE];
  struct wire_batch b = { .prev_seq = 10, .first_seq = 11, .last_seq = 11,
                          .count = 1, .raw_len = 64, .wire_len = 64 }, b2;

  wire_batch_encode_hdr (&b, hdr);
  ck_assert_int_eq (wire_batch_decode_hdr (hdr, sizeof hdr, &b2), WIRE_OK);
  b.count = 2;                          /* 2 records in seqs 11..11 */
  wire_batch_encode_hdr (&b, hdr);
  ck_assert_int_eq (wire_batch_decode_hdr (hdr, sizeof hdr, &b2), WIRE_EINVAL);
  b.count = 1;
  b.first_seq = 10;                     /* not after prev_seq */
  wire_batch_encode_hdr (&b, hdr);
  ck_assert_int_eq (wire_batch_decode_hdr (hdr, sizeof hdr, &b2), WIRE_EINVAL);
  b.first_seq = 11;
  b.wire_len = 63;                      /* uncompressed: must equal raw */
  wire_batch_encode_hdr (&b, hdr);
  ck_assert_int_eq (wire_batch_decode_hdr (hdr, sizeof hdr, &b2), WIRE_EINVAL);
  b.wire_len = 64;
  wire_batch_encode_hdr (&b, hdr);
  hdr[20] ^= 1;
  ck_assert_int_eq (wire_batch_decode_hdr (hdr, sizeof hdr, &b2), WIRE_ECRC);
  ck_assert_int_eq (wire_batch_decode_hdr (hdr, 63, &b2), WIRE_EMAGIC);
}
END_TEST

static Suite *
wire_suite (void)
{
  Suite *s = suite_create ("wire");
  TCase *tc = tcase_create ("core");

  tcase_add_test (tc, test_hello_roundtrip_and_damage);
  tcase_add_test (tc, test_control_roundtrip);
  tcase_add_test (tc, test_batch_walk);
  tcase_add_test (tc, test_batch_epoch_jump);
  tcase_add_test (tc, test_batch_hdr_invalid);
  suite_add_tcase (s, tc);
  return s;
}

int
main (void)
{
  SRunner *sr = srunner_create (wire_suite ());
  int failed;

  srunner_run_all (sr, CK_NORMAL);
  failed = srunner_ntests_failed (sr);
  srunner_free (sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
