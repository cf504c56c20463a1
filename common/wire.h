/* nbd-replica: messages of the replication protocol (pure codec).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * The replicator talks to the secondary's replication export with
 * ordinary NBD reads and writes; the offset says what a request is
 * (docs/design.md "Replication protocol"):
 *
 *   read  [0, 4096)          HELLO: the secondary describes itself
 *   write [4096, 8192)       CONTROL: adopt, outdated, up to date, auth
 *   write [1 GiB, ...)       BATCH: log records, in seq order
 *
 * Every message has a magic, a version and a CRC-32C.  A batch carries
 * records in the log's own format (each with its own CRC), optionally
 * compressed as one LZ4 block.  Decoders take untrusted bytes: they
 * check every length against the buffer (tests/fuzz/fuzz-wire.c).
 */
#ifndef REPLICA_WIRE_H
#define REPLICA_WIRE_H

#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>

#include "logfmt.h"

#define WIRE_EXPORT_NAME     "replica-replication"
#define WIRE_VERSION         1
#define WIRE_HELLO_OFFSET    0
#define WIRE_CONTROL_OFFSET  4096
#define WIRE_MSG_SIZE        4096          /* HELLO and CONTROL requests */
#define WIRE_BATCH_BASE      (1ULL << 30)
#define WIRE_BATCH_SLOT      (64ULL << 20) /* largest NBD request */
#define WIRE_BATCH_SLOTS     1024          /* distinct offsets in flight */
/* Block checksums of the node's disk (docs/design.md 21.3): a read of
 * nblocks * WIRE_SUM_SIZE bytes at WIRE_SUMS_OFFSET (shift, off) returns
 * the bsum_block of each block of 1 << shift bytes from volume offset
 * off (a multiple of the block size; the volume's last block may be
 * short).
 */
#define WIRE_SUMS_BASE       (1ULL << 44)
#define WIRE_SUM_SIZE        16
#define WIRE_SUMS_MAX        4096          /* blocks per read */
#define WIRE_SUMS_MIN_SHIFT  12            /* 4 KiB */
#define WIRE_SUMS_MAX_SHIFT  24            /* 16 MiB */
#define WIRE_SUMS_OFFSET(shift, off) \
  (WIRE_SUMS_BASE + ((uint64_t) (shift) << 40) + \
   ((uint64_t) (off) >> (shift)) * WIRE_SUM_SIZE)
/* Each block size's sums take 2^40 bytes of addresses: 2^36 blocks. */
#define WIRE_SUMS_MAX_VOLUME(shift) (1ULL << (36 + (shift)))
#define WIRE_EXPORT_SIZE     (1ULL << 46)
#define WIRE_BATCH_HDR_SIZE  64
#define WIRE_BATCH_MAX       (32u << 20)   /* raw record bytes per batch */

/* HELLO flags */
#define WIRE_HELLO_PAIRED    0x1   /* the secondary's log has a volume */
#define WIRE_HELLO_OUTDATED  0x2   /* it missed acknowledged writes */
#define WIRE_HELLO_RESYNC    0x4   /* its disk is not a known prefix of
                                    * the primary's history (a resync in
                                    * place is unfinished, or it was
                                    * demoted): a full checksum resync
                                    * must run first */
#define WIRE_HELLO_STAGING   0x8   /* a staged resync is pending (the
                                    * disk is the image of applied_seq) */
#define WIRE_HELLO_FOREIGN   0x10  /* its disk may hold writes of its own
                                    * (RLOG_SB_FOREIGN): compare all */

struct wire_hello {
  uint8_t volume_uuid[16];
  uint32_t role;               /* enum rlog_role */
  uint32_t flags;              /* WIRE_HELLO_* */
  uint64_t backing_size;
  uint64_t durable_seq;        /* last record durable in its log */
  uint64_t durable_epoch;      /* and its epoch */
  uint64_t applied_seq;        /* last record applied to its disk */
  uint8_t nonce[16];           /* fresh per connection (authentication) */
};

enum wire_control_type {
  WIRE_CTL_ADOPT = 1,          /* take volume_uuid: pair with us */
  WIRE_CTL_OUTDATED = 2,       /* you missed writes acknowledged here */
  WIRE_CTL_UPTODATE = 3,       /* you have everything up to seq */
  WIRE_CTL_AUTH = 4,           /* prove the pair secret (mac) */
  WIRE_CTL_RESYNC = 5,         /* a resync starts: the records that follow
                                * continue after seq (epoch), not after
                                * what you hold; hold the disk's image
                                * until the SYNC_END record if flags has
                                * WIRE_RESYNC_STAGE */
};

#define WIRE_SECRET_SIZE     32
#define WIRE_MAC_SIZE        32

/* Every CONTROL is authenticated: mac = HMAC-SHA256 (pair secret,
 * hello nonce || encoded message with mac zeroed), except ADOPT to an
 * unpaired secondary, which carries the secret itself (trust on first
 * use; docs/design.md "Pairing and authentication").
 */
