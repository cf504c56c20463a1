/* nbd-replicator: the NBD connection to the secondary (common/wire.h).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * States (enum peer_state), each entered on the filter's word:
 *
 *   IDLE --CONNECT--> [DIALING --connected-->] CONNECTING --ready-->
 *   HELLO --read--> WAIT --SHIP--> AUTH --CONTROL ok--> [RESYNC
 *   --CONTROL ok-->] SHIPPING
 *
 * DIALING only with our own TCP connect (dial.c: --bind, or a TCP peer
 * with a PSK or plaintext; handed to libnbd); RESYNC only if the SHIP
 * asked for it (CHAN_SHIP_RESYNC).
 *
 * Any failure in any state closes the handle, drops what is in flight
 * and reports CHAN_LINKDOWN with one line; back to IDLE, waiting for
 * the next CONNECT.  DISCONNECT and RESET also go back to IDLE.
 *
 * Everything is asynchronous on one libnbd handle driven by the main
 * poll loop (nbd_aio_get_fd/get_direction, nbd_aio_notify_*).
 * Completion callbacks only record the result in a struct op (libnbd
 * forbids calling it on the same handle from a callback); peer_progress
 * acts on them.  nbd_close does not return before libnbd is done with
 * every callback, so a batch's buffer is freed only after that.
 *
 * CONTROL messages all use the one 4 KiB CONTROL offset, so at most one
 * is in flight: overlapping writes to one offset have no order.  The
 * authentication (AUTH, or ADOPT with the secret), and the RESYNC
 * CONTROL if asked for, complete before any batch, sums read or
 * CHAN_TELL's CONTROL is sent: a TELL that arrives before waits (an
 * unpaired secondary could not check its MAC anyway), and a batch must
 * not reach the peer before the RESYNC that says what it follows.
 *
 * Batches go to distinct slots (batch number modulo WIRE_BATCH_SLOTS,
 * far more than may be in flight), up to MAX_INFLIGHT_BATCHES /
 * MAX_INFLIGHT_RAW.  The secondary acknowledges a batch by completing
 * its write once the records are durable there; acks to the filter are
 * cumulative, so only the completed prefix of the in-flight list is
 * acknowledged, in order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <stdarg.h>
#include <string.h>
#include <inttypes.h>
#include <errno.h>
#include <poll.h>
#include <unistd.h>

#include "replicator.h"

_Static_assert (RLOG_SECRET_SIZE == WIRE_SECRET_SIZE, "pair secret size");

/* Byte counters (CHAN_STATS a and b).  libnbd 1.14 has no counters of
 * its own, so we count the NBD transmission-phase protocol bytes
 * ourselves: a request header is NBD_REQUEST_HDR (28) bytes (+ the
 * payload of a write), a simple reply NBD_REPLY_HDR (16) bytes (+ the
 * data of a read), for batches, CONTROLs, HELLO and sums reads alike.
 * The handle asks for simple replies (nbd_set_request_structured_replies
 * false), so these are the exact bytes exchanged; not counted: the
 * handshake, TLS record overhead, TCP/IP headers.
 */

static int
op_complete (void *user_data, int *error)
{
  struct op *op = user_data;

  op->busy = false;
  op->done = true;
  op->err = *error;
  if (*error == 0 && op->st)
    op->st->received += op->reply_bytes;
  return 1;                     /* retire the command */
}

nbd_completion_callback
op_arm (struct op *op, struct stats *st, uint64_t reply_bytes)
{
  op->busy = true;
  op->done = false;
  op->err = 0;
  op->st = st;
  op->reply_bytes = reply_bytes;
  return (nbd_completion_callback) { .callback = op_complete,
                                     .user_data = op };
}

void
peer_init (struct peer *p)
{
  memset (p, 0, sizeof *p);
  dial_init (&p->dial);
}

bool
peer_busy (const struct peer *p)
{
  return p->inflight > 0 || p->ctl_op.busy || p->sums_inflight > 0 ||
    p->hello_op.busy;
}

