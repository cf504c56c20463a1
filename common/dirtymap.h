/* nbd-replica: persistent dirty bitmap in the log file's reserved area.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * The set of volume regions ("grains") a primary's peer may lack, kept
 * in [RLOG_BITMAP_OFFSET, RLOG_BITMAP_OFFSET + RLOG_BITMAP_SIZE) of the
 * log file, so that log records can be freed before the peer has them
 * and the peer is later brought up to date by a resync of the marked
 * grains only.  The rule the caller keeps: a record may be freed only
 * after the grains it touches are marked and a dmap_flush covering
 * them has returned 0.
 *
 * On-disk layout, in an area of area_size bytes (a multiple of 4096, at
 * least 8192) at file offset area_off; everything little-endian,
 * checksums are CRC-32C (rlog_crc32c):
 *
 *   page 0, the header (4096 bytes):
 *     0  magic "NBDRBMAP"        8 bytes
 *     8  version                 u32 = DMAP_VERSION (1)
 *    12  encoded size            u32 = DMAP_HDR_ENCODED_SIZE (64)
 *    16  grain_shift             u32 (a grain is 2^grain_shift bytes)
 *    20  span                    u32: the records after base_seq up
 *                                to base_seq + span all carry
 *                                base_epoch and were the primary's
 *                                own (dmap_set_base); 0 if unknown
 *    24  nbits                   u64 (grains in the volume)
 *    32  base_seq                u64 \ what dmap_set_base recorded: the
 *    40  base_epoch              u64 / log position the map covers
 *    48  generation              u64 (bumped at every flush)
 *    56  zero                    4 bytes
 *    60  CRC-32C of bytes 0..59  u32
 *    64..4095 zero
 *
 *   pages 1..N (4096 bytes each, N = ceil (nbits / 32704)):
 *        0  4088 bytes of bits: bit i of page p is grain
 *           (p - 1) * 32704 + i, LSB first within a byte; bits past
 *           nbits (in the last page) are zero
 *     4088  page index p         u32 (catches misdirected writes)
 *     4092  CRC-32C of bytes 0..4091  u32
 *
 * grain_shift is the larger of min_shift and the smallest s for which
 * ceil (volume_size / 2^s) fits the capacity, (area_size / 4096 - 1) *
 * 32704 bits.  With the 1 MiB area that is 255 pages, 8,339,520 bits:
 * 4 KiB grains cover volumes up to ~31.8 GiB, bigger volumes get
 * bigger grains (64 GiB: 16 KiB; 1 TiB: 256 KiB).
 *
 * Crash safety.  dmap_flush writes the changed pages, fdatasyncs, then
 * writes the header and fdatasyncs again: the header is the commit
 * point, so a durable header (with its base) is never ahead of the
 * pages.  A crash in the middle leaves some pages new and some old;
 * either is safe:
 *  - Between two clears the in-memory bits only ever get set, so every
 *    page on disk, old or new, is a subset of the current map, and the
 *    marks it lacks belong to records that were not yet freed (their
 *    flush never returned 0): they are still in the log, and the caller
 *    marks them again from it after the header's base.
 *  - The caller clears the map only after a resync has brought the peer
 *    up to date; a page still holding pre-clear bits then merely asks
 *    for grains to be resent again.
 *  - A page torn by the crash (or damaged later) fails its CRC or its
 *    index check.  dmap_load never trusts it: it sets every bit of the
 *    page (more to resync, nothing lost), counts it in *bad_pages, and
 *    marks it dirty so the next flush writes it back sound.
 *  - A header that fails its check makes dmap_load return -1; the
 *    caller then treats the whole volume as dirty.  A fresh, zeroed area
 *    has no header either: a caller formatting a new log should
 *    dmap_flush an empty map (or a full one) before relying on it.
 *
 * Thread safety: every function may be called from any thread.  One
 * mutex guards the bits; dmap_mark and dmap_any do no I/O and no
 * allocation and cost O(grains touched).  dmap_flush snapshots the
 * changed pages under that mutex and does its I/O without it (a second
 * mutex orders concurrent flushes), so marking is never blocked behind
 * an fdatasync.
 */
#ifndef REPLICA_DIRTYMAP_H
#define REPLICA_DIRTYMAP_H

#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>
#include <pthread.h>

#define DMAP_MAGIC            "NBDRBMAP"   /* 8 bytes, no NUL */
#define DMAP_VERSION          1
#define DMAP_PAGE_SIZE        4096
#define DMAP_HDR_ENCODED_SIZE 64           /* bytes covered by the header CRC */
#define DMAP_PAGE_BITS_BYTES  4088         /* bytes of bits per page */
#define DMAP_PAGE_BITS        (DMAP_PAGE_BITS_BYTES * 8)  /* 32704 */
#define DMAP_MIN_AREA         (2 * DMAP_PAGE_SIZE)

