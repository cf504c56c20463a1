/* nbd-replica: the role/link state machine (pure: no I/O, no clock).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * Decides, from events, what the replication link is doing and what the
 * I/O code must do next.  The caller feeds events with the current
 * monotonic time; link_step returns a set of actions.  Nothing here
 * exits or blocks: a peer error is an event that changes state.
 * docs/design.md "Role and link state machine" draws the transitions;
 * keep the two in step.
 */
#ifndef REPLICA_LINK_H
#define REPLICA_LINK_H

#include <stdint.h>
#include <stdbool.h>

enum link_state {
  LINK_STANDALONE = 0,   /* primary without a peer, or a secondary */
  LINK_CONNECTING,       /* connecting and handshaking */
  LINK_REPLICATING,      /* handshake done: shipping records */
  LINK_DISCONNECTED,     /* lost the peer: retry after a backoff */
  LINK_REFUSED,          /* the peer is wrong (volume, size, split brain,
                          * diverged): retried slowly, needs an admin */
};

enum link_mode { LINK_SYNC = 0, LINK_ASYNC };

/* What a sync-mode primary does when the peer cannot acknowledge. */
enum link_sync_policy {
  LINK_SYNC_DEGRADE = 0, /* after sync_timeout, ack locally (async) and
                          * mark the peer outdated: the default */
  LINK_SYNC_WAIT,        /* writes wait for the peer, indefinitely */
};

/* What the peer said about itself at handshake. */
struct link_peer {
  uint8_t volume_uuid[16];
  bool paired;           /* its log belongs to a volume already */
  unsigned role;         /* enum rlog_role */
  uint64_t backing_size;
  uint64_t durable_seq;  /* its last durable record */
  bool seq_known;        /* durable_seq is a seq of our own log history
                          * (checked by the caller, who has the log) */
  bool behind;           /* durable_seq is before the point the peer
                          * acknowledged: it lost acknowledged records */
  bool needs_resync;     /* it says a resync must run first (one was
                          * interrupted, or it was demoted) */
  bool foreign;          /* its disk may hold writes of its own (it was
                          * demoted): never a bitmap-only pass */
};

/* How a new partnership starts (replica-initial-sync). */
enum link_initial_sync {
  LINK_INITIAL_CHECKSUM = 0, /* compare block sums, send what differs */
  LINK_INITIAL_FULL,         /* send every block */
  LINK_INITIAL_NONE,         /* the admin vouches that the disks match */
};

/* Our side, as the caller knows it at handshake. */
struct link_local {
  uint8_t volume_uuid[16];
  uint64_t backing_size;
  uint64_t head_seq;     /* our last durable record */
  uint64_t acked_seq;    /* the peer holds everything up to here (an
                          * unpaired peer adopts the volume as of it) */
  enum link_initial_sync initial_sync;
  bool bitmap;           /* our dirty bitmap holds blocks the peer may
                          * lack (its log records were freed) */
  bool bitmap_resume;    /* the resync the peer may say it needs is a
                          * bitmap pass of ours, interrupted */
};

enum link_verdict {
  LINK_PEER_OK = 0,      /* resume shipping after peer.durable_seq */
  LINK_PEER_ADOPT,       /* an unpaired secondary: it takes our UUID */
  LINK_PEER_WRONG_VOLUME,
  LINK_PEER_WRONG_SIZE,
  LINK_PEER_SPLIT_BRAIN, /* the peer is a primary too */
  LINK_PEER_DIVERGED,    /* the peer holds records we do not */
  LINK_PEER_BEHIND,      /* the peer lost records it acknowledged */
  LINK_PEER_RESYNC,      /* our volume, but not a known prefix of our
                          * history (behind, diverged, or it says so):
                          * resync it by checksums */
};

enum link_event_type {
  LINK_EV_TICK,          /* time passed */
  LINK_EV_PEER_SET,      /* a peer is configured (start connecting) */
  LINK_EV_HANDSHAKE,     /* connected; peer described in ev.peer */
  LINK_EV_IO_ERROR,      /* connect failed or the link broke */
  LINK_EV_ACK,           /* the peer made everything <= ev.seq durable */
  LINK_EV_WRITE_WAITING, /* a sync write waits for seq ev.seq */
  LINK_EV_SET_MODE,      /* admin: ev.mode */
  LINK_EV_OUTDATED_TOLD, /* the peer recorded that it is outdated */
  LINK_EV_UPTODATE_TOLD, /* the peer recorded that it caught up */
};