void
peer_close (struct repl *r)
{
  struct peer *p = &r->peer;
  struct batch *b, *next;

  /* Close first: afterwards no callback touches the ops, batches or
   * sums reads.  A healthy connection is told first (NBD_CMD_DISC, sent
   * now if the socket takes it; never waited for), so the peer sees a
   * clean end.
   */
  if (p->h) {
    if (nbd_aio_is_ready (p->h) || nbd_aio_is_processing (p->h))
      nbd_aio_disconnect (p->h, 0);
    nbd_close (p->h);
    p->h = NULL;
  }
  dial_free (&p->dial);
  for (b = p->head; b; b = next) {
    next = b->next;
    batch_free (b);
  }
  sums_drop (r);
  reader_stop (&p->rd);
  peer_init (p);
}

void
peer_linkdown (struct repl *r, const char *fmt, ...)
{
  char why[REPL_TEXT_MAX];
  va_list ap;

  /* Format first: the text may come from nbd_get_error (). */
  va_start (ap, fmt);
  vsnprintf (why, sizeof why, fmt, ap);
  va_end (ap);
  peer_close (r);
  msg ("link down: %s", why);
  chanc_sendf (&r->ch, CHAN_LINKDOWN, 0, 0, 0, 0, 0, why);
}

static void
nbd_failed (struct repl *r, const char *what)
{
  const char *e = nbd_get_error ();

  /* libnbd's messages start with the name of the call that failed. */
  if (what)
    peer_linkdown (r, "%s: %s", what, e ? e : "unknown libnbd error");
  else
    peer_linkdown (r, "%s", e ? e : "unknown libnbd error");
}

/* The handle's settings.  With libnbd's connect, nbd_aio_connect_uri
 * adds what the URI says; with ours, we add that ourselves (dial.c).
 */
static int
configure (struct repl *r, struct nbd_handle *h)
{
  const struct options *o = r->opt;

  /* TLS: fail closed.  Only a plaintext URI with --insecure disables
   * it (LIBNBD_TLS_ALLOW could fall back to plaintext silently).
   */
  if (nbd_set_tls (h, o->peer_plain ? LIBNBD_TLS_DISABLE
                   : LIBNBD_TLS_REQUIRE) == -1 ||
      (!o->insecure &&
       nbd_set_uri_allow_tls (h, LIBNBD_TLS_REQUIRE) == -1) ||
      nbd_set_uri_allow_local_file (h, true) == -1 ||
      (o->tls_psk && nbd_set_tls_psk_file (h, o->tls_psk) == -1) ||
      (o->tls_username && nbd_set_tls_username (h, o->tls_username) == -1) ||
      (o->tls_certificates &&
       nbd_set_tls_certificates (h, o->tls_certificates) == -1) ||
      nbd_set_request_structured_replies (h, false) == -1)
    return -1;
  if (!o->dial.on)
    return 0;
  /* What nbd_aio_connect_uri would set from the URI, after the options
   * (so, as there, the URI's tls-psk-file wins).  The URI's path is
   * always the replication export (uri_rewrite).
   */
  if (nbd_set_export_name (h, WIRE_EXPORT_NAME) == -1 ||
      (o->dial.peer.user &&
       nbd_set_tls_username (h, o->dial.peer.user) == -1) ||
      (o->dial.peer.uri_psk &&
       nbd_set_tls_psk_file (h, o->dial.peer.uri_psk) == -1))
    return -1;
  return 0;
}

/* Our connect is through; libnbd takes the socket over. */
static void
dialed (struct repl *r)
{
  struct peer *p = &r->peer;
  int fd = dial_take (&p->dial);

  dbg ("connected to %s%s%s", p->dial.target, r->opt->bind ? " from " : "",
       r->opt->bind ? r->opt->bind : "");
  /* Each address had its own time; TLS and the HELLO get theirs. */
  p->deadline_ms = now_ms () + CONNECT_TIMEOUT_MS;
  if (nbd_aio_connect_socket (p->h, fd) == -1) {
    /* Not ours to close: libnbd owns the socket from the call on, and
     * closes it itself when the call fails (lib/connect.c); closing it
     * here again could close a descriptor opened meanwhile.
     */
    nbd_failed (r, "connect");
    return;
  }
  p->state = PEER_CONNECTING;
}

