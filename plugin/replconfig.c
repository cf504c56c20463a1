/* nbd-replica: the replica-* keys of replication, checked before fork.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <math.h>
#include <unistd.h>
#include <sys/stat.h>

#include <nbdkit-filter.h>

#include "replica.h"
#include "repl.h"
#include "peeraddr.h"
#include "peertls.h"
#include "wire.h"

struct repl_config repl_cfg = {
  .mode = LINK_SYNC,
  .policy = LINK_SYNC_DEGRADE,
  .sync_timeout_ms = LINK_SYNC_TIMEOUT_MS,
  .initial_sync = LINK_INITIAL_CHECKSUM,
  .sync_shift = 12,
};

/* replica-sync-block-size: a power of two from 4K to 1M (a block must
 * fit one record, RLOG_MAX_PAYLOAD).
 */
static int
parse_block_size (const char *key, const char *value)
{
  int64_t n = nbdkit_parse_size (value);

  if (n == -1)
    return -1;
  for (unsigned s = WIRE_SUMS_MIN_SHIFT; s <= REPL_SYNC_MAX_SHIFT; ++s)
    if (n == (int64_t) 1 << s) {
      repl_cfg.sync_shift = s;
      return 0;
    }
  nbdkit_error ("%s: '%s' is not a power of two from 4K to 1M", key, value);
  return -1;
}

/* replica-resync-rate: bytes per second, with the size suffixes. */
static int
parse_rate (const char *key, const char *value)
{
  int64_t n = nbdkit_parse_size (value);

  if (n == -1)
    return -1;
  if (n > 0 && n < 1024 * 1024) {
    nbdkit_error ("%s: %s per second would crawl: use at least 1M (or 0 "
                  "for no cap)", key, value);
    return -1;
  }
  repl_cfg.resync_rate = n;
  return 0;
}

static int
set_str (char **dst, const char *value)
{
  free (*dst);
  *dst = strdup (value);
  if (!*dst) {
    nbdkit_error ("strdup: %m");
    return -1;
  }
  return 0;
}

/* A file the replicator or a later step opens after nbdkit forked into
 * the background (and changed to /): absolute.
 */
static int
set_path (char **dst, const char *value)
{
  free (*dst);
  *dst = nbdkit_absolute_path (value);
  return *dst ? 0 : -1;
}

static int
parse_bool_key (const char *key, const char *value, bool *out)
{
  int r = nbdkit_parse_bool (value);

  if (r == -1) {
    nbdkit_error ("%s: expected yes or no, not '%s'", key, value);
    return -1;
  }
  *out = r;
  return 0;
}

static int
parse_seconds (const char *key, const char *value, uint64_t *ms)
{
  char *end;
  double s;

  errno = 0;
  s = strtod (value, &end);
  if (errno || end == value || *end != '\0' || !isfinite (s) || s < 0 ||
      s > 86400 * 365) {
    nbdkit_error ("%s: '%s' is not a number of seconds", key, value);
    return -1;
  }
  *ms = (uint64_t) (s * 1000);
  return 0;
}

static int
check_min_ms (const char *key, const char *value, uint64_t ms, uint64_t min)
{
  if (ms < min) {
    nbdkit_error ("%s: '%s' is under the minimum of %g s", key, value,
                  min / 1000.0);
    return -1;
  }
  return 0;
}

