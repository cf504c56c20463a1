/* nbd-replica: tests/wire-inject: a client that holds the TLS key of a
 * secondary but not its pair secret, trying to write to its
 * replication export (test-repl-tls.sh).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 *   wire-inject URI     URI of the secondary's replication export
 *
 * Tries, each on a fresh connection: a batch without authenticating;
 * AUTH with a wrong secret, then a batch; ADOPT of another volume (the
 * secondary is paired); OUTDATED without authenticating.  Prints one
 * line per attempt; exit 0 if every one was refused with EPERM, 1 if
 * any was accepted or failed otherwise.
 *
 *   wire-inject --diverge URI   (an unpaired secondary: test-repl-refuse.sh)
 *
 * Pairs with the secondary (ADOPT), sends records 1-3 of epoch 1, then
 * a batch after seq 1 whose first record is seq 10 of epoch 2: a
 * history without our seq 3 (a primary whose append of seq 3 failed
 * after it was shipped).  Exit 0 if that batch is refused with EINVAL.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/random.h>

#include <libnbd.h>

#include "wire.h"

static const char *uri;

static struct nbd_handle *
open_export (struct wire_hello *h)
{
  struct nbd_handle *nbd = nbd_create ();
  uint8_t buf[WIRE_MSG_SIZE];

  if (!nbd || nbd_set_uri_allow_local_file (nbd, true) == -1 ||
      nbd_connect_uri (nbd, uri) == -1 ||
      nbd_pread (nbd, buf, sizeof buf, WIRE_HELLO_OFFSET, 0) == -1) {
    fprintf (stderr, "wire-inject: %s\n", nbd_get_error ());
    nbd_close (nbd);
    exit (1);
  }
  if (wire_hello_decode (buf, sizeof buf, h) != WIRE_OK) {
    fprintf (stderr, "wire-inject: bad HELLO\n");
    exit (1);
  }
  return nbd;
}

/* A valid one-record batch following the secondary's durable seq. */
static int
send_batch (struct nbd_handle *nbd, const struct wire_hello *h)
{
  static uint8_t buf[WIRE_BATCH_HDR_SIZE + 4096 + 64];
  uint8_t *rec = buf + WIRE_BATCH_HDR_SIZE;
  struct rlog_rec r = { .op = RLOG_OP_WRITE, .seq = h->durable_seq + 1,
                        .epoch = h->durable_epoch, .length = 4096,
                        .payload_len = 4096 };
  struct wire_batch b = { .prev_seq = h->durable_seq,
                          .prev_epoch = h->durable_epoch,
                          .first_seq = r.seq, .last_seq = r.seq, .count = 1 };

  memset (rec + RLOG_REC_HDR_SIZE, 'X', 4096);
  r.rec_size = rlog_rec_size (4096);
  rlog_rec_seal (&r, rec, rlog_payload_crc (rec + RLOG_REC_HDR_SIZE, 4096));
  b.raw_len = b.wire_len = r.rec_size;
  b.data_crc = rlog_crc32c (0, rec, b.raw_len);
  wire_batch_encode_hdr (&b, buf);
  return nbd_pwrite (nbd, buf, WIRE_BATCH_HDR_SIZE + b.raw_len,
                     WIRE_BATCH_BASE, 0);
}

static int
send_control (struct nbd_handle *nbd, const struct wire_hello *h,
              uint32_t type, const uint8_t *secret)
{
  struct wire_control c = { .type = type, .backing_size = h->backing_size };
  uint8_t buf[WIRE_MSG_SIZE];

  memcpy (c.volume_uuid, h->volume_uuid, 16);
  if (type == WIRE_CTL_ADOPT) {
    getrandom (c.volume_uuid, 16, 0);
    memcpy (c.secret, secret, WIRE_SECRET_SIZE);
  }
  wire_control_mac (&c, h->nonce, secret, c.mac);
  wire_control_encode (&c, buf);
  return nbd_pwrite (nbd, buf, sizeof buf, WIRE_CONTROL_OFFSET, 0);
}

/* A batch after (prev_seq, prev_epoch) of n 4 KiB writes at offset 0,
 * seqs first.., all of the given epoch.
 */
