/* nbd-replica: libFuzzer target for superblock decoding.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * The input is cut in two halves, one per superblock slot.  Each half is
 * decoded from an exact-size copy (so reading past it is caught), then
 * both, padded with zeroes to RLOG_SB_SLOT_SIZE, go to rlog_sb_choose,
 * whose choice must agree with the two decodes.
 */
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "logfmt.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

/* Field by field: the struct has padding. */
static bool
sb_eq (const struct rlog_sb *x, const struct rlog_sb *y)
{
  return x->version == y->version && x->generation == y->generation &&
    memcmp (x->volume_uuid, y->volume_uuid, 16) == 0 &&
    x->role == y->role && x->flags == y->flags &&
    x->backing_size == y->backing_size && x->created_ns == y->created_ns &&
    x->log_size == y->log_size && x->ring_offset == y->ring_offset &&
    x->ring_size == y->ring_size && x->bitmap_offset == y->bitmap_offset &&
    x->bitmap_size == y->bitmap_size && x->max_payload == y->max_payload &&
    x->checkpoint_seq == y->checkpoint_seq &&
    x->checkpoint_epoch == y->checkpoint_epoch &&
    x->checkpoint_lsn == y->checkpoint_lsn && x->epoch == y->epoch &&
    x->seq_reserved == y->seq_reserved;
}

static enum rlog_err
decode_exact (const uint8_t *p, size_t len, struct rlog_sb *sb)
{
  uint8_t *copy = malloc (len ? len : 1);
  enum rlog_err e;

  if (!copy)
    abort ();
  memcpy (copy, p, len);
  e = rlog_sb_decode (copy, len, sb);
  free (copy);
  if (e == RLOG_OK) {
    uint8_t *slot = malloc (RLOG_SB_SLOT_SIZE);
    struct rlog_sb again;

    if (!slot)
      abort ();
    /* Accepted: sane geometry, and a re-encode decodes the same. */
    if (!rlog_sb_geometry_ok (sb) || sb->version != RLOG_SB_VERSION)
      abort ();
    rlog_sb_encode (sb, slot);
    if (rlog_sb_decode (slot, RLOG_SB_SLOT_SIZE, &again) != RLOG_OK ||
        !sb_eq (&again, sb))
      abort ();
    free (slot);
  }
  return e;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  size_t half = size / 2, len1 = size - half;
  uint8_t *s0, *s1;
  struct rlog_sb a, b, out;
  enum rlog_err ea, eb, e0, e1;
  int pick;

  memset (&a, 0, sizeof a);
  memset (&b, 0, sizeof b);
  decode_exact (data, half, &a);
  decode_exact (data + half, len1, &b);

  s0 = calloc (1, RLOG_SB_SLOT_SIZE);
  s1 = calloc (1, RLOG_SB_SLOT_SIZE);
  if (!s0 || !s1)
    abort ();
  memcpy (s0, data, half < RLOG_SB_SLOT_SIZE ? half : RLOG_SB_SLOT_SIZE);
  memcpy (s1, data + half, len1 < RLOG_SB_SLOT_SIZE ? len1 : RLOG_SB_SLOT_SIZE);
  ea = decode_exact (s0, RLOG_SB_SLOT_SIZE, &a);
  eb = decode_exact (s1, RLOG_SB_SLOT_SIZE, &b);

  pick = rlog_sb_choose (s0, s1, &out, &e0, &e1);
  if (e0 != ea || e1 != eb)
    abort ();
  switch (pick) {
  case 0:
    if (ea != RLOG_OK || (eb == RLOG_OK && b.generation > a.generation) ||
        !sb_eq (&out, &a))
      abort ();
    break;
  case 1:
    if (eb != RLOG_OK || (ea == RLOG_OK && a.generation >= b.generation) ||
        !sb_eq (&out, &b))
      abort ();
    break;
  case -1:
    if (ea == RLOG_OK || eb == RLOG_OK)
      abort ();
    break;
  default:
    abort ();
  }
  free (s0);
  free (s1);
  return 0;
}