int
repl_config_key (const char *key, const char *value)
{
  if (strcmp (key, "replica-peer") == 0)
    return set_str (&repl_cfg.peer, value);
  if (strcmp (key, "replica-replicator") == 0)
    return strcmp (value, "external") == 0
      ? set_str (&repl_cfg.replicator, value)
      : set_path (&repl_cfg.replicator, value);
  if (strcmp (key, "replica-tls-psk") == 0)
    return set_path (&repl_cfg.tls_psk, value);
  if (strcmp (key, "replica-tls-username") == 0)
    return set_str (&repl_cfg.tls_username, value);
  if (strcmp (key, "replica-tls-certificates") == 0)
    return set_path (&repl_cfg.tls_certificates, value);
  if (strcmp (key, "replica-insecure") == 0)
    return parse_bool_key (key, value, &repl_cfg.insecure);
  if (strcmp (key, "replica-sync-timeout") == 0)
    /* Under 0.1 s every sync write would degrade the link at once (0 is
     * not "no timeout": that is replica-sync-policy=wait).
     */
    return parse_seconds (key, value, &repl_cfg.sync_timeout_ms) == -1 ||
      check_min_ms (key, value, repl_cfg.sync_timeout_ms, 100) == -1 ? -1 : 0;
  if (strcmp (key, "replica-mode") == 0) {
    if (strcmp (value, "sync") == 0)
      repl_cfg.mode = LINK_SYNC;
    else if (strcmp (value, "async") == 0)
      repl_cfg.mode = LINK_ASYNC;
    else {
      nbdkit_error ("replica-mode: unknown mode '%s' (use sync or async)",
                    value);
      return -1;
    }
    return 0;
  }
  if (strcmp (key, "replica-sync-policy") == 0) {
    if (strcmp (value, "degrade") == 0)
      repl_cfg.policy = LINK_SYNC_DEGRADE;
    else if (strcmp (value, "wait") == 0)
      repl_cfg.policy = LINK_SYNC_WAIT;
    else {
      nbdkit_error ("replica-sync-policy: unknown policy '%s' (use "
                    "degrade or wait)", value);
      return -1;
    }
    return 0;
  }
  if (strcmp (key, "replica-initial-sync") == 0) {
    if (strcmp (value, "checksum") == 0)
      repl_cfg.initial_sync = LINK_INITIAL_CHECKSUM;
    else if (strcmp (value, "full") == 0)
      repl_cfg.initial_sync = LINK_INITIAL_FULL;
    else if (strcmp (value, "none") == 0)
      repl_cfg.initial_sync = LINK_INITIAL_NONE;
    else {
      nbdkit_error ("replica-initial-sync: unknown method '%s' (use "
                    "checksum, full or none)", value);
      return -1;
    }
    return 0;
  }
  if (strcmp (key, "replica-sync-block-size") == 0)
    return parse_block_size (key, value);
  if (strcmp (key, "replica-resync-rate") == 0)
    return parse_rate (key, value);
  if (strcmp (key, "replica-log-full") == 0) {
    if (strcmp (value, "bitmap") == 0)
      repl_cfg.log_full_wait = false;
    else if (strcmp (value, "wait") == 0)
      repl_cfg.log_full_wait = true;
    else {
      nbdkit_error ("replica-log-full: unknown policy '%s' (use bitmap or "
                    "wait)", value);
      return -1;
    }
    return 0;
  }
  if (strcmp (key, "replica-bind") == 0)
    return set_str (&repl_cfg.bind, value);
  if (strcmp (key, "replica-compress") == 0) {
    if (strcmp (value, "lz4") == 0)
      repl_cfg.compress = true;
    else if (strcmp (value, "none") == 0)
      repl_cfg.compress = false;
    else {
      nbdkit_error ("replica-compress: unknown method '%s' (use lz4 or "
                    "none)", value);
      return -1;
    }
    return 0;
  }
  return 1;
}

/* The link is always TLS unless the admin says otherwise in so many
 * words; the URI names the peer, never the export (the replicator opens
 * the replication export itself).
 */
static int
check_peer_uri (const char *uri)
{
  char why[512], *user, *rw;
  bool plain = false;
  int r = -1;

  /* The replicator's own parse (common/peertls.c): what it would refuse
   * at each start (the filter restarting it every second, the link
   * connecting for ever) is refused here, at nbdkit's start.
   */
  rw = peer_uri_rewrite (uri, &plain, &user, why, sizeof why);
  if (!rw) {
    nbdkit_error ("replica-peer: %s (use nbds://HOST:PORT/ or "
                  "nbds+unix:///?socket=PATH)", why);
    return -1;
  }
  free (rw);
  if (strncmp (uri, "nbd://", 6) == 0 || strncmp (uri, "nbds://", 7) == 0) {
    struct peer_addr a;
    int bad = peer_addr_parse (uri, &a, why, sizeof why) == -1;

    peer_addr_free (&a);
    if (bad) {
      nbdkit_error ("replica-peer: %s", why);
      free (user);
      return -1;
    }
  }
  if (plain && !repl_cfg.insecure)
    nbdkit_error ("replica-peer: %s is a plaintext link: use nbds:// (TLS), "
                  "or add replica-insecure=yes to replicate without "
                  "encryption or authentication", uri);
  else if (plain && (repl_cfg.tls_psk || repl_cfg.tls_certificates ||
                     repl_cfg.tls_username))
    nbdkit_error ("replica-peer: %s is a plaintext URI, but replica-tls-* "
                  "keys were given", uri);
  else if (user && repl_cfg.tls_username &&
           strcmp (user, repl_cfg.tls_username) != 0)
    nbdkit_error ("replica-tls-username: '%s' conflicts with the user '%s' "
                  "in replica-peer", repl_cfg.tls_username, user);
  else
    r = 0;
  free (user);
  return r;
}

