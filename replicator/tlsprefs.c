/* nbd-replicator: prefer AES-GCM for the peer's TLS session.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * libnbd and nbdkit use GnuTLS's priority NORMAL, which on Debian 12
 * negotiates CHACHA20-POLY1305 even on CPUs with AES instructions,
 * where AES-GCM is several times faster (about 0.5 against 4.6 GB/s per
 * core here: ../shared/reference/platform-notes.md).  libnbd has no
 * call to set the priority string, and GnuTLS reads the name of its
 * system priority file from the environment once, when the library is
 * loaded.  So, before anything else, a replicator on such a CPU whose
 * environment names no priority file, on a system with no GnuTLS
 * configuration of its own, writes a one-line override into a memfd
 * and executes itself again with GNUTLS_SYSTEM_PRIORITY_FILE naming it
 * (/proc/self/fd/N survives the exec; the pid, the parent and the
 * parent-death signal stay).  The session then offers AES-GCM first
 * and never ChaCha20; every other setting is GnuTLS's default.
 *
 * An administrator's choice always wins: a priority file named in the
 * environment (for example /dev/null: GnuTLS's plain defaults), or a
 * system configuration file, and we change nothing.  Nor do we when
 * the running image is not the program argv[0] names (started through
 * the dynamic loader, or under valgrind).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "replicator.h"

#define GNUTLS_SYSTEM_CONFIG "/etc/gnutls/config"  /* Debian's build */
#define OVERRIDE "[overrides]\ntls-disabled-cipher = CHACHA20-POLY1305\n"
#define MARK_ENV "NBD_REPLICATOR_TLS_OVERRIDE"

static bool
cpu_has_aes (void)
{
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init ();
  return __builtin_cpu_supports ("aes") && __builtin_cpu_supports ("pclmul");
#else
  return false;                 /* keep GnuTLS's own choice */
#endif
}

/* Is argv0 (a path, or a name looked up in PATH) the file we run as?
 * Not when started through the dynamic loader or under valgrind: the
 * running image is then another program, which must not be executed.
 */
static bool
argv0_is (const char *argv0, const struct stat *self)
{
  const char *path = getenv ("PATH");
  struct stat st;
  char buf[4096];

  if (strchr (argv0, '/'))
    return stat (argv0, &st) == 0 && st.st_dev == self->st_dev &&
      st.st_ino == self->st_ino;
  while (path && *path) {
    const char *end = strchr (path, ':');
    size_t n = end ? (size_t) (end - path) : strlen (path);

    if (n > 0 && snprintf (buf, sizeof buf, "%.*s/%s", (int) n, path,
                           argv0) < (int) sizeof buf &&
        stat (buf, &st) == 0)
      return st.st_dev == self->st_dev && st.st_ino == self->st_ino;
    path = end ? end + 1 : NULL;
  }
  return false;
}

void
tls_prefer_aes (char **argv)
{
  struct stat st;
  char fdpath[64], self[4096];
  ssize_t n;
  int fd;

  /* (GnuTLS ignores the variable in a setuid or setcap process.) */
  if (getenv ("GNUTLS_SYSTEM_PRIORITY_FILE") || getauxval (AT_SECURE) ||
      access (GNUTLS_SYSTEM_CONFIG, F_OK) == 0 || !cpu_has_aes () ||
      !argv[0] || stat ("/proc/self/exe", &st) == -1 ||
      !argv0_is (argv[0], &st))
    return;
  /* Our own path, so that the process keeps its name. */
  n = readlink ("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0 || n == (ssize_t) sizeof self - 1)
    return;
  self[n] = '\0';
  fd = memfd_create ("nbd-replicator-gnutls", 0);  /* kept across exec */
  if (fd == -1)
    return;
  if (write (fd, OVERRIDE, strlen (OVERRIDE)) != (ssize_t) strlen (OVERRIDE)) {
    close (fd);
    return;
  }
  snprintf (fdpath, sizeof fdpath, "/proc/self/fd/%d", fd);
  if (setenv ("GNUTLS_SYSTEM_PRIORITY_FILE", fdpath, 1) == -1 ||
      setenv (MARK_ENV, "1", 1) == -1) {
    close (fd);
    return;
  }
  execv (self, argv);
  /* Still here: carry on with GnuTLS's defaults. */
  unsetenv ("GNUTLS_SYSTEM_PRIORITY_FILE");
  unsetenv (MARK_ENV);
  close (fd);
}

/* For the start-up message: did tls_prefer_aes take effect? */
bool
tls_aes_preferred (void)
{
  const char *f = getenv ("GNUTLS_SYSTEM_PRIORITY_FILE");

  return getenv (MARK_ENV) && f && strncmp (f, "/proc/self/fd/", 14) == 0;
}
