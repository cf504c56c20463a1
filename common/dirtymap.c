/* nbd-replica: persistent dirty bitmap in the log file's reserved area.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * See dirtymap.h for the on-disk layout and why a crash at any point
 * leaves a map that is a superset of what the caller still needs.
 * Pages read from the file are untrusted: every length and index is
 * checked before use.
 */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <stdarg.h>
#include <inttypes.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>

#include "le.h"
#include "logfmt.h"
#include "logfile.h"
#include "dirtymap.h"

/* Header layout (offsets in bytes). */
enum {
  H_MAGIC = 0, H_VERSION = 8, H_ENCSIZE = 12, H_SHIFT = 16, H_SPAN = 20,
  H_NBITS = 24, H_BASE_SEQ = 32, H_BASE_EPOCH = 40, H_GENERATION = 48,
  H_ZERO = 56, H_CRC = DMAP_HDR_ENCODED_SIZE - 4,
};
/* Bit page trailer. */
enum {
  P_INDEX = DMAP_PAGE_BITS_BYTES, P_CRC = DMAP_PAGE_SIZE - 4,
};

static void __attribute__ ((format (printf, 3, 4)))
set_why (char *why, size_t whylen, const char *fmt, ...)
{
  va_list ap;

  if (!why || whylen == 0)
    return;
  va_start (ap, fmt);
  vsnprintf (why, whylen, fmt, ap);
  va_end (ap);
}

/* Grains (bits) of bit page p: 32704, or fewer in the last page. */
static uint32_t
page_nbits (const struct dirtymap *m, uint32_t p)
{
  uint64_t start = (uint64_t) p * DMAP_PAGE_BITS;
  uint64_t n = m->nbits - start;

  return n < DMAP_PAGE_BITS ? (uint32_t) n : DMAP_PAGE_BITS;
}

static uint64_t
popcount_page (const uint8_t *pg)
{
  uint64_t n = 0;

  for (size_t i = 0; i < DMAP_PAGE_BITS_BYTES; i += 8) {
    uint64_t w;
    memcpy (&w, pg + i, 8);
    n += __builtin_popcountll (w);
  }
  return n;
}

/* Set bits [0, n) of a page's bits, clear the rest. */
static void
page_fill (uint8_t *pg, uint32_t n)
{
  memset (pg, 0, DMAP_PAGE_BITS_BYTES);
  memset (pg, 0xff, n / 8);
  if (n % 8)
    pg[n / 8] = (uint8_t) (0xff >> (8 - n % 8));
}

/* Are the bits of a page past its n grains all zero? */
static bool
page_tail_clear (const uint8_t *pg, uint32_t n)
{
  size_t i = n / 8;

  if (n % 8) {
    if (pg[i] & (uint8_t) (0xff << (n % 8)))
      return false;
    i++;
  }
  for (; i < DMAP_PAGE_BITS_BYTES; i++)
    if (pg[i])
      return false;
  return true;
}

