/* nbd-replica: the sync walk's reader thread.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * The walk (sync.c) compares one chunk at a time: read it, hash it,
 * compare with the peer's sums, re-log what differs.  Reading and
 * hashing are most of the work, so a thread of its own reads the next
 * chunks into their own buffers meanwhile and hashes each piece as soon
 * as it is read, while it is still in the CPU's cache (hashed later, a
 * chunk comes from memory again: on a 1%-different volume, where the
 * walk is busy re-logging, that made hashing take 2.5 times the CPU):
 * the walk asks for a chunk when it asks the peer for its sums, and
 * waits for it when its turn comes.  These reads
 * only find what differs (a torn read costs a needless resend at
 * most); what is re-sent is read again under its range lock
 * (sync-resend.c), unless no change to the volume was in progress or
 * has started since the read (struct vol_snap).
 */
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#include <nbdkit-filter.h>

#include "replica.h"
#include "blocksum.h"
#include "repl.h"
#include "sync-int.h"

/* Bytes read, then hashed, at a time: a multiple of every block size
 * (at most 1M), small enough to stay in the cache.
 */
#define HASH_PIECE (4u << 20)
/* A block is hashed from one piece: never larger than it. */
_Static_assert ((1u << REPL_SYNC_MAX_SHIFT) <= HASH_PIECE,
                "a sync block larger than a hash piece");

enum slot_state { SLOT_IDLE, SLOT_ASKED, SLOT_READING, SLOT_DONE };

struct chunk_reader {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  pthread_t thread;
  bool stop;
  struct {
    uint8_t *buf;
    uint8_t *sums;              /* BSUM_SIZE per block of buf */
    uint64_t off, len, order;   /* order: the slot asked first is read
                                 * first */
    struct vol_snap snap;       /* taken before the read */
    enum slot_state state;
    int err;
  } slot[READER_SLOTS];
  uint64_t asked;
};

/* The slot asked for first among those waiting, or -1. */
static int
next_slot (const struct chunk_reader *r)
{
  int best = -1;

  for (int i = 0; i < READER_SLOTS; ++i)
    if (r->slot[i].state == SLOT_ASKED &&
        (best == -1 || r->slot[i].order < r->slot[best].order))
      best = i;
  return best;
}

/* Read [off, off + len) into buf a piece at a time, and hash each
 * piece's blocks into sums while it is hot.  0, or -1 (errno set).
 */
static int
read_and_hash (uint8_t *buf, uint8_t *sums, uint64_t len, uint64_t off)
{
  uint32_t bs = 1u << block_shift ();
  size_t b = 0;

  for (uint64_t pos = 0; pos < len; ) {
    uint64_t n = len - pos < HASH_PIECE ? len - pos : HASH_PIECE;
    uint64_t end = pos + n;

    if (read_volume (buf + pos, n, off + pos) == -1)
      return -1;
    for (; pos < end; pos += bs, ++b)
      bsum_block (buf + pos, end - pos < bs ? end - pos : bs,
                  sums + b * BSUM_SIZE);
  }
  return 0;
}

static void *
reader_thread (void *arg)
{
  struct chunk_reader *r = arg;

  pthread_mutex_lock (&r->lock);
  for (;;) {
    int i = -1, err = 0;

    while (!r->stop && (i = next_slot (r)) == -1)
      pthread_cond_wait (&r->cond, &r->lock);
    if (r->stop || i == -1)
      break;
    r->slot[i].state = SLOT_READING;
    pthread_mutex_unlock (&r->lock);
    sync_snap_take (&r->slot[i].snap);
    if (read_and_hash (r->slot[i].buf, r->slot[i].sums, r->slot[i].len,
                       r->slot[i].off) == -1)
      err = errno ? errno : EIO;
    pthread_mutex_lock (&r->lock);
    r->slot[i].err = err;
    r->slot[i].state = SLOT_DONE;
    pthread_cond_broadcast (&r->cond);
  }
  pthread_mutex_unlock (&r->lock);
  return NULL;
}

struct chunk_reader *
chunk_reader_start (size_t bufsize)
{
  struct chunk_reader *r = calloc (1, sizeof *r);
  int e;

  if (!r)
    return NULL;
  pthread_mutex_init (&r->lock, NULL);
  pthread_cond_init (&r->cond, NULL);
  for (int i = 0; i < READER_SLOTS; ++i)
    if (!(r->slot[i].buf = malloc (bufsize)) ||
        !(r->slot[i].sums = malloc ((bufsize >> block_shift ()) * BSUM_SIZE)))
      goto fail;
  if ((e = pthread_create (&r->thread, NULL, reader_thread, r)) != 0) {
    errno = e;
    goto fail;
  }
  return r;

 fail:
  for (int i = 0; i < READER_SLOTS; ++i) {
    free (r->slot[i].buf);
    free (r->slot[i].sums);
  }
  pthread_cond_destroy (&r->cond);
  pthread_mutex_destroy (&r->lock);
  free (r);
  return NULL;
}

/* Read [off, off + len) into slot i (idle, or done and no longer used). */
void
chunk_reader_ask (struct chunk_reader *r, int i, uint64_t off, uint64_t len)
{
  pthread_mutex_lock (&r->lock);
  r->slot[i].off = off;
  r->slot[i].len = len;
  r->slot[i].order = r->asked++;
  r->slot[i].err = 0;
  r->slot[i].state = SLOT_ASKED;
  pthread_cond_broadcast (&r->cond);
  pthread_mutex_unlock (&r->lock);
}

/* Wait for slot i's read; its buffer, or NULL (errno set); *snap: the
 * volume's changes as they were before the read; *sums: the bsum_block
 * of each of its blocks (BSUM_SIZE apart).
 */
uint8_t *
chunk_reader_wait (struct chunk_reader *r, int i, struct vol_snap *snap,
                   const uint8_t **sums)
{
  int err;

  pthread_mutex_lock (&r->lock);
  while (r->slot[i].state == SLOT_ASKED || r->slot[i].state == SLOT_READING)
    pthread_cond_wait (&r->cond, &r->lock);
  err = r->slot[i].state == SLOT_DONE ? r->slot[i].err : EINVAL;
  *snap = r->slot[i].snap;
  *sums = r->slot[i].sums;
  r->slot[i].state = SLOT_IDLE;
  pthread_mutex_unlock (&r->lock);
  if (err) {
    errno = err;
    return NULL;
  }
  return r->slot[i].buf;
}

/* Stop the thread (after the read it is doing, if any) and free all. */
void
chunk_reader_stop (struct chunk_reader *r)
{
  if (!r)
    return;
  pthread_mutex_lock (&r->lock);
  r->stop = true;
  pthread_cond_broadcast (&r->cond);
  pthread_mutex_unlock (&r->lock);
  pthread_join (r->thread, NULL);
  for (int i = 0; i < READER_SLOTS; ++i) {
    free (r->slot[i].buf);
    free (r->slot[i].sums);
  }
  pthread_cond_destroy (&r->cond);
  pthread_mutex_destroy (&r->lock);
  free (r);
}