/* dial_start or dial_step said ret. */
static void
dial_result (struct repl *r, int ret, const char *why)
{
  if (ret == 1)
    dialed (r);
  else if (ret == -1)
    peer_linkdown (r, "%s", why);
}

void
peer_connect (struct repl *r, uint64_t seq, uint64_t epoch, uint64_t lsn,
              bool noscan, uint32_t conn_id)
{
  const struct options *o = r->opt;
  struct peer *p = &r->peer;
  char why[REPL_TEXT_MAX];

  peer_close (r);
  p->cseq = seq;
  p->cepoch = epoch;
  p->clsn = lsn;
  p->noscan = noscan;
  p->conn_id = conn_id;
  if (!r->log) {
    peer_linkdown (r, "no log configured yet");
    return;
  }
  p->h = nbd_create ();
  if (!p->h) {
    nbd_failed (r, "nbd_create");
    return;
  }
  if (configure (r, p->h) == -1) {
    nbd_failed (r, "configuring the connection");
    return;
  }
  dbg ("connecting to %s%s%s (after seq %" PRIu64 " epoch %" PRIu64
       " lsn %" PRIu64 ")", o->peer_uri_rw, o->bind ? " from " : "",
       o->bind ? o->bind : "", seq, epoch, lsn);
  /* One deadline for the TCP connect, TLS, NBD handshake and HELLO. */
  p->deadline_ms = now_ms () + CONNECT_TIMEOUT_MS;
  if (o->dial.on) {
    int ret = dial_start (&p->dial, o, why, sizeof why);

    p->state = PEER_DIALING;
    dial_result (r, ret, why);
    return;
  }
  /* Sets the export name from the rewritten path. */
  if (nbd_aio_connect_uri (p->h, o->peer_uri_rw) == -1) {
    nbd_failed (r, "connect");
    return;
  }
  p->state = PEER_CONNECTING;
}

/* Connected: check what we are talking to, then read its HELLO. */
static void
connected (struct repl *r)
{
  struct peer *p = &r->peer;
  int64_t size;

  if (!r->opt->insecure && nbd_get_tls_negotiated (p->h) != 1) {
    peer_linkdown (r, "TLS was not negotiated with the peer");
    return;
  }
  size = nbd_get_size (p->h);
  if (size == -1) {
    nbd_failed (r, "nbd_get_size");
    return;
  }
  /* Before HELLO: a clearer message for a wrong export than the
   * HELLO's bad magic.
   */
  if ((uint64_t) size != WIRE_EXPORT_SIZE) {
    peer_linkdown (r, "peer is not a replica secondary export "
                   "(size %" PRIi64 ", expected %llu)", size,
                   (unsigned long long) WIRE_EXPORT_SIZE);
    return;
  }
  if (nbd_aio_pread (p->h, p->hello_buf, WIRE_MSG_SIZE, WIRE_HELLO_OFFSET,
                     op_arm (&p->hello_op, &r->st,
                             NBD_REPLY_HDR + WIRE_MSG_SIZE), 0) == -1) {
    p->hello_op.busy = false;
    nbd_failed (r, "reading HELLO");
    return;
  }
  r->st.sent += NBD_REQUEST_HDR;
  p->state = PEER_HELLO;
  p->last_reply_ms = now_ms ();
}