struct link_event {
  enum link_event_type type;
  uint64_t now_ms;       /* monotonic */
  uint64_t seq;
  enum link_mode mode;
  struct link_peer peer;
  struct link_local local;
};

/* Actions, a bit set. */
#define LINK_ACT_CONNECT        0x01 /* start connecting now */
#define LINK_ACT_DISCONNECT     0x02 /* drop the connection */
#define LINK_ACT_SHIP           0x04 /* ship records after acked_seq */
#define LINK_ACT_RELEASE_WRITES 0x08 /* sync waiters may reply now */
#define LINK_ACT_TELL_OUTDATED  0x10 /* tell the peer it is outdated */
#define LINK_ACT_ADOPT          0x20 /* have the peer adopt our UUID */
#define LINK_ACT_LOG            0x40 /* report link.reason (changed) */
#define LINK_ACT_TELL_UPTODATE  0x80 /* tell the peer it caught up */
#define LINK_ACT_RESYNC         0x100 /* a sync pass starts with the
                                       * shipping (link.sync says which) */

#define LINK_BACKOFF_MIN_MS     100
#define LINK_BACKOFF_MAX_MS     10000
#define LINK_REFUSED_RETRY_MS   30000
#define LINK_SYNC_TIMEOUT_MS    10000

struct link {
  enum link_state state;
  enum link_mode mode;           /* configured */
  enum link_sync_policy policy;
  uint64_t sync_timeout_ms;
  bool degraded;                 /* sync acting as async (peer outdated) */
  bool peer_outdated;            /* the peer must not be promoted */
  bool tell_outdated;            /* ... and has not been told yet */
  bool tell_uptodate;            /* caught up again, not told yet */
  uint64_t acked_seq;            /* the peer's last durable seq */
  uint64_t backoff_ms;
  uint64_t retry_at_ms;          /* when DISCONNECTED/REFUSED: next try */
  uint64_t waiting_since_ms;     /* oldest sync write waiting, or 0 */
  uint64_t waiting_seq;          /* the highest seq a sync write awaits */
  enum link_verdict verdict;     /* of the last handshake */
  /* Seqs in (hold_from, hold_to] reach the peer only through a sync
   * pass (the dirty bitmap covers them, their records were not
   * shipped): in sync mode their writes wait for the pass's end.
   */
  bool hold;
  uint64_t hold_from, hold_to;
  /* Of the last LINK_ACT_RESYNC: */
  bool sync_full;                /* send every block, no checksums */
  bool sync_stage;               /* ask the peer to keep its image */
  bool sync_initial;             /* an adopting peer's initial sync */
  bool sync_bitmap;              /* only the dirty bitmap's blocks */
  char sync_why[160];            /* why the peer needs it */
  char reason[160];              /* last error, for status and the log */
};

extern void link_init (struct link *l, enum link_mode mode,
                       enum link_sync_policy policy, uint64_t sync_timeout_ms);
extern unsigned link_step (struct link *l, const struct link_event *ev);

/* May a write whose record is seq reply now (its record is durable
 * locally)?  In async mode, or degraded sync, yes; in sync mode only
 * once the peer acknowledged it.
 */
extern bool link_may_ack (const struct link *l, uint64_t seq);
/* Does the peer record, or may it still record, that it is outdated?
 * True from the degrade until it confirms "up to date" (status
 * peer_outdated; wait-synced waits for it to be false: until then a
 * promote there needs --force).
 */
extern bool link_peer_outdated (const struct link *l);

/* Shipping resumes after to although the peer holds only from: hold
 * the acknowledgement of the seqs between until link_release_hold (the
 * pass's end).  Returns the actions (none).
 */
extern void link_hold_acks (struct link *l, uint64_t from, uint64_t to);
extern unsigned link_release_hold (struct link *l);

/* May this node be promoted to primary?  NULL if so, else why not. */
extern const char *link_promote_check (unsigned role, bool outdated,
                                       bool resyncing, bool force);

extern enum link_verdict link_check_peer (const struct link_local *local,
                                          const struct link_peer *peer);
extern const char *link_state_name (enum link_state s);
extern const char *link_verdict_str (enum link_verdict v);

#endif /* REPLICA_LINK_H */