static int
send_records (struct nbd_handle *nbd, uint64_t prev_seq, uint64_t prev_epoch,
              uint64_t first, uint64_t epoch, unsigned n)
{
  enum { RSZ = RLOG_REC_HDR_SIZE + 4096 };
  static uint8_t buf[WIRE_BATCH_HDR_SIZE + 4 * RSZ];
  struct wire_batch b = { .prev_seq = prev_seq, .prev_epoch = prev_epoch,
                          .first_seq = first, .last_seq = first + n - 1,
                          .count = n };
  uint8_t *rec = buf + WIRE_BATCH_HDR_SIZE;

  for (unsigned i = 0; i < n && i < 4; ++i, rec += RSZ) {
    struct rlog_rec r = { .op = RLOG_OP_WRITE, .seq = first + i,
                          .epoch = epoch, .length = 4096,
                          .payload_len = 4096 };
    memset (rec + RLOG_REC_HDR_SIZE, 'A' + i, 4096);
    r.rec_size = rlog_rec_size (4096);
    rlog_rec_seal (&r, rec, rlog_payload_crc (rec + RLOG_REC_HDR_SIZE, 4096));
  }
  b.raw_len = b.wire_len = n * RSZ;
  b.data_crc = rlog_crc32c (0, buf + WIRE_BATCH_HDR_SIZE, b.raw_len);
  wire_batch_encode_hdr (&b, buf);
  return nbd_pwrite (nbd, buf, WIRE_BATCH_HDR_SIZE + b.raw_len,
                     WIRE_BATCH_BASE, 0);
}

static int
diverge (void)
{
  struct wire_hello h;
  struct nbd_handle *nbd = open_export (&h);
  uint8_t secret[WIRE_SECRET_SIZE];
  int ret = 1;

  getrandom (secret, sizeof secret, 0);
  if (send_control (nbd, &h, WIRE_CTL_ADOPT, secret) == -1 ||
      send_records (nbd, 0, 0, 1, 1, 3) == -1)
    fprintf (stderr, "wire-inject: pairing: %s\n", nbd_get_error ());
  else if (send_records (nbd, 1, 1, 10, 2, 1) == 0)
    printf ("a batch skipping our seq 3 into a new epoch: ACCEPTED\n");
  else if (nbd_get_errno () != EINVAL)
    printf ("refused, but not with EINVAL: %s\n", nbd_get_error ());
  else {
    printf ("a batch skipping our seq 3 into a new epoch: refused "
            "(EINVAL)\n");
    ret = 0;
  }
  nbd_close (nbd);
  return ret;
}

static int bad;

static void
expect_eperm (const char *what, int r, struct nbd_handle *nbd)
{
  if (r == 0) {
    printf ("%s: ACCEPTED\n", what);
    bad = 1;
  }
  else if (nbd_get_errno () != EPERM) {
    printf ("%s: failed, but not with EPERM: %s\n", what, nbd_get_error ());
    bad = 1;
  }
  else
    printf ("%s: refused (EPERM)\n", what);
}

int
main (int argc, char **argv)
{
  struct wire_hello h;
  struct nbd_handle *nbd;
  uint8_t secret[WIRE_SECRET_SIZE];

  if (argc == 3 && strcmp (argv[1], "--diverge") == 0) {
    uri = argv[2];
    return diverge ();
  }
  if (argc != 2) {
    fprintf (stderr, "usage: wire-inject [--diverge] URI\n");
    return 2;
  }
  uri = argv[1];
  getrandom (secret, sizeof secret, 0);

  nbd = open_export (&h);
  if (!(h.flags & WIRE_HELLO_PAIRED)) {
    fprintf (stderr, "wire-inject: the secondary is not paired\n");
    return 1;
  }
  expect_eperm ("batch without authentication", send_batch (nbd, &h), nbd);
  nbd_close (nbd);

  nbd = open_export (&h);
  expect_eperm ("auth with a wrong secret",
                send_control (nbd, &h, WIRE_CTL_AUTH, secret), nbd);
  expect_eperm ("batch after a failed auth", send_batch (nbd, &h), nbd);
  nbd_close (nbd);

  nbd = open_export (&h);
  expect_eperm ("adopt of another volume",
                send_control (nbd, &h, WIRE_CTL_ADOPT, secret), nbd);
  nbd_close (nbd);

  nbd = open_export (&h);
  expect_eperm ("outdated without authentication",
                send_control (nbd, &h, WIRE_CTL_OUTDATED, secret), nbd);
  nbd_close (nbd);
  return bad;
}