/* HELLO read: locate the peer's durable point in our log, report it. */
static void
got_hello (struct repl *r)
{
  struct peer *p = &r->peer;
  struct wire_hello *hl = &p->hello;
  enum wire_err e;
  unsigned flags = 0;
  uint64_t resume = 0;
  struct chan_msg m;
  char why[512];

  if (p->hello_op.err) {
    peer_linkdown (r, "reading HELLO: %s", strerror (p->hello_op.err));
    return;
  }
  e = wire_hello_decode (p->hello_buf, WIRE_MSG_SIZE, hl);
  if (e != WIRE_OK) {
    peer_linkdown (r, "bad HELLO from the peer: %s", wire_strerror (e));
    return;
  }
  if (hl->flags & WIRE_HELLO_PAIRED)
    flags |= CHAN_PEER_PAIRED;
  if (hl->flags & WIRE_HELLO_OUTDATED)
    flags |= CHAN_PEER_OUTDATED;
  if (hl->flags & WIRE_HELLO_RESYNC)
    flags |= CHAN_PEER_RESYNC;
  if (hl->flags & WIRE_HELLO_STAGING)
    flags |= CHAN_PEER_STAGING;
  if (hl->flags & WIRE_HELLO_FOREIGN)
    flags |= CHAN_PEER_FOREIGN;

  if (hl->durable_seq < p->cseq)
    flags |= CHAN_PEER_BEHIND;
  else if (hl->durable_seq == p->cseq) {
    if (hl->durable_epoch == p->cepoch || p->cseq == 0) {
      flags |= CHAN_PEER_KNOWN;
      resume = p->clsn;
    }
  }
  else if (hl->flags & WIRE_HELLO_RESYNC) {
    /* To be resynced anyway: not looked for, not KNOWN. */
  }
  else {
    char err[RLOG_ERRLEN];
    int ret;

    if (rlog_sb_reload (r->log, err) == -1) {
      peer_linkdown (r, "local log unreadable: %s", err);
      return;
    }
    ret = reader_locate (r->log, p->cseq, p->cepoch, p->clsn,
                         r->written_lsn, hl->durable_seq, hl->durable_epoch,
                         &resume, why, sizeof why);
    /* With NOSCAN our log may no longer hold the records after the
     * CONNECT point (the filter's dirty bitmap covers them): what is
     * found by the continuity rule is ours, what is not is not KNOWN,
     * and an unreadable spot is no error.
     */
    if (ret == -1 && !p->noscan) {
      peer_linkdown (r, "%s", why);
      return;
    }
    if (ret == 1)
      flags |= CHAN_PEER_KNOWN;
  }
  msg ("peer: role %s%s%s%s%s%s, durable seq %" PRIu64 " epoch %" PRIu64
       ", applied seq %" PRIu64 "%s",
       rlog_role_name (hl->role),
       hl->flags & WIRE_HELLO_PAIRED ? ", paired" : ", unpaired",
       hl->flags & WIRE_HELLO_OUTDATED ? ", outdated" : "",
       hl->flags & WIRE_HELLO_RESYNC ? ", needs a resync" : "",
       hl->flags & WIRE_HELLO_STAGING ? ", staging a resync" : "",
       hl->flags & WIRE_HELLO_FOREIGN ? ", holds writes of its own" : "",
       hl->durable_seq, hl->durable_epoch, hl->applied_seq,
       flags & CHAN_PEER_BEHIND ? ", behind the acknowledged point"
       : flags & CHAN_PEER_KNOWN ? "" : ", not in our log after the "
       "acknowledged point");
  chan_msg_init (&m, CHAN_PEER, hl->durable_seq, hl->durable_epoch,
                 hl->backing_size,
                 hl->role | (flags << 8) | ((uint64_t) p->conn_id << 32),
                 resume, NULL);
  memcpy (m.text, hl->volume_uuid, 16);
  m.text_len = 16;
  chanc_send (&r->ch, &m);
  p->state = PEER_WAIT;
}