int
dmap_init (struct dirtymap *m, int fd, uint64_t area_off, uint64_t area_size,
           uint64_t volume_size, unsigned min_shift)
{
  uint64_t area_pages, capacity, npages;
  unsigned s;

  memset (m, 0, sizeof *m);
  if (area_size % DMAP_PAGE_SIZE != 0 || area_size < DMAP_MIN_AREA ||
      min_shift > 63) {
    errno = EINVAL;
    return -1;
  }
  area_pages = area_size / DMAP_PAGE_SIZE - 1;
  if (area_pages > UINT32_MAX)
    area_pages = UINT32_MAX;    /* more than any volume needs */
  capacity = area_pages * DMAP_PAGE_BITS;

  for (s = min_shift; ; s++) {
    uint64_t mask = (UINT64_C (1) << s) - 1;
    uint64_t nb = (volume_size >> s) + ((volume_size & mask) != 0);
    if (nb <= capacity || s == 63) {
      /* s == 63: nb <= 2, and capacity >= 32704. */
      m->nbits = nb;
      break;
    }
  }
  npages = (m->nbits + DMAP_PAGE_BITS - 1) / DMAP_PAGE_BITS;

  m->fd = fd;
  m->area_off = area_off;
  m->area_size = area_size;
  m->volume_size = volume_size;
  m->grain_shift = s;
  m->npages = (uint32_t) npages;
  /* At least one byte each: bits != NULL says "initialized". */
  m->bits = calloc (npages > 0 ? npages : 1, DMAP_PAGE_SIZE);
  m->page_dirty = calloc (npages > 0 ? npages : 1, 1);
  m->inflight = calloc (npages > 0 ? npages : 1, 1);
  m->shadow = calloc (npages + 1, DMAP_PAGE_SIZE);
  if (!m->bits || !m->page_dirty || !m->inflight || !m->shadow) {
    free (m->bits);
    free (m->page_dirty);
    free (m->inflight);
    free (m->shadow);
    memset (m, 0, sizeof *m);
    errno = ENOMEM;
    return -1;
  }
  pthread_mutex_init (&m->lock, NULL);
  pthread_mutex_init (&m->flush_lock, NULL);
  return 0;
}

void
dmap_free (struct dirtymap *m)
{
  if (!m->bits)
    return;
  pthread_mutex_destroy (&m->lock);
  pthread_mutex_destroy (&m->flush_lock);
  free (m->bits);
  free (m->page_dirty);
  free (m->inflight);
  free (m->shadow);
  memset (m, 0, sizeof *m);
}

unsigned
dmap_grain_shift (const struct dirtymap *m)
{
  return m->grain_shift;
}

/* The grains [*first, *last] overlapping [off, off+len) clipped to the
 * volume; false if none.
 */
static bool
grain_range (const struct dirtymap *m, uint64_t off, uint64_t len,
             uint64_t *first, uint64_t *last)
{
  uint64_t end;

  if (len == 0 || off >= m->volume_size)
    return false;
  end = off + len;
  if (end < off || end > m->volume_size)
    end = m->volume_size;
  *first = off >> m->grain_shift;
  *last = (end - 1) >> m->grain_shift;
  return true;
}

/* Visit bits [first, last] page by page: for each page p, bytes
 * [i0, i1] with the first and last byte masked.  Set them (set true,
 * returns the number of bits newly set) or test them (returns 1 at the
 * first set bit, else 0).  Caller holds lock.
 */
static uint64_t
bits_range (struct dirtymap *m, uint64_t first, uint64_t last, bool set)
{
  uint64_t b = first, total = 0;

  while (b <= last) {
    uint32_t p = b / DMAP_PAGE_BITS;
    uint64_t pstart = (uint64_t) p * DMAP_PAGE_BITS;
    uint64_t pend = pstart + DMAP_PAGE_BITS - 1;
    uint32_t lo = b - pstart;
    uint32_t hi = (last < pend ? last : pend) - pstart;
    uint8_t *pg = m->bits + (size_t) p * DMAP_PAGE_SIZE;
    uint32_t i0 = lo / 8, i1 = hi / 8;
    uint64_t added = 0;

    for (uint32_t i = i0; i <= i1; i++) {
      uint8_t mask = 0xff;
      if (i == i0)
        mask &= (uint8_t) (0xff << (lo % 8));
      if (i == i1)
        mask &= (uint8_t) (0xff >> (7 - hi % 8));
      if (set) {
        uint8_t old = pg[i];
        if ((old & mask) != mask) {
          added += __builtin_popcount ((unsigned) (mask & ~old));
          pg[i] = old | mask;
        }
      }
      else if (pg[i] & mask)
        return 1;
    }
    if (added) {
      total += added;
      m->page_dirty[p] = 1;
    }
    b = pend + 1;
  }
  return total;
}

void
dmap_mark (struct dirtymap *m, uint64_t off, uint64_t len)
{
  uint64_t first, last;

  if (!grain_range (m, off, len, &first, &last))
    return;
  pthread_mutex_lock (&m->lock);
  m->nset += bits_range (m, first, last, true);
  pthread_mutex_unlock (&m->lock);
}

