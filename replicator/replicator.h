/* nbd-replicator: shared declarations.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * The replicator is one thread around one poll() loop (main.c).  It
 * holds two connections: the channel to the filter (chanclient.c,
 * protocol in common/chan.h), which says what to do, and the libnbd
 * handle to the secondary (peer.c, protocol in common/wire.h), which
 * it does it with.  session.c turns channel frames into peer actions;
 * reader.c and batch.c read records from the log (read-only: the
 * filter owns it) and pack them for the wire; sums.c reads the peer's
 * block sums for the filter; dial.c makes a TCP connection itself (an
 * address at a time, from the --bind address if given) and hands it to
 * libnbd.
 *
 * Nothing here exits on a peer error: every failure of the link is
 * reported to the filter as CHAN_LINKDOWN and the replicator waits for
 * the next CHAN_CONNECT.
 */
#ifndef REPLICATOR_H
#define REPLICATOR_H

#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <netdb.h>

#include <libnbd.h>

#include "chan.h"
#include "peeraddr.h"
#include "logfile.h"
#include "wire.h"

#define PROG "nbd-replicator"

/* Pipeline limits (batches in flight on the link). */
#define MAX_INFLIGHT_BATCHES   64
#define MAX_INFLIGHT_RAW       (128ULL << 20)
/* Raw bytes a batch is built up to (WIRE_BATCH_MAX is the protocol's
 * limit): the secondary decrypts a batch into one buffer, checks its
 * CRCs, then writes it to its disk, and a batch of a few MiB is
 * likelier to be still in the CPU's cache for the second and third pass
 * over it (the mechanism is a guess; the gain is measured).  Measured
 * on a 2 GiB initial sync onto an empty secondary (warm cache, this
 * 2-core machine, 7 runs of each alternated): batches of up to 32 MiB,
 * 16 in flight, took 6.0-7.8 s (median 7.1), the secondary 4.2-6.8
 * CPU-s (median 6.2); batches of up to 4 MiB, 64 in flight, 5.4-6.4 s
 * (median 5.9) and 4.2-5.3 CPU-s (median 4.5).  Up to 2 MiB (one
 * record of 1 MiB each) was slower again: 5.7-6.0 CPU-s in 2 runs.
 * The 128 MiB window holds 32 or more of them, hence the 64.
 */
#define BATCH_TARGET_RAW       (4u << 20)
#define CONNECT_TIMEOUT_MS     10000  /* connect + HELLO */
/* dial.c: one address of the peer's name gets this long to answer
 * before the next is tried; once connected, TLS and the HELLO get
 * CONNECT_TIMEOUT_MS.
 */
#define DIAL_ADDR_TIMEOUT_MS   4000
#define REPLY_TIMEOUT_MS       120000 /* no reply at all while busy */
/* Shipping with nothing in flight for this long: read the peer's HELLO
 * (peer.c, heartbeat).  An nbdkit serving TLS does not stop on SIGTERM
 * while its client is idle (its connection thread waits in
 * gnutls_record_recv); it stops at the next request.  So an idle link
 * never holds the secondary's shutdown for longer than this, and a
 * peer that stops answering counts against REPLY_TIMEOUT_MS.
 */
#define HEARTBEAT_MS           1000
#define STATS_INTERVAL_MS      1000
#define POLL_TIMEOUT_MS        100
/* Block sums reads (CHAN_SUMS_REQ): a window of their own, so that
 * neither they nor batches wait for the other's.
 */
#define MAX_INFLIGHT_SUMS      8
#define MAX_QUEUED_SUMS        64     /* waiting, beyond those in flight */
#define SUMS_OUTSTANDING_MAX   (MAX_INFLIGHT_SUMS + MAX_QUEUED_SUMS)
#define REPL_TEXT_MAX          1024   /* our LINKDOWN and log texts */

/* NBD transmission bytes counted by hand (peer.c, CHAN_STATS). */
#define NBD_REQUEST_HDR        28
#define NBD_REPLY_HDR          16

