/* nbd-replica: the primary's replication state, shared by repl.c (the
 * channel and the link thread) and repl-gate.c (sync writers, the log's
 * tail, the sync engine's calls, status).  Internal to those two files.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#ifndef REPLICA_REPL_INT_H
#define REPLICA_REPL_INT_H

#include <stdint.h>
#include <stdbool.h>
#include <pthread.h>

#include "chan.h"
#include "link.h"

#define TICK_MS        100
#define OUTBOX_MAX     (1024 * 1024)

struct mark {
  uint64_t last_seq, lsn_end, t_ns;
  uint32_t nrecs;
};

struct point { uint64_t seq, epoch, lsn; };

struct repl_state {
  pthread_mutex_t lock;         /* everything below */
  pthread_cond_t acked_cond;    /* sync writers */
  struct link link;
  struct point acked;           /* the peer holds everything up to here */
  struct point written;         /* the log is written up to here */
  struct point durable;         /* ... and durable up to here */
  struct point sent;            /* WRITTEN point the replicator knows */
  uint64_t tell_id;             /* of the last TELL sent, */
  uint64_t tell_id_of[2];       /* ... of the last OUTDATED, UPTODATE */
  bool ack_fence;               /* after RESET: ACKs are stale until the
                                 * next handshake (frames are ordered) */
  uint32_t conn_id;             /* of the last CONNECT, echoed in its PEER;
                                 * bumped by a RESET or a DISCONNECT too,
                                 * which void the PEER under way */
  bool bitmap_resume;           /* the last pass started was a bitmap
                                 * pass (link_local.bitmap_resume) */
  bool unclamped;               /* the dirty bitmap covers what the peer
                                 * lacks: checkpoints ignore the acked
                                 * point (bitmap.c) */
  struct mark *marks;           /* ring of unacknowledged batches */
  size_t mcap, mhead, mlen;
  uint64_t lag_records;
  int fd;                       /* channel, -1 if no replicator */
  uint8_t *outbox;              /* unsent frame bytes (fd nonblocking) */
  size_t outlen;
  uint8_t inbuf[CHAN_HDR_SIZE + CHAN_TEXT_MAX];
  size_t inlen;
  int wake[2];                  /* pipe: wakes the link thread */
  pthread_t thread;
  bool running, stopping;
  uint8_t uuid[16];
  uint64_t backing_size;
  /* What the replicator reported. */
  long pid;
  char peer_uri[256];
  uint64_t link_sent, link_recv, raw_shipped, wire_shipped, batches;
  uint64_t peer_durable;        /* its HELLO */
  uint64_t handshakes, link_errors;
};
extern struct repl_state R;

/* repl.c: helpers for repl-gate.c (R.lock held unless said). */
extern uint64_t now_ms (void);                  /* (no lock needed) */
extern unsigned step (enum link_event_type type, uint64_t seq,
                      const struct link_peer *peer);
extern void do_actions (unsigned act, const struct chan_msg *peer);
extern void send_frame (uint16_t type, uint64_t a, uint64_t b, uint64_t c,
                        uint64_t d, const char *text);
extern void send_written (void);
extern struct mark *mark_first (void);

#endif /* REPLICA_REPL_INT_H */