/* Public so that it can be embedded; every field is private to
 * dirtymap.c: use the functions.  Set up by dmap_init, released by
 * dmap_free.
 */
struct dirtymap {
  pthread_mutex_t lock;       /* guards everything below it marked (L) */
  pthread_mutex_t flush_lock; /* one dmap_flush / dmap_load at a time */
  int fd;                     /* the log file (not owned) */
  uint64_t area_off;          /* file offset of page 0 */
  uint64_t area_size;
  uint64_t volume_size;
  unsigned grain_shift;
  uint64_t nbits;             /* grains: ceil (volume_size / grain) */
  uint32_t npages;            /* bit pages: ceil (nbits / 32704) */
  uint8_t *bits;              /* (L) npages pages of DMAP_PAGE_SIZE;
                               * bytes [4088, 4096) of each are unused */
  uint8_t *page_dirty;        /* (L) npages flags: changed since flushed */
  uint8_t *shadow;            /* (flush_lock) (npages + 1) pages: the
                               * image being written or read */
  uint8_t *inflight;          /* (flush_lock) npages flags: in shadow,
                               * being written by dmap_flush */
  uint64_t nset;              /* (L) bits set */
  uint64_t base_seq;          /* (L) */
  uint64_t base_epoch;        /* (L) */
  uint32_t span;              /* (L) */
  uint64_t generation;        /* (L) of the last header written/read */
  bool header_dirty;          /* (L) base changed since flushed */
  bool flushed;               /* (L) disk matches memory except dirty pages */
};

/* Size the map for a volume (no I/O): returns 0, or -1 with errno
 * (EINVAL: area_size not a multiple of 4096 or below 8192, min_shift
 * above 63; ENOMEM).  The map starts empty, base (0, 0).
 */
extern int dmap_init (struct dirtymap *m, int fd, uint64_t area_off,
                      uint64_t area_size, uint64_t volume_size,
                      unsigned min_shift);
/* Release memory (does not close fd).  Safe after a failed dmap_init. */
extern void dmap_free (struct dirtymap *m);

extern unsigned dmap_grain_shift (const struct dirtymap *m);

/* Mark every grain overlapping [off, off+len) (len may be 0: nothing;
 * the range is clipped to the volume).
 */
extern void dmap_mark (struct dirtymap *m, uint64_t off, uint64_t len);
/* Is any grain overlapping [off, off+len) marked?  (false for len 0) */
extern bool dmap_any (struct dirtymap *m, uint64_t off, uint64_t len);
/* Bytes of the volume covered by marked grains (the last grain clipped
 * to the volume size).
 */
extern uint64_t dmap_dirty_bytes (struct dirtymap *m);

/* Record base (seq, epoch) in the header, with span: how many seqs
 * after the base the caller knows to be its own, in the base's epoch
 * (in memory; written by dmap_flush).  A map starts with (0, 0, 0).
 * dmap_get_base's pointers may be NULL.
 */
extern void dmap_set_base (struct dirtymap *m, uint64_t seq, uint64_t epoch,
                           uint32_t span);
extern void dmap_get_base (struct dirtymap *m, uint64_t *seq, uint64_t *epoch,
                           uint32_t *span);

/* Write every page changed since the last flush, fdatasync, write the
 * header, fdatasync (fd): durable on return 0; -1 with errno (the
 * pages stay dirty and are written again by the next flush).  The first
 * flush after dmap_init writes every page.  With nothing changed since
 * a successful flush it does no I/O.
 */
extern int dmap_flush (struct dirtymap *m);

/* Clear every bit (in memory; the next dmap_flush writes the pages). */
extern void dmap_clear (struct dirtymap *m);

/* Read header and pages from the file.  Returns 0 on success: the map
 * and base are the file's; pages that fail their check are set
 * all-ones, counted in *bad_pages and marked dirty (why names the
 * first, "" if none).  Returns -1 if the header itself is missing,
 * corrupt or of another geometry (grain_shift or nbits differ from
 * dmap_init's), or cannot be read; why says which and the map in
 * memory is left as it was (the caller then treats the whole volume as
 * dirty).  why has whylen bytes; bad_pages and why may be NULL.
 */
extern int dmap_load (struct dirtymap *m, unsigned *bad_pages,
                      char *why, size_t whylen);

#endif /* REPLICA_DIRTYMAP_H */