/* options.c */
struct options {
  const char *control;           /* the filter's control socket */
  const char *peer_uri;          /* as given (reported in CHAN_HELLO) */
  char *peer_uri_rw;             /* path rewritten to WIRE_EXPORT_NAME */
  bool peer_plain;               /* nbd://, nbd+unix://, nbd+vsock:// */
  const char *tls_psk;
  const char *tls_username;
  const char *tls_certificates;
  bool insecure;
  bool compress;                 /* --compress lz4 */
  const char *bind;              /* --bind ADDR, as given */
  struct {                       /* what dial.c connects, if on */
    bool on;                     /* our own TCP connect (dial.c), not
                                  * libnbd's: --bind, or a TCP peer
                                  * with a PSK or plaintext */
    struct sockaddr_storage local;  /* ADDR, port 0 (--bind only) */
    socklen_t local_len;         /* 0: no --bind */
    int family;                  /* of ADDR: the peer addresses tried
                                  * (AF_UNSPEC without --bind) */
    struct peer_addr peer;       /* the URI's host, port, user, PSK file */
  } dial;
};
extern void options_parse (struct options *o, int argc, char **argv);
extern void options_free (struct options *o);
/* Rewrite uri's path to "/" WIRE_EXPORT_NAME; *plain says whether the
 * scheme is a plaintext one.  Returns the new string (malloc'd), or
 * NULL with a reason in why.  Exported for the option parser only.
 */

/* msg.c */
extern bool debug_flag;
extern void msg (const char *fmt, ...)
  __attribute__ ((format (printf, 1, 2)));
extern void dbg (const char *fmt, ...)
  __attribute__ ((format (printf, 1, 2)));
extern uint64_t now_ms (void);

/* chanclient.c: nonblocking framed channel to the filter. */
struct chanc {
  int fd;                        /* -1 when not attached */
  uint8_t *in;                   /* received, not yet parsed */
  size_t in_len;
  uint8_t *out;                  /* queued, not yet written */
  size_t out_len, out_cap;
  bool got_frame;                /* the filter accepted the attach */
  bool broken;                   /* drop the channel (why says why) */
  char why[256];
};
typedef void (*chanc_frame_fn) (void *opaque, const struct chan_msg *m);
extern void chanc_init (struct chanc *c);
extern int chanc_connect (struct chanc *c, const char *path,
                          char *err, size_t errlen);
extern void chanc_close (struct chanc *c);
extern void chanc_send (struct chanc *c, const struct chan_msg *m);
extern void chanc_sendf (struct chanc *c, uint16_t type, uint64_t a,
                         uint64_t b, uint64_t cc, uint64_t d, uint64_t e,
                         const char *text);