/* Submit one CONTROL; the caller made sure none is in flight. */
static int
send_control (struct repl *r, uint32_t type, uint64_t seq, uint64_t epoch,
              uint32_t flags)
{
  struct peer *p = &r->peer;
  const struct rlog_sb *sb = &r->log->sb;
  struct wire_control c;

  memset (&c, 0, sizeof c);
  c.type = type;
  memcpy (c.volume_uuid, sb->volume_uuid, 16);
  c.backing_size = sb->backing_size;
  c.seq = seq;
  c.epoch = epoch;
  c.flags = flags;
  if (type == WIRE_CTL_ADOPT)
    memcpy (c.secret, sb->pair_secret, WIRE_SECRET_SIZE);
  if (wire_control_mac (&c, p->hello.nonce, sb->pair_secret, c.mac) == -1) {
    peer_linkdown (r, "cannot compute the CONTROL MAC");
    return -1;
  }
  wire_control_encode (&c, p->ctl_buf);
  if (!peer_busy (p))
    p->last_reply_ms = now_ms ();
  if (nbd_aio_pwrite (p->h, p->ctl_buf, WIRE_MSG_SIZE, WIRE_CONTROL_OFFSET,
                      op_arm (&p->ctl_op, &r->st, NBD_REPLY_HDR), 0) == -1) {
    p->ctl_op.busy = false;
    nbd_failed (r, "sending CONTROL");
    return -1;
  }
  r->st.sent += NBD_REQUEST_HDR + WIRE_MSG_SIZE;
  p->ctl_type = type;
  return 0;
}

void
peer_ship (struct repl *r, uint64_t seq, uint64_t epoch, uint64_t lsn,
           uint64_t how, uint64_t resync_flags)
{
  struct peer *p = &r->peer;
  bool adopt = how & CHAN_SHIP_ADOPT;

  if (p->state != PEER_WAIT) {
    /* Crossed with our LINKDOWN (which the filter will see). */
    dbg ("SHIP ignored: not waiting for it");
    return;
  }
  /* Refused rather than half done: the filter asked for something
   * this replicator does not know (a mismatched build).
   */
  if (how & ~(uint64_t) (CHAN_SHIP_ADOPT | CHAN_SHIP_RESYNC) ||
      resync_flags & ~(uint64_t) WIRE_RESYNC_STAGE) {
    peer_linkdown (r, "SHIP with unknown flags 0x%" PRIx64 " (resync 0x%"
                   PRIx64 ")", how, resync_flags);
    return;
  }
  p->resync = how & CHAN_SHIP_RESYNC;
  p->resync_seq = seq;
  p->resync_epoch = epoch;
  p->resync_flags = resync_flags;
  if (adopt)
    msg ("asking the peer to adopt our volume at seq %" PRIu64 " epoch %"
         PRIu64, seq, epoch);
  if (send_control (r, adopt ? WIRE_CTL_ADOPT : WIRE_CTL_AUTH,
                    adopt ? seq : 0, adopt ? epoch : 0,
                    adopt && p->resync &&
                    !(resync_flags & WIRE_RESYNC_STAGE)
                    ? WIRE_ADOPT_SYNC : 0) == -1)
    return;
  reader_start (&p->rd, r->log, lsn, seq, epoch);
  p->state = PEER_AUTH;
}

void
peer_tell (struct repl *r, uint32_t type, uint64_t seq, uint64_t id)
{
  struct peer *p = &r->peer;

  if (type != WIRE_CTL_OUTDATED && type != WIRE_CTL_UPTODATE) {
    msg ("TELL of unknown CONTROL type %" PRIu32 " ignored", type);
    return;
  }
  if (p->state < PEER_WAIT) {
    dbg ("TELL ignored: no peer connected");
    return;
  }
  if (p->ntells == MAX_TELLS)
    p->ntells--;                /* the newest word wins */
  p->tells[p->ntells].type = type;
  p->tells[p->ntells].seq = seq;
  p->tells[p->ntells].id = id;
  p->ntells++;
}

int
peer_pollfd (struct repl *r, short *events)
{
  struct peer *p = &r->peer;
  unsigned dir;
  int fd;

  *events = 0;
  if (p->state == PEER_DIALING) {
    *events = POLLOUT;          /* the nonblocking connect is done */
    return p->dial.fd;
  }
  if (!p->h || (fd = nbd_aio_get_fd (p->h)) == -1)
    return -1;
  dir = nbd_aio_get_direction (p->h);
  if (dir & LIBNBD_AIO_DIRECTION_READ)
    *events |= POLLIN;
  if (dir & LIBNBD_AIO_DIRECTION_WRITE)
    *events |= POLLOUT;
  return fd;
}

