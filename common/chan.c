/* nbd-replica: the local channel between the filter and nbd-replicator.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#include <string.h>

#include "chan.h"
#include "le.h"
#include "logfmt.h"

enum {
  H_MAGIC = 0, H_VERSION = 4, H_TYPE = 6, H_A = 8, H_B = 16, H_C = 24,
  H_D = 32, H_E = 40, H_TEXTLEN = 48, H_CRC = 52,
};

void
chan_msg_init (struct chan_msg *m, uint16_t type, uint64_t a, uint64_t b,
               uint64_t c, uint64_t d, uint64_t e, const char *text)
{
  size_t n = text ? strlen (text) : 0;

  /* Not the text's CHAN_TEXT_MAX bytes: a frame is sent for every group
   * commit, under the replication lock.
   */
  memset (m, 0, offsetof (struct chan_msg, text));
  m->type = type;
  m->a = a;
  m->b = b;
  m->c = c;
  m->d = d;
  m->e = e;
  if (n > CHAN_TEXT_MAX)
    n = CHAN_TEXT_MAX;
  if (n)
    memcpy (m->text, text, n);
  m->text[n] = '\0';
  m->text_len = n;
}

size_t
chan_encode (const struct chan_msg *m, uint8_t *buf)
{
  uint32_t n = m->text_len > CHAN_TEXT_MAX ? CHAN_TEXT_MAX : m->text_len;
  uint32_t crc;

  put_le32 (buf + H_MAGIC, CHAN_MAGIC);
  put_le16 (buf + H_VERSION, CHAN_VERSION);
  put_le16 (buf + H_TYPE, m->type);
  put_le64 (buf + H_A, m->a);
  put_le64 (buf + H_B, m->b);
  put_le64 (buf + H_C, m->c);
  put_le64 (buf + H_D, m->d);
  put_le64 (buf + H_E, m->e);
  put_le32 (buf + H_TEXTLEN, n);
  put_le32 (buf + H_CRC, 0);
  memcpy (buf + CHAN_HDR_SIZE, m->text, n);
  crc = rlog_crc32c (0, buf, CHAN_HDR_SIZE + n);
  put_le32 (buf + H_CRC, crc);
  return CHAN_HDR_SIZE + n;
}

int
chan_decode_hdr (const uint8_t hdr[CHAN_HDR_SIZE], struct chan_msg *m,
                 const char **why)
{
  if (get_le32 (hdr + H_MAGIC) != CHAN_MAGIC) {
    *why = "bad magic";
    return -1;
  }
  if (get_le16 (hdr + H_VERSION) != CHAN_VERSION) {
    *why = "unsupported channel version";
    return -1;
  }
  m->type = get_le16 (hdr + H_TYPE);
  m->a = get_le64 (hdr + H_A);
  m->b = get_le64 (hdr + H_B);
  m->c = get_le64 (hdr + H_C);
  m->d = get_le64 (hdr + H_D);
  m->e = get_le64 (hdr + H_E);
  m->text_len = get_le32 (hdr + H_TEXTLEN);
  if (m->text_len > CHAN_TEXT_MAX) {
    *why = "text too long";
    return -1;
  }
  return 0;
}

int
chan_check_crc (const uint8_t hdr[CHAN_HDR_SIZE], const struct chan_msg *m)
{
  uint8_t h[CHAN_HDR_SIZE];
  uint32_t crc;

  memcpy (h, hdr, CHAN_HDR_SIZE);
  put_le32 (h + H_CRC, 0);
  crc = rlog_crc32c (0, h, CHAN_HDR_SIZE);
  crc = rlog_crc32c (crc, m->text, m->text_len);
  return crc == get_le32 (hdr + H_CRC) ? 0 : -1;
}