extern void chanc_flush (struct chanc *c);
extern void chanc_read (struct chanc *c, chanc_frame_fn fn, void *opaque);
extern void chanc_break (struct chanc *c, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

/* reader.c: records of the log, never at or beyond a limit LSN. */
struct reader {
  struct rlog *log;
  struct rlog_scan s;
  bool scanning;                 /* s is initialised at lsn */
  uint64_t lsn;                  /* where the next record starts */
  uint64_t prev_seq, prev_epoch; /* the last record read */
};
extern void reader_start (struct reader *r, struct rlog *log, uint64_t lsn,
                          uint64_t prev_seq, uint64_t prev_epoch);
extern void reader_stop (struct reader *r);
/* 1: a record (*hdr = its header as read, payload after it: at into,
 * which has RLOG_MAX_REC_SIZE bytes of room, or in the reader's buffer
 * if into is NULL), 0: none below limit yet, -1: the log is unreadable
 * (why).
 */
extern int reader_next (struct reader *r, uint64_t limit,
                        struct rlog_rec *rec, const uint8_t **hdr,
                        uint8_t *into, char *why, size_t whylen);
/* Find seq S (epoch E) in the log after the point (seq, epoch, lsn),
 * below limit.  Returns 1 (found: *resume = lsn after it), 0 (not
 * there: passed it, or reached limit), -1 (log unreadable: why).
 */
extern int reader_locate (struct rlog *log, uint64_t seq, uint64_t epoch,
                          uint64_t lsn, uint64_t limit, uint64_t S,
                          uint64_t E, uint64_t *resume,
                          char *why, size_t whylen);

/* dial.c: our own TCP connection (nonblocking), from the --bind address
 * if given.
 */
#define DIAL_HOST_MAX 80         /* a numeric address, with %scope */
struct dial {
  int fd;                        /* -1: none */
  struct addrinfo *ai, *next;    /* the peer's addresses; the next to try */
  char target[DIAL_HOST_MAX + 16]; /* "ADDR port PORT" being tried */
  uint64_t deadline_ms;          /* for the one being tried (now_ms) */
  char last_err[512];            /* why the previous address failed */
};
/* Parse --bind and the peer URI for it; -1 with why: a startup error.
 * Without --bind, whether we dial a TCP peer ourselves (o->dial.on).
 */
extern int dial_setup (struct options *o, char *why, size_t whylen);
extern void dial_options_free (struct options *o);
extern void dial_init (struct dial *d);
extern void dial_free (struct dial *d);
/* Resolve, bind, connect.  0: in progress (wait for POLLOUT on d->fd),
 * 1: connected (dial_take), -1: failed (why).
 */
extern int dial_start (struct dial *d, const struct options *o,
                       char *why, size_t whylen);
/* After poll: 0, 1, -1 as dial_start (the next address is tried). */
extern int dial_step (struct dial *d, const struct options *o,
                      char *why, size_t whylen);
extern int dial_take (struct dial *d);
/* The address being tried did not answer in time: 0, 1, -1 as
 * dial_start (the next address is tried).
 */
extern int dial_expired (struct dial *d, const struct options *o,
                         char *why, size_t whylen);

/* One NBD command in flight: its completion callback fills this. */
struct stats;
struct op {
  bool busy;                     /* submitted, not yet completed */
  bool done;
  int err;                       /* errno of a failed completion */
  uint64_t reply_bytes;          /* counted into stats on completion */
  struct stats *st;
};

/* batch.c */
struct batch {
  struct batch *next;
  struct op op;
  struct wire_batch wb;
  uint8_t *buf;                  /* header + wire bytes */
  size_t cap;
  uint64_t last_epoch;           /* of last_seq */
  uint64_t end_lsn;              /* lsn after the last record */
  uint64_t no;                   /* batch number on this connection */
};
/* Fill b from the reader: records below limit, at most budget raw
 * bytes.  1: built, 0: nothing to ship, -1: error (why).
 */
extern int batch_build (struct batch *b, struct reader *r, uint64_t limit,
                        size_t budget, bool lz4, char *why, size_t whylen);
extern void batch_free (struct batch *b);

/* peer.c */
struct stats {
  uint64_t sent, received;       /* NBD protocol bytes on the link */
  uint64_t raw, wire;            /* record bytes shipped, and on the wire */
  uint64_t batches;
};

/* Ordered: code compares states (< PEER_WAIT: no HELLO read yet). */
enum peer_state {
  PEER_IDLE = 0,                 /* no handle */
  PEER_DIALING,                  /* --bind: our own TCP connect (dial.c) */
  PEER_CONNECTING,               /* libnbd connecting, NBD handshake */
  PEER_HELLO,                    /* reading HELLO */
  PEER_WAIT,                     /* CHAN_PEER sent: wait for SHIP */
  PEER_AUTH,                     /* AUTH or ADOPT CONTROL in flight */
  PEER_RESYNC,                   /* RESYNC CONTROL in flight */
  PEER_SHIPPING,
};

#define MAX_TELLS 8

/* A CHAN_SUMS_REQ waiting for a read slot. */
struct sums_req {
  uint64_t off, nblocks, shift, id;
};
/* A sums read in flight: libnbd reads into m.text, m is the answer. */
struct sums_read {
  struct op op;
  struct chan_msg m;
};

struct peer {
  struct nbd_handle *h;
  enum peer_state state;
  struct dial dial;              /* PEER_DIALING */
  uint64_t deadline_ms;          /* CONNECTING, HELLO */
  uint64_t last_reply_ms;        /* for REPLY_TIMEOUT_MS */
  uint64_t cseq, cepoch, clsn;   /* the CONNECT point */
  bool noscan;                   /* CHAN_CONNECT_NOSCAN */
  uint32_t conn_id;              /* the CONNECT's, echoed in its PEER */
  uint8_t hello_buf[WIRE_MSG_SIZE];
  struct op hello_op;
  struct wire_hello hello;
  uint8_t ctl_buf[WIRE_MSG_SIZE];
  struct op ctl_op;
  uint32_t ctl_type;             /* of the CONTROL in flight */
  uint64_t ctl_tell_id;          /* ... and the TELL it carries out */
  struct { uint32_t type; uint64_t seq, id; } tells[MAX_TELLS];
  unsigned ntells;               /* queued CHAN_TELLs */
  bool resync;                   /* SHIP asked for a RESYNC CONTROL */
  uint64_t resync_seq, resync_epoch;
  uint32_t resync_flags;
  struct sums_req sums_q[SUMS_OUTSTANDING_MAX]; /* a ring, oldest first */
  unsigned sums_first, sums_queued;
  struct sums_read *sums[MAX_INFLIGHT_SUMS]; /* NULL: a free slot */
  unsigned sums_inflight;
  struct reader rd;              /* shipping position */
  struct batch *head, *tail;     /* in flight, oldest first */
  unsigned inflight;
  uint64_t raw_inflight;
  uint64_t batch_no;
};

/* The whole daemon. */
struct repl {
  const struct options *opt;
  struct chanc ch;
  struct rlog *log;
  char *log_path;                /* from CONFIG */
  char log_err[REPL_TEXT_MAX];   /* why the log could not be opened */
  bool written_known;            /* a WRITTEN since attach/RESET */
  uint64_t written_lsn;          /* the log may be read below this */
  struct peer peer;
  struct stats st;
  uint64_t next_stats_ms;
};

extern void peer_init (struct peer *p);
extern void peer_close (struct repl *r);
extern void peer_linkdown (struct repl *r, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));
extern void peer_connect (struct repl *r, uint64_t seq, uint64_t epoch,
                          uint64_t lsn, bool noscan, uint32_t conn_id);
