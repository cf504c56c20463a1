/* nbd-replica: reading the volume for checksums, skipping holes.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * The sync engine (sync.c) and the secondary's sums (sums.c) read whole
 * chunks of the volume.  Ranges the plugin reports as reading zero
 * (NBD block status: NBDKIT_EXTENT_ZERO, e.g. the holes of a sparse
 * file) are not read but zeroed here, so a sparse volume costs little
 * more than its data; everything else is read.  Extents are only a
 * hint: a plugin without them, or an error asking, means a plain read.
 *
 * volume_read_unless_zero does not even zero a range that reads as
 * zero as a whole: it says so instead (the secondary's sums of a sparse
 * disk cost no memset and no hashing, plugin/sums.c).
 *
 * volume_prefetch asks the plugin to start reading a range that will
 * be read next (NBD_CMD_CACHE; the file plugin's is posix_fadvise
 * WILLNEED), so that the disk reads it meanwhile.  Only a plugin with a
 * native cache is asked (an emulated one would read the range now,
 * synchronously); it is a hint, its errors are ignored.  A native cache
 * may still read synchronously (the nbd plugin passes the command to a
 * server that may emulate it): PREFETCH_SLOW_CALLS calls in a row that
 * take longer than PREFETCH_SLOW_NS each (a file's WILLNEED of 16 MiB
 * takes about 2 ms here; a busy machine may delay one call, not four in
 * a row) turn prefetching off for good, as it then costs a second read
 * instead of saving a wait.
 */
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>
#include <inttypes.h>

#include <nbdkit-filter.h>

#include "replica.h"
#include "conns.h"
#include "repl.h"

#define READ_PIECE (4u << 20)
#define PREFETCH_SLOW_NS (20 * 1000000ULL)
#define PREFETCH_SLOW_CALLS 4

static unsigned slow_calls;     /* atomic: slow calls in a row */

static int
plain_read (void *buf, uint64_t len, uint64_t off, int *err)
{
  for (uint64_t done = 0; done < len; ) {
    uint32_t n = len - done > READ_PIECE ? READ_PIECE : len - done;
    int r;

    plugin_call_begin ();
    r = rep.ctx->pread (rep.ctx, (char *) buf + done, n, off + done, 0, err);
    plugin_call_end ();
    if (r == -1)
      return -1;
    done += n;
  }
  return 0;
}

/* The plugin's extents of [off, off + len), or NULL: it has none, or
 * could not say (then everything is read).
 */
static struct nbdkit_extents *
get_extents (uint64_t len, uint64_t off)
{
  struct nbdkit_extents *ex;
  int r, e = 0;

  if (len == 0 || len > UINT32_MAX || rep.ctx->can_extents (rep.ctx) <= 0)
    return NULL;
  ex = nbdkit_extents_new (off, off + len);
  if (!ex)
    return NULL;
  plugin_call_begin ();
  r = rep.ctx->extents (rep.ctx, len, off, 0, ex, &e);
  plugin_call_end ();
  if (r == -1) {
    nbdkit_extents_free (ex);
    return NULL;
  }
  return ex;
}

/* Whether the extents say that all of [off, end) reads as zero. */
static bool
all_zero (struct nbdkit_extents *ex, uint64_t off, uint64_t end)
{
  uint64_t pos = off;

  for (size_t i = 0; i < nbdkit_extents_count (ex) && pos < end; ++i) {
    struct nbdkit_extent x = nbdkit_get_extent (ex, i);

    if (x.offset > pos || !(x.type & NBDKIT_EXTENT_ZERO))
      return false;
    if (x.offset + x.length > pos)
      pos = x.offset + x.length;
  }
  return pos >= end;
}

/* Read [off, off + len) into buf, zeroing the ranges that read as
 * zero.  With may_skip, a range that reads as zero as a whole is not
 * even zeroed: returns 1, buf untouched.  Otherwise 0, or -1 (*err).
 */
static int
read_range (void *buf, uint64_t len, uint64_t off, bool may_skip, int *err)
{
  struct nbdkit_extents *ex;
  uint64_t pos = off, end = off + len;

  if (len == 0)
    return 0;
  if (!(ex = get_extents (len, off)))
    return plain_read (buf, len, off, err);
  if (may_skip && all_zero (ex, off, end)) {
    nbdkit_extents_free (ex);
    return 1;
  }
  for (size_t i = 0; i < nbdkit_extents_count (ex) && pos < end; ++i) {
    struct nbdkit_extent x = nbdkit_get_extent (ex, i);
    uint64_t a = x.offset > pos ? x.offset : pos;
    uint64_t b = x.offset + x.length < end ? x.offset + x.length : end;

    if (a > pos && plain_read ((char *) buf + (pos - off), a - pos, pos,
                               err) == -1)
      goto fail;
    if (b <= a)
      continue;
    if (x.type & NBDKIT_EXTENT_ZERO)
      memset ((char *) buf + (a - off), 0, b - a);
    else if (plain_read ((char *) buf + (a - off), b - a, a, err) == -1)
      goto fail;
    pos = b;
  }
  nbdkit_extents_free (ex);
  /* Whatever the extents did not cover. */
  return pos < end ? plain_read ((char *) buf + (pos - off), end - pos, pos,
                                 err) : 0;

 fail:
  nbdkit_extents_free (ex);
  return -1;
}

int
volume_read (void *buf, uint64_t len, uint64_t off, int *err)
{
  return read_range (buf, len, off, false, err) == -1 ? -1 : 0;
}

int
volume_read_unless_zero (void *buf, uint64_t len, uint64_t off, int *err)
{
  return read_range (buf, len, off, true, err);
}

void
volume_prefetch (uint64_t len, uint64_t off)
{
  uint64_t t0, ns;
  int err;

  if (len == 0 || len > UINT32_MAX ||
      __atomic_load_n (&slow_calls, __ATOMIC_RELAXED) >= PREFETCH_SLOW_CALLS ||
      rep.ctx->can_cache (rep.ctx) != NBDKIT_CACHE_NATIVE)
    return;
  t0 = now_ns ();
  plugin_call_begin ();
  if (rep.ctx->cache (rep.ctx, len, off, 0, &err) == -1)
    nbdkit_debug ("replica: prefetch at %" PRIu64 ": %s", off,
                  strerror (err));
  plugin_call_end ();
  ns = now_ns () - t0;
  if (ns <= PREFETCH_SLOW_NS)
    __atomic_store_n (&slow_calls, 0, __ATOMIC_RELAXED);
  else if (__atomic_add_fetch (&slow_calls, 1, __ATOMIC_RELAXED) ==
           PREFETCH_SLOW_CALLS)
    nbdkit_debug ("replica: the plugin's cache took %" PRIu64 " ms for "
                  "%" PRIu64 " bytes, %d times in a row: no more "
                  "prefetching", ns / 1000000, len, PREFETCH_SLOW_CALLS);
}