/* replica-bind: the replicator makes the TCP socket itself, and
 * libnbd 1.14 cannot check a server certificate on a socket it did not
 * open (no TLS hostname): a TCP peer, with a PSK or without TLS.
 */
static int
check_bind (void)
{
  const char *p = repl_cfg.peer;

  if (!repl_cfg.bind)
    return 0;
  if (strncmp (p, "nbds://", 7) != 0 && strncmp (p, "nbd://", 6) != 0) {
    nbdkit_error ("replica-bind: applies to a TCP peer (nbds://HOST:PORT/), "
                  "not to %s", p);
    return -1;
  }
  char why[400];
  struct peer_addr a;
  bool psk_in_uri;

  /* The replicator's own parse (common/peeraddr.c). */
  if (peer_dial_check (p, repl_cfg.bind, &a, NULL, NULL, NULL, why,
                       sizeof why) == -1) {
    peer_addr_free (&a);
    nbdkit_error ("replica-bind: %s", why);
    return -1;
  }
  psk_in_uri = a.uri_psk != NULL;
  peer_addr_free (&a);
  if (repl_cfg.tls_certificates) {
    nbdkit_error ("replica-bind: cannot be used with "
                  "replica-tls-certificates (libnbd 1.14 cannot verify the "
                  "peer's certificate on a socket it did not open): use "
                  "replica-tls-psk");
    return -1;
  }
  if (strncmp (p, "nbds://", 7) == 0 && !repl_cfg.tls_psk && !psk_in_uri) {
    nbdkit_error ("replica-bind: a TLS peer needs replica-tls-psk (or "
                  "tls-psk-file in the URI)");
    return -1;
  }
  return 0;
}

int
repl_config_complete (unsigned role_key)
{
  struct stat st;
  char why[8192];

  if (repl_cfg.replicator && strcmp (repl_cfg.replicator, "external") != 0 &&
      access (repl_cfg.replicator, X_OK) == -1) {
    nbdkit_error ("replica-replicator: %s: %m", repl_cfg.replicator);
    return -1;
  }
  if (!repl_cfg.peer) {
    if (repl_cfg.tls_psk || repl_cfg.tls_certificates ||
        repl_cfg.tls_username || repl_cfg.compress || repl_cfg.bind) {
      nbdkit_error ("replica-tls-*/replica-compress/replica-bind: these "
                    "configure the link to the peer, but replica-peer is "
                    "not given");
      return -1;
    }
    if (repl_cfg.replicator && strcmp (repl_cfg.replicator, "external") != 0) {
      nbdkit_error ("replica-replicator: without replica-peer there is "
                    "nothing to start (use replica-replicator=external for "
                    "a replicator run on its own)");
      return -1;
    }
    return 0;
  }
  if (role_key == RLOG_ROLE_SECONDARY) {
    nbdkit_error ("replica-peer: a secondary has no peer to connect to (the "
                  "primary connects to it): drop replica-peer");
    return -1;
  }
  if (check_peer_uri (repl_cfg.peer) == -1)
    return -1;
  if (repl_cfg.tls_psk && access (repl_cfg.tls_psk, R_OK) == -1) {
    nbdkit_error ("replica-tls-psk: %s: %m", repl_cfg.tls_psk);
    return -1;
  }
  if (repl_cfg.tls_psk &&
      (stat (repl_cfg.tls_psk, &st) == -1 || !S_ISREG (st.st_mode))) {
    nbdkit_error ("replica-tls-psk: %s is not a regular file",
                  repl_cfg.tls_psk);
    return -1;
  }
  if (repl_cfg.tls_certificates &&
      (stat (repl_cfg.tls_certificates, &st) == -1 || !S_ISDIR (st.st_mode))) {
    nbdkit_error ("replica-tls-certificates: %s is not a directory",
                  repl_cfg.tls_certificates);
    return -1;
  }
  if (repl_cfg.tls_psk && repl_cfg.tls_certificates) {
    nbdkit_error ("replica-tls-psk and replica-tls-certificates: give one "
                  "or the other");
    return -1;
  }
  if (peer_tls_check (repl_cfg.peer, repl_cfg.tls_psk,
                      repl_cfg.tls_certificates, why, sizeof why)) {
    nbdkit_error ("replica-peer: %s", why);
    return -1;
  }
  return check_bind ();
}
