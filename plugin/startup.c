/* nbd-replica: the filter's keys, and the log opened at startup
 * (before nbdkit forks, so that every error reaches the user's
 * terminal with a non-zero exit).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/random.h>

#include <nbdkit-filter.h>

#include "replica.h"
#include "repl.h"

/* Own size syntax check first, so the error names the key; then
 * nbdkit_parse_size (which also catches overflow).
 */
static int64_t
parse_size_key (const char *key, const char *value)
{
  size_t n = strspn (value, "0123456789");
  int64_t r;

  if (n == 0 || (value[n] != '\0' &&
                 (strchr ("bkKmMgGtTpPeE", value[n]) == NULL ||
                  value[n + 1] != '\0'))) {
    nbdkit_error ("%s: cannot parse size '%s' (use a number with an "
                  "optional suffix such as 64M or 1G)", key, value);
    return -1;
  }
  r = nbdkit_parse_size (value);
  if (r == -1)
    nbdkit_error ("%s: size '%s' is out of range", key, value);
  return r;
}

int
replica_config (nbdkit_next_config *next, nbdkit_backend *nxdata,
                const char *key, const char *value)
{
  if (strcmp (key, "replica-log") == 0) {
    /* Absolute: nbdkit changes to / when it forks into the background,
     * and the log is opened again after that (the dirty bitmap's own
     * open file, plugin/bitmap.c).
     */
    free (rep.log_path);
    rep.log_path = nbdkit_absolute_path (value);
    return rep.log_path ? 0 : -1;
  }
  if (strcmp (key, "replica-log-size") == 0) {
    rep.log_size = parse_size_key (key, value);
    return rep.log_size == -1 ? -1 : 0;
  }
  if (strcmp (key, "replica-control") == 0) {
    free (rep.control_path);
    rep.control_path = nbdkit_absolute_path (value);
    return rep.control_path ? 0 : -1;
  }
  if (strcmp (key, "replica-role") == 0) {
    if (strcmp (value, "primary") == 0)
      rep.role_key = RLOG_ROLE_PRIMARY;
    else if (strcmp (value, "secondary") == 0)
      rep.role_key = RLOG_ROLE_SECONDARY;
    else {
      nbdkit_error ("replica-role: unknown role '%s' (use primary or "
                    "secondary)", value);
      return -1;
    }
    return 0;
  }
  if (strncmp (key, "replica-", 8) == 0) {
    int r = repl_config_key (key, value);
    if (r != 1)
      return r;
    nbdkit_error ("unknown parameter '%s' (see nbdkit --filter=replica "
                  "PLUGIN --help for the replica-* keys)", key);
    return -1;
  }
  return next (nxdata, key, value);
}

int
replica_config_complete (nbdkit_next_config_complete *next,
                         nbdkit_backend *nxdata)
{
  if (!rep.log_path) {
    nbdkit_error ("replica-log: parameter is required (the path of the "
                  "replication log)");
    return -1;
  }
  if (rep.log_size != -1 && rep.log_size < RLOG_MIN_SIZE) {
    nbdkit_error ("replica-log-size: %" PRIi64 " bytes is below the "
                  "minimum log size of 8M", rep.log_size);
    return -1;
  }
  if (repl_config_complete (rep.role_key) == -1)
    return -1;
  if (!rep.control_path &&
      asprintf (&rep.control_path, "%s.ctl", rep.log_path) == -1) {
    nbdkit_error ("asprintf: %m");
    return -1;
  }
  return next (nxdata);
}

const char replica_config_help[] =
  "replica-log=<FILE>        (required) The replication log.\n"
  "replica-log-size=<SIZE>   Size when the log is created (default: 1G).\n"
  "replica-control=<SOCKET>  Control socket (default: <FILE>.ctl).\n"
  "replica-role=primary|secondary  Role when the log is created "
  "(default: primary).\n"
  repl_config_help;

/* A primary's log made before the pair secret existed has none: make
 * one (a secondary gets its own from the primary when it pairs).
 */
static int
ensure_pair_secret (void)
{
  static const uint8_t zero[RLOG_SECRET_SIZE];
  struct rlog_sb sb;
  int r = 0;

  pthread_mutex_lock (&rep.log->sb_lock);
  sb = rep.log->sb;
  if (sb.role == RLOG_ROLE_PRIMARY &&
      memcmp (sb.pair_secret, zero, RLOG_SECRET_SIZE) == 0) {
    if (getrandom (sb.pair_secret, RLOG_SECRET_SIZE, 0) != RLOG_SECRET_SIZE)
      r = -1;
    else
      r = rlog_sb_write_locked (rep.log, &sb);
  }
  pthread_mutex_unlock (&rep.log->sb_lock);
  if (r == -1)
    nbdkit_error ("replica-log: %s: creating the pair secret: %m",
                  rep.log_path);
  return r;
}

/* Create the log if absent, else open it; all before the fork so every
 * error reaches the user's terminal with a non-zero exit.
 */
int
replica_open_log (void)
{
  char err[RLOG_ERRLEN];
  struct stat st;

  if (stat (rep.log_path, &st) == -1) {
    char *copy, *dir;
    int ok;

    if (errno != ENOENT) {
      nbdkit_error ("replica-log: %s: %m", rep.log_path);
      return -1;
    }
    copy = strdup (rep.log_path);
    if (!copy)
      return -1;
    dir = dirname (copy);
    if (stat (dir, &st) == -1 || !S_ISDIR (st.st_mode)) {
      nbdkit_error ("replica-log: directory %s does not exist", dir);
      free (copy);
      return -1;
    }
    ok = access (dir, W_OK) == 0;
    if (!ok)
      nbdkit_error ("replica-log: directory %s is not writable: %m", dir);
    free (copy);
    /* The control socket's directory too, before a new log of a
     * gigabyte is written out for nothing.
     */
    if (!ok || control_check_dir (&rep) == -1)
      return -1;
    if (rlog_create (rep.log_path, rep.log_size == -1 ? RLOG_DEFAULT_SIZE
                     : (uint64_t) rep.log_size,
                     rep.role_key ? rep.role_key : RLOG_ROLE_PRIMARY,
                     err) == -1) {
      nbdkit_error ("replica-log: %s", err);
      return -1;
    }
    nbdkit_debug ("replica: created log %s", rep.log_path);
  }
  rep.log = rlog_open (rep.log_path, 1, 0, err);
  if (!rep.log) {
    nbdkit_error ("replica-log: %s", err);
    return -1;
  }
  /* The role lives in the log; promote changes it.  A command line
   * that disagrees is refused, so a promoted node restarted with its
   * old command line does not silently become a secondary again.
   */
  if (rep.role_key && rep.role_key != rep.log->sb.role) {
    nbdkit_error ("replica-role: %s records role %s, not %s (the role is "
                  "changed by replicactl promote, not by the command "
                  "line: drop replica-role=%s)", rep.log_path,
                  rlog_role_name (rep.log->sb.role),
                  rlog_role_name (rep.role_key),
                  rlog_role_name (rep.role_key));
    return -1;
  }
  rep.role = rep.log->sb.role;
  if (ensure_pair_secret () == -1)
    return -1;
  if (rep.log_size != -1 &&
      (uint64_t) rep.log_size / RLOG_BLOCK * RLOG_BLOCK != rep.log->sb.log_size)
    nbdkit_debug ("replica: replica-log-size only applies when the log is "
                  "created; %s keeps its size of %" PRIu64, rep.log_path,
                  rep.log->sb.log_size);
  return 0;
}