bool
dmap_any (struct dirtymap *m, uint64_t off, uint64_t len)
{
  uint64_t first, last;
  bool r;

  if (!grain_range (m, off, len, &first, &last))
    return false;
  pthread_mutex_lock (&m->lock);
  r = m->nset > 0 && bits_range (m, first, last, false) != 0;
  pthread_mutex_unlock (&m->lock);
  return r;
}

uint64_t
dmap_dirty_bytes (struct dirtymap *m)
{
  uint64_t r, lastbit;
  uint64_t tail = m->volume_size & ((UINT64_C (1) << m->grain_shift) - 1);

  pthread_mutex_lock (&m->lock);
  r = m->nset;
  if (r > 0 && tail != 0) {
    lastbit = m->nbits - 1;
    if (m->bits[(size_t) (lastbit / DMAP_PAGE_BITS) * DMAP_PAGE_SIZE +
                (lastbit % DMAP_PAGE_BITS) / 8] & (1u << (lastbit % 8))) {
      /* The last grain counts only as far as the volume goes. */
      r = ((r - 1) << m->grain_shift) + tail;
      pthread_mutex_unlock (&m->lock);
      return r;
    }
  }
  pthread_mutex_unlock (&m->lock);
  return r << m->grain_shift;
}

void
dmap_set_base (struct dirtymap *m, uint64_t seq, uint64_t epoch,
               uint32_t span)
{
  pthread_mutex_lock (&m->lock);
  if (m->base_seq != seq || m->base_epoch != epoch || m->span != span)
    m->header_dirty = true;
  m->base_seq = seq;
  m->base_epoch = epoch;
  m->span = span;
  pthread_mutex_unlock (&m->lock);
}

void
dmap_get_base (struct dirtymap *m, uint64_t *seq, uint64_t *epoch,
               uint32_t *span)
{
  pthread_mutex_lock (&m->lock);
  if (seq)
    *seq = m->base_seq;
  if (epoch)
    *epoch = m->base_epoch;
  if (span)
    *span = m->span;
  pthread_mutex_unlock (&m->lock);
}

void
dmap_clear (struct dirtymap *m)
{
  pthread_mutex_lock (&m->lock);
  for (uint32_t p = 0; p < m->npages; p++) {
    memset (m->bits + (size_t) p * DMAP_PAGE_SIZE, 0, DMAP_PAGE_BITS_BYTES);
    m->page_dirty[p] = 1;
  }
  m->nset = 0;
  pthread_mutex_unlock (&m->lock);
}

static void
encode_header (const struct dirtymap *m, uint8_t *h, uint64_t seq,
               uint64_t epoch, uint64_t generation)
{
  memset (h, 0, DMAP_PAGE_SIZE);
  memcpy (h + H_MAGIC, DMAP_MAGIC, 8);
  put_le32 (h + H_VERSION, DMAP_VERSION);
  put_le32 (h + H_ENCSIZE, DMAP_HDR_ENCODED_SIZE);
  put_le32 (h + H_SHIFT, m->grain_shift);
  put_le32 (h + H_SPAN, m->span);
  put_le64 (h + H_NBITS, m->nbits);
  put_le64 (h + H_BASE_SEQ, seq);
  put_le64 (h + H_BASE_EPOCH, epoch);
  put_le64 (h + H_GENERATION, generation);
  put_le32 (h + H_CRC, rlog_crc32c (0, h, H_CRC));
}

/* Write the in-flight pages of the shadow image, merging runs of
 * adjacent pages into one pwrite.
 */
