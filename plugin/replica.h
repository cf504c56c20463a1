/* nbd-replica: state shared by the files of the replica filter.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#ifndef REPLICA_FILTER_H
#define REPLICA_FILTER_H

#include <stdint.h>
#include <stdbool.h>
#include <pthread.h>
#include <sys/types.h>

#include <nbdkit-filter.h>

#include "logfile.h"
#include "journal.h"
#include "rangelock.h"

/* Volume states shown by status (docs/design.md "States"). */
enum volume_state {
  VOL_RECOVERING = 0,   /* replaying the log, not serving yet */
  VOL_STANDALONE,       /* primary without a peer: serving */
  VOL_FAILED,           /* the backing failed after a record was durable,
                         * or the log is fenced: all I/O returns EIO */
};

struct replica {
  /* Configuration (replica-* keys). */
  char *log_path;
  int64_t log_size;             /* -1: not given */
  char *control_path;
  unsigned role_key;            /* replica-role, 0 if not given */

  /* Set up before fork. */
  struct rlog *log;
  int control_fd;               /* listening socket */
  dev_t control_dev;            /* the socket file bound, removed at exit */
  ino_t control_ino;
  unsigned role;                /* current role (atomic reads): the log's */

  /* Set up after fork. */
  nbdkit_next *ctx;             /* our own backend context */
  int can_flush;                /* of the backing */
  int can_zero;
  int can_write;
  bool all_conns;               /* plugin lacks multi-conn: checkpoints
                                 * flush every connection (conns.c) */
  struct journal journal;
  bool journal_up;
  struct rangelock ranges;

  pthread_mutex_t state_lock;   /* guards state, fault, counters below */
  enum volume_state state;
  char fault[256];              /* why FAILED, for status */
  uint64_t replayed_records;
  uint64_t elided_skipped;      /* of them: without data (ELIDED), skipped */
  uint64_t checkpoints;
  uint64_t backing_errors;
  char replay_stop[RLOG_ERRLEN]; /* why the log ended at the last replay */
  uint64_t recovered_seq;       /* the last record replayed (or the */
  uint64_t recovered_epoch;     /* checkpoint), and where the log's */
  uint64_t recovered_lsn;       /* next record goes */

  pthread_t ckpt_thread;
  pthread_mutex_t ckpt_lock;    /* one checkpoint writer at a time (the
                                 * checkpointer; a secondary's resync
                                 * moving its checkpoint) */
  pthread_cond_t ckpt_cond;
  bool ckpt_wanted;
  bool ckpt_running;
  pthread_t control_thread;
  bool control_running;
  bool stopping;
};

extern struct replica rep;

/* startup.c: the filter's keys, and the log opened before the fork. */
extern int replica_config (nbdkit_next_config *next, nbdkit_backend *nxdata,
                           const char *key, const char *value);
extern int replica_config_complete (nbdkit_next_config_complete *next,
                                    nbdkit_backend *nxdata);
extern const char replica_config_help[];
extern int replica_open_log (void);

/* apply.c */
extern int replica_apply (nbdkit_next *next, uint8_t op, uint32_t flags,
                          const void *payload, uint32_t length,
                          uint64_t offset, int *err);

/* recovery.c */
extern int replica_recover (struct replica *r);

/* checkpoint.c */
extern int checkpoint_start (struct replica *r);
extern void checkpoint_stop (struct replica *r);
extern void checkpoint_kick (void *opaque);
extern int checkpoint_now (struct replica *r, uint64_t seq, uint64_t epoch,
                           uint64_t lsn);

/* control.c */
/* replica-control's directory exists: 0, or -1 with an error. */
extern int control_check_dir (struct replica *r);
extern int control_bind (struct replica *r);
extern int control_start (struct replica *r);
extern void control_stop (struct replica *r);
/* control-promote.c: a promote on a worker thread; true if it took fd. */
extern bool control_promote (struct replica *r, int fd, bool force);
extern bool control_promoting (void);
extern void control_promote_wait (void);
extern char *status_json (struct replica *r);

/* replica.c */
extern void replica_fail (struct replica *r, int err, const char *fmt, ...)
  __attribute__ ((format (printf, 3, 4)));
extern const char *volume_state_name (enum volume_state s);
extern int replica_promote (struct replica *r, bool force, const char **why);

#endif /* REPLICA_FILTER_H */