void
peer_notify (struct repl *r, short revents)
{
  struct peer *p = &r->peer;
  int ret = 0;

  if (!p->h)
    return;
  if (p->state == PEER_DIALING) {
    char why[REPL_TEXT_MAX];

    dial_result (r, dial_step (&p->dial, r->opt, why, sizeof why), why);
    return;
  }
  /* One notification per poll, as lib/poll.c: the first may change
   * the state the second was meant for.
   */
  if (revents & POLLIN)
    ret = nbd_aio_notify_read (p->h);
  else if (revents & POLLOUT)
    ret = nbd_aio_notify_write (p->h);
  else if (revents & (POLLERR | POLLHUP | POLLNVAL)) {
    peer_linkdown (r, "the peer closed the connection");
    return;
  }
  if (ret == -1)
    nbd_failed (r, NULL);
}

/* Pop the completed prefix of the batches; one cumulative ACK. */
static int
reap_batches (struct repl *r)
{
  struct peer *p = &r->peer;
  struct batch *b, *last = NULL;

  while ((b = p->head) && b->op.done && b->op.err == 0) {
    p->head = b->next;
    if (!p->head)
      p->tail = NULL;
    p->inflight--;
    p->raw_inflight -= b->wb.raw_len;
    p->last_reply_ms = now_ms ();
    batch_free (last);
    last = b;
  }
  if (last) {
    dbg ("ack: seq %" PRIu64 " epoch %" PRIu64 " lsn %" PRIu64,
         last->wb.last_seq, last->last_epoch, last->end_lsn);
    chanc_sendf (&r->ch, CHAN_ACK, last->wb.last_seq, last->last_epoch,
                 last->end_lsn, 0, 0, NULL);
    batch_free (last);
  }
  /* Completions come in any order: a later batch may be done before
   * an earlier one; only a failure ends the link.
   */
  for (b = p->head; b; b = b->next)
    if (b->op.done && b->op.err) {
      peer_linkdown (r, "batch of seq %" PRIu64 "..%" PRIu64 " failed: %s",
                     b->wb.first_seq, b->wb.last_seq, strerror (b->op.err));
      return -1;
    }
  return 0;
}

/* Ship what is written, within the pipeline limits. */
static void
ship (struct repl *r)
{
  struct peer *p = &r->peer;
  char why[512];

  while (p->inflight < MAX_INFLIGHT_BATCHES &&
         MAX_INFLIGHT_RAW - p->raw_inflight >= RLOG_MAX_REC_SIZE &&
         r->written_known && p->rd.lsn < r->written_lsn) {
    struct batch *b = calloc (1, sizeof *b);
    uint64_t slot;
    int ret;

    if (!b) {
      peer_linkdown (r, "calloc: %m");
      return;
    }
    ret = batch_build (b, &p->rd, r->written_lsn,
                       MAX_INFLIGHT_RAW - p->raw_inflight, r->opt->compress,
                       why, sizeof why);
    if (ret <= 0) {
      batch_free (b);
      if (ret == -1)
        peer_linkdown (r, "%s", why);
      return;
    }
    b->no = p->batch_no++;
    slot = b->no % WIRE_BATCH_SLOTS;
    if (!peer_busy (p))
      p->last_reply_ms = now_ms ();
    if (nbd_aio_pwrite (p->h, b->buf, WIRE_BATCH_HDR_SIZE + b->wb.wire_len,
                        WIRE_BATCH_BASE + slot * WIRE_BATCH_SLOT,
                        op_arm (&b->op, &r->st, NBD_REPLY_HDR), 0) == -1) {
      batch_free (b);
      nbd_failed (r, "sending a batch");
      return;
    }
    dbg ("batch %" PRIu64 " (slot %" PRIu64 "): seq %" PRIu64 "..%" PRIu64
         " (%" PRIu32 " records) after seq %" PRIu64 " epoch %" PRIu64
         ", %" PRIu32 " bytes raw, %" PRIu32 " on the wire%s, up to lsn %"
         PRIu64, b->no, slot, b->wb.first_seq, b->wb.last_seq, b->wb.count,
         b->wb.prev_seq, b->wb.prev_epoch, b->wb.raw_len, b->wb.wire_len,
         b->wb.flags & WIRE_BATCH_LZ4 ? " (lz4)" : "", b->end_lsn);
    if (p->tail)
      p->tail->next = b;
    else
      p->head = b;
    p->tail = b;
    p->inflight++;
    p->raw_inflight += b->wb.raw_len;
    r->st.sent += NBD_REQUEST_HDR + WIRE_BATCH_HDR_SIZE + b->wb.wire_len;
    r->st.raw += b->wb.raw_len;
    r->st.wire += b->wb.wire_len;
    r->st.batches++;
  }
}

