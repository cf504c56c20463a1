/* nbd-replica: the client connections' plugin contexts, for checkpoints.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * A checkpoint must make every applied write stable on the plugin.  The
 * filter's own context's flush covers all connections only if the
 * plugin offers multi-conn; otherwise each connection's context is
 * flushed too.  And a plugin whose thread model is not parallel must
 * never see the checkpoint's flush concurrently with a request: the
 * plugin-call lock, held shared around every call into the plugin on
 * the data path and exclusively by the checkpoint, ensures that.
 */
#ifndef REPLICA_CONNS_H
#define REPLICA_CONNS_H

#include <stdbool.h>
#include <pthread.h>

#include <nbdkit-filter.h>

struct conn {
  nbdkit_next *next;            /* set in .prepare, cleared in .finalize */
  bool flushing;                /* the checkpoint is flushing it */
  bool wrote;                   /* applied a write (set atomically) */
  bool can_flush;               /* the plugin's answer for next, asked
                                 * in .prepare (an error fails the
                                 * connection: never taken for "no") */
  bool repl;                    /* the replication export (secondary.c) */
  bool authed;                  /* ... and the primary proved the secret */
  uint8_t nonce[16];            /* ... its HELLO's challenge */
  struct conn *prev, *nextc;
};

extern void conns_init (int thread_model);
extern void conns_add (struct conn *c, nbdkit_next *next);
extern void conns_remove (struct conn *c);
/* Flush ctx, and every connection if all_conns; returns 0 or -1 with
 * *err set.
 */
extern int conns_flush (nbdkit_next *ctx, bool all_conns, int *err);
/* A closing connection's own flush of next, and failed (err) if it
 * fails, as one step for checkpoints: returns 0 or -1.
 */
extern int conns_final_flush (nbdkit_next *next, void (*failed) (int err));

/* Around calls into the plugin on the data path (not around waits for
 * the log: a checkpoint may be what that wait needs).
 */
extern void plugin_call_begin (void);
extern void plugin_call_end (void);

#endif /* REPLICA_CONNS_H */
