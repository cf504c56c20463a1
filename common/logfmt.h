/* nbd-replica: on-disk format of the replication log.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * Pure encode/decode of the superblock and of record headers: no I/O,
 * no allocation.  Everything on disk is little-endian and covered by
 * CRC-32C.  The layout is documented field by field in docs/design.md;
 * keep the two in step.
 *
 * File layout:
 *   [0, 4096)          superblock slot 0
 *   [4096, 8192)       superblock slot 1
 *   [8192, ring_offset) dirty-bitmap area (reserved, zeroed; a later
 *                      version tracks out-of-sync blocks there)
 *   [ring_offset, log_size)  the record ring
 */
#ifndef REPLICA_LOGFMT_H
#define REPLICA_LOGFMT_H

#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>

#define RLOG_SB_MAGIC        "NBDRLOG\x01"  /* 8 bytes */
#define RLOG_SB_VERSION      1
#define RLOG_SB_SLOT_SIZE    4096
#define RLOG_SB_ENCODED_SIZE 256            /* bytes covered by the slot CRC */
#define RLOG_BITMAP_OFFSET   (2 * RLOG_SB_SLOT_SIZE)
#define RLOG_BITMAP_SIZE     (1024 * 1024)  /* reserved: 8 Mi bits */
#define RLOG_RING_OFFSET     (RLOG_BITMAP_OFFSET + RLOG_BITMAP_SIZE)
#define RLOG_BLOCK           4096           /* batches end on this boundary */

#define RLOG_REC_MAGIC       0x52455052u    /* "RPER" as LE bytes */
#define RLOG_REC_VERSION     1
#define RLOG_REC_HDR_SIZE    64
#define RLOG_REC_ALIGN       64             /* every record starts 64-aligned */
#define RLOG_MAX_PAYLOAD     (1024 * 1024)  /* largest write payload per record */

/* Smallest accepted log file: bitmap area plus a ring that holds at
 * least four maximal records, so a request split into records always
 * makes progress (a request never holds more than a quarter of it).
 */
#define RLOG_MIN_SIZE        (8 * 1024 * 1024)
#define RLOG_DEFAULT_SIZE    (1024LL * 1024 * 1024)

enum rlog_role {
  RLOG_ROLE_PRIMARY = 1,
  RLOG_ROLE_SECONDARY = 2,
};

/* Superblock flags. */
#define RLOG_SB_OUTDATED   0x1  /* secondary: missed acknowledged writes
                                 * (a sync primary degraded); promote
                                 * needs --force */
#define RLOG_SB_PAIRED     0x2  /* secondary: volume_uuid and pair_secret
                                 * were adopted from a primary */
#define RLOG_SB_PEER_OUTDATED 0x4 /* primary: it acknowledged writes its
                                 * peer misses (sync degraded), and the
                                 * peer has not recorded "up to date"
                                 * since: tell it "outdated" at the next
                                 * handshake, even after a restart */
#define RLOG_SB_INCONSISTENT 0x8 /* secondary: a resync is applied in
                                 * place: the disk is no state the
                                 * primary passed through until the
                                 * resync's end record is applied */
#define RLOG_SB_STAGING    0x10 /* secondary: the records after the
                                 * checkpoint are a staged resync (not
                                 * applied; the disk is still the image
                                 * of checkpoint_seq); discarded at a
                                 * restart, applied at the end record */
#define RLOG_SB_RESYNC     0x20 /* secondary: its history is unknown to
                                 * any primary (demoted, or its log was
                                 * reset): a checksum resync must run
                                 * before records are shipped to it */
#define RLOG_SB_BITMAP     0x40 /* primary: the dirty bitmap (in the
                                 * reserved area) holds the blocks its
                                 * peer may lack; the log no longer
                                 * holds every record after the acked
                                 * point (plugin/bitmap.c) */
#define RLOG_SB_REPLICATED 0x80 /* primary: a peer has been shipped
                                 * records of this volume: a start
                                 * without a peer tracks its writes in
                                 * the dirty bitmap (standalone
                                 * tracking), so that the peer's return
                                 * resyncs only the blocks written */
#define RLOG_SB_FOREIGN   0x100 /* secondary: its disk may hold writes no
                                 * primary of ours shipped (demoted: it
                                 * was a primary, or was promoted and
                                 * wrote): a resync compares the whole
                                 * disk, never only a bitmap's blocks;
                                 * cleared when a resync ends */
#define RLOG_SECRET_SIZE   32

enum rlog_op {
  RLOG_OP_WRITE = 1,   /* payload = data */
  RLOG_OP_ZERO  = 2,   /* range reads as zero afterwards */
  RLOG_OP_TRIM  = 3,   /* applied as zero (may deallocate): reads zero */
  RLOG_OP_FLUSH = 4,   /* barrier: the client asked for a flush here */
  RLOG_OP_WRAP  = 5,   /* filler to the end of the ring; does not use a seq */
};

/* Record flags (a subset of the NBD command flags, own numbering). */
#define RLOG_FLAG_FUA       0x1   /* client asked for FUA */
#define RLOG_FLAG_MAY_TRIM  0x2   /* zero: backing may deallocate */
#define RLOG_FLAG_SYNC      0x4   /* write/zero: a block the sync engine
                                   * resent (the primary's disk holds it
                                   * already; see plugin/sync.c) */
#define RLOG_FLAG_SYNC_END  0x8   /* flush: a sync or resync pass ended
                                   * here: a secondary holding everything
                                   * up to this record is consistent;
                                   * offset = the pass's base seq (the
                                   * CONTROL RESYNC's), so an older
                                   * pass's end record ends nothing */