/* The CONTROL in flight completed. */
static int
control_done (struct repl *r)
{
  struct peer *p = &r->peer;
  uint32_t type = p->ctl_type;

  p->ctl_op.done = false;
  p->last_reply_ms = now_ms ();
  if (p->ctl_op.err) {
    if (type == WIRE_CTL_AUTH || type == WIRE_CTL_ADOPT)
      peer_linkdown (r, "peer refused authentication: %s",
                     strerror (p->ctl_op.err));
    else if (type == WIRE_CTL_RESYNC)
      peer_linkdown (r, "peer refused the RESYNC after seq %" PRIu64
                     " epoch %" PRIu64 ": %s", p->resync_seq,
                     p->resync_epoch, strerror (p->ctl_op.err));
    else
      peer_linkdown (r, "peer refused CONTROL type %" PRIu32 ": %s", type,
                     strerror (p->ctl_op.err));
    return -1;
  }
  if ((type == WIRE_CTL_AUTH || type == WIRE_CTL_ADOPT) && p->resync) {
    /* Authenticated: now the RESYNC, still before any batch. */
    msg ("resync: the records continue after seq %" PRIu64 " epoch %"
         PRIu64 "%s", p->resync_seq, p->resync_epoch,
         p->resync_flags & WIRE_RESYNC_STAGE ? ", staged" : ", in place");
    if (send_control (r, WIRE_CTL_RESYNC, p->resync_seq, p->resync_epoch,
                      p->resync_flags) == -1)
      return -1;
    p->state = PEER_RESYNC;
  }
  else if (type == WIRE_CTL_AUTH || type == WIRE_CTL_ADOPT ||
           type == WIRE_CTL_RESYNC) {
    msg ("replicating to %s from seq %" PRIu64 " epoch %" PRIu64
         " (lsn %" PRIu64 ")%s%s", r->opt->peer_uri, p->rd.prev_seq,
         p->rd.prev_epoch, p->rd.lsn,
         type == WIRE_CTL_ADOPT ? ", peer adopted our volume" : "",
         type == WIRE_CTL_RESYNC ? ", resync started" : "");
    p->state = PEER_SHIPPING;
  }
  else {
    dbg ("peer recorded CONTROL type %" PRIu32, type);
    chanc_sendf (&r->ch, CHAN_TOLD, type, p->ctl_tell_id, 0, 0, 0, NULL);
  }
  return 0;
}

/* The heartbeat's HELLO must still be a secondary's: an idle link to a
 * node promoted meanwhile would otherwise stay "replicating" (and a
 * verify compare against it) until the next batch is refused.
 */
static int
heartbeat_check (struct repl *r)
{
  struct peer *p = &r->peer;
  struct wire_hello now;
  enum wire_err e = wire_hello_decode (p->hello_buf, WIRE_MSG_SIZE, &now);

  if (e != WIRE_OK) {
    peer_linkdown (r, "heartbeat: bad HELLO from the peer: %s",
                   wire_strerror (e));
    return -1;
  }
  if (now.role != RLOG_ROLE_SECONDARY) {
    peer_linkdown (r, "heartbeat: the peer is no longer a secondary "
                   "(role %s)", rlog_role_name (now.role));
    return -1;
  }
  return 0;
}