/* how: CHAN_SHIP_* bits; resync_flags: the RESYNC CONTROL's flags. */
extern void peer_ship (struct repl *r, uint64_t seq, uint64_t epoch,
                       uint64_t lsn, uint64_t how, uint64_t resync_flags);
extern void peer_tell (struct repl *r, uint32_t type, uint64_t seq,
                       uint64_t id);
/* Before poll: the fd and events to wait for (fd -1: none). */
extern int peer_pollfd (struct repl *r, short *events);
/* After poll: the revents of that fd. */
extern void peer_notify (struct repl *r, short revents);
/* Advance: handshake steps, completions, acks, shipping. */
extern void peer_progress (struct repl *r);
/* Anything awaiting a reply from the peer (for REPLY_TIMEOUT_MS). */
extern bool peer_busy (const struct peer *p);
extern nbd_completion_callback op_arm (struct op *op, struct stats *st,
                                       uint64_t reply_bytes);

/* sums.c: the peer's block sums, read for the filter (CHAN_SUMS_REQ). */
extern void sums_request (struct repl *r, const struct chan_msg *m);
/* In SHIPPING: answer the completed reads, start queued ones.  -1: the
 * link went down.
 */
extern int sums_progress (struct repl *r);
/* The handle is closed: answer everything ENOTCONN, free the reads. */
extern void sums_drop (struct repl *r);

/* session.c */
extern void session_frame (void *opaque, const struct chan_msg *m);
extern void session_attached (struct repl *r);
extern void session_detach (struct repl *r);
extern void session_tick (struct repl *r);

/* tlsprefs.c: AES-GCM for the peer's TLS (may execute us again). */
extern void tls_prefer_aes (char **argv);
extern bool tls_aes_preferred (void);

#endif /* REPLICATOR_H */