static int
write_pages (struct dirtymap *m)
{
  uint32_t p = 0;

  while (p < m->npages) {
    uint32_t q;

    if (!m->inflight[p]) {
      p++;
      continue;
    }
    for (q = p; q + 1 < m->npages && m->inflight[q + 1]; q++)
      ;
    if (rlog_full_pwrite (m->fd,
                          m->shadow + (size_t) (p + 1) * DMAP_PAGE_SIZE,
                          (size_t) (q - p + 1) * DMAP_PAGE_SIZE,
                          m->area_off + (uint64_t) (p + 1) * DMAP_PAGE_SIZE)
        == -1)
      return -1;
    p = q + 1;
  }
  return 0;
}

int
dmap_flush (struct dirtymap *m)
{
  bool all, any = false;
  uint64_t generation;
  int r = -1, saved;

  pthread_mutex_lock (&m->flush_lock);
  pthread_mutex_lock (&m->lock);
  /* Snapshot the changed pages into the shadow image. */
  all = !m->flushed;
  for (uint32_t p = 0; p < m->npages; p++) {
    uint8_t *dst;

    m->inflight[p] = all || m->page_dirty[p];
    if (!m->inflight[p])
      continue;
    any = true;
    m->page_dirty[p] = 0;
    dst = m->shadow + (size_t) (p + 1) * DMAP_PAGE_SIZE;
    memcpy (dst, m->bits + (size_t) p * DMAP_PAGE_SIZE, DMAP_PAGE_BITS_BYTES);
    put_le32 (dst + P_INDEX, p + 1);
    put_le32 (dst + P_CRC, rlog_crc32c (0, dst, P_CRC));
  }
  if (!all && !any && !m->header_dirty) {
    /* Nothing changed since a flush that succeeded. */
    pthread_mutex_unlock (&m->lock);
    pthread_mutex_unlock (&m->flush_lock);
    return 0;
  }
  generation = m->generation + 1;
  encode_header (m, m->shadow, m->base_seq, m->base_epoch, generation);
  m->header_dirty = false;
  pthread_mutex_unlock (&m->lock);

  /* Pages first, then the header that commits them: the durable
   * header's base is never ahead of the durable pages.
   */
  if (any && (write_pages (m) == -1 || fdatasync (m->fd) == -1))
    goto out;
  if (rlog_full_pwrite (m->fd, m->shadow, DMAP_PAGE_SIZE, m->area_off) == -1 ||
      fdatasync (m->fd) == -1)
    goto out;
  r = 0;

 out:
  saved = errno;
  pthread_mutex_lock (&m->lock);
  if (r == 0) {
    m->generation = generation;
    m->flushed = true;
  }
  else {
    /* Unknown what reached the disk: write it all again next time. */
    for (uint32_t p = 0; p < m->npages; p++)
      if (m->inflight[p])
        m->page_dirty[p] = 1;
    m->header_dirty = true;
  }
  pthread_mutex_unlock (&m->lock);
  pthread_mutex_unlock (&m->flush_lock);
  errno = saved;
  return r;
}

/* Check the header in m->shadow against m's geometry. */
static int
check_header (const struct dirtymap *m, const uint8_t *h,
              char *why, size_t whylen)
{
  uint32_t v;

  if (memcmp (h + H_MAGIC, DMAP_MAGIC, 8) != 0) {
    set_why (why, whylen, "no bitmap header (bad magic)");
    return -1;
  }
  v = get_le32 (h + H_VERSION);
  if (v != DMAP_VERSION) {
    set_why (why, whylen, "unsupported bitmap version %" PRIu32, v);
    return -1;
  }
  v = get_le32 (h + H_ENCSIZE);
  if (v != DMAP_HDR_ENCODED_SIZE) {
    set_why (why, whylen, "bad bitmap header size %" PRIu32, v);
    return -1;
  }
  if (get_le32 (h + H_CRC) != rlog_crc32c (0, h, H_CRC)) {
    set_why (why, whylen, "bitmap header checksum mismatch");
    return -1;
  }
  if (get_le32 (h + H_ZERO) != 0) {
    set_why (why, whylen, "bitmap header: nonzero reserved field");
    return -1;
  }
  if (get_le32 (h + H_SHIFT) != m->grain_shift ||
      get_le64 (h + H_NBITS) != m->nbits) {
    set_why (why, whylen,
             "bitmap geometry differs: grain_shift %" PRIu32
             " nbits %" PRIu64 ", expected %u and %" PRIu64,
             get_le32 (h + H_SHIFT), get_le64 (h + H_NBITS),
             m->grain_shift, m->nbits);
    return -1;
  }
  return 0;
}