#define RLOG_FLAG_ELIDED    0x10  /* write, SYNC, in a secondary's log
                                   * only: applied in place during an
                                   * in-place resync, its data NOT in the
                                   * log (payload_len 0); replay skips it
                                   * (docs/design.md 21.4) */

struct rlog_sb {
  uint32_t version;
  uint64_t generation;       /* bumped at every write; newer valid slot wins */
  uint8_t  volume_uuid[16];
  uint32_t role;             /* enum rlog_role */
  uint32_t flags;            /* RLOG_SB_* below */
  uint64_t backing_size;     /* 0 until the first start learns it */
  uint64_t created_ns;       /* CLOCK_REALTIME at format */
  uint64_t log_size;         /* size of the whole file */
  uint64_t ring_offset;      /* file offset of the ring */
  uint64_t ring_size;        /* bytes in the ring, multiple of RLOG_BLOCK */
  uint64_t bitmap_offset;
  uint64_t bitmap_size;
  uint32_t max_payload;      /* RLOG_MAX_PAYLOAD at format time */
  uint64_t checkpoint_seq;   /* every seq <= this is applied and flushed */
  uint64_t checkpoint_epoch; /* epoch the next record is checked against */
  uint64_t checkpoint_lsn;   /* log position of the first record after it */
  uint64_t epoch;            /* bumped at each open, before any append */
  uint64_t seq_reserved;     /* no seq above this was ever handed out */
  uint8_t  pair_secret[RLOG_SECRET_SIZE]; /* authenticates the primary's
                              * replicator to its secondary (random at
                              * a primary's format; adopted by a
                              * secondary) */
  uint64_t stage_seq;        /* RLOG_SB_STAGING: the staged records */
  uint64_t stage_epoch;      /* follow this seq and epoch */
  uint64_t bitmap_witness;   /* RLOG_SB_BITMAP: the bitmap's base seq
                              * + 1, written with the flag by builds
                              * that track through every start (a
                              * build before it re-encodes the
                              * superblock without it: 0); 0 otherwise */
};

struct rlog_rec {
  uint8_t  op;               /* enum rlog_op */
  uint32_t flags;            /* RLOG_FLAG_* */
  uint32_t payload_len;      /* bytes of payload after the header */
  uint32_t length;           /* bytes of the volume affected */
  uint32_t rec_size;         /* bytes occupied in the ring, 64-aligned */
  uint64_t seq;
  uint64_t offset;           /* volume offset */
  uint64_t timestamp_ns;     /* CLOCK_REALTIME when journaled */
  uint64_t epoch;
  uint32_t crc;              /* CRC-32C of payload + header (crc=0) */
};

/* Decode results. */
enum rlog_err {
  RLOG_OK = 0,
  RLOG_EMAGIC,     /* not our magic */
  RLOG_EVERSION,   /* our magic, unknown version */
  RLOG_ECRC,       /* checksum mismatch: torn or corrupt */
  RLOG_EINVAL,     /* fields out of range */
};
extern const char *rlog_strerror (enum rlog_err e);

extern uint32_t rlog_crc32c (uint32_t crc, const void *buf, size_t len);

/* Superblock slot: encodes into RLOG_SB_SLOT_SIZE bytes. */
extern void rlog_sb_encode (const struct rlog_sb *sb, void *slot);
extern enum rlog_err rlog_sb_decode (const void *slot, size_t len,
                                     struct rlog_sb *sb);
/* Pick the newer valid slot of two.  Returns 0 or 1, or -1 if neither
 * is valid (err0 and err1 say why each failed).
 */
extern int rlog_sb_choose (const void *slot0, const void *slot1,
                           struct rlog_sb *sb,
                           enum rlog_err *err0, enum rlog_err *err1);

/* Record header: exactly RLOG_REC_HDR_SIZE bytes. */
extern void rlog_rec_encode_hdr (const struct rlog_rec *r, void *hdr);
/* CRC of a payload alone (0 for none); then seal the header with it:
 * computes r->crc over payload + header and encodes the header.
 */
extern uint32_t rlog_payload_crc (const void *payload, uint32_t payload_len);
extern void rlog_rec_seal (struct rlog_rec *r, void *hdr, uint32_t payload_crc);
/* Decode the header and check its own fields (not the CRC, which also
 * needs the payload).  max_rec bounds rec_size.
 */
extern enum rlog_err rlog_rec_decode_hdr (const void *hdr, size_t len,
                                          uint32_t max_rec,
                                          struct rlog_rec *r);
/* Verify the CRC of a decoded header against its payload, or against
 * the payload's CRC (rlog_payload_crc) computed already.
 */
extern bool rlog_rec_verify (const void *hdr, const void *payload,
                             uint32_t payload_len);
extern bool rlog_rec_verify_pcrc (const void *hdr, uint32_t payload_crc);
/* Largest rec_size a valid record can have (batch padding included). */
#define RLOG_MAX_REC_SIZE (RLOG_REC_HDR_SIZE + RLOG_MAX_PAYLOAD + RLOG_BLOCK)
/* Size in the ring of a record with this payload (before batch padding). */
extern uint32_t rlog_rec_size (uint32_t payload_len);

extern const char *rlog_op_name (unsigned op);
extern const char *rlog_role_name (unsigned role);

/* Check that a superblock's geometry is self-consistent. */
extern bool rlog_sb_geometry_ok (const struct rlog_sb *sb);

#endif /* REPLICA_LOGFMT_H */