/* While shipping: the answer to the last heartbeat, and a new one
 * after HEARTBEAT_MS without any request (replicator.h says why).  It
 * reads the HELLO into the buffer of the handshake's, which is over.
 * -1: the link went down.
 */
static int
heartbeat (struct repl *r)
{
  struct peer *p = &r->peer;
  uint64_t now = now_ms ();

  if (p->hello_op.done) {
    p->hello_op.done = false;
    p->last_reply_ms = now;
    if (p->hello_op.err) {
      peer_linkdown (r, "heartbeat (reading HELLO): %s",
                     strerror (p->hello_op.err));
      return -1;
    }
    if (heartbeat_check (r) == -1)
      return -1;
  }
  if (peer_busy (p) || now - p->last_reply_ms < HEARTBEAT_MS)
    return 0;
  if (nbd_aio_pread (p->h, p->hello_buf, WIRE_MSG_SIZE, WIRE_HELLO_OFFSET,
                     op_arm (&p->hello_op, &r->st,
                             NBD_REPLY_HDR + WIRE_MSG_SIZE), 0) == -1) {
    p->hello_op.busy = false;
    nbd_failed (r, "heartbeat (reading HELLO)");
    return -1;
  }
  r->st.sent += NBD_REQUEST_HDR;
  p->last_reply_ms = now;
  return 0;
}

void
peer_progress (struct repl *r)
{
  struct peer *p = &r->peer;
  uint64_t now;

  if (!p->h)
    return;
  now = now_ms ();
  if (nbd_aio_is_closed (p->h)) {
    peer_linkdown (r, "the peer closed the connection");
    return;
  }
  if (nbd_aio_is_dead (p->h)) {
    nbd_failed (r, "connection lost");
    return;
  }

  switch (p->state) {
  case PEER_IDLE:
    return;
  case PEER_DIALING:
    if (now >= p->dial.deadline_ms) {
      char why[REPL_TEXT_MAX];

      dial_result (r, dial_expired (&p->dial, r->opt, why, sizeof why), why);
    }
    return;
  case PEER_CONNECTING:
    if (nbd_aio_is_ready (p->h))
      connected (r);
    else if (now >= p->deadline_ms)
      peer_linkdown (r, "connect timed out");
    return;
  case PEER_HELLO:
    if (p->hello_op.done)
      got_hello (r);
    else if (now >= p->deadline_ms)
      peer_linkdown (r, "connect timed out (no HELLO from the peer)");
    return;
  case PEER_WAIT:
    return;
  case PEER_AUTH:
  case PEER_RESYNC:
  case PEER_SHIPPING:
    break;
  }

  if (p->ctl_op.done && control_done (r) == -1)
    return;
  if (p->state != PEER_SHIPPING)
    goto timeout;
  if (reap_batches (r) == -1)
    return;
  /* Sums reads before new batches: their own window, never behind a
   * round of batches (sums.c).
   */
  if (sums_progress (r) == -1)
    return;
  /* Not over a completed CONTROL whose result is still unread (one
   * that completed inside sums_progress's submissions): op_arm would
   * wipe it, and its CHAN_TOLD or refusal would be lost.
   */
  if (!p->ctl_op.busy && !p->ctl_op.done && p->ntells > 0) {
    uint32_t type = p->tells[0].type;
    uint64_t seq = p->tells[0].seq;

    p->ctl_tell_id = p->tells[0].id;
    memmove (p->tells, p->tells + 1, --p->ntells * sizeof p->tells[0]);
    dbg ("telling the peer CONTROL type %" PRIu32 " seq %" PRIu64, type, seq);
    if (send_control (r, type, seq, 0, 0) == -1)
      return;
  }
  ship (r);
  if (!p->h || heartbeat (r) == -1)
    return;

 timeout:
  if (peer_busy (p) && now_ms () - p->last_reply_ms >= REPLY_TIMEOUT_MS)
    peer_linkdown (r, "the peer did not reply for %d s",
                   REPLY_TIMEOUT_MS / 1000);
}