int
dmap_load (struct dirtymap *m, unsigned *bad_pages, char *why, size_t whylen)
{
  uint8_t *h = m->shadow;
  unsigned nbad = 0;
  uint64_t nset = 0;

  if (bad_pages)
    *bad_pages = 0;
  set_why (why, whylen, "%s", "");

  pthread_mutex_lock (&m->flush_lock);
  if (rlog_full_pread (m->fd, h, DMAP_PAGE_SIZE, m->area_off) == -1) {
    int saved = errno;
    set_why (why, whylen, "cannot read bitmap header: %s", strerror (errno));
    pthread_mutex_unlock (&m->flush_lock);
    errno = saved;
    return -1;
  }
  if (check_header (m, h, why, whylen) == -1) {
    pthread_mutex_unlock (&m->flush_lock);
    errno = EINVAL;
    return -1;
  }

  /* Read and check every bit page; inflight[p] says "bad" here. */
  for (uint32_t p = 0; p < m->npages; p++) {
    uint8_t *pg = m->shadow + (size_t) (p + 1) * DMAP_PAGE_SIZE;
    uint32_t idx;
    char reason[128];

    m->inflight[p] = 1;
    if (rlog_full_pread (m->fd, pg, DMAP_PAGE_SIZE,
                    m->area_off + (uint64_t) (p + 1) * DMAP_PAGE_SIZE) == -1)
      snprintf (reason, sizeof reason, "read error: %s", strerror (errno));
    else if (get_le32 (pg + P_CRC) != rlog_crc32c (0, pg, P_CRC))
      snprintf (reason, sizeof reason, "checksum mismatch");
    else if ((idx = get_le32 (pg + P_INDEX)) != p + 1)
      snprintf (reason, sizeof reason, "holds page %" PRIu32
                " (misdirected write)", idx);
    else if (!page_tail_clear (pg, page_nbits (m, p)))
      snprintf (reason, sizeof reason, "bits set past the volume's end");
    else {
      m->inflight[p] = 0;
      continue;
    }
    if (nbad == 0)
      set_why (why, whylen, "bitmap page %" PRIu32 ": %s", p + 1, reason);
    nbad++;
  }

  /* Install: bad pages all-ones and dirty, so the next flush writes
   * them back sound.
   */
  pthread_mutex_lock (&m->lock);
  for (uint32_t p = 0; p < m->npages; p++) {
    uint8_t *dst = m->bits + (size_t) p * DMAP_PAGE_SIZE;

    if (m->inflight[p]) {
      page_fill (dst, page_nbits (m, p));
      m->page_dirty[p] = 1;
    }
    else {
      memcpy (dst, m->shadow + (size_t) (p + 1) * DMAP_PAGE_SIZE,
              DMAP_PAGE_BITS_BYTES);
      m->page_dirty[p] = 0;
    }
    nset += popcount_page (dst);
    m->inflight[p] = 0;
  }
  m->nset = nset;
  m->base_seq = get_le64 (h + H_BASE_SEQ);
  m->base_epoch = get_le64 (h + H_BASE_EPOCH);
  m->span = get_le32 (h + H_SPAN);
  m->generation = get_le64 (h + H_GENERATION);
  m->header_dirty = nbad > 0;
  m->flushed = true;
  pthread_mutex_unlock (&m->lock);
  pthread_mutex_unlock (&m->flush_lock);

  if (nbad > 1 && why && whylen > 0) {
    size_t n = strlen (why);
    set_why (why + n, whylen - n, " (and %u more)", nbad - 1);
  }
  if (bad_pages)
    *bad_pages = nbad;
  return 0;
}