struct wire_control {
  uint32_t type;               /* enum wire_control_type */
  uint8_t volume_uuid[16];     /* the primary's */
  uint64_t backing_size;
  uint64_t seq;                /* ADOPT: base seq (the primary's head);
                                * UPTODATE: acknowledged through seq */
  uint64_t epoch;              /* ADOPT: epoch of the base seq */
  uint8_t mac[WIRE_MAC_SIZE];
  uint8_t secret[WIRE_SECRET_SIZE]; /* ADOPT only, else zero */
  uint32_t flags;              /* RESYNC: WIRE_RESYNC_STAGE; ADOPT:
                                * WIRE_ADOPT_SYNC; else 0 */
};

#define WIRE_RESYNC_STAGE    0x1
/* ADOPT: a sync of the disk in place follows (the RESYNC comes next,
 * without WIRE_RESYNC_STAGE: an initial sync): the
 * pairing is recorded with the disk marked inconsistent and to be
 * resynced, in the same superblock write, so a pairing that loses its
 * RESYNC (link down, crash) still asks for the sync at the next
 * handshake.
 */
#define WIRE_ADOPT_SYNC      0x1

/* Batch flags */
#define WIRE_BATCH_LZ4       0x1

struct wire_batch {
  uint8_t flags;
  uint64_t prev_seq;           /* seq the first record follows */
  uint64_t prev_epoch;         /* and its epoch (continuity rule) */
  uint64_t first_seq, last_seq;
  uint32_t count;              /* records (WRAP never sent) */
  uint32_t raw_len;            /* bytes of records, uncompressed */
  uint32_t wire_len;           /* bytes after the header */
  uint32_t data_crc;           /* CRC-32C of those wire bytes */
};

enum wire_err {
  WIRE_OK = 0,
  WIRE_EMAGIC,
  WIRE_EVERSION,
  WIRE_ECRC,
  WIRE_EINVAL,
};
extern const char *wire_strerror (enum wire_err e);

extern void wire_hello_encode (const struct wire_hello *h,
                               uint8_t out[WIRE_MSG_SIZE]);
extern enum wire_err wire_hello_decode (const void *buf, size_t len,
                                        struct wire_hello *h);
extern void wire_control_encode (const struct wire_control *c,
                                 uint8_t out[WIRE_MSG_SIZE]);
extern enum wire_err wire_control_decode (const void *buf, size_t len,
                                          struct wire_control *c);

/* The MAC of a control message for a connection's nonce (c->mac is
 * ignored).  Returns 0, or -1 if the crypto library failed.
 */
extern int wire_control_mac (const struct wire_control *c,
                             const uint8_t nonce[16],
                             const uint8_t secret[WIRE_SECRET_SIZE],
                             uint8_t mac[WIRE_MAC_SIZE]);
/* Constant-time check of c->mac. */
extern bool wire_control_mac_ok (const struct wire_control *c,
                                 const uint8_t nonce[16],
                                 const uint8_t secret[WIRE_SECRET_SIZE]);

extern void wire_batch_encode_hdr (const struct wire_batch *b,
                                   uint8_t out[WIRE_BATCH_HDR_SIZE]);
extern enum wire_err wire_batch_decode_hdr (const void *buf, size_t len,
                                            struct wire_batch *b);

/* Walk the (uncompressed) records of a batch: checks each record's
 * header and CRC, that they are consecutive from prev_seq (a jump only
 * into a higher epoch, as in the log), that count, first_seq and
 * last_seq match, and that every record lies within backing_size.
 * Calls fn for each (if fn is not NULL); stops at the first error, so
 * a caller that acts on records walks first (or collects, then discards
 * on error, as wire_batch_unpack's callers do): a batch
 * is accepted or refused whole.
 * On error, *why says which record and what.
 */
/* payload_crc: rlog_payload_crc of the payload, computed by the walk
 * (its CRC check), so that a caller journaling the record need not
 * read the payload again.
 */
typedef int (*wire_record_fn) (void *opaque, const struct rlog_rec *rec,
                               const uint8_t *payload, uint32_t payload_crc);
extern enum wire_err wire_batch_walk (const struct wire_batch *b,
                                      const uint8_t *records, size_t len,
                                      uint64_t backing_size,
                                      wire_record_fn fn, void *opaque,
                                      char *why, size_t whylen);

/* Everything the secondary does with a BATCH write before using it:
 * decode the header (*b is filled before the walk), check the length
 * and the data CRC, uncompress (LZ4), and walk the records
 * (wire_batch_walk, calling fn if not NULL: a caller collecting
 * records must discard them if the result is not WIRE_OK).  On success
 * *records points at raw_len bytes of records: into buf, or into a
 * buffer returned in *owned (free it).  On error *why says what.
 */
extern enum wire_err wire_batch_unpack (const uint8_t *buf, size_t len,
                                        uint64_t backing_size,
                                        struct wire_batch *b,
                                        const uint8_t **records,
                                        uint8_t **owned,
                                        wire_record_fn fn, void *opaque,
                                        char *why, size_t whylen);

#endif /* REPLICA_WIRE_H */
