/* nbd-replica: the local channel between the filter and nbd-replicator.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * The replicator connects to the filter's control socket and sends the
 * one-line command "attach"; from then on both sides exchange binary
 * frames on that connection (docs/design.md "Filter-replicator
 * channel"):
 *
 *   header (56 bytes, little-endian):
 *     magic "RPCH" (u32 0x48435052), version (u16), type (u16),
 *     a, b, c, d, e (u64 each), text_len (u32), crc (u32)
 *   text (text_len bytes, at most CHAN_TEXT_MAX)
 *
 * crc is CRC-32C of the header (crc field zero) followed by the text.
 * A bad frame is a protocol error: the receiver drops the channel.
 * Both ends frame nonblocking sockets themselves (plugin/repl.c,
 * replicator/chanclient.c) with the codec below.
 *
 * The filter decides (the link state machine, common/link.c); the
 * replicator does the I/O: it connects when told, reports what the
 * peer said, ships the records the filter says are written, and
 * reports acknowledgements.  It reads records from the log file itself
 * (read-only): the filter only says how far the log is written.
 */
#ifndef REPLICA_CHAN_H
#define REPLICA_CHAN_H

#include <stdint.h>
#include <stddef.h>

#define CHAN_MAGIC      0x48435052u     /* "RPCH" as LE bytes */
#define CHAN_VERSION    2       /* 2: CONNECT e, the PEER's d >> 32 */
#define CHAN_HDR_SIZE   56
#define CHAN_TEXT_MAX   65536           /* a SUMS frame: 4096 sums */
#define CHAN_ATTACH_CMD "attach"

enum chan_type {
  /* filter -> replicator */
  CHAN_CONFIG = 1,      /* text: log path; a: CHAN_CFG_* flags */
  CHAN_WRITTEN = 2,     /* records up to seq a (epoch b) are written to
                         * the log, which may be read below lsn c */
  CHAN_CONNECT = 3,     /* connect to the peer and read its HELLO; the
                         * peer must hold seq a (epoch b, lsn c after
                         * it): the point the filter knows is acked;
                         * d: CHAN_CONNECT_NOSCAN; e: connection id
                         * (u32), echoed in the PEER */
  CHAN_DISCONNECT = 4,  /* drop the peer connection; text: why */
  CHAN_SHIP = 5,        /* handshake accepted: authenticate (or adopt,
                         * if d has CHAN_SHIP_ADOPT, with base seq a
                         * epoch b); then, if d has CHAN_SHIP_RESYNC,
                         * send CONTROL RESYNC (base a, b; flags: e);
                         * ship the records after seq a (epoch b), the
                         * first at lsn c */
  CHAN_TELL = 6,        /* send CONTROL type a (WIRE_CTL_OUTDATED or
                         * WIRE_CTL_UPTODATE, seq b) to the peer; c is
                         * this TELL's id, echoed in its TOLD */
  CHAN_RESET = 7,       /* the log lost records it had written (a
                         * failed append): drop the connection and
                         * forget everything read; wait for CONNECT */
  CHAN_SUMS_REQ = 8,    /* read the peer's block sums: volume offset a,
                         * b blocks (<= WIRE_SUMS_MAX) of 1 << c bytes;
                         * d: request id, echoed in the CHAN_SUMS */

  /* replicator -> filter */
  CHAN_HELLO = 101,     /* a: pid; text: the peer URI (for status) */
  CHAN_PEER = 102,      /* HELLO read: a = peer durable seq, b = its
                         * epoch, c = backing size, d = role |
                         * CHAN_PEER_* flags << 8 | the CONNECT's
                         * connection id << 32, e = lsn of the record
                         * after seq a (if CHAN_PEER_KNOWN); text: the
                         * peer's volume UUID (16 bytes) */
  CHAN_LINKDOWN = 103,  /* connecting failed or the link broke; text */
  CHAN_ACK = 104,       /* the peer made seq a (epoch b) durable and
                         * applied; c = lsn after it */
  CHAN_TOLD = 105,      /* the peer recorded CONTROL type a, told by
                         * the TELL of id b */
  CHAN_SUMS = 107,      /* answer to CHAN_SUMS_REQ: a, b, c, d echoed;
                         * e = 0 and text = b * 16 bytes of sums, or
                         * e = an errno (ENOTCONN: not shipping) and
                         * no text */
  CHAN_STATS = 106,     /* a = bytes sent, b = bytes received on the
                         * link (cumulative); c = record bytes shipped,
                         * d = their bytes on the wire (compression),
                         * e = batches shipped */
};

/* CHAN_PEER flags (in d, above the role byte) */
#define CHAN_PEER_PAIRED    0x1   /* WIRE_HELLO_PAIRED */
#define CHAN_PEER_OUTDATED  0x2   /* WIRE_HELLO_OUTDATED */
#define CHAN_PEER_KNOWN     0x4   /* seq a, epoch b is in our log from the
                                   * CONNECT point on (e is valid) */
#define CHAN_PEER_BEHIND    0x8   /* seq a is before the CONNECT point:
                                   * the peer lost acknowledged records */

#define CHAN_PEER_RESYNC    0x10  /* WIRE_HELLO_RESYNC */
#define CHAN_PEER_STAGING   0x20  /* WIRE_HELLO_STAGING */
#define CHAN_PEER_FOREIGN   0x40  /* WIRE_HELLO_FOREIGN */

/* CHAN_CONNECT d bits */
#define CHAN_CONNECT_NOSCAN 0x1   /* the log no longer holds the records
                                   * after the point (the dirty bitmap
                                   * covers them): never look for a
                                   * peer's seq beyond it there */

/* CHAN_SHIP d bits */
#define CHAN_SHIP_ADOPT     0x1
#define CHAN_SHIP_RESYNC    0x2

struct chan_msg {
  uint16_t type;
  uint64_t a, b, c, d, e;
  uint32_t text_len;
  char text[CHAN_TEXT_MAX + 1];   /* NUL-terminated for convenience */
};

/* Encode into buf (at least CHAN_HDR_SIZE + CHAN_TEXT_MAX bytes);
 * returns the frame length.  text_len is clamped to CHAN_TEXT_MAX.
 */
extern size_t chan_encode (const struct chan_msg *m, uint8_t *buf);
/* Decode a header: returns 0 and the text length still to read, or -1
 * (bad magic, version, length) with a reason in *why.
 */
extern int chan_decode_hdr (const uint8_t hdr[CHAN_HDR_SIZE],
                            struct chan_msg *m, const char **why);
/* Check the CRC once the text is in m->text. */
extern int chan_check_crc (const uint8_t hdr[CHAN_HDR_SIZE],
                           const struct chan_msg *m);

/* Convenience: a message of a type with numbers and optional text. */
extern void chan_msg_init (struct chan_msg *m, uint16_t type,
                           uint64_t a, uint64_t b, uint64_t c, uint64_t d,
                           uint64_t e, const char *text);

#endif /* REPLICA_CHAN_H */
